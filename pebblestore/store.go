package pebblestore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/garou-chat/garou"
)

// Keys of what the database is: its format, the size it was last opened
// with, its epoch (Epoch) and the highest Seq of a room forgotten
// (LastSeq).
var (
	formatKey = metaKey("format")
	sizeKey   = metaKey("size")
	epochKey  = metaKey("epoch")
	floorKey  = metaKey("floor")
)

// format names this package's layout, so that another program's database,
// or one of a later layout, is refused rather than misread.
const format = "garou history, pebble, v1"

// maxRoomLen is the longest room name kept, as in boltstore.
const maxRoomLen = 32 << 10

// Store is a garou.HistoryStore kept in a Pebble database. All its methods
// may be called concurrently. Appends and forgets are committed by one
// goroutine, which takes every one waiting (up to WithMaxBatch) into one
// Pebble batch, written to the write-ahead log with one fsync: an Append
// returns once its batch is on disk. After and LastSeq read a view of what
// is committed, concurrently with the commits; they see no text before it
// is on disk (a view is never taken while a batch is being synced).
type Store struct {
	db   *pebble.DB
	lock *pebble.Lock
	opts options

	ops  chan *op
	quit chan struct{} // closed by Close when no call is in flight
	done chan struct{} // closed when the committer has ended

	mu       sync.RWMutex // guards closed and calls.Add
	closed   bool
	calls    sync.WaitGroup // calls in flight
	closing  sync.Once
	closeErr error

	// failed is the failure (ErrFailed, ErrCorrupt) after which every call
	// returns an error; pebble's logger and event listener set it too.
	failed *failure

	// gate keeps readers from taking a view of the database while a batch
	// is written and synced: Pebble makes a batch visible before its fsync
	// ends, and a text not yet on disk must not be replayed.
	gate sync.RWMutex

	commits atomic.Int64 // batches of appends and forgets attempted
	taken   atomic.Int64 // appends and forgets taken into them

	epoch string // read or made at Open

	// The committer's own: what it knows of every room with texts (all
	// read at Open), and the highest Seq of a room forgotten.
	rooms map[string]roomState
	floor uint64
	// lost is the committer's own too: the Seq of a room's text that was
	// not kept (see hold).
	lost map[string]uint64
}

var (
	_ garou.SeqKeeper     = (*Store)(nil)
	_ garou.AppendStarter = (*Store)(nil)
)

type roomState struct {
	n     int    // texts kept, those beyond the size not yet deleted included
	first uint64 // Seq of the oldest
	last  uint64 // Seq of the newest
}

// failure holds the first error that stops the store.
type failure struct{ p atomic.Pointer[error] }

func (f *failure) set(err error) { f.p.CompareAndSwap(nil, &err) }

func (f *failure) err() error {
	if p := f.p.Load(); p != nil {
		return *p
	}
	return nil
}

// op is an append (val != nil) or a forget waiting for the committer.
type op struct {
	room  string
	seq   uint64
	val   []byte
	state atomic.Int32 // opQueued, then opTaken by the committer or opCancelled by the caller
	done  chan error   // buffered: the commit's outcome
}

const (
	opQueued int32 = iota
	opTaken
	opCancelled
)

// Open opens the history database in the directory dir, creating it (mode
// 0700) if it does not exist; an existing directory keeps its mode, and
// Pebble's files in it are made with the process's umask, so keep it
// private. It refuses a database that is not a history
// (ErrNotHistory), a damaged one (ErrCorrupt) and one another process holds
// (ErrInUse). It reads every text once, to check it and to learn each
// room's count. The Store must be closed.
func Open(dir string, opts ...Option) (*Store, error) {
	o := defaults()
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pebblestore: open %s: %w", dir, err)
	}
	lock, err := lockDir(dir, o.lockTimeout)
	if err != nil {
		return nil, err
	}
	s := &Store{
		lock:   lock,
		opts:   o,
		ops:    make(chan *op, o.maxBatch),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
		failed: new(failure),
		rooms:  make(map[string]roomState),
		lost:   make(map[string]uint64),
	}
	err = guard(func() (err error) {
		s.db, err = pebble.Open(dir, &pebble.Options{
			Lock:               lock,
			FormatMajorVersion: pebble.FormatNewest,
			Logger:             logger{o.logger, s.failed},
			EventListener:      events(o.logger, s.failed),
		})
		return err
	})
	if err == nil {
		if err = s.failed.err(); err == nil {
			err = s.prepare()
		}
		if err == nil {
			err = s.loadEpoch()
		}
		if err == nil {
			err = s.failed.err()
		}
		if err != nil {
			_ = guard(s.db.Close)
		}
	}
	if err != nil {
		_ = lock.Close()
		if pebble.IsCorruptionError(err) && !errors.Is(err, ErrCorrupt) {
			err = fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return nil, fmt.Errorf("pebblestore: open %s: %w", dir, err)
	}
	go s.run()
	return s, nil
}

