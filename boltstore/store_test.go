package boltstore_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/boltstore"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
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
	path := t.TempDir() + "/h.db"
	s, err := boltstore.Open(path, boltstore.WithSize(5))
	require.NoError(t, err)
	appendAll(t, s, "a", 1, 7)
	appendAll(t, s, "b", 1, 2)
	require.NoError(t, s.Close())

	s = openAt(t, path, boltstore.WithSize(5))
	requireKept(t, s, "a", 3, 3, 4, 5, 6, 7)
	requireKept(t, s, "b", 1, 1, 2)
	appendAll(t, s, "a", 8, 9)
	requireKept(t, s, "a", 5, 5, 6, 7, 8, 9)
	require.NoError(t, s.Forget(ctxT(t), "b"))
	requireKept(t, s, "b", 0)
}

// TestSmallerSizeTrimsAtOpen: opened with a smaller size, a file keeps
// only that many texts per room, also once opened again with a larger
// one.
func TestSmallerSizeTrimsAtOpen(t *testing.T) {
	path := t.TempDir() + "/h.db"
	s, err := boltstore.Open(path, boltstore.WithSize(10))
	require.NoError(t, err)
	appendAll(t, s, "a", 1, 10)
	require.NoError(t, s.Close())

	s, err = boltstore.Open(path, boltstore.WithSize(3))
	require.NoError(t, err)
	requireKept(t, s, "a", 8, 8, 9, 10)
	require.NoError(t, s.Close())

	s = openAt(t, path, boltstore.WithSize(10))
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
// its ID and name, is not written to the file.
func TestUserDataNeverKept(t *testing.T) {
	s, path := open(t)
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
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	for _, secret := range []string{"hunter2", "secret", "bob", "carol"} {
		require.False(t, bytes.Contains(raw, []byte(secret)), "%q is in the file", secret)
	}
	require.True(t, bytes.Contains(raw, []byte("alice")))
}

// TestGroupCommit: the appends that arrive while a transaction commits
// are all committed in the next one; and of many concurrent writers, every
// append acknowledged is there after the store is opened again, in order
// in each room.
func TestGroupCommit(t *testing.T) {
	s, path := open(t, boltstore.WithSize(1000))
	const rooms, rounds = 32, 4
	for round := uint64(1); round <= rounds; round++ {
		commits, taken := s.Commits(), s.Taken()
		release := s.HoldWrites()
		first := make(chan error, 1)
		go func() { first <- s.Append(ctxT(t), "first", text("first", round)) }()
		waitFor(t, func() bool { return s.Taken() == taken+1 }) // the committer waits on the held transaction
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
	t.Logf("%d appends in %d transactions", s.Taken(), s.Commits())
	require.NoError(t, s.Close())

	s = openAt(t, path, boltstore.WithSize(1000))
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

// TestContextEnds: an append whose context ends before its transaction
// begins is not kept and returns the context's error; one whose context
// ends while its transaction commits is kept and returns nil.
func TestContextEnds(t *testing.T) {
	s, _ := open(t)
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	require.ErrorIs(t, s.Append(done, "a", text("a", 1)), context.Canceled)
	require.ErrorIs(t, s.Forget(done, "a"), context.Canceled)
	_, _, err := s.After(done, "a", 0)
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
	require.Equal(t, int64(1), s.Taken(), "the withdrawn text never reached a transaction")
}

// TestClose: Close waits for the appends in flight, which are kept; it is
// idempotent; later calls return ErrClosed.
func TestClose(t *testing.T) {
	path := t.TempDir() + "/h.db"
	s, err := boltstore.Open(path)
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

	require.ErrorIs(t, s.Append(ctxT(t), "a", text("a", 2)), boltstore.ErrClosed)
	require.ErrorIs(t, s.Forget(ctxT(t), "a"), boltstore.ErrClosed)
	_, _, err = s.After(ctxT(t), "a", 0)
	require.ErrorIs(t, err, boltstore.ErrClosed)

	s = openAt(t, path)
	requireKept(t, s, "a", 1, 1)
}

// TestOpenRefuses: Open refuses bad options, a file that is not a bbolt
// file, another program's bbolt file, a later format, a damaged file and
// a file another store holds, each with a clear error.
func TestOpenRefuses(t *testing.T) {
	dir := t.TempDir()
	for _, opt := range []boltstore.Option{
		boltstore.WithSize(-1), boltstore.WithMaxBatch(0), boltstore.WithMaxDelay(-1),
		boltstore.WithLockTimeout(-1), boltstore.WithMaxFileSize(-1),
	} {
		_, err := boltstore.Open(dir+"/opts.db", opt)
		require.Error(t, err)
	}

	garbage := dir + "/garbage.db"
	require.NoError(t, os.WriteFile(garbage, bytes.Repeat([]byte("not a database "), 2000), 0o600))
	_, err := boltstore.Open(garbage)
	require.ErrorIs(t, err, boltstore.ErrCorrupt)
	require.Contains(t, err.Error(), garbage)

	foreign := dir + "/foreign.db"
	db, err := bolt.Open(foreign, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("accounts"))
		return err
	}))
	require.NoError(t, db.Close())
	_, err = boltstore.Open(foreign)
	require.ErrorIs(t, err, boltstore.ErrNotHistory)

	later := dir + "/later.db"
	s, err := boltstore.Open(later)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	db, err = bolt.Open(later, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("garou")).Put([]byte("format"), []byte("garou history, bbolt, v2"))
	}))
	require.NoError(t, db.Close())
	_, err = boltstore.Open(later)
	require.ErrorIs(t, err, boltstore.ErrNotHistory)
	require.Contains(t, err.Error(), "v2")

	inUse := dir + "/inuse.db"
	openAt(t, inUse)
	_, err = boltstore.Open(inUse, boltstore.WithLockTimeout(10*time.Millisecond))
	require.ErrorIs(t, err, boltstore.ErrInUse)
}

