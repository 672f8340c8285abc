package pebblestore_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/pebblestore"
	"github.com/stretchr/testify/require"
)

// TestServer: a garou.Server over QUIC on 127.0.0.1 keeps its texts in
// the store: a client's texts are acknowledged once on disk, and a client
// joining later with history receives them from the database.
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

// TestRestart: a server restarted on the same address, data directory and
// history database (closed and opened again between the runs) presents the
// same certificate and numbers on from the database: a client resumes by
// number, with no gap and nothing twice.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "history")
	addr := "127.0.0.1:0"
	run := func(store *pebblestore.Store) (*garou.Server, func()) {
		srv, err := garou.NewServer(garou.WithHistoryStore(store), garou.WithDataDir(dir),
			garou.WithLogger(slog.New(slog.DiscardHandler)))
		require.NoError(t, err)
		pc, err := net.ListenPacket("udp", addr)
		require.NoError(t, err)
		addr = pc.LocalAddr().String()
		served := make(chan error, 1)
		go func() { served <- srv.Serve(context.Background(), pc) }()
		<-srv.Ready()
		return srv, func() {
			require.NoError(t, srv.Shutdown(ctxT(t)))
			require.NoError(t, <-served)
			pc.Close()
		}
	}
	first, err := pebblestore.Open(path, quietLog)
	require.NoError(t, err)
	srv, stop := run(first)
	fp, epoch := srv.Fingerprint(), first.Epoch()
	resumed := make(chan struct{}, 1)
	alice, err := garou.Dial(ctxT(t), addr, "alice", garou.WithFingerprint(fp),
		garou.WithReconnectBackoff(time.Millisecond, 50*time.Millisecond),
		garou.WithStateHandler(func(sc garou.StateChange) {
			if sc.State == garou.StateResumed {
				resumed <- struct{}{}
			}
		}))
	require.NoError(t, err)
	defer alice.Close()
	for _, s := range []string{"one", "two"} {
		require.NoError(t, alice.Send(ctxT(t), s))
	}
	stop()
	require.NoError(t, first.Close())

	second := openAt(t, path)
	require.Equal(t, epoch, second.Epoch(), "the database's history")
	last, err := second.LastSeq(ctxT(t), garou.DefaultRoom)
	require.NoError(t, err)
	require.Equal(t, uint64(2), last)
	srv, stop = run(second)
	defer stop()
	require.Equal(t, fp, srv.Fingerprint())
	<-resumed
	_, err = srv.Publish(ctxT(t), garou.DefaultRoom, "three")
	require.NoError(t, err)
	var texts []garou.ChatMessage
	for len(texts) < 3 {
		m, err := alice.Receive(ctxT(t))
		require.NoError(t, err)
		require.NotEqual(t, garou.TypeGap, m.Type, "%+v", m)
		if m.Type == garou.TypeText {
			texts = append(texts, m)
		}
	}
	for i, m := range texts {
		require.Equal(t, uint64(i+1), m.Seq, "%q", m.Text)
	}
	require.Equal(t, "three", texts[2].Text)
}

// TestLastSeqFloor: a room forgotten leaves its last number as a floor,
// kept in the database, so that no room made anew reuses a number.
func TestLastSeqFloor(t *testing.T) {
	s, path := open(t)
	for seq := uint64(1); seq <= 5; seq++ {
		require.NoError(t, s.Append(ctxT(t), "gone", garou.ChatMessage{Type: garou.TypeText, Seq: seq, Text: "x"}))
	}
	require.NoError(t, s.Forget(ctxT(t), "gone"))
	last, err := s.LastSeq(ctxT(t), "new")
	require.NoError(t, err)
	require.Equal(t, uint64(5), last)
	epoch := s.Epoch()
	require.NoError(t, s.Close())
	again := openAt(t, path)
	last, err = again.LastSeq(ctxT(t), "gone")
	require.NoError(t, err)
	require.Equal(t, uint64(5), last)
	require.Equal(t, epoch, again.Epoch())
}

// TestServerPipelined: the store is an AppendStarter, so the texts of one
// room said at once share commits; every member still gets the room's
// texts numbered 1, 2, 3, … in order, each acknowledged one is on disk,
// and texts share commits.
func TestServerPipelined(t *testing.T) {
	store, _ := open(t)
	var _ garou.AppendStarter = store
	srv, err := garou.NewServer(garou.WithHistoryStore(store), garou.WithRateLimit(0, 0),
		garou.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(t, err)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), pc) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Close())
		require.NoError(t, <-served)
		pc.Close()
	})
	<-srv.Ready()
	const senders, each = 4, 50
	clients := make([]*garou.Client, senders)
	for i := range clients {
		c, err := garou.Dial(ctxT(t), srv.Addr().String(), fmt.Sprint("u", i), garou.WithFingerprint(srv.Fingerprint()), garou.WithRooms("den"))
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		clients[i] = c
	}
	commits0, taken0 := store.Commits(), store.Taken()
	errc := make(chan error, senders*8)
	for _, c := range clients {
		for range 8 { // 8 texts in flight per client
			go func() {
				for range each / 8 {
					if _, err := c.SendTo(ctxT(t), "den", "x"); err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
		}
	}
	for range senders * 8 {
		require.NoError(t, <-errc)
	}
	total := senders * (each / 8) * 8
	for _, c := range clients {
		for want := uint64(1); want <= uint64(total); {
			m, err := c.Receive(ctxT(t))
			require.NoError(t, err)
			if m.Type == garou.TypeText {
				require.Equal(t, want, m.Seq)
				want++
			}
		}
	}
	kept, _, err := store.After(ctxT(t), "den", 0)
	require.NoError(t, err)
	require.Len(t, kept, min(total, garou.DefaultHistorySize))
	require.Equal(t, uint64(total), kept[len(kept)-1].Seq)
	commits, taken := store.Commits(), store.Taken()
	require.Less(t, commits-commits0, taken-taken0, "texts of one room shared commits")
}