// lockDir takes the directory's lock, waiting up to timeout (0: for ever)
// for another holder to let go of it.
func lockDir(dir string, timeout time.Duration) (*pebble.Lock, error) {
	deadline := time.Now().Add(timeout)
	for {
		lock, err := pebble.LockDirectory(dir, vfs.Default)
		if err == nil {
			return lock, nil
		}
		held := errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) ||
			strings.Contains(err.Error(), "held by current process")
		switch {
		case !held:
			return nil, fmt.Errorf("pebblestore: lock %s: %w", dir, err)
		case timeout > 0 && time.Now().After(deadline):
			return nil, fmt.Errorf("%w: %s: still locked after %v", ErrInUse, dir, timeout)
		}
		time.Sleep(min(50*time.Millisecond, max(time.Millisecond, timeout/10)))
	}
}

// logger passes Pebble's messages to the store's slog.Logger. Pebble calls
// Fatalf when it cannot go on writing (a write to its log or manifest that
// failed): instead of ending the process, the store fails.
type logger struct {
	l      *slog.Logger
	failed *failure
}

func (l logger) Infof(format string, args ...any) {
	l.l.Debug("pebble: " + fmt.Sprintf(format, args...))
}

func (l logger) Errorf(format string, args ...any) {
	l.l.Warn("pebble: " + fmt.Sprintf(format, args...))
}

func (l logger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.failed.set(fmt.Errorf("%w: %s", ErrFailed, msg))
	l.l.Error("pebblestore: database failed; every call fails until the store is opened again", "err", msg)
}

// events logs Pebble's background errors, and fails the store on damage.
func events(l *slog.Logger, failed *failure) *pebble.EventListener {
	return &pebble.EventListener{
		BackgroundError: func(err error) {
			l.Warn("pebblestore: background error (retried)", "err", err.Error())
		},
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			err := fmt.Errorf("%w: %s: %v", ErrCorrupt, info.Path, info.Details)
			failed.set(err)
			l.Error("pebblestore: database damaged; every call fails", "err", err.Error())
		},
		DiskSlow: func(info pebble.DiskSlowInfo) {
			l.Warn("pebblestore: slow disk", "info", info.String())
		},
	}
}

// guard runs f, turning a panic of Pebble into an error wrapping
// ErrCorrupt.
func guard(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, p)
		}
	}()
	return f()
}

// prepare checks that the database is a history, or makes an empty one
// one; reads every text, which checks it and tells each room's count; and
// trims the rooms to the size.
func (s *Store) prepare() error {
	f, fresh, err := s.get(formatKey)
	if err != nil {
		return err
	}
	if fresh {
		it, err := s.db.NewIter(nil)
		if err != nil {
			return err
		}
		nonEmpty := it.First()
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return err
		}
		if nonEmpty {
			return fmt.Errorf("%w: it has no %q key", ErrNotHistory, formatKey)
		}
	} else if string(f) != format {
		return fmt.Errorf("%w: its format is %q, not %q", ErrNotHistory, f, format)
	}
	if v, missing, err := s.get(floorKey); err != nil {
		return err
	} else if !missing {
		if len(v) != 8 {
			return fmt.Errorf("%w: its floor has %d bytes", ErrCorrupt, len(v))
		}
		s.floor = binary.BigEndian.Uint64(v)
	}
	if err := s.scan(); err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	if fresh {
		_ = b.Set(formatKey, []byte(format), nil)
	}
	_ = b.Set(sizeKey, seqKey(uint64(s.opts.size)), nil)
	for room, st := range s.rooms {
		if st.n <= s.opts.size {
			continue
		}
		p := roomPrefix(room)
		if s.opts.size == 0 {
			_ = b.DeleteRange(p, roomEnd(p), nil)
			delete(s.rooms, room)
			continue
		}
		keep, err := s.nth(nil, p, st.first, st.n-s.opts.size)
		if err != nil {
			return err
		}
		_ = b.DeleteRange(p, textKey(p, keep), nil)
		s.rooms[room] = roomState{n: s.opts.size, first: keep, last: st.last}
	}
	return s.db.Apply(b, pebble.Sync)
}

