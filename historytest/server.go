package historytest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/garou-chat/garou"
)

// Durable is what RunServer needs of a store: a garou.SeqKeeper that is
// closed, idempotently, by Close.
type Durable interface {
	garou.SeqKeeper
	Close() error
}

// Committer is an optional interface of a Durable that is a
// garou.AppendStarter: how many batches its committer has begun, and how
// many appends and forgets they took. With it, RunServer also checks that
// the texts of one room said at once share commits.
type Committer interface {
	Commits() int64
	Taken() int64
}

// RunServer runs a garou.Server over QUIC on 127.0.0.1 on the stores made
// by open, in subtests of t: texts acknowledged are kept, and replayed from
// the store to a client joining later; a server restarted on the same
// data directory and store numbers on, and its client resumes with no
// gap and nothing twice; a forgotten room leaves its last number as a
// floor across a reopen; and, for an AppendStarter, the texts of one room
// said at once are delivered in order, each once. open opens the store at
// path (a fresh one for a new path) or fails t, and arranges with
// t.Cleanup for it to be closed.
func RunServer(t *testing.T, open func(t *testing.T, path string) Durable) {
	t.Helper()
	t.Run("kept and replayed", func(t *testing.T) { serverKeeps(t, open) })
	t.Run("restart", func(t *testing.T) { serverRestarts(t, open) })
	t.Run("floor", func(t *testing.T) { storeFloor(t, open) })
	t.Run("pipelined", func(t *testing.T) { serverPipelined(t, open) })
}

// timeout bounds a subtest's calls, and a stop in its cleanup.
func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// serve runs srv on addr until the test ends (or stop), and returns the
// address it listens on.
func serve(ctx context.Context, t *testing.T, srv *garou.Server, addr string) (string, func()) {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	must(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), pc) }()
	<-srv.Ready()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		must(t, srv.Shutdown(ctx))
		must(t, <-served)
		pc.Close()
	}
	t.Cleanup(stop) // before the store's Close, registered earlier
	return pc.LocalAddr().String(), stop
}

