package pebblestore_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/pebblestore"
	"github.com/stretchr/testify/require"
)

// waitFor waits until cond holds, yielding meanwhile.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10 s")
		}
		runtime.Gosched()
	}
}

// appendAll appends texts from..to of room.
func appendAll(t *testing.T, s garou.HistoryStore, room string, from, to uint64) {
	t.Helper()
	for seq := from; seq <= to; seq++ {
		require.NoError(t, s.Append(ctxT(t), room, text(room, seq)))
	}
}

func requireKept(t *testing.T, s garou.HistoryStore, room string, oldest uint64, want ...uint64) {
	t.Helper()
	msgs, o, err := s.After(ctxT(t), room, 0)
	require.NoError(t, err)
	require.Equal(t, texts(room, want...), msgs)
	require.Equal(t, oldest, o)
}

// TestDurableAcrossReopen: what was appended is there after Close and
// Open, and the rooms go on being numbered and trimmed from there.
func TestDurableAcrossReopen(t *testing.T) {
	dir := t.TempDir() + "/h"
	s, err := pebblestore.Open(dir, quietLog, pebblestore.WithSize(5))
	require.NoError(t, err)
	appendAll(t, s, "a", 1, 7)
	appendAll(t, s, "b", 1, 2)
	require.NoError(t, s.Close())

	s = openAt(t, dir, pebblestore.WithSize(5))
	requireKept(t, s, "a", 3, 3, 4, 5, 6, 7)
	requireKept(t, s, "b", 1, 1, 2)
	appendAll(t, s, "a", 8, 9)
	requireKept(t, s, "a", 5, 5, 6, 7, 8, 9)
	require.NoError(t, s.Forget(ctxT(t), "b"))
	requireKept(t, s, "b", 0)
}

// TestTrimmedAcrossReopen: a room trimmed many times over keeps its newest
// texts, and its count is right after a reopen (the next trim keeps size).
func TestTrimmedAcrossReopen(t *testing.T) {
	dir := t.TempDir() + "/h"
	s, err := pebblestore.Open(dir, quietLog, pebblestore.WithSize(8))
	require.NoError(t, err)
	appendAll(t, s, "a", 1, 100)
	requireKept(t, s, "a", 93, seqs(93, 100)...)
	require.NoError(t, s.Flush())
	appendAll(t, s, "a", 101, 105)
	require.NoError(t, s.Close())

	s = openAt(t, dir, pebblestore.WithSize(8))
	requireKept(t, s, "a", 98, seqs(98, 105)...)
	appendAll(t, s, "a", 106, 120)
	requireKept(t, s, "a", 113, seqs(113, 120)...)
}

// TestSmallerSizeTrimsAtOpen: opened with a smaller size, a database keeps
// only that many texts per room, also once opened again with a larger
// one.
func TestSmallerSizeTrimsAtOpen(t *testing.T) {
	dir := t.TempDir() + "/h"
	s, err := pebblestore.Open(dir, quietLog, pebblestore.WithSize(10))
	require.NoError(t, err)
	appendAll(t, s, "a", 1, 10)
	require.NoError(t, s.Close())

	s, err = pebblestore.Open(dir, quietLog, pebblestore.WithSize(3))
	require.NoError(t, err)
	requireKept(t, s, "a", 8, 8, 9, 10)
	require.NoError(t, s.Close())

	s = openAt(t, dir, pebblestore.WithSize(10))
	requireKept(t, s, "a", 8, 8, 9, 10)
}

// TestNumberingGoesBack: a text whose Seq is not after the room's newest
// replaces it and every newer one, as when a server restarts without
// continuing the numbering.
func TestNumberingGoesBack(t *testing.T) {
	s, _ := open(t)
	appendAll(t, s, "a", 1, 5)
	m := text("a", 3)
	m.Text = "another run"
	require.NoError(t, s.Append(ctxT(t), "a", m))
	msgs, oldest, err := s.After(ctxT(t), "a", 0)
	require.NoError(t, err)
	require.Equal(t, append(texts("a", 1, 2), m), msgs)
	require.Equal(t, uint64(1), oldest)
	appendAll(t, s, "a", 4, 4)
	msgs, _, err = s.After(ctxT(t), "a", 0)
	require.NoError(t, err)
	require.Equal(t, append(append(texts("a", 1, 2), m), text("a", 4)), msgs)
}

