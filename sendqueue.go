package garou

import "sync"

// queueState is where a send queue is in its life. It only moves forward:
// handshake → open → closing → closed, with any step skippable.
type queueState uint8

const (
	// queueHandshake: the head of the queue is reserved for the welcome.
	// Frames queue behind it, and the writer sends nothing until welcome
	// fills the slot, so a client reads its welcome before anything else.
	queueHandshake queueState = iota
	// queueOpen: frames are written in the order they were pushed.
	queueOpen
	// queueClosing: no more frames are taken; the writer drains what is
	// queued, then writes the final frame (if any) and ends.
	queueClosing
	// queueClosed: everything queued is dropped and the writer ends.
	queueClosed
)

// sendQueue is one connection's queue of encoded frames, bounded in bytes.
// Any number of goroutines push; one writer takes. Pushing never blocks,
// and no lock is held while the writer writes, so a room can put a frame on
// every member's queue under its own lock. Frames are shared between
// queues and never modified.
type sendQueue struct {
	limit int           // the bound in bytes, frames and reservations counted
	wake  chan struct{} // signalled when the writer has something to do

	mu     sync.Mutex
	state  queueState
	frames [][]byte // frames[0] is the welcome's slot during the handshake
	spare  [][]byte // the writer's last batch, reused for the next frames
	bytes  int      // queued, being written, and reserved
	held   int      // of bytes, reserved for frames held elsewhere
	final  []byte
}

func newSendQueue(limit int) *sendQueue {
	return &sendQueue{
		limit:  limit,
		wake:   make(chan struct{}, 1),
		frames: [][]byte{nil}, // the welcome's slot
	}
}

// push queues f. It reports ok false when the queue no longer takes
// frames, and over true (with the bytes that were queued) when f would pass
// the bound: the queue is then closed and emptied, and the caller cuts the
// client as a slow consumer.
func (q *sendQueue) push(f []byte) (ok, over bool, queued int) {
	q.mu.Lock()
	if q.state >= queueClosing {
		q.mu.Unlock()
		return false, false, 0
	}
	if q.bytes+len(f) > q.limit {
		queued = q.bytes
		q.dropLocked()
		q.mu.Unlock()
		q.signal()
		return false, true, queued
	}
	q.frames = append(q.frames, f)
	q.bytes += len(f)
	first := len(q.frames) == 1
	q.mu.Unlock()
	if first {
		q.signal()
	}
	return true, false, 0
}

// reserve counts n bytes against the bound for frames held elsewhere until
// pushReserved or unreserve. Like push, it reports over when the bound is
// passed, and then closes the queue.
func (q *sendQueue) reserve(n int) (ok, over bool, queued int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.state >= queueClosing {
		return false, false, 0
	}
	if q.bytes+n > q.limit {
		queued = q.bytes
		q.dropLocked()
		defer q.signal()
		return false, true, queued
	}
	q.bytes += n
	q.held += n
	return true, false, 0
}

// pushReserved queues frames whose bytes were reserved.
func (q *sendQueue) pushReserved(frames [][]byte) {
	if len(frames) == 0 {
		return
	}
	q.mu.Lock()
	if q.state >= queueClosing {
		q.mu.Unlock()
		return
	}
	for _, f := range frames {
		q.held -= len(f)
	}
	q.frames = append(q.frames, frames...)
	q.mu.Unlock()
	q.signal()
}

// unreserve gives back n reserved bytes whose frames will not be sent.
func (q *sendQueue) unreserve(n int) {
	q.mu.Lock()
	if q.state < queueClosed {
		q.bytes -= n
		q.held -= n
	}
	q.mu.Unlock()
}

// welcome fills the welcome's slot and opens the queue. It does nothing
// unless the queue is in its handshake.
func (q *sendQueue) welcome(f []byte) {
	q.mu.Lock()
	if q.state != queueHandshake {
		q.mu.Unlock()
		return
	}
	q.frames[0] = f
	q.bytes += len(f)
	q.state = queueOpen
	q.mu.Unlock()
	q.signal()
}

// close takes no more frames: the writer drains the queue, then writes
// final (if not nil). Closed during the handshake, the queue drops what
// waits behind the welcome's slot: no welcome will come, and those frames
// mean nothing without it. Only the first close or drop counts.
func (q *sendQueue) close(final []byte) {
	q.mu.Lock()
	switch q.state {
	case queueHandshake:
		q.frames, q.bytes, q.held = q.frames[:0], 0, 0
		fallthrough
	case queueOpen:
		q.state = queueClosing
		q.final = final
	}
	q.mu.Unlock()
	q.signal()
}

// drop closes the queue and discards what it holds: the writer ends.
func (q *sendQueue) drop() {
	q.mu.Lock()
	q.dropLocked()
	q.mu.Unlock()
	q.signal()
}

func (q *sendQueue) dropLocked() {
	q.state = queueClosed
	clear(q.frames)
	q.frames, q.spare, q.bytes, q.held, q.final = nil, nil, 0, 0, nil
}

// take returns, for the writer, the frames to write now (possibly none:
// then wait on wake). end is true when the writer is done: it then writes
// final (if not nil) and ends. The batch is given back with written.
func (q *sendQueue) take() (batch [][]byte, final []byte, end bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch q.state {
	case queueHandshake:
		return nil, nil, false
	case queueClosed:
		return nil, nil, true
	}
	if len(q.frames) == 0 {
		if q.state == queueClosing {
			final, q.final = q.final, nil
			q.state = queueClosed
			return nil, final, true
		}
		return nil, nil, false
	}
	batch = q.frames
	q.frames, q.spare = q.spare[:0], nil
	return batch, nil, false
}

// written gives back a batch from take once its frames are written.
func (q *sendQueue) written(batch [][]byte) {
	n := 0
	for _, f := range batch {
		n += len(f)
	}
	clear(batch)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.state == queueClosed {
		return
	}
	q.bytes -= n
	if cap(batch) <= 4096 {
		q.spare = batch[:0]
	}
}

// counted returns the bytes counted against the bound, and of those the
// bytes queued or being written (the others are reserved).
func (q *sendQueue) counted() (total, pending int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes, q.bytes - q.held
}

// signal wakes the writer, without blocking.
func (q *sendQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
