package garou_test

import (
	"testing"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/require"
)

func TestTextReachesEveryoneIncludingSender(t *testing.T) {
	srv := startServer(t)
	alice := dial(t, srv, "alice")
	bob := dial(t, srv, "bob")
	j := next(t, alice, garou.TypeJoin)
	require.Equal(t, "bob", j.User.Name)
	require.Equal(t, garou.DefaultRoom, j.Room)

	require.NoError(t, bob.Send(ctxT(t), "hello"))
	for _, c := range []*garou.Client{alice, bob} {
		m := next(t, c, garou.TypeText)
		require.Equal(t, "hello", m.Text)
		require.Equal(t, "bob", m.From.Name)
		require.Equal(t, bob.User().ID, m.From.ID)
		require.Equal(t, uint64(1), m.Seq)
		require.NotEmpty(t, m.ID)
		require.False(t, m.Time.IsZero())
	}
	users, err := alice.Users(ctxT(t), "")
	require.NoError(t, err)
	require.Len(t, users.Users, 2)
	require.Equal(t, 2, users.Count)
	require.Empty(t, users.Next)
	require.Equal(t, "alice", users.Users[0].Name)
	require.Len(t, srv.Users(), 2)
}
