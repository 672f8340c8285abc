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