// damage overwrites the pages of the file at path after its two meta
// pages with the byte b.
func damage(t *testing.T, path string, b byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	fi, err := f.Stat()
	require.NoError(t, err)
	page := int64(os.Getpagesize())
	_, err = f.WriteAt(bytes.Repeat([]byte{b}, int(fi.Size()-2*page)), 2*page)
	require.NoError(t, err)
}

// TestDamagedFile: Open refuses a file whose pages are damaged; a file
// damaged while open gives errors wrapping ErrCorrupt, not a panic.
func TestDamagedFile(t *testing.T) {
	for _, b := range []byte{0x00, 0xff, 0x5a} {
		t.Run(fmt.Sprintf("%#x", b), func(t *testing.T) {
			s, path := open(t)
			appendAll(t, s, "a", 1, 50)
			appendAll(t, s, "b", 1, 50)
			require.NoError(t, s.Close())
			damage(t, path, b)
			_, err := boltstore.Open(path)
			require.ErrorIs(t, err, boltstore.ErrCorrupt)
		})
	}

	// bbolt maps the file shared: damage written by another hand is what
	// the open store reads next.
	s, path := open(t)
	appendAll(t, s, "a", 1, 50)
	damage(t, path, 0xff)
	_, _, err := s.After(ctxT(t), "a", 0)
	require.ErrorIs(t, err, boltstore.ErrCorrupt)
	err = s.Append(ctxT(t), "a", text("a", 51))
	require.ErrorIs(t, err, boltstore.ErrCorrupt)
	require.ErrorIs(t, s.Append(ctxT(t), "b", text("b", 1)), boltstore.ErrCorrupt, "no write once damage is found")
}

// TestFull: when the file can grow no more, the appends fail with an
// error and none of them is kept; the texts kept stay readable, and once
// rooms are forgotten appends succeed again.
func TestFull(t *testing.T) {
	s, path := open(t, boltstore.WithMaxFileSize(1<<20), boltstore.WithSize(1000))
	big := strings.Repeat("x", 4000)
	var failed error
	var kept []uint64
	for seq := uint64(1); seq < 1000; seq++ {
		m := text("a", seq)
		m.Text = big
		if failed = s.Append(ctxT(t), "a", m); failed != nil {
			break
		}
		kept = append(kept, seq)
	}
	require.ErrorIs(t, failed, berrors.ErrMaxSizeReached)
	require.NotEmpty(t, kept)
	msgs, _, err := s.After(ctxT(t), "a", 0)
	require.NoError(t, err)
	require.Len(t, msgs, len(kept))
	require.Equal(t, kept[len(kept)-1], msgs[len(msgs)-1].Seq)

	require.NoError(t, s.Forget(ctxT(t), "a"))
	appendAll(t, s, "b", 1, 3)
	requireKept(t, s, "b", 1, 1, 2, 3)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.LessOrEqual(t, fi.Size(), int64(1<<20))
}

// TestRoomNames: an empty room name, which the server never uses, is an
// error, not a bucket.
func TestRoomNames(t *testing.T) {
	s, _ := open(t)
	require.ErrorIs(t, s.Append(ctxT(t), "", text("", 1)), boltstore.ErrRoomName)
	require.ErrorIs(t, s.Forget(ctxT(t), ""), boltstore.ErrRoomName)
	msgs, oldest, err := s.After(ctxT(t), "", 0)
	require.NoError(t, err)
	require.Empty(t, msgs)
	require.Zero(t, oldest)
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
	require.ErrorIs(t, w3(), boltstore.ErrEarlierNotKept)
	require.NoError(t, s.StartAppend(ctxT(t), "r", text("r", 2))())
	require.NoError(t, s.StartAppend(ctxT(t), "r", text("r", 3))())
	msgs, _, err := s.After(ctxT(t), "r", 0)
	require.NoError(t, err)
	require.Equal(t, texts("r", 1, 2, 3), msgs)
}