func dial(ctx context.Context, t *testing.T, srv *garou.Server, addr, name string, opts ...garou.ClientOption) *garou.Client {
	t.Helper()
	c, err := garou.Dial(ctx, addr, name, append([]garou.ClientOption{garou.WithFingerprint(srv.Fingerprint())}, opts...)...)
	must(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func serverKeeps(t *testing.T, open func(*testing.T, string) Durable) {
	ctx := timeout(t)
	store := open(t, filepath.Join(t.TempDir(), "history"))
	srv, err := garou.NewServer(garou.WithHistoryStore(store), garou.WithLogger(discard))
	must(t, err)
	addr, _ := serve(ctx, t, srv, "127.0.0.1:0")
	alice := dial(ctx, t, srv, addr, "alice", garou.WithRooms("den"))
	said := []string{"one", "two", "three"}
	for i, s := range said {
		seq, err := alice.SendTo(ctx, "den", s)
		must(t, err)
		if seq != uint64(i+1) {
			t.Fatalf("%q numbered %d, want %d", s, seq, i+1)
		}
	}
	kept, oldest, err := store.After(ctx, "den", 0)
	must(t, err)
	if len(kept) != len(said) || oldest != 1 {
		t.Fatalf("acknowledged, so kept: got %d texts from %d, want %d from 1", len(kept), oldest, len(said))
	}
	if kept[0].From.Name != "alice" || kept[0].From.Data != nil {
		t.Fatalf("kept from %+v", kept[0].From)
	}

	bob := dial(ctx, t, srv, addr, "bob") // in garou.DefaultRoom only: joining "den" replays it
	_, err = bob.Join(ctx, "den", 10)
	must(t, err)
	for i, s := range said {
		var m garou.ChatMessage
		for m.Type != garou.TypeText {
			m, err = bob.Receive(ctx)
			must(t, err)
		}
		if m.Text != s || m.Seq != uint64(i+1) || m.From.Name != "alice" || m.ID != kept[i].ID || !kept[i].Time.Equal(m.Time) {
			t.Fatalf("replayed %+v, kept %+v", m, kept[i])
		}
	}
}

func serverRestarts(t *testing.T, open func(*testing.T, string) Durable) {
	ctx := timeout(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "history")
	run := func(store Durable, addr string) (*garou.Server, string, func()) {
		srv, err := garou.NewServer(garou.WithHistoryStore(store), garou.WithDataDir(dir), garou.WithLogger(discard))
		must(t, err)
		addr, stop := serve(ctx, t, srv, addr)
		return srv, addr, stop
	}
	first := open(t, path)
	srv, addr, stop := run(first, "127.0.0.1:0")
	fp, epoch := srv.Fingerprint(), first.Epoch()
	resumed := make(chan struct{}, 1)
	alice := dial(ctx, t, srv, addr, "alice",
		garou.WithReconnectBackoff(time.Millisecond, 50*time.Millisecond),
		garou.WithStateHandler(func(sc garou.StateChange) {
			if sc.State == garou.StateResumed {
				resumed <- struct{}{}
			}
		}))
	for _, s := range []string{"one", "two"} {
		must(t, alice.Send(ctx, s))
	}
	stop()
	must(t, first.Close())

	second := open(t, path)
	if second.Epoch() != epoch {
		t.Fatalf("epoch %q after a reopen, want the store's %q", second.Epoch(), epoch)
	}
	last, err := second.LastSeq(ctx, garou.DefaultRoom)
	must(t, err)
	if last != 2 {
		t.Fatalf("LastSeq %d after a reopen, want 2", last)
	}
	srv, _, _ = run(second, addr)
	if srv.Fingerprint() != fp {
		t.Fatal("another certificate after a restart")
	}
	<-resumed
	_, err = srv.Publish(ctx, garou.DefaultRoom, "three")
	must(t, err)
	var texts []garou.ChatMessage
	for len(texts) < 3 {
		m, err := alice.Receive(ctx)
		must(t, err)
		switch m.Type {
		case garou.TypeGap:
			t.Fatalf("a gap: %+v", m)
		case garou.TypeText:
			texts = append(texts, m)
		}
	}
	for i, m := range texts {
		if m.Seq != uint64(i+1) {
			t.Fatalf("%q numbered %d, want %d", m.Text, m.Seq, i+1)
		}
	}
	if texts[2].Text != "three" {
		t.Fatalf("third text %q", texts[2].Text)
	}
}

func storeFloor(t *testing.T, open func(*testing.T, string) Durable) {
	ctx := timeout(t)
	path := filepath.Join(t.TempDir(), "history")
	s := open(t, path)
	for seq := uint64(1); seq <= 5; seq++ {
		must(t, s.Append(ctx, "gone", garou.ChatMessage{Type: garou.TypeText, Seq: seq, Text: "x"}))
	}
	must(t, s.Forget(ctx, "gone"))
	last, err := s.LastSeq(ctx, "new")
	must(t, err)
	if last != 5 {
		t.Fatalf("a new room's LastSeq %d, want the floor 5", last)
	}
	epoch := s.Epoch()
	must(t, s.Close())
	again := open(t, path)
	last, err = again.LastSeq(ctx, "gone")
	must(t, err)
	if last != 5 || again.Epoch() != epoch {
		t.Fatalf("after a reopen: LastSeq %d, epoch %q; want 5, %q", last, again.Epoch(), epoch)
	}
}

func serverPipelined(t *testing.T, open func(*testing.T, string) Durable) {
	ctx := timeout(t)
	store := open(t, filepath.Join(t.TempDir(), "history"))
	if _, ok := store.(garou.AppendStarter); !ok {
		t.Skip("not an AppendStarter")
	}
	srv, err := garou.NewServer(garou.WithHistoryStore(store), garou.WithRateLimit(0, 0), garou.WithLogger(discard))
	must(t, err)
	addr, _ := serve(ctx, t, srv, "127.0.0.1:0")
	const senders, each = 4, 50
	clients := make([]*garou.Client, senders)
	for i := range clients {
		clients[i] = dial(ctx, t, srv, addr, fmt.Sprint("u", i), garou.WithRooms("den"))
	}
	cm, counts := store.(Committer)
	var commits0, taken0 int64
	if counts {
		commits0, taken0 = cm.Commits(), cm.Taken()
	}
	errc := make(chan error, senders*8)
	for _, c := range clients {
		for range 8 { // 8 texts in flight per client
			go func() {
				for range each / 8 {
					if _, err := c.SendTo(ctx, "den", "x"); err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
		}
	}
	for range senders * 8 {
		must(t, <-errc)
	}
	total := senders * (each / 8) * 8
	for _, c := range clients {
		for want := uint64(1); want <= uint64(total); {
			m, err := c.Receive(ctx)
			must(t, err)
			if m.Type == garou.TypeText {
				if m.Seq != want {
					t.Fatalf("text %d received as %d", want, m.Seq)
				}
				want++
			}
		}
	}
	kept, _, err := store.After(ctx, "den", 0)
	must(t, err)
	if len(kept) != min(total, garou.DefaultHistorySize) || kept[len(kept)-1].Seq != uint64(total) {
		t.Fatalf("kept %d texts, the last %d; want %d, the last %d", len(kept), kept[len(kept)-1].Seq, min(total, garou.DefaultHistorySize), total)
	}
	if counts {
		if commits, taken := cm.Commits()-commits0, cm.Taken()-taken0; commits >= taken {
			t.Fatalf("%d commits for %d texts: texts of one room did not share commits", commits, taken)
		}
	}
}