// TestUserDataNeverKept: the host's data about a sender, and anything but
// its ID and name, is not written to the database.
func TestUserDataNeverKept(t *testing.T) {
	s, dir := open(t)
	m := text("a", 1)
	m.From = &garou.User{ID: "u1", Name: "alice", JoinedAt: time.Now(), Data: map[string]string{"secret": "hunter2"}}
	m.User = &garou.User{ID: "u2", Name: "bob"}
	m.Reason, m.Count, m.To = "left", 3, "carol"
	require.NoError(t, s.Append(ctxT(t), "a", m))
	msgs, _, err := s.After(ctxT(t), "a", 0)
	require.NoError(t, err)
	want := text("a", 1)
	want.From = &garou.User{ID: "u1", Name: "alice"}
	require.Equal(t, []garou.ChatMessage{want}, msgs)
	require.NoError(t, s.Close())
	var raw []byte
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		raw = append(raw, b...)
	}
	for _, secret := range []string{"hunter2", "secret", "bob", "carol"} {
		require.False(t, bytes.Contains(raw, []byte(secret)), "%q is in the database", secret)
	}
	require.True(t, bytes.Contains(raw, []byte("alice")))
}

// TestGroupCommit: the appends that arrive while a batch commits are all
// committed in the next one; and of many concurrent writers, every append
// acknowledged is there after the store is opened again, in order in each
// room.
func TestGroupCommit(t *testing.T) {
	s, dir := open(t, pebblestore.WithSize(1000))
	const rooms, rounds = 32, 4
	for round := uint64(1); round <= rounds; round++ {
		commits, taken := s.Commits(), s.Taken()
		release := s.HoldWrites()
		first := make(chan error, 1)
		go func() { first <- s.Append(ctxT(t), "first", text("first", round)) }()
		waitFor(t, func() bool { return s.Taken() == taken+1 }) // the committer waits on the held gate
		var wg sync.WaitGroup
		for r := range rooms {
			wg.Go(func() {
				room := fmt.Sprintf("room %d", r)
				require.NoError(t, s.Append(ctxT(t), room, text(room, round)))
			})
		}
		waitFor(t, func() bool { return s.Queued() == rooms })
		release()
		require.NoError(t, <-first)
		wg.Wait()
		require.Equal(t, commits+2, s.Commits(), "round %d: the first text's commit, then one of all the others", round)
	}

	const writers, perWriter = 64, 30
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			room := fmt.Sprintf("writer %d", w)
			for seq := uint64(1); seq <= perWriter; seq++ {
				if err := s.Append(ctxT(t), room, text(room, seq)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d appends in %d batches", s.Taken(), s.Commits())
	require.NoError(t, s.Close())

	s = openAt(t, dir, pebblestore.WithSize(1000))
	requireKept(t, s, "first", 1, seqs(1, rounds)...)
	for r := range rooms {
		room := fmt.Sprintf("room %d", r)
		requireKept(t, s, room, 1, seqs(1, rounds)...)
	}
	for w := range writers {
		room := fmt.Sprintf("writer %d", w)
		requireKept(t, s, room, 1, seqs(1, perWriter)...)
	}
}

// TestNotVisibleBeforeDurable: while a batch is being written, readers see
// what was on disk before it, and its texts once it is.
func TestNotVisibleBeforeDurable(t *testing.T) {
	s, _ := open(t)
	appendAll(t, s, "a", 1, 1)
	release := s.HoldWrites()
	appended := make(chan error, 1)
	go func() { appended <- s.Append(ctxT(t), "a", text("a", 2)) }()
	waitFor(t, func() bool { return s.Taken() == 2 })
	read := make(chan []garou.ChatMessage, 1)
	go func() {
		msgs, _, err := s.After(ctxT(t), "a", 0)
		if err != nil {
			t.Error(err)
		}
		read <- msgs
	}()
	release()
	require.NoError(t, <-appended)
	got := <-read
	require.Contains(t, [][]garou.ChatMessage{texts("a", 1), texts("a", 1, 2)}, got)
	requireKept(t, s, "a", 1, 1, 2)
}

// TestContextEnds: an append whose context ends before its batch begins
// is not kept and returns the context's error; one whose context ends while
// its batch commits is kept and returns nil.
func TestContextEnds(t *testing.T) {
	s, _ := open(t)
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	require.ErrorIs(t, s.Append(done, "a", text("a", 1)), context.Canceled)
	require.ErrorIs(t, s.Forget(done, "a"), context.Canceled)
	_, _, err := s.After(done, "a", 0)
	require.ErrorIs(t, err, context.Canceled)
	_, err = s.LastSeq(done, "a")
	require.ErrorIs(t, err, context.Canceled)

	release := s.HoldWrites()
	committing, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	r1 := make(chan error, 1)
	go func() { r1 <- s.Append(committing, "a", text("a", 1)) }()
	waitFor(t, func() bool { return s.Taken() == 1 })

	queued, cancel2 := context.WithCancel(context.Background())
	r2 := make(chan error, 1)
	go func() { r2 <- s.Append(queued, "a", text("a", 2)) }()
	waitFor(t, func() bool { return s.Queued() == 1 })
	cancel2()
	require.ErrorIs(t, <-r2, context.Canceled)
	cancel1()
	release()
	require.NoError(t, <-r1)
	requireKept(t, s, "a", 1, 1)
	require.Equal(t, int64(1), s.Taken(), "the withdrawn text never reached a batch")
}

// TestClose: Close waits for the appends in flight, which are kept; it is
// idempotent; later calls return ErrClosed.
func TestClose(t *testing.T) {
	dir := t.TempDir() + "/h"
	s, err := pebblestore.Open(dir, quietLog)
	require.NoError(t, err)
	release := s.HoldWrites()
	appended := make(chan error, 1)
	go func() { appended <- s.Append(ctxT(t), "a", text("a", 1)) }()
	waitFor(t, func() bool { return s.Taken() == 1 })
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	release()
	require.NoError(t, <-appended)
	require.NoError(t, <-closed)
	require.NoError(t, s.Close())

	require.ErrorIs(t, s.Append(ctxT(t), "a", text("a", 2)), pebblestore.ErrClosed)
	require.ErrorIs(t, s.Forget(ctxT(t), "a"), pebblestore.ErrClosed)
	_, _, err = s.After(ctxT(t), "a", 0)
	require.ErrorIs(t, err, pebblestore.ErrClosed)
	_, err = s.LastSeq(ctxT(t), "a")
	require.ErrorIs(t, err, pebblestore.ErrClosed)

	s = openAt(t, dir)
	requireKept(t, s, "a", 1, 1)
}

// TestOpenRefuses: Open refuses bad options, a path that is a file,
// another program's Pebble database, a later format and a directory
// another store holds, each with a clear error.
func TestOpenRefuses(t *testing.T) {
	dir := t.TempDir()
	for _, opt := range []pebblestore.Option{
		pebblestore.WithSize(-1), pebblestore.WithMaxBatch(0), pebblestore.WithMaxDelay(-1),
		pebblestore.WithLockTimeout(-1), pebblestore.WithLogger(nil),
	} {
		_, err := pebblestore.Open(dir+"/opts", quietLog, opt)
		require.Error(t, err)
	}

	file := dir + "/file"
	require.NoError(t, os.WriteFile(file, []byte("not a directory"), 0o600))
	_, err := pebblestore.Open(file, quietLog)
	require.Error(t, err)
	require.Contains(t, err.Error(), file)

	foreign := dir + "/foreign"
	db, err := pebble.Open(foreign, &pebble.Options{Logger: quiet{}})
	require.NoError(t, err)
	require.NoError(t, db.Set([]byte("accounts/1"), []byte("x"), pebble.Sync))
	require.NoError(t, db.Close())
	_, err = pebblestore.Open(foreign, quietLog)
	require.ErrorIs(t, err, pebblestore.ErrNotHistory)

	later := dir + "/later"
	s, err := pebblestore.Open(later, quietLog)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	db, err = pebble.Open(later, &pebble.Options{Logger: quiet{}})
	require.NoError(t, err)
	require.NoError(t, db.Set([]byte("mformat"), []byte("garou history, pebble, v2"), pebble.Sync))
	require.NoError(t, db.Close())
	_, err = pebblestore.Open(later, quietLog)
	require.ErrorIs(t, err, pebblestore.ErrNotHistory)
	require.Contains(t, err.Error(), "v2")

	inUse := dir + "/inuse"
	openAt(t, inUse)
	_, err = pebblestore.Open(inUse, quietLog, pebblestore.WithLockTimeout(10*time.Millisecond))
	require.ErrorIs(t, err, pebblestore.ErrInUse)
}

// quiet is a pebble.Logger that says nothing.
type quiet struct{}

func (quiet) Infof(string, ...any)  {}
func (quiet) Errorf(string, ...any) {}
func (quiet) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// TestUndecodableRecord: a record that does not decode is an error
// wrapping ErrCorrupt from After while the store runs, and Open refuses
// the database, naming the room and the text.
func TestUndecodableRecord(t *testing.T) {
	s, _ := open(t)
	appendAll(t, s, "a", 1, 3)
	require.NoError(t, s.PutRaw("a", 4, []byte{1, 200, 'x'}))
	_, _, err := s.After(ctxT(t), "a", 0)
	require.ErrorIs(t, err, pebblestore.ErrCorrupt)
	_, _, err = s.After(ctxT(t), "a", 4)
	require.NoError(t, err, "only the damaged text is unreadable")
	require.NoError(t, s.PutRaw("a", 4, []byte{9}))
	_, _, err = s.After(ctxT(t), "a", 3)
	require.ErrorIs(t, err, pebblestore.ErrCorrupt)
	require.Contains(t, err.Error(), "record version 9")
	requireKept(t, s, "b", 0)
	appendAll(t, s, "b", 1, 1)

	dir2 := t.TempDir() + "/h"
	s2, err := pebblestore.Open(dir2, quietLog)
	require.NoError(t, err)
	appendAll(t, s2, "a", 1, 3)
	require.NoError(t, s2.PutRaw("a", 2, nil))
	require.NoError(t, s2.Close())
	_, err = pebblestore.Open(dir2, quietLog)
	require.ErrorIs(t, err, pebblestore.ErrCorrupt)
	require.Contains(t, err.Error(), `room "a", text 2`)
}

// TestDamagedFiles: Open refuses a database whose table files are damaged,
// with an error wrapping ErrCorrupt, never a panic.
func TestDamagedFiles(t *testing.T) {
	for _, b := range []byte{0x00, 0xff, 0x5a} {
		t.Run(fmt.Sprintf("%#x", b), func(t *testing.T) {
			s, dir := open(t)
			appendAll(t, s, "a", 1, 50)
			appendAll(t, s, "b", 1, 50)
			require.NoError(t, s.Flush())
			tables, err := filepath.Glob(dir + "/*.sst")
			require.NoError(t, err)
			require.NotEmpty(t, tables)
			require.NoError(t, s.Close())
			for _, name := range tables {
				fi, err := os.Stat(name)
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(name, bytes.Repeat([]byte{b}, int(fi.Size())), 0o600))
			}
			_, err = pebblestore.Open(dir, quietLog)
			require.ErrorIs(t, err, pebblestore.ErrCorrupt)
			require.NotContains(t, err.Error(), "stack trace")
			t.Log(err)
		})
	}
}

// TestRoomNames: an empty room name, which the server never uses, is an
// error, not a key.
func TestRoomNames(t *testing.T) {
	s, _ := open(t)
	require.ErrorIs(t, s.Append(ctxT(t), "", text("", 1)), pebblestore.ErrRoomName)
	require.ErrorIs(t, s.Forget(ctxT(t), ""), pebblestore.ErrRoomName)
	msgs, oldest, err := s.After(ctxT(t), "", 0)
	require.NoError(t, err)
	require.Empty(t, msgs)
	require.Zero(t, oldest)
}

// TestReadsWhileWriting: readers running beside the committer see each
// room as a run of consecutive texts, at most the size, that includes
// every text acknowledged before the read began.
func TestReadsWhileWriting(t *testing.T) {
	const size, writers, perWriter, readers = 20, 8, 150, 4
	s, _ := open(t, pebblestore.WithSize(size))
	var acked [writers]atomic.Uint64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			room := fmt.Sprintf("w%d", w)
			for seq := uint64(1); seq <= perWriter; seq++ {
				if err := s.Append(ctxT(t), room, text(room, seq)); err != nil {
					t.Error(err)
					return
				}
				acked[w].Store(seq)
			}
		})
	}
	writing := make(chan struct{})
	var rg sync.WaitGroup
	for r := range readers {
		rg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-writing:
					return
				default:
				}
				w := (r + i) % writers
				room := fmt.Sprintf("w%d", w)
				before := acked[w].Load()
				msgs, oldest, err := s.After(ctxT(t), room, 0)
				if err != nil {
					t.Error(err)
					return
				}
				if len(msgs) > size || (len(msgs) > 0 && msgs[0].Seq != oldest) {
					t.Errorf("room %s: %d texts, oldest %d", room, len(msgs), oldest)
					return
				}
				for j, m := range msgs {
					if !reflect.DeepEqual(m, text(room, oldest+uint64(j))) {
						t.Errorf("room %s: text %d is %+v", room, oldest+uint64(j), m)
						return
					}
				}
				if newest := oldest + uint64(len(msgs)) - 1; before > 0 && newest < before {
					t.Errorf("room %s: newest %d, but %d was acknowledged before the read", room, newest, before)
					return
				}
			}
		})
	}
	wg.Wait()
	close(writing)
	rg.Wait()
	for w := range writers {
		room := fmt.Sprintf("w%d", w)
		requireKept(t, s, room, perWriter-size+1, seqs(perWriter-size+1, perWriter)...)
	}
}