// get reads the value of key, a copy; missing says there is none.
func (s *Store) get(key []byte) (v []byte, missing bool, err error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	v = bytes.Clone(v)
	return v, false, closer.Close()
}

// scan reads every text, checking that it decodes, and counts each room's.
func (s *Store) scan() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{roomTag}, UpperBound: []byte{roomTag + 1}})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		room, seq, ok := parseKey(it.Key())
		if !ok {
			_ = it.Close()
			return fmt.Errorf("%w: a key %q that is not a text's", ErrCorrupt, it.Key())
		}
		v, err := it.ValueAndErr()
		if err == nil {
			_, err = decodeText(room, seq, v)
		}
		if err != nil {
			_ = it.Close()
			return err
		}
		st := s.rooms[room]
		if st.n == 0 {
			st.first = binary.BigEndian.Uint64(seq)
		}
		st.n++
		st.last = binary.BigEndian.Uint64(seq)
		s.rooms[room] = st
	}
	return errors.Join(it.Error(), it.Close())
}

// nth returns the Seq of the text of the room whose prefix is p that comes
// skip texts after the one numbered from, reading r (the batch being made,
// with the database under it) or the database if r is nil.
func (s *Store) nth(r *pebble.Batch, p []byte, from uint64, skip int) (uint64, error) {
	bounds := &pebble.IterOptions{LowerBound: textKey(p, from), UpperBound: roomEnd(p)}
	var it *pebble.Iterator
	var err error
	if r != nil {
		it, err = r.NewIter(bounds)
	} else {
		it, err = s.db.NewIter(bounds)
	}
	if err != nil {
		return 0, err
	}
	ok := it.First()
	for i := 0; ok && i < skip; i++ {
		ok = it.Next()
	}
	var seq uint64
	if ok {
		seq = binary.BigEndian.Uint64(it.Key()[len(p):])
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("%w: a room has fewer than %d texts after %d", ErrCorrupt, skip+1, from)
	}
	return seq, nil
}

// loadEpoch reads the database's epoch, making one for a database that has
// none.
func (s *Store) loadEpoch() error {
	e, missing, err := s.get(epochKey)
	if err != nil {
		return err
	}
	if missing {
		var b [8]byte
		_, _ = rand.Read(b[:])
		e = []byte(hex.EncodeToString(b[:]))
		if err := s.db.Set(epochKey, e, pebble.Sync); err != nil {
			return err
		}
	}
	s.epoch = string(e)
	return nil
}

// Epoch identifies the database's history: it is made with the database
// and kept in it, so a server that reopens it numbers on and its clients
// resume by number, while a new database is a new history.
func (s *Store) Epoch() string { return s.epoch }

// enter counts a call in flight, or reports false once closed.
func (s *Store) enter() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false
	}
	s.calls.Add(1)
	return true
}

// snapshot returns a view of what is on disk, or the store's failure.
func (s *Store) snapshot() (*pebble.Snapshot, error) {
	s.gate.RLock()
	defer s.gate.RUnlock()
	if err := s.failed.err(); err != nil {
		return nil, err
	}
	return s.db.NewSnapshot(), nil
}

// view returns an iterator over what is on disk of the room whose prefix
// is p, or the store's failure.
func (s *Store) view(p []byte) (*pebble.Iterator, error) {
	s.gate.RLock()
	defer s.gate.RUnlock()
	if err := s.failed.err(); err != nil {
		return nil, err
	}
	return s.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: roomEnd(p)})
}

