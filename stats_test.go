package garou_test

import (
	"testing"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/require"
)

// TestStats: the counters follow what the server did, and the state what
// it holds.
func TestStats(t *testing.T) {
	srv := startServer(t)
	alice := dial(t, srv, "alice")
	dial(t, srv, "bob")
	m := rawDial(t, srv)
	m.hello("mallory")
	for range 3 {
		require.NoError(t, alice.Send(ctxT(t), "hi"))
	}
	require.NoError(t, alice.SendDirect(ctxT(t), "bob", "psst"))
	m.send(`{"type":"text","ref":7,"from":{"id":"1","name":"x"},"text":"spoof"}`)
	m.expectError(garou.CodeBadFrame, 7)
	require.NoError(t, srv.Kick("bob", "bye"))

	st := srv.Stats()
	require.Equal(t, uint64(3), st.Welcomes)
	require.Zero(t, st.Resumes)
	require.Equal(t, uint64(3), st.Texts)
	require.Equal(t, uint64(9), st.Deliveries, "three texts to three members")
	require.Equal(t, uint64(1), st.Directs)
	require.Equal(t, map[garou.ErrorCode]uint64{garou.CodeBadFrame: 1}, st.Refusals)
	require.Equal(t, uint64(1), st.Closes[garou.CloseKicked])
	require.Equal(t, uint64(3), st.HistoryAppends)
	require.Zero(t, st.HistoryErrors)
	require.Positive(t, st.HistoryTime)
	require.Positive(t, st.BytesIn)
	require.Positive(t, st.BytesOut)
	require.Equal(t, 1, st.Rooms)
	require.LessOrEqual(t, st.Members, 3)
	require.GreaterOrEqual(t, st.Connections, 2)
	require.Zero(t, st.Handshakes)
	require.GreaterOrEqual(t, st.QueuedBytes, st.MaxQueuedBytes)
}
