package natsbroker_test

import (
	"testing"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/require"
)

// Server.Users and the "users" request list and count the users of every
// server: those welcomed elsewhere before the first call at once, later
// changes as soon as the watch hears of them.
func TestUsersAcrossServers(t *testing.T) {
	ns := startNATS(t)
	srvs := nodes(t, ns, 2)
	ana := dial(t, srvs[0], "ana", garou.WithRooms())
	bo := dial(t, srvs[1], "bo", garou.WithRooms())
	cy := dial(t, srvs[1], "cy", garou.WithRooms())

	for _, srv := range srvs {
		require.ElementsMatch(t, []string{"ana", "bo", "cy"}, names(srv.Users()))
	}
	for _, cli := range []*garou.Client{ana, bo} {
		page, err := cli.Users(ctxT(t), "")
		require.NoError(t, err)
		require.Equal(t, 3, page.Count)
		require.ElementsMatch(t, []string{"ana", "bo", "cy"}, names(page.Users))
	}

	require.NoError(t, cy.Close())
	eventually(t, func() bool { return len(srvs[0].Users()) == 2 })
	require.ElementsMatch(t, []string{"ana", "bo"}, names(srvs[0].Users()))
	dial(t, srvs[1], "dy", garou.WithRooms())
	eventually(t, func() bool {
		page, err := ana.Users(ctxT(t), "")
		return err == nil && page.Count == 3
	})
	page, err := ana.Users(ctxT(t), "")
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"ana", "bo", "dy"}, names(page.Users))
}
