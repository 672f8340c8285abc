// Package garouimpl runs the Garou library itself under the benchmark.
package garouimpl

import (
	"context"
	"net"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/bench/internal/impl"
)

// Impl describes Garou to the load generator. Send waits for the server's
// acknowledgement, so the load keeps several Sends in flight per client.
var Impl = impl.Impl{Name: "garou", Serve: Serve, Dial: Dial, BlockingSend: true}

// Serve runs a Garou server with every limit opened up to the scenario's
// size and no rate limit; the rest are the library's defaults.
func Serve(ctx context.Context, cfg impl.ServerConfig, ready func(addr, fp string)) error {
	n := max(cfg.MaxConns, 1)
	srv, err := garou.NewServer(
		garou.WithAddr(cfg.Addr),
		garou.WithLogger(cfg.Logger),
		garou.WithRateLimit(0, 0),
		garou.WithMaxConnections(n),
		garou.WithMaxConnectionsPerAddr(n),
		garou.WithMaxHandshakes(max(n, garou.DefaultMaxHandshakes)),
		garou.WithMaxRoomMembers(max(n, garou.DefaultMaxRoomMembers)),
		garou.WithSendQueueBytes(max(cfg.QueueBytes, garou.DefaultMaxMessageSize)),
	)
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
