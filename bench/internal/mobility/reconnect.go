package mobility

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/garou-chat/garou"
)

// ReconnectConfig is what Reconnect does.
type ReconnectConfig struct {
	// Reps is how many times each of the two clients is cut and comes
	// back.
	Reps int
	// Missed is how many texts another member says while a client is
	// away.
	Missed int
}

// ReconnectResult is what Reconnect measured: for each reconnect, the
// time from the network coming back to the first missed text returned by
// Receive, without 0-RTT (Plain) and with it (Early).
type ReconnectResult struct {
	Plain, Early []time.Duration
	// EarlyHellos counts the Early client's reconnects whose hello the
	// server took in 0-RTT; PlainEarly the Plain client's (always 0).
	EarlyHellos, PlainEarly int
	// Lost and Duplicated count missed texts that did not arrive, or
	// arrived twice, out of Missed per reconnect.
	Lost, Duplicated int
}

// gate opens a client's UDP sockets (garou.WithPacketConn). cut closes
// the current socket, as when the device loses its network; the next
// socket waits until open, as until the network is back.
type gate struct {
	mu      sync.Mutex
	cur     net.PacketConn
	hold    chan struct{}
	waiting chan struct{} // told when a socket waits at the gate
}

func newGate() *gate { return &gate{waiting: make(chan struct{}, 1)} }

func (g *gate) listen(ctx context.Context) (net.PacketConn, error) {
	g.mu.Lock()
	hold := g.hold
	g.mu.Unlock()
	if hold != nil {
		select {
		case g.waiting <- struct{}{}:
		default:
		}
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.cur = pc
	g.mu.Unlock()
	return pc, nil
}

func (g *gate) cut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hold = make(chan struct{})
	g.cur.Close()
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.hold)
	g.hold = nil
}

// away is one measured client.
type away struct {
	c      *garou.Client
	g      *gate
	r      *receiver
	states chan garou.ConnState
	last   uint64 // the last text it received
	times  *[]time.Duration
	early  bool
}

// Reconnect measures how soon a client that lost its network gets what it
// missed once the network is back, with and without 0-RTT, in turns.
//
// Two clients are in a room with a third that talks: one dials with
// garou.WithZeroRTT, the other without. In each turn a client's socket is
// closed under it (the server is not told, as when a phone loses its
// network) and its next socket is held back. Once it waits, the third
// client says cfg.Missed texts (each acknowledged by the server); then
// its socket may open, and the clock starts. The client reconnects as it
// does after any lost connection: a new socket and QUIC connection that
// resumes its TLS session, and a hello that resumes its Garou session
// after the last text it received. The clock stops when Receive returns
// the first text it missed. Each reconnect resumes with the ticket of the
// one before.
func Reconnect(ctx context.Context, cfg ReconnectConfig) (ReconnectResult, error) {
	var res ReconnectResult
	if cfg.Reps < 1 || cfg.Missed < 1 {
		return res, errors.New("mobility: Reps and Missed must be at least 1")
	}
	s, err := startServer()
	if err != nil {
		return res, err
	}
	defer s.stop()
	rctx, stopReceiving := context.WithCancel(ctx)
	defer stopReceiving()

	talker, err := s.dial(ctx, "talker")
	if err != nil {
		return res, err
	}
	defer talker.Close()
	go func() { // the talker drains what it is sent
		for {
			if _, err := talker.Receive(rctx); err != nil {
				return
			}
		}
	}()
	clients := make([]*away, 2)
	for i, early := range []bool{false, true} {
		a := &away{g: newGate(), states: make(chan garou.ConnState, 64), early: early, times: &res.Plain}
		opts := []garou.ClientOption{
			garou.WithPacketConn(a.g.listen),
			garou.WithReconnect(3),
			garou.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond),
			garou.WithStateHandler(func(sc garou.StateChange) {
				select {
				case a.states <- sc.State:
				default:
				}
			}),
		}
		name := "plain"
		if early {
			opts = append(opts, garou.WithZeroRTT())
			name, a.times = "early", &res.Early
		}
		if a.c, err = s.dial(ctx, name, opts...); err != nil {
			return res, err
		}
		defer a.c.Close()
		a.r = receive(rctx, a.c)
		clients[i] = a
	}

	var lastSaid uint64
	for rep := range cfg.Reps {
		for _, a := range clients {
			if err := a.once(ctx, s, talker, cfg.Missed, rep, &lastSaid, &res); err != nil {
				return res, err
			}
		}
	}
	return res, nil
}

// once cuts a, has the talker say missed texts, lets a come back and
// times the first missed text.
func (a *away) once(ctx context.Context, s *testServer, talker *garou.Client, missed, rep int, lastSaid *uint64, res *ReconnectResult) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	// Caught up first: everything said so far has arrived.
	for a.last < *lastSaid {
		t, err := a.r.next(ctx)
		if err != nil {
			return err
		}
		a.last = t.seq
	}
	before := s.srv.Stats().EarlyHellos
	a.g.cut()
	select {
	case <-a.g.waiting:
	case <-ctx.Done():
		return fmt.Errorf("mobility: the cut client did not try to reconnect: %w", ctx.Err())
	}
	var first uint64
	for k := range missed {
		seq, err := talker.SendTo(ctx, room, "missed "+strconv.Itoa(rep)+" "+strconv.Itoa(k))
		if err != nil {
			return fmt.Errorf("mobility: say: %w", err)
		}
		if k == 0 {
			first = seq
		}
		*lastSaid = seq
	}
	start := time.Now()
	a.g.open()
	got := 0
	for a.last < *lastSaid {
		t, err := a.r.next(ctx)
		if err != nil {
			return err
		}
		switch {
		case t.seq <= a.last:
			res.Duplicated++
			continue
		case t.seq == first:
			*a.times = append(*a.times, t.at.Sub(start))
		}
		if t.seq >= first {
			got++
		}
		a.last = t.seq
	}
	res.Lost += missed - got
	for st := range a.states {
		if st == garou.StateResumed {
			break
		}
		if st == garou.StateClosed {
			return fmt.Errorf("mobility: the client ended: %v", a.c.Err())
		}
	}
	if n := int(s.srv.Stats().EarlyHellos - before); a.early {
		res.EarlyHellos += n
	} else {
		res.PlainEarly += n
	}
	return nil
}
