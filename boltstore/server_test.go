package boltstore_test

import (
	"context"
	"log/slog"
	"net"
	"testing"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/require"
)

// TestServer: a garou.Server over QUIC on 127.0.0.1 keeps its texts in
// the store: a client's texts are acknowledged once on disk, and a client
// joining later with history receives them from the file.
func TestServer(t *testing.T) {
	store, _ := open(t)
	srv, err := garou.NewServer(garou.WithHistoryStore(store), garou.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(t, err)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), pc) }()
	t.Cleanup(func() { // before the store's Close, registered earlier
		require.NoError(t, srv.Close())
		require.NoError(t, <-served)
		pc.Close()
	})
	<-srv.Ready()
	dial := func(name string, opts ...garou.ClientOption) *garou.Client {
		c, err := garou.Dial(ctxT(t), srv.Addr().String(), name,
			append([]garou.ClientOption{garou.WithFingerprint(srv.Fingerprint())}, opts...)...)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}

	alice := dial("alice", garou.WithRooms("den"))
	said := []string{"one", "two", "three"}
	for i, s := range said {
		seq, err := alice.SendTo(ctxT(t), "den", s)
		require.NoError(t, err)
		require.Equal(t, uint64(i+1), seq)
	}
	kept, oldest, err := store.After(ctxT(t), "den", 0)
	require.NoError(t, err)
	require.Len(t, kept, len(said), "acknowledged, so on disk")
	require.Equal(t, uint64(1), oldest)
	require.Equal(t, "alice", kept[0].From.Name)
	require.Nil(t, kept[0].From.Data)

	bob := dial("bob") // in garou.DefaultRoom only: joining "den" replays it
	_, err = bob.Join(ctxT(t), "den", 10)
	require.NoError(t, err)
	for i, s := range said {
		var m garou.ChatMessage
		for m.Type != garou.TypeText {
			m, err = bob.Receive(ctxT(t))
			require.NoError(t, err)
		}
		require.Equal(t, s, m.Text)
		require.Equal(t, uint64(i+1), m.Seq)
		require.Equal(t, "alice", m.From.Name)
		require.Equal(t, kept[i].ID, m.ID)
		require.True(t, kept[i].Time.Equal(m.Time))
	}
}
