package garou

import "sync"

// HistoryStore keeps the recent texts of each room, for clients that join
// asking for history and for clients resuming after a lost connection.
//
// The server calls Append with the room's order held, once per text in
// sequence order, so it must be quick and must not call back into the
// Server. All methods may be called concurrently for different rooms.
type HistoryStore interface {
	// Append records m, whose Seq is one more than the last appended for
	// its room (or the first of a room new since Forget).
	Append(room string, m ChatMessage)
	// After returns the kept texts of room with Seq > seq, oldest first,
	// and the Seq of the oldest text kept (0 when none is kept).
	After(room string, seq uint64) (msgs []ChatMessage, oldest uint64)
	// Last returns up to n of the latest texts of room, oldest first.
	Last(room string, n int) []ChatMessage
	// Forget drops what is kept of room; the server calls it when the room
	// is removed.
	Forget(room string)
}

// NewMemoryHistory returns a HistoryStore that keeps the last size texts of
// each room in memory, in a ring per room. A size of 0 keeps nothing.
func NewMemoryHistory(size int) HistoryStore {
	return &memoryHistory{size: size, rooms: make(map[string]*ring)}
}

type memoryHistory struct {
	size  int
	mu    sync.Mutex
	rooms map[string]*ring
}

type ring struct {
	buf   []ChatMessage
	start int // index of the oldest
	n     int
}

func (h *memoryHistory) Append(room string, m ChatMessage) {
	if h.size == 0 {
		return
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
		return
	}
	r.buf[r.start] = m
	r.start = (r.start + 1) % h.size
}

func (h *memoryHistory) After(room string, seq uint64) ([]ChatMessage, uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[room]
	if r == nil || r.n == 0 {
		return nil, 0
	}
	oldest := r.at(0).Seq
	var out []ChatMessage
	for i := range r.n {
		if m := r.at(i); m.Seq > seq {
			out = append(out, m)
		}
	}
	return out, oldest
}

func (h *memoryHistory) Last(room string, n int) []ChatMessage {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[room]
	if r == nil || n <= 0 {
		return nil
	}
	n = min(n, r.n)
	out := make([]ChatMessage, 0, n)
	for i := r.n - n; i < r.n; i++ {
		out = append(out, r.at(i))
	}
	return out
}

func (h *memoryHistory) Forget(room string) {
	h.mu.Lock()
	delete(h.rooms, room)
	h.mu.Unlock()
}

func (r *ring) at(i int) ChatMessage { return r.buf[(r.start+i)%len(r.buf)] }