// LastSeq returns the Seq of room's latest kept text; for a room with
// none, the highest Seq of any room forgotten (0 if none), so that a room
// made anew never reuses a number. It implements garou.SeqKeeper.
func (s *Store) LastSeq(ctx context.Context, room string) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if !s.enter() {
		return 0, ErrClosed
	}
	defer s.calls.Done()
	var last uint64
	err := guard(func() error {
		snap, err := s.snapshot()
		if err != nil {
			return err
		}
		defer snap.Close()
		v, closer, err := snap.Get(floorKey)
		switch {
		case errors.Is(err, pebble.ErrNotFound):
		case err != nil:
			return err
		default:
			if len(v) == 8 {
				last = binary.BigEndian.Uint64(v)
			}
			_ = closer.Close()
		}
		if room == "" || len(room) > maxRoomLen {
			return nil
		}
		p := roomPrefix(room)
		it, err := snap.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: roomEnd(p)})
		if err != nil {
			return err
		}
		if it.Last() {
			last = binary.BigEndian.Uint64(it.Key()[len(p):])
		}
		return errors.Join(it.Error(), it.Close())
	})
	if err != nil {
		return 0, fmt.Errorf("pebblestore: read room %q: %w", room, err)
	}
	return last, nil
}

// Append keeps m, the newest text of room; the room's oldest beyond the
// size are no longer kept. It returns once the batch holding m is on
// disk. If ctx ends before that batch has begun, m is not kept and Append
// returns ctx.Err(); once it has begun, Append waits for its outcome (an
// fsync away) and returns it, so that nil always means kept. An error
// means not kept, but for one case: after the store failed (ErrFailed),
// the batch that met the failure may be found after a reopen.
//
// A text with a Seq no greater than the room's newest replaces it and
// every newer one (the numbering went back, as after a restart that does
// not continue it).
func (s *Store) Append(ctx context.Context, room string, m garou.ChatMessage) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if room == "" || len(room) > maxRoomLen {
		return fmt.Errorf("%w: %d bytes", ErrRoomName, len(room))
	}
	if s.opts.size == 0 {
		if !s.enter() {
			return ErrClosed
		}
		s.calls.Done()
		return nil
	}
	val, err := encodeText(&m)
	if err != nil {
		return err
	}
	return s.submit(ctx, &op{room: room, seq: m.Seq, val: val, done: make(chan error, 1)})
}

// StartAppend queues m as Append does and returns at once; wait returns
// Append's outcome, and must be called once. Texts queued one after the
// other are committed in that order, together when they are waiting at
// once: a room's next text need not wait for the previous one to be on
// disk. A text queued after one of its room that was not kept (its commit
// failed, or its wait gave up with ctx) fails with ErrEarlierNotKept,
// unless its Seq goes back to the one not kept. It implements
// garou.AppendStarter.
func (s *Store) StartAppend(ctx context.Context, room string, m garou.ChatMessage) (wait func() error) {
	fail := func(err error) func() error { return func() error { return err } }
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	if room == "" || len(room) > maxRoomLen {
		return fail(fmt.Errorf("%w: %d bytes", ErrRoomName, len(room)))
	}
	if !s.enter() {
		return fail(ErrClosed)
	}
	if s.opts.size == 0 {
		s.calls.Done()
		return fail(nil)
	}
	if err := s.failed.err(); err != nil {
		s.calls.Done()
		return fail(err)
	}
	val, err := encodeText(&m)
	if err != nil {
		s.calls.Done()
		return fail(err)
	}
	o := &op{room: room, seq: m.Seq, val: val, done: make(chan error, 1)}
	select {
	case s.ops <- o:
	case <-ctx.Done():
		s.calls.Done()
		return fail(ctx.Err())
	}
	return func() error {
		defer s.calls.Done()
		select {
		case err := <-o.done:
			return err
		case <-ctx.Done():
			if o.state.CompareAndSwap(opQueued, opCancelled) {
				return ctx.Err()
			}
			return <-o.done
		}
	}
}

// Forget drops every text of room, in the same order as the appends
// around it.
func (s *Store) Forget(ctx context.Context, room string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if room == "" || len(room) > maxRoomLen {
		return fmt.Errorf("%w: %d bytes", ErrRoomName, len(room))
	}
	return s.submit(ctx, &op{room: room, done: make(chan error, 1)})
}

// submit hands o to the committer and waits for its outcome.
func (s *Store) submit(ctx context.Context, o *op) error {
	if !s.enter() {
		return ErrClosed
	}
	defer s.calls.Done()
	if err := s.failed.err(); err != nil {
		return err
	}
	select {
	case s.ops <- o:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		if o.state.CompareAndSwap(opQueued, opCancelled) {
			return ctx.Err()
		}
		return <-o.done // committing: its outcome is an fsync away
	}
}

