package boltstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/garou-chat/garou"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// The file's layout: a bucket "garou" that says what the file is, and a
// bucket "rooms" holding one bucket per room, whose keys are the texts'
// Seq (8 bytes, big-endian, so in order) and values the texts.
var (
	metaBucket  = []byte("garou")
	roomsBucket = []byte("rooms")
	formatKey   = []byte("format")
	sizeKey     = []byte("size")
	// epochKey names the file's history (Epoch); floorKey keeps the
	// highest Seq of a room forgotten (LastSeq).
	epochKey = []byte("epoch")
	floorKey = []byte("floor")
)

// format names this package's layout, so that a file of another program,
// or of a later layout, is refused rather than misread.
const format = "garou history, bbolt, v1"

// maxRoomLen is the longest room name a bucket can have (bbolt's
// MaxKeySize).
const maxRoomLen = bolt.MaxKeySize

// Store is a garou.HistoryStore kept in a bbolt file. All its methods may
// be called concurrently. Appends and forgets are committed by one
// goroutine, which takes every one waiting (up to WithMaxBatch) into one
// transaction (one pair of fsyncs): an Append returns once its
// transaction is on disk. After reads a snapshot of what is committed, concurrently with
// the commits.
type Store struct {
	db   *bolt.DB
	opts options

	ops  chan *op
	quit chan struct{} // closed by Close when no call is in flight
	done chan struct{} // closed when the committer has ended

	mu       sync.RWMutex // guards closed and calls.Add
	closed   bool
	calls    sync.WaitGroup // calls in flight
	closing  sync.Once
	closeErr error

	broken atomic.Pointer[error] // the damage found, which fails every later write
	wedged atomic.Bool           // bbolt's writer lock was lost to a panic

	commits atomic.Int64 // transactions of appends and forgets attempted
	taken   atomic.Int64 // appends and forgets taken into them

	epoch string // read or made at Open

	// The committer's own: how many texts each room it has written to has,
	// and the last Seq; filled from the file at a room's first append.
	rooms map[string]roomState
	// lost is the committer's own too: the Seq of a room's text that was
	// not kept (see hold).
	lost map[string]uint64
}

var (
	_ garou.SeqKeeper     = (*Store)(nil)
	_ garou.AppendStarter = (*Store)(nil)
)

type roomState struct {
	n    int    // texts kept
	last uint64 // Seq of the newest, 0 if none
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

// Open opens the history file at path, creating it (mode 0600) if it does
// not exist. It refuses a file that is not a history file (ErrNotHistory),
// a damaged one (ErrCorrupt) and one another process holds (ErrInUse).
// The Store must be closed.
func Open(path string, opts ...Option) (*Store, error) {
	o := defaults()
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	var db *bolt.DB
	err := guard(func() (err error) {
		db, err = bolt.Open(path, 0o600, &bolt.Options{
			Timeout: o.lockTimeout,
			MaxSize: o.maxFileSize,
			// Trimming frees pages all over the file; the map freelist
			// stays fast when it is fragmented.
			FreelistType: bolt.FreelistMapType,
		})
		return err
	})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s: still locked after %v", ErrInUse, path, o.lockTimeout)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum),
		errors.Is(err, berrors.ErrVersionMismatch):
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	case err != nil:
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	s := &Store{
		db:    db,
		opts:  o,
		ops:   make(chan *op, o.maxBatch),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
		rooms: make(map[string]roomState),
		lost:  make(map[string]uint64),
	}
	if err := s.prepare(); err != nil {
		db.Close()
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	if err := s.loadEpoch(); err != nil {
		db.Close()
		return nil, fmt.Errorf("boltstore: %s: %w", path, err)
	}
	go s.run()
	return s, nil
}

// loadEpoch reads the file's epoch, making one for a file that has none.
func (s *Store) loadEpoch() error {
	var e []byte
	err := guard(func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			e = bytes.Clone(tx.Bucket(metaBucket).Get(epochKey))
			return nil
		})
	})
	if err != nil {
		return err
	}
	if e == nil {
		var b [8]byte
		_, _ = rand.Read(b[:])
		e = []byte(hex.EncodeToString(b[:]))
		if err := s.update(func(tx *bolt.Tx) error { return tx.Bucket(metaBucket).Put(epochKey, e) }); err != nil {
			return err
		}
	}
	s.epoch = string(e)
	return nil
}

