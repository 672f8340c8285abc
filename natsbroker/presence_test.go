package natsbroker_test

import (
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/natsbroker"
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