// After returns the kept texts of room with Seq > seq, oldest first, and
// the Seq of the oldest kept (0 if none is). It reads what is on disk when
// it starts (if a batch is being synced, once it is).
func (s *Store) After(ctx context.Context, room string, seq uint64) ([]garou.ChatMessage, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if !s.enter() {
		return nil, 0, ErrClosed
	}
	defer s.calls.Done()
	if s.opts.size == 0 || room == "" || len(room) > maxRoomLen {
		return nil, 0, nil
	}
	var msgs []garou.ChatMessage
	var oldest uint64
	err := guard(func() error {
		p := roomPrefix(room)
		it, err := s.view(p)
		if err != nil {
			return err
		}
		// The newest size texts are kept; older ones wait to be
		// deleted. Walk back from the newest.
		n := 0
		for ok := it.Last(); ok && n < s.opts.size; ok = it.Prev() {
			n++
			k := it.Key()[len(p):]
			oldest = binary.BigEndian.Uint64(k)
			if oldest <= seq {
				continue
			}
			v, err := it.ValueAndErr()
			if err != nil {
				_ = it.Close()
				return err
			}
			m, err := decodeText(room, k, v)
			if err != nil {
				_ = it.Close()
				return err
			}
			msgs = append(msgs, m)
		}
		slices.Reverse(msgs)
		return errors.Join(it.Error(), it.Close())
	})
	if err != nil {
		if pebble.IsCorruptionError(err) && !errors.Is(err, ErrCorrupt) {
			err = fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return nil, 0, fmt.Errorf("pebblestore: read room %q: %w", room, err)
	}
	return msgs, oldest, nil
}

// Close ends the store: it waits for the calls in flight (the appends
// among them are committed or fail as usual), stops the committer and
// closes the database. Later calls return ErrClosed. Close may be called
// more than once; every call returns the first one's outcome once it is
// done.
func (s *Store) Close() error {
	s.closing.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.calls.Wait()
		close(s.quit)
		<-s.done
		err := guard(s.db.Close)
		if err := errors.Join(err, s.lock.Close()); err != nil {
			s.closeErr = fmt.Errorf("pebblestore: close: %w", err)
		}
	})
	return s.closeErr
}

// run is the committer: it takes the waiting ops into one batch until
// Close.
func (s *Store) run() {
	defer close(s.done)
	batch := make([]*op, 0, s.opts.maxBatch)
	var timer *time.Timer
	for {
		select {
		case o := <-s.ops:
			batch = append(batch, o)
		case <-s.quit:
			return
		}
		if s.opts.maxDelay > 0 && len(batch) < s.opts.maxBatch {
			if timer == nil {
				timer = time.NewTimer(s.opts.maxDelay)
			} else {
				timer.Reset(s.opts.maxDelay)
			}
		wait:
			for len(batch) < s.opts.maxBatch {
				select {
				case o := <-s.ops:
					batch = append(batch, o)
				case <-timer.C:
					break wait
				}
			}
			timer.Stop()
		}
	drain:
		for len(batch) < s.opts.maxBatch {
			select {
			case o := <-s.ops:
				batch = append(batch, o)
			default:
				break drain
			}
		}
		s.commit(batch)
		clear(batch)
		batch = batch[:0]
	}
}

// commit writes the ops of batch not cancelled in one Pebble batch, synced,
// and tells each its outcome.
func (s *Store) commit(batch []*op) {
	taken := batch[:0]
	for _, o := range batch {
		if !o.state.CompareAndSwap(opQueued, opTaken) {
			s.lose(o)
			continue
		}
		if s.hold(o) {
			o.done <- ErrEarlierNotKept
			continue
		}
		taken = append(taken, o)
	}
	if len(taken) == 0 {
		return
	}
	s.taken.Add(int64(len(taken)))
	s.commits.Add(1)
	w := work{rooms: make(map[string]roomState, len(taken)), floor: s.floor}
	err := s.failed.err()
	if err == nil {
		err = guard(func() error {
			b := s.db.NewIndexedBatch()
			defer b.Close()
			for _, o := range taken {
				if err := s.apply(b, &w, o); err != nil {
					return err
				}
			}
			return s.write(b)
		})
		if errors.Is(err, ErrCorrupt) {
			s.failed.set(err)
		}
	}
	if err == nil {
		for room, st := range w.rooms {
			if st.n == 0 {
				delete(s.rooms, room)
			} else {
				s.rooms[room] = st
			}
		}
		s.floor = w.floor
	} else {
		err = fmt.Errorf("pebblestore: commit: %w", err)
	}
	for _, o := range taken {
		if err != nil {
			s.lose(o)
		}
		o.done <- err
	}
}

