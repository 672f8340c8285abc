package garou

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
)

// HistoryStore keeps the recent texts of each room, for clients that join
// asking for history and for clients resuming after a lost connection.
//
// The server never calls a store with a room's lock held: a slow store
// delays the texts said in that room (Append is called once per text, in
// sequence order, and the text is delivered and acknowledged only once
// Append has returned nil; a store that is also an AppendStarter is given
// a room's next text before the previous one is kept) and the replays
// read from it, but nothing else.
// It must not call back into the Server. All methods may be called
// concurrently, for the same room too (After and Append). The context ends
// when the request that needs the call is abandoned (its connection ended,
// or the context given to Server.Publish).
//
// A text given to Append may carry a SenderKey (with WithDataDir): a store
// that keeps texts across restarts keeps it and returns it from After, so
// that a restored session's retried text is recognised (see
// ChatMessage.SenderKey); a store that does not loses only that.
//
// An error is logged and reported to the client concerned as an error
// with code "internal": a text whose Append fails is not sequenced, not
// delivered and not acknowledged; a replay whose After fails is replaced
// by an error "internal" about the room (no ref), then, for a resume, a
// gap notice for what it would have replayed.
type HistoryStore interface {
	// Append records m, whose Seq is one more than the last appended for
	// its room (or the first of a room new since Forget).
	Append(ctx context.Context, room string, m ChatMessage) error
	// After returns the kept texts of room with Seq > seq, oldest first,
	// and the Seq of the oldest text kept (0 when none is kept).
	After(ctx context.Context, room string, seq uint64) (msgs []ChatMessage, oldest uint64, err error)
	// Forget drops what is kept of room; the server calls it when the room's
	// last member leaves, before the room is removed.
	Forget(ctx context.Context, room string) error
}

// An AppendStarter is a HistoryStore that takes a room's next text before
// the previous one is kept, so that the texts said at once in one room
// share a group commit instead of waiting for one each. Without a Broker,
// the server then calls StartAppend instead of Append.
//
// Ordering: the server calls StartAppend for a room's texts one at a
// time, in sequence order (never two of a room at once; the rooms'
// concurrently), and calls wait from another goroutine, perhaps after
// the next text's StartAppend. The store keeps a room's texts in the
// order StartAppend was called, with Append's rules (a Seq no greater
// than the last queued replaces the texts from it on). The server
// delivers and acknowledges a text once its wait and those of every
// earlier text of the room have returned nil; every wait is called
// exactly once.
//
// Failure: wait returns nil once m is kept, or an error when it is not.
// A text queued after one of its room that is not kept, with a greater
// Seq, must not be kept either (its wait returns an error) until a text
// of the room whose Seq goes back to the one not kept, or before it, is
// queued, or the room is forgotten: the store never keeps a room's text
// without the one before it. The server fails those texts anyway (their
// senders get "internal") and numbers the room's next text after the last
// it delivered, so members see no hole and no number twice.
//
// ctx is the server's own, which ends when it closes: a text is not
// withdrawn when its sender goes, since that would fail the texts behind
// it. StartAppend must not block for long; it may return a wait that
// reports an error at once.
type AppendStarter interface {
	HistoryStore
	// StartAppend queues m, the room's next text, and returns at once;
	// wait returns once m is kept (nil) or is known not to be.
	StartAppend(ctx context.Context, room string, m ChatMessage) (wait func() error)
}

// NewMemoryHistory returns a HistoryStore (a SeqKeeper) that keeps the last size texts of
// each room in memory, in a ring per room. A size of 0 keeps nothing.
func NewMemoryHistory(size int) HistoryStore {
	var e [8]byte
	_, _ = rand.Read(e[:])
	return &memoryHistory{size: size, rooms: make(map[string]*ring), epoch: hex.EncodeToString(e[:])}
}

type memoryHistory struct {
	size  int
	epoch string // random: a new store has a new history
	floor uint64 // the highest Seq of a room forgotten
	mu    sync.Mutex
	rooms map[string]*ring
}

type ring struct {
	buf   []ChatMessage
	start int // index of the oldest
	n     int
}

func (h *memoryHistory) Append(_ context.Context, room string, m ChatMessage) error {
	if h.size == 0 {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[room]
	if r == nil {
		r = &ring{}
		h.rooms[room] = r
	}
	if r.n < h.size { // filling up: start stays 0
		r.buf = append(r.buf, m)
		r.n++
		return nil
	}
	r.buf[r.start] = m
	r.start = (r.start + 1) % h.size
	return nil
}

func (h *memoryHistory) After(_ context.Context, room string, seq uint64) ([]ChatMessage, uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[room]
	if r == nil || r.n == 0 {
		return nil, 0, nil
	}
	oldest := r.at(0).Seq
	var out []ChatMessage
	for i := range r.n {
		if m := r.at(i); m.Seq > seq {
			out = append(out, m)
		}
	}
	return out, oldest, nil
}

func (h *memoryHistory) Forget(_ context.Context, room string) error {
	h.mu.Lock()
	if r := h.rooms[room]; r != nil && r.n > 0 {
		h.floor = max(h.floor, r.at(r.n-1).Seq)
	}
	delete(h.rooms, room)
	h.mu.Unlock()
	return nil
}

func (r *ring) at(i int) ChatMessage { return r.buf[(r.start+i)%len(r.buf)] }

// Epoch is the store's, random: a process's memory does not outlive it.
func (h *memoryHistory) Epoch() string { return h.epoch }

// LastSeq makes the memory store a SeqKeeper: a server restarted in the
// same process with the same store numbers on.
func (h *memoryHistory) LastSeq(_ context.Context, room string) (uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[room]
	if r == nil || r.n == 0 {
		return h.floor, nil
	}
	return r.at(r.n - 1).Seq, nil
}
