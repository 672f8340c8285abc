// Package impl defines what the load generator needs of a chat
// implementation: a server to run in its own process, and a client.
package impl

import (
	"context"
	"log/slog"
)

// ServerConfig is what every server is told.
type ServerConfig struct {
	// Addr is the UDP or TCP address to listen on, e.g. "127.0.0.1:0".
	Addr string
	// MaxConns is how many clients the scenario connects: every limit of
	// the server must admit at least that many.
	MaxConns int
	// QueueBytes bounds each client's send queue; a client past it is
	// dropped as a slow consumer.
	QueueBytes int
	// Logger receives the server's warnings.
	Logger *slog.Logger
}

// Impl is one chat implementation under test.
type Impl struct {
	Name string
	// Serve runs the server until ctx ends. Once it listens it calls
	// ready with its address and its certificate's fingerprint.
	Serve func(ctx context.Context, cfg ServerConfig, ready func(addr, fingerprint string)) error
	// Dial connects a client called name into room ("" is the
	// implementation's default room) and returns once the server has
	// registered it, so that it receives every text sent after in that
	// room.
	Dial func(ctx context.Context, addr, fingerprint, name, room string) (Client, error)
	// BlockingSend says Send waits for the server's acknowledgement: the
	// load then keeps several Sends in flight per client.
	BlockingSend bool
}

// Client is one connected chat client.
type Client interface {
	// Send says text in the client's room. It is safe for concurrent use.
	Send(ctx context.Context, text string) error
	// Receive returns the next text and its sender's name, skipping every
	// other kind of message. Close makes it return an error.
	Receive() (from, text string, err error)
	// Close disconnects.
	Close() error
}