// TestEarlierNotKept: a text queued after one of its room that was not
// kept (withdrawn here, as a failed commit would leave it) is not kept
// either, so the file never holds a text without the one before it; the
// text that takes the lost one's number is kept, and the room goes on.
func TestEarlierNotKept(t *testing.T) {
	s, _ := open(t)
	release := s.HoldWrites()
	w1 := s.StartAppend(ctxT(t), "r", text("r", 1))
	for s.Taken() == 0 { // in a batch of its own, which waits for the writes
		runtime.Gosched()
	}
	ctx, cancel := context.WithCancel(ctxT(t))
	w2 := s.StartAppend(ctx, "r", text("r", 2))
	w3 := s.StartAppend(ctxT(t), "r", text("r", 3))
	cancel()
	require.ErrorIs(t, w2(), context.Canceled)
	release()
	require.NoError(t, w1())
	require.ErrorIs(t, w3(), pebblestore.ErrEarlierNotKept)
	require.NoError(t, s.StartAppend(ctxT(t), "r", text("r", 2))())
	require.NoError(t, s.StartAppend(ctxT(t), "r", text("r", 3))())
	msgs, _, err := s.After(ctxT(t), "r", 0)
	require.NoError(t, err)
	require.Equal(t, texts("r", 1, 2, 3), msgs)
}
