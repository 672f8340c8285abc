package natsbroker_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/natsbroker"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// nextPresence returns cli's next join or leave.
func nextPresence(t *testing.T, cli *garou.Client) garou.ChatMessage {
	t.Helper()
	for {
		m, err := cli.Receive(ctxT(t))
		require.NoError(t, err)
		if m.Type == garou.TypeJoin || m.Type == garou.TypeLeave {
			return m
		}
	}
}

func names(users []garou.User) []string {
	out := make([]string, len(users))
	for i, u := range users {
		out[i] = u.Name
	}
	return out
}

// Members of a room on two servers see each other: in "joined", in
// member pages and Server.Members, and in joins and leaves, with the
// counts of the whole room; a server cut from NATS has its members leave,
// as lost, once its entries expire.
func TestPresenceAcrossServers(t *testing.T) {
	ns := startNATS(t)
	const ttl = 300 * time.Millisecond
	p := startProxy(t, ns.Addr().String())
	a, _ := newBroker(t, ns, natsbroker.WithNameTTL(ttl))
	b, _ := brokerAt(t, "nats://"+p.addr(), natsbroker.WithNameTTL(ttl))
	srvs := serve(t, a, b)

	ana := dial(t, srvs[0], "ana")
	bo := dial(t, srvs[1], "bo")
	m := nextPresence(t, ana)
	require.Equal(t, garou.TypeJoin, m.Type)
	require.Equal(t, "bo", m.User.Name)
	require.Equal(t, 2, m.Count)
	for _, cli := range []*garou.Client{ana, bo} {
		page, err := cli.Members(ctxT(t), garou.DefaultRoom, "")
		require.NoError(t, err)
		require.Equal(t, 2, page.Count)
		require.ElementsMatch(t, []string{"ana", "bo"}, names(page.Users))
	}
	for _, srv := range srvs {
		require.ElementsMatch(t, []string{"ana", "bo"}, names(srv.Members(garou.DefaultRoom)))
	}

	cy := dial(t, srvs[1], "cy")
	require.Equal(t, "cy", nextPresence(t, ana).User.Name)
	require.Equal(t, "cy", nextPresence(t, bo).User.Name)
	require.NoError(t, cy.Close())
	m = nextPresence(t, ana)
	require.Equal(t, garou.TypeLeave, m.Type)
	require.Equal(t, "cy", m.User.Name)
	require.Equal(t, "quit", m.Reason)
	require.Equal(t, 2, m.Count)
	require.Equal(t, "cy", nextPresence(t, bo).User.Name)

	// The second server is cut from NATS: its entries are no longer
	// renewed, and expire.
	p.cut()
	m = nextPresence(t, ana)
	require.Equal(t, garou.TypeLeave, m.Type)
	require.Equal(t, "bo", m.User.Name)
	require.Equal(t, "lost", m.Reason)
	require.Equal(t, 1, m.Count)
	p.restore()
}

// Members on two servers see a room's joins and leaves as one history:
// the same changes, under the same numbers, in the same order, for
// changes made on both servers at the same instant too; told one by one,
// or gathered into frames.
func TestPresenceOneOrderAcrossServers(t *testing.T) {
	for _, every := range []time.Duration{0, 20 * time.Millisecond} {
		t.Run(fmt.Sprint(every), func(t *testing.T) { presenceOneOrder(t, every) })
	}
}

func presenceOneOrder(t *testing.T, every time.Duration) {
	ns := startNATS(t)
	a, _ := newBroker(t, ns)
	b, _ := newBroker(t, ns)
	srvs := serveWith(t, []garou.ServerOption{garou.WithPresenceInterval(every)}, a, b)
	ana := dial(t, srvs[0], "ana")
	bo := dial(t, srvs[1], "bo")
	require.Equal(t, "bo", nextPresence(t, ana).User.Name)

	const n = 6
	type change struct {
		op   garou.MessageType
		name string
		seq  uint64
	}
	seen := func(cli *garou.Client) []change {
		var out []change
		for range n {
			m := nextPresence(t, cli)
			out = append(out, change{m.Type, m.User.Name, m.Seq})
		}
		return out
	}
	same := func() {
		a, b := seen(ana), seen(bo)
		require.Equal(t, a, b)
		for i := 1; i < n; i++ {
			require.Greater(t, a[i].seq, a[i-1].seq, "%v", a)
		}
	}

	// n clients, half on each server, dial at the same instant.
	cls := make([]*garou.Client, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		srv := srvs[i%2]
		wg.Go(func() {
			<-start
			cls[i], errs[i] = garou.Dial(ctxT(t), srv.Addr().String(), fmt.Sprint("c", i), garou.WithFingerprint(srv.Fingerprint()))
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err)
		t.Cleanup(func() { cls[i].Close() })
	}
	same()
	if every == 0 {
		// No joiner is told its own join: every change was told on
		// both servers (same), so before a text said after it.
		require.NoError(t, ana.Send(ctxT(t), "mark"))
		for i, c := range cls {
			for {
				m, err := c.Receive(ctxT(t))
				require.NoError(t, err)
				if m.Type == garou.TypeText {
					break
				}
				if m.Type == garou.TypeJoin {
					require.NotEqual(t, fmt.Sprint("c", i), m.User.Name)
				}
			}
		}
	}
	// And leave at the same instant.
	for i, c := range cls {
		wg.Go(func() { errs[i] = c.Close() })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	same()
}

// A member who joins, and one who leaves, on a server cut from NATS are
// told to every member once NATS is back: the join, and the leave with
// its reason (not later as "lost"), under one order on both servers.
func TestPresenceThroughOutage(t *testing.T) {
	srvs, p, nc := servedCut(t)
	ana := dial(t, srvs[0], "ana")
	dee := dial(t, srvs[1], "dee")
	bo := dial(t, srvs[1], "bo", garou.WithRooms())
	require.Equal(t, "dee", nextPresence(t, ana).User.Name)

	reconnected := nc.StatusChanged(nats.CONNECTED)
	p.cut()
	_, err := bo.Join(ctxT(t), garou.DefaultRoom, 0)
	require.NoError(t, err)
	require.NoError(t, dee.Leave(ctxT(t), garou.DefaultRoom))
	p.restore()
	<-reconnected

	type change struct {
		op     garou.MessageType
		name   string
		reason string
		seq    uint64
	}
	seen := func(cli *garou.Client, n int) []change {
		var out []change
		for range n {
			m := nextPresence(t, cli)
			out = append(out, change{m.Type, m.User.Name, m.Reason, m.Seq})
		}
		return out
	}
	atAna := seen(ana, 2)
	require.ElementsMatch(t, []string{"bo", "dee"}, []string{atAna[0].name, atAna[1].name})
	for _, c := range atAna {
		if c.name == "bo" {
			require.Equal(t, garou.TypeJoin, c.op)
		} else {
			require.Equal(t, garou.TypeLeave, c.op)
			require.Equal(t, "left", c.reason)
		}
	}
	// bo, joined on its own server meanwhile, hears dee's leave as ana
	// does, under the same number.
	for {
		c := seen(bo, 1)[0]
		if c.name == "dee" {
			require.Contains(t, atAna, c)
			break
		}
	}
	for _, srv := range srvs {
		eventually(t, func() bool {
			got := names(srv.Members(garou.DefaultRoom))
			return len(got) == 2 && slices.Contains(got, "ana") && slices.Contains(got, "bo")
		})
	}
}