// Epoch identifies the file's history: it is made with the file and kept
// in it, so a server that reopens the file numbers on and its clients
// resume by number, while a new file is a new history.
func (s *Store) Epoch() string { return s.epoch }

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
		return s.db.View(func(tx *bolt.Tx) error {
			if v := tx.Bucket(metaBucket).Get(floorKey); len(v) == 8 {
				last = binary.BigEndian.Uint64(v)
			}
			if b := tx.Bucket(roomsBucket).Bucket([]byte(room)); b != nil {
				if k, _ := b.Cursor().Last(); len(k) == 8 {
					last = binary.BigEndian.Uint64(k)
				}
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("boltstore: read room %q: %w", room, err)
	}
	return last, nil
}

// prepare checks that the file is a history file, undamaged, or makes an
// empty file one; and trims every room to the size if it was opened with
// a larger one before.
func (s *Store) prepare() error {
	var fresh bool
	var size uint64
	err := guard(func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			meta := tx.Bucket(metaBucket)
			if meta == nil {
				if k, _ := tx.Cursor().First(); k != nil {
					return fmt.Errorf("%w: it has no %q bucket", ErrNotHistory, metaBucket)
				}
				fresh = true
				return nil
			}
			if f := meta.Get(formatKey); string(f) != format {
				return fmt.Errorf("%w: its format is %q, not %q", ErrNotHistory, f, format)
			}
			v := meta.Get(sizeKey)
			if len(v) != 8 || tx.Bucket(roomsBucket) == nil {
				return fmt.Errorf("%w: its %q bucket is incomplete", ErrCorrupt, metaBucket)
			}
			size = binary.BigEndian.Uint64(v)
			return check(tx)
		})
	})
	if err != nil {
		return err
	}
	want := uint64(s.opts.size)
	if !fresh && size == want {
		return nil
	}
	return s.update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		if err := meta.Put(formatKey, []byte(format)); err != nil {
			return err
		}
		if err := meta.Put(sizeKey, seqKey(want)); err != nil {
			return err
		}
		rooms, err := tx.CreateBucketIfNotExists(roomsBucket)
		if err != nil || fresh || want >= size {
			return err
		}
		var names [][]byte
		if err := rooms.ForEachBucket(func(k []byte) error {
			names = append(names, bytes.Clone(k)) // k is the transaction's
			return nil
		}); err != nil {
			return err
		}
		for _, name := range names {
			if want == 0 {
				if err := rooms.DeleteBucket(name); err != nil {
					return err
				}
				continue
			}
			b := rooms.Bucket(name)
			n := b.Stats().KeyN
			for ; n > s.opts.size; n-- {
				if k, _ := b.Cursor().First(); k != nil {
					if err := b.Delete(k); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
}

// check runs bbolt's consistency check of the whole file.
func check(tx *bolt.Tx) error {
	var errs []error
	for err := range tx.Check() {
		if len(errs) < 10 {
			errs = append(errs, err)
		}
	}
	if len(errs) != 0 {
		return fmt.Errorf("%w: %w", ErrCorrupt, errors.Join(errs...))
	}
	return nil
}

// guard runs f, turning a panic of bbolt on a damaged file, or a fault on
// its memory map, into an error wrapping ErrCorrupt.
func guard(f func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, p)
		}
	}()
	return f()
}

// update runs f in a write transaction and commits it. Damage found on
// the way fails this and every later write. If bbolt panics on damage
// while it holds its writer lock and does not release it, the store is
// wedged: Close leaves the file open (and locked) rather than wait for
// ever.
func (s *Store) update(f func(*bolt.Tx) error) error {
	if p := s.broken.Load(); p != nil {
		return *p
	}
	var tx *bolt.Tx
	began := false
	err := guard(func() (err error) {
		tx, err = s.db.Begin(true)
		if err != nil {
			return err
		}
		began = true
		if err := f(tx); err != nil {
			return err
		}
		return tx.Commit()
	})
	if began {
		// After a commit, or a commit that failed, this returns
		// ErrTxClosed; after an error or a panic it ends the transaction.
		if rerr := guard(tx.Rollback); errors.Is(rerr, ErrCorrupt) {
			s.wedged.Store(true)
		}
	} else if errors.Is(err, ErrCorrupt) {
		s.wedged.Store(true) // panicked holding the lock
	}
	if errors.Is(err, ErrCorrupt) {
		s.broken.CompareAndSwap(nil, &err)
	}
	return err
}

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

// Append keeps m, the newest text of room; the room's oldest beyond the
// size are no longer kept. It returns once the transaction holding m is
// on disk. If ctx ends before that transaction has begun, m is not kept and
// Append returns ctx.Err(); once it has begun, Append waits for its
// outcome (an fsync away) and returns it, so that nil always means kept
// and an error always means not kept.
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
	if p := s.broken.Load(); p != nil {
		s.calls.Done()
		return fail(*p)
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
	if p := s.broken.Load(); p != nil {
		return *p
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
		return <-o.done // committing: its outcome is a write away
	}
}

