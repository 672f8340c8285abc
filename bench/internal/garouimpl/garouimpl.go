// Package garouimpl runs the Garou library itself under the benchmark:
// with its history in memory (garou), or with a data directory and a
// durable history store on a temporary directory (garou-bolt,
// garou-pebble).
package garouimpl

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/bench/internal/impl"
	"github.com/garou-chat/garou/boltstore"
	"github.com/garou-chat/garou/pebblestore"
)

// Impl describes Garou to the load generator. Send waits for the server's
// acknowledgement, so the load keeps several Sends in flight per client.
var Impl = impl.Impl{Name: "garou", Serve: Serve, Dial: Dial, BlockingSend: true}

// Bolt is Garou with a data directory and its history in a bbolt file
// (boltstore), as the example server runs with -data: a Send is
// acknowledged once its text is on disk.
var Bolt = impl.Impl{Name: "garou-bolt", Serve: durable(openBolt), Dial: Dial, BlockingSend: true}

// Pebble is Bolt with the history in a Pebble database (pebblestore).
var Pebble = impl.Impl{Name: "garou-pebble", Serve: durable(openPebble), Dial: Dial, BlockingSend: true}

// store is a durable history store the server must not outlive.
type store interface {
	garou.HistoryStore
	io.Closer
}

func openBolt(dir string, size int) (store, error) {
	return boltstore.Open(filepath.Join(dir, "history.db"), boltstore.WithSize(size))
}

func openPebble(dir string, size int) (store, error) {
	return pebblestore.Open(filepath.Join(dir, "history"), pebblestore.WithSize(size))
}

// Serve runs a Garou server with every limit opened up to the scenario's
// size and no rate limit; the rest are the library's defaults.
func Serve(ctx context.Context, cfg impl.ServerConfig, ready func(addr, fp string)) error {
	return serve(ctx, cfg, ready)
}

// durable returns a Serve that runs the server with a data directory, a
// new temporary directory removed when it returns, and its history in the
// store open makes there.
func durable(open func(dir string, size int) (store, error)) func(context.Context, impl.ServerConfig, func(addr, fp string)) error {
	return func(ctx context.Context, cfg impl.ServerConfig, ready func(addr, fp string)) (err error) {
		dir, err := os.MkdirTemp("", "garoubench-")
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
		st, err := open(dir, garou.DefaultHistorySize)
		if err != nil {
			return err
		}
		// After the server's Close (serve returns once Serve has):
		// waits for the appends in flight.
		defer func() { err = errors.Join(err, st.Close()) }()
		return serve(ctx, cfg, ready, garou.WithDataDir(dir), garou.WithHistoryStore(st))
	}
}

func serve(ctx context.Context, cfg impl.ServerConfig, ready func(addr, fp string), extra ...garou.ServerOption) error {
	n := max(cfg.MaxConns, 1)
	opts := append([]garou.ServerOption{
		garou.WithAddr(cfg.Addr),
		garou.WithLogger(cfg.Logger),
		garou.WithRateLimit(0, 0),
		garou.WithMaxConnections(n),
		garou.WithMaxConnectionsPerAddr(n),
		garou.WithMaxHandshakes(max(n, garou.DefaultMaxHandshakes)),
		garou.WithMaxRoomMembers(max(n, garou.DefaultMaxRoomMembers)),
		garou.WithSendQueueBytes(max(cfg.QueueBytes, garou.DefaultMaxMessageSize)),
	}, extra...)
	srv, err := garou.NewServer(opts...)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", cfg.Addr)
	if err != nil {
		return err
	}
	defer pc.Close()
	ready(pc.LocalAddr().String(), srv.Fingerprint())
	return srv.Serve(ctx, pc)
}

// Client adapts *garou.Client.
type Client struct {
	c    *garou.Client
	room string
}

// Dial connects a client that does not reconnect: a lost connection must
// show as lost deliveries, not be papered over. It joins room, or
// garou.DefaultRoom if room is empty.
func Dial(ctx context.Context, addr, fp, name, room string) (impl.Client, error) {
	opts := []garou.ClientOption{
		garou.WithFingerprint(fp),
		garou.WithLocalAddr("127.0.0.1:0"),
		garou.WithReconnect(0),
		garou.WithConnectTimeout(30 * time.Second),
	}
	if room != "" {
		opts = append(opts, garou.WithRooms(room))
	} else {
		room = garou.DefaultRoom
	}
	c, err := garou.Dial(ctx, addr, name, opts...)
	if err != nil {
		return nil, err
	}
	return &Client{c: c, room: room}, nil
}

// Send says text in the client's room and waits for the acknowledgement.
func (c *Client) Send(ctx context.Context, text string) error {
	_, err := c.c.SendTo(ctx, c.room, text)
	return err
}

// Receive returns the next text, skipping joins, leaves and the rest.
func (c *Client) Receive() (string, string, error) {
	for {
		m, err := c.c.Receive(context.Background())
		if err != nil {
			return "", "", err
		}
		if m.Type == garou.TypeText && m.From != nil {
			return m.From.Name, m.Text, nil
		}
	}
}

// Close disconnects.
func (c *Client) Close() error { return c.c.Close() }
