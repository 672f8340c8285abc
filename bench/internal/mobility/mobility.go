// Package mobility measures what QUIC gives a Garou client whose network
// changes: how soon a reconnecting client gets what it missed, with and
// without 0-RTT (Reconnect), and how long deliveries pause while a
// client moves its connection to new sockets (Migrate). Each runs a
// Garou server and its clients in this process, over 127.0.0.1; run it
// inside an emulated network (package netem) for the figures to mean
// anything.
package mobility

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"time"

	"github.com/garou-chat/garou"
)

// room is the one room of every measurement.
const room = "mobility"

// testServer runs a Garou server on 127.0.0.1 until stop.
type testServer struct {
	srv    *garou.Server
	addr   string
	cancel context.CancelFunc
	served chan error
}

func startServer(opts ...garou.ServerOption) (*testServer, error) {
	opts = append([]garou.ServerOption{
		garou.WithAddr("127.0.0.1:0"),
		garou.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))),
		garou.WithRateLimit(0, 0),
		garou.WithPresenceInterval(0),
	}, opts...)
	srv, err := garou.NewServer(opts...)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &testServer{srv: srv, addr: pc.LocalAddr().String(), cancel: cancel, served: make(chan error, 1)}
	go func() {
		s.served <- srv.Serve(ctx, pc)
		pc.Close()
	}()
	return s, nil
}

func (s *testServer) stop() {
	s.cancel()
	<-s.served
}

// dial connects a client to s in the room, with reconnecting off unless
// opts turn it on.
func (s *testServer) dial(ctx context.Context, name string, opts ...garou.ClientOption) (*garou.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	opts = append([]garou.ClientOption{
		garou.WithFingerprint(s.srv.Fingerprint()),
		garou.WithLocalAddr("127.0.0.1:0"),
		garou.WithReconnect(0),
		garou.WithRooms(room),
	}, opts...)
	return garou.Dial(ctx, s.addr, name, opts...)
}

// Quantiles are the p50, p90 and maximum of some durations.
type Quantiles struct {
	N             int
	P50, P90, Max time.Duration
}

// Quantile returns the p50, p90 and maximum of ds (nearest rank).
func Quantile(ds []time.Duration) Quantiles {
	if len(ds) == 0 {
		return Quantiles{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(p float64) time.Duration { return s[int(p*float64(len(s)-1)+0.5)] }
	return Quantiles{N: len(s), P50: at(0.5), P90: at(0.9), Max: s[len(s)-1]}
}

func (q Quantiles) String() string {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }
	return fmt.Sprintf("p50 %s, p90 %s, max %s (%d)", ms(q.P50), ms(q.P90), ms(q.Max), q.N)
}

// arrival is one text as a client's Receive returned it.
type arrival struct {
	seq uint64
	at  time.Time
}

// receiver hands the texts a client receives to a channel.
type receiver struct {
	texts chan arrival
}

func receive(ctx context.Context, c *garou.Client) *receiver {
	r := &receiver{texts: make(chan arrival, 1<<14)}
	go func() {
		for {
			m, err := c.Receive(ctx)
			if err != nil {
				return
			}
			if m.Type != garou.TypeText {
				continue
			}
			select {
			case r.texts <- arrival{m.Seq, time.Now()}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return r
}

// next returns the next text, or an error once ctx ends.
func (r *receiver) next(ctx context.Context) (arrival, error) {
	select {
	case a := <-r.texts:
		return a, nil
	case <-ctx.Done():
		return arrival{}, fmt.Errorf("waiting for a text: %w", ctx.Err())
	}
}