// lose notes that o, an append, is not kept (it failed, or its caller
// withdrew it), so that the room's texts queued after it are not kept
// either: the store never keeps a text without the one before it.
func (s *Store) lose(o *op) {
	if o.val == nil {
		return
	}
	if last, ok := s.lost[o.room]; !ok || o.seq < last {
		s.lost[o.room] = o.seq
	}
}

// hold reports whether o is an append queued after a text of its room
// that was not kept, with a greater Seq: it fails with ErrEarlierNotKept. An
// append whose Seq goes back to the one lost (or before), or a forget,
// ends the hold.
func (s *Store) hold(o *op) bool {
	last, ok := s.lost[o.room]
	if !ok {
		return false
	}
	if o.val != nil && o.seq > last {
		return true
	}
	delete(s.lost, o.room)
	return false
}

// write applies b, synced, with no reader taking a view meanwhile. If
// Pebble fails, the store fails before readers go on: b may be visible.
func (s *Store) write(b *pebble.Batch) error {
	s.gate.Lock()
	defer s.gate.Unlock()
	err := guard(func() error { return s.db.Apply(b, pebble.Sync) })
	if err != nil && !errors.Is(err, ErrFailed) {
		s.failed.set(fmt.Errorf("%w: %w", ErrFailed, err))
	}
	return s.failed.err()
}

// work is what a batch being made changes: the rooms it writes to and the
// floor.
type work struct {
	rooms map[string]roomState
	floor uint64
}

// state returns what is known of room, counting the batch being made.
func (s *Store) state(w *work, room string) roomState {
	if st, ok := w.rooms[room]; ok {
		return st
	}
	return s.rooms[room]
}

// apply writes o into b, keeping the state of the rooms it changes in w.
func (s *Store) apply(b *pebble.Batch, w *work, o *op) error {
	p := roomPrefix(o.room)
	st := s.state(w, o.room)
	if o.val == nil { // forget, keeping the room's last Seq as a floor
		if st.n > 0 && st.last > w.floor {
			w.floor = st.last
			if err := b.Set(floorKey, seqKey(st.last), nil); err != nil {
				return err
			}
		}
		w.rooms[o.room] = roomState{}
		return b.DeleteRange(p, roomEnd(p), nil)
	}
	if st.n > 0 && o.seq <= st.last { // the numbering went back
		if err := b.DeleteRange(textKey(p, o.seq), roomEnd(p), nil); err != nil {
			return err
		}
		var err error
		if st, err = count(b, p); err != nil {
			return err
		}
	}
	if err := b.Set(textKey(p, o.seq), o.val, nil); err != nil {
		return err
	}
	if st.n == 0 {
		st.first = o.seq
	}
	st.n++
	st.last = o.seq
	if st.n > s.opts.size+slack(s.opts.size) {
		// A room's texts are numbered without holes as a rule, each after
		// the last: then the first to keep is counted, not read, which
		// would cost an iterator over the batch and the database at every
		// trim.
		skip := st.n - s.opts.size
		keep := st.first + uint64(skip)
		if st.last-st.first+1 != uint64(st.n) {
			var err error
			if keep, err = s.nth(b, p, st.first, skip); err != nil {
				return err
			}
		}
		if err := b.DeleteRange(textKey(p, st.first), textKey(p, keep), nil); err != nil {
			return err
		}
		st.n, st.first = s.opts.size, keep
	}
	w.rooms[o.room] = st
	return nil
}

// count reads the state of the room whose prefix is p in r.
func count(r *pebble.Batch, p []byte) (roomState, error) {
	var st roomState
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: roomEnd(p)})
	if err != nil {
		return st, err
	}
	for ok := it.First(); ok; ok = it.Next() {
		seq := binary.BigEndian.Uint64(it.Key()[len(p):])
		if st.n == 0 {
			st.first = seq
		}
		st.n++
		st.last = seq
	}
	return st, errors.Join(it.Error(), it.Close())
}

// slack is how many texts beyond size a room may have before they are
// deleted, all at once, with one range deletion. After never returns them.
func slack(size int) int { return max(1, size/4) }
