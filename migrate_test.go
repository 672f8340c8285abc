package garou_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMigrateMidBurst: a client that moves to a new UDP socket three times
// while texts flow both ways receives exactly what a client that never
// moved receives, in the same order; nobody sees it leave, and it never
// reconnects.
func TestMigrateMidBurst(t *testing.T) {
	srv := startServer(t, garou.WithPresenceInterval(0), garou.WithRateLimit(0, 0))
	var mu sync.Mutex
	var states []garou.ConnState
	var socks []*countingConn
	mover := dial(t, srv, "mover", garou.WithStateHandler(func(sc garou.StateChange) {
		mu.Lock()
		states = append(states, sc.State)
		mu.Unlock()
	}), garou.WithPacketConn(func(context.Context) (net.PacketConn, error) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		c := &countingConn{PacketConn: pc}
		mu.Lock()
		socks = append(socks, c)
		mu.Unlock()
		return c, nil
	}))
	still := dial(t, srv, "still")
	next(t, mover, garou.TypeJoin) // still is in

	const each = 150
	var wg sync.WaitGroup
	for _, c := range []*garou.Client{mover, still} {
		wg.Go(func() {
			for k := range each {
				if c == mover && k%40 == 39 {
					// Three moves inside the burst: still keeps
					// sending meanwhile.
					assert.NoError(t, mover.Migrate(ctxT(t)))
				}
				assert.NoError(t, c.Send(ctxT(t), fmt.Sprintf("%s %d", c.User().Name, k)))
			}
		})
	}

	// What each receives: every text once, no gap, no presence about the
	// other.
	recv := func(c *garou.Client) []uint64 {
		var seqs []uint64
		for len(seqs) < 2*each {
			m, err := c.Receive(ctxT(t))
			require.NoError(t, err)
			switch m.Type {
			case garou.TypeText:
				seqs = append(seqs, m.Seq)
			case garou.TypeJoin, garou.TypeLeave, garou.TypePresence, garou.TypeGap, garou.TypeError:
				t.Errorf("%s received %s %+v", c.User().Name, m.Type, m)
			}
		}
		return seqs
	}
	var moved, stayed []uint64
	var rw sync.WaitGroup
	rw.Go(func() { moved = recv(mover) })
	rw.Go(func() { stayed = recv(still) })
	rw.Wait()
	wg.Wait()
	require.Equal(t, stayed, moved, "the mover's sequence equals the still client's")
	for i, s := range stayed {
		require.Equal(t, stayed[0]+uint64(i), s, "dense, in order")
	}
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []garou.ConnState{garou.StateConnecting, garou.StateConnected}, states, "no reconnect")
	require.Len(t, srv.Users(), 2)
	require.Len(t, socks, 4, "one socket, then one per move")
	for i, c := range socks {
		require.NotZero(t, c.writes.Load(), "socket %d carried the connection", i)
	}
}

// countingConn counts the packets written on a socket.
type countingConn struct {
	net.PacketConn
	writes atomic.Int64
}

func (c *countingConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.writes.Add(1)
	return c.PacketConn.WriteTo(b, addr)
}

// TestNATRebinding: a NAT that gives the client a new address mid-burst
// (the server sees its packets come from another port) does not end the
// connection: the server validates the new path and carries on.
func TestNATRebinding(t *testing.T) {
	srv := startServer(t, garou.WithRateLimit(0, 0))
	nat := newRebindingNAT(t, addrOf(srv))
	var mu sync.Mutex
	var states []garou.ConnState
	cli, err := garou.Dial(ctxT(t), nat.addr(), "behind-nat", garou.WithFingerprint(srv.Fingerprint()),
		garou.WithStateHandler(func(sc garou.StateChange) {
			mu.Lock()
			states = append(states, sc.State)
			mu.Unlock()
		}))
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	const total = 90
	var got []uint64
	for k := range total {
		if k%30 == 29 {
			nat.rebind()
		}
		require.NoError(t, cli.Send(ctxT(t), fmt.Sprint(k)))
	}
	for len(got) < total {
		got = append(got, next(t, cli, garou.TypeText).Seq)
	}
	for i, s := range got {
		require.Equal(t, got[0]+uint64(i), s)
	}
	require.GreaterOrEqual(t, nat.bindings(), 4, "the server saw the client at four addresses")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []garou.ConnState{garou.StateConnecting, garou.StateConnected}, states, "no reconnect")
}

// rebindingNAT relays UDP between one client and a server, like a NAT:
// the server sees the relay's outside socket, which rebind replaces.
type rebindingNAT struct {
	t      *testing.T
	inside net.PacketConn // the client sends here
	server net.Addr
	wg     sync.WaitGroup

	mu      sync.Mutex
	client  net.Addr
	outside net.PacketConn
	n       int
}

func newRebindingNAT(t *testing.T, server string) *rebindingNAT {
	inside, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	saddr, err := net.ResolveUDPAddr("udp", server)
	require.NoError(t, err)
	n := &rebindingNAT{t: t, inside: inside, server: saddr}
	n.rebind()
	n.wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			k, from, err := inside.ReadFrom(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.client = from
			out := n.outside
			n.mu.Unlock()
			_, _ = out.WriteTo(buf[:k], n.server)
		}
	})
	t.Cleanup(func() {
		inside.Close()
		n.mu.Lock()
		n.outside.Close()
		n.mu.Unlock()
		n.wg.Wait()
	})
	return n
}

func (n *rebindingNAT) addr() string { return n.inside.LocalAddr().String() }

// rebind gives the client a new outside address; packets the server sends
// to the old one are dropped, as a NAT does once a binding expires.
func (n *rebindingNAT) rebind() {
	out, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(n.t, err)
	n.mu.Lock()
	old := n.outside
	n.outside = out
	n.n++
	n.mu.Unlock()
	if old != nil {
		old.Close()
	}
	n.wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			k, _, err := out.ReadFrom(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			to := n.client
			n.mu.Unlock()
			_, _ = n.inside.WriteTo(buf[:k], to)
		}
	})
}

func (n *rebindingNAT) bindings() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.n
}