// After returns the kept texts of room with Seq > seq, oldest first, and
// the Seq of the oldest kept (0 if none is). It reads what is committed
// when it starts.
func (s *Store) After(ctx context.Context, room string, seq uint64) ([]garou.ChatMessage, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if !s.enter() {
		return nil, 0, ErrClosed
	}
	defer s.calls.Done()
	if s.opts.size == 0 {
		return nil, 0, nil
	}
	var msgs []garou.ChatMessage
	var oldest uint64
	err := guard(func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(roomsBucket).Bucket([]byte(room))
			if b == nil {
				return nil
			}
			// The newest size texts are kept; older ones wait to be
			// trimmed. Walk back from the newest.
			c := b.Cursor()
			n := 0
			for k, v := c.Last(); k != nil && n < s.opts.size; k, v = c.Prev() {
				if len(k) != 8 {
					return fmt.Errorf("%w: room %q has a key of %d bytes", ErrCorrupt, room, len(k))
				}
				n++
				oldest = binary.BigEndian.Uint64(k)
				if oldest > seq {
					m, err := decodeText(room, k, v)
					if err != nil {
						return err
					}
					msgs = append(msgs, m)
				}
			}
			slices.Reverse(msgs)
			return nil
		})
	})
	if err != nil {
		return nil, 0, fmt.Errorf("boltstore: read room %q: %w", room, err)
	}
	return msgs, oldest, nil
}

// Close ends the store: it waits for the calls in flight (the appends
// among them are committed or fail as usual), stops the committer and
// closes the file. Later calls return ErrClosed. Close may be called more
// than once; every call returns the first one's outcome once it is done.
// A store that found damage while writing may have to leave the file open
// (bbolt lost its lock on it): Close then says so, and the file stays
// locked until the process exits.
func (s *Store) Close() error {
	s.closing.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.calls.Wait()
		close(s.quit)
		<-s.done
		if s.wedged.Load() {
			s.closeErr = fmt.Errorf("boltstore: close: file left open after damage: %w", *s.broken.Load())
			return
		}
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("boltstore: close: %w", err)
		}
	})
	return s.closeErr
}

// run is the committer: it takes the waiting ops into one transaction
// until Close.
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

// commit writes the ops of batch not cancelled in one transaction and
// tells each its outcome.
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
	work := make(map[string]roomState, len(taken))
	err := s.update(func(tx *bolt.Tx) error {
		rooms := tx.Bucket(roomsBucket)
		for _, o := range taken {
			if err := s.apply(rooms, work, o); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		for room, st := range work {
			if st.n == 0 {
				delete(s.rooms, room)
			} else {
				s.rooms[room] = st
			}
		}
	} else {
		err = fmt.Errorf("boltstore: commit: %w", err)
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

// apply writes o in the transaction of rooms, keeping the state of the
// rooms it changes in work.
func (s *Store) apply(rooms *bolt.Bucket, work map[string]roomState, o *op) error {
	name := []byte(o.room)
	if o.val == nil { // forget, keeping the room's last Seq as a floor
		work[o.room] = roomState{}
		if b := rooms.Bucket(name); b != nil {
			if k, _ := b.Cursor().Last(); len(k) == 8 {
				meta := rooms.Tx().Bucket(metaBucket)
				if v := meta.Get(floorKey); len(v) != 8 || binary.BigEndian.Uint64(v) < binary.BigEndian.Uint64(k) {
					if err := meta.Put(floorKey, bytes.Clone(k)); err != nil {
						return err
					}
				}
			}
		}
		if err := rooms.DeleteBucket(name); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
			return err
		}
		return nil
	}
	b, err := rooms.CreateBucketIfNotExists(name)
	if err != nil {
		return err
	}
	b.FillPercent = 0.95 // appended at the end, trimmed at the start
	st, ok := work[o.room]
	if !ok {
		if st, ok = s.rooms[o.room]; !ok {
			st = count(b)
		}
	}
	c := b.Cursor()
	if st.n > 0 && o.seq <= st.last { // the numbering went back
		for k, _ := c.Seek(seqKey(o.seq)); k != nil; k, _ = c.Seek(seqKey(o.seq)) {
			if err := c.Delete(); err != nil {
				return err
			}
			st.n--
		}
		st.last = 0
		if k, _ := c.Last(); k != nil {
			st.last = binary.BigEndian.Uint64(k)
		}
	}
	if err := b.Put(seqKey(o.seq), o.val); err != nil {
		return err
	}
	st.n++
	st.last = o.seq
	if st.n <= s.opts.size+slack(s.opts.size) {
		work[o.room] = st
		return nil
	}
	for ; st.n > s.opts.size; st.n-- {
		if k, _ := c.First(); k != nil {
			if err := c.Delete(); err != nil {
				return err
			}
		}
	}
	work[o.room] = st
	return nil
}

// count reads the state of a room the committer has not seen yet.
func count(b *bolt.Bucket) roomState {
	var st roomState
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		st.n++
	}
	if k, _ := c.Last(); len(k) == 8 {
		st.last = binary.BigEndian.Uint64(k)
	}
	return st
}

// slack is how many texts beyond size a room may have on file before they
// are trimmed, all at once: trimming at every append would rewrite the
// room's first page at every append. After never returns them.
func slack(size int) int { return max(1, size/4) }
