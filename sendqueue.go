package garou

import (
	"sync"
	"sync/atomic"
)

// budget bounds the bytes queued for one client across its send queues:
// its control stream's and one per room. A client that stops reading any
// of its streams fills the budget, and is cut as a slow consumer, however
// its bytes are spread.
type budget struct {
	limit int
	n     atomic.Int64 // queued, being written and reserved, over all queues
}

func (b *budget) used() int { return int(b.n.Load()) }

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

// sendQueue is the queue of encoded frames for one stream to a client,
// bounded in bytes together with the client's other queues (budget).
// Any number of goroutines push; one writer takes. Pushing never blocks,
// and no lock is held while the writer writes, so a room can put a frame on
// every member's queue under its own lock. Frames are shared between
// queues and never modified.
//
// The writer runs only while there is something to write: the queue starts
// one (with start) when a frame arrives and none runs, and the writer ends
// when take finds nothing, so an idle connection has no writer goroutine.
// Both decisions are made under mu, so a frame pushed as the writer ends
// either is in its last batch or starts the next writer.
type sendQueue struct {
	b     *budget // the bound in bytes, frames and reservations counted
	start func()  // starts a writer goroutine; nil: the caller takes by hand
	done  chan struct{}

	mu       sync.Mutex
	state    queueState
	frames   [][]byte // frames[0] is the welcome's slot during the handshake
	spare    [][]byte // the writer's last batch, reused for the next frames
	bytes    int      // queued, being written, and reserved
	held     int      // of bytes, reserved for frames held elsewhere
	final    []byte
	dgrams   [][]byte // signals to send as QUIC datagrams, at most maxDatagrams
	writing  bool     // a writer runs (or is being started)
	kicked   bool     // signal came while a writer ran: it looks again before ending
	finished bool     // done is closed
}

// newSendQueue returns a control stream's queue, bounded alone by limit.
func newSendQueue(limit int) *sendQueue {
	return newControlQueue(&budget{limit: limit})
}

// newControlQueue returns the queue of a control stream, in its handshake,
// holding its first slot for the welcome.
func newControlQueue(b *budget) *sendQueue {
	return &sendQueue{
		b:      b,
		done:   make(chan struct{}),
		frames: [][]byte{nil}, // the welcome's slot
	}
}

// newRoomQueue returns the queue of a room's stream. Opened at once, it
// writes what comes; else it holds its frames until open, as the rooms a
// hello joins wait for the welcome.
func newRoomQueue(b *budget, opened bool) *sendQueue {
	q := &sendQueue{b: b, done: make(chan struct{})}
	if opened {
		q.state = queueOpen
	}
	return q
}

// addLocked counts n more (or fewer) bytes in the queue and its budget.
func (q *sendQueue) addLocked(n int) {
	q.bytes += n
	q.b.n.Add(int64(n))
}

// overLocked reports whether n more bytes would pass the budget.
func (q *sendQueue) overLocked(n int) bool {
	return q.b.used()+n > q.b.limit
}

// startLocked reports whether the caller must start a writer (call start
// once mu is released): there is none, and the queue is past its handshake
// and not closed. It counts the writer as running from now on.
func (q *sendQueue) startLocked() bool {
	if q.writing || q.start == nil || q.state == queueHandshake || q.state == queueClosed {
		return false
	}
	q.writing = true
	return true
}

// run starts a writer if startLocked said so.
func (q *sendQueue) run(start bool) {
	if start {
		q.start()
	}
}

// push queues f. It reports ok false when the queue no longer takes
// frames, and over true (with the bytes that were queued) when f would pass
// the bound: the queue is then closed and emptied, and the caller cuts the
// client as a slow consumer.
func (q *sendQueue) push(f []byte) (ok, over bool, queued int) {
	return q.pushAll([][]byte{f})
}

// pushAll is push for several frames, queued together or not at all.
func (q *sendQueue) pushAll(frames [][]byte) (ok, over bool, queued int) {
	n := 0
	for _, f := range frames {
		n += len(f)
	}
	q.mu.Lock()
	if q.state >= queueClosing {
		q.mu.Unlock()
		return false, false, 0
	}
	if q.overLocked(n) {
		queued = q.b.used()
		q.dropLocked()
		q.mu.Unlock()
		return false, true, queued
	}
	q.frames = append(q.frames, frames...)
	q.addLocked(n)
	start := q.startLocked()
	q.mu.Unlock()
	q.run(start)
	return true, false, 0
}

// open starts a room's queue held since its creation: its frames go out
// from now on. It does nothing to a queue already open or closed.
func (q *sendQueue) open() {
	q.mu.Lock()
	// (A control queue in its handshake, whose first slot is empty, waits
	// for its welcome instead.)
	if q.state != queueHandshake || len(q.frames) > 0 && q.frames[0] == nil {
		q.mu.Unlock()
		return
	}
	q.state = queueOpen
	start := q.startLocked()
	q.mu.Unlock()
	q.run(start)
}

// maxDatagrams bounds the signals waiting to go out as datagrams: they
// may be lost anyway, so a connection that cannot take them drops them
// rather than queue them.
const maxDatagrams = 16

// pushDatagram queues the body of a signal (typing) to be sent as a QUIC
// datagram, ahead of the queued frames: it is small, and stale if late. It
// is dropped when maxDatagrams wait already or the queue is not open.
func (q *sendQueue) pushDatagram(body []byte) {
	q.mu.Lock()
	if q.state != queueOpen || len(q.dgrams) >= maxDatagrams {
		q.mu.Unlock()
		return
	}
	q.dgrams = append(q.dgrams, body)
	start := q.startLocked()
	q.mu.Unlock()
	q.run(start)
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
	if q.overLocked(n) {
		queued = q.b.used()
		q.dropLocked()
		return false, true, queued
	}
	q.addLocked(n)
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
	start := q.startLocked()
	q.mu.Unlock()
	q.run(start)
}

// unreserve gives back n reserved bytes whose frames will not be sent.
func (q *sendQueue) unreserve(n int) {
	q.mu.Lock()
	if q.state < queueClosed {
		q.addLocked(-n)
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
	q.addLocked(len(f))
	q.state = queueOpen
	start := q.startLocked()
	q.mu.Unlock()
	q.run(start)
}

// close takes no more frames: the writer drains the queue, then writes
// final (if not nil). Closed during the handshake, the queue drops what
// waits behind the welcome's slot: no welcome will come, and those frames
// mean nothing without it. Only the first close or drop counts.
func (q *sendQueue) close(final []byte) {
	q.mu.Lock()
	switch q.state {
	case queueHandshake:
		q.addLocked(-q.bytes)
		q.frames, q.held = q.frames[:0], 0
		fallthrough
	case queueOpen:
		q.state = queueClosing
		q.final = final
		q.dgrams = nil // signals are stale by now
	}
	start := q.startLocked()
	q.mu.Unlock()
	q.run(start)
}

// drop closes the queue and discards what it holds: a running writer ends
// at its next take.
func (q *sendQueue) drop() {
	q.mu.Lock()
	q.dropLocked()
	q.mu.Unlock()
}

func (q *sendQueue) dropLocked() {
	q.state = queueClosed
	q.addLocked(-q.bytes)
	clear(q.frames)
	q.frames, q.spare, q.held, q.final, q.dgrams = nil, nil, 0, nil, nil
	q.finishLocked()
}

// isDone reports whether done is closed.
func (q *sendQueue) isDone() bool {
	select {
	case <-q.done:
		return true
	default:
		return false
	}
}

// finishLocked closes done once the queue is closed and no writer runs:
// no writer will ever start again.
func (q *sendQueue) finishLocked() {
	if q.state == queueClosed && !q.writing && !q.finished {
		q.finished = true
		close(q.done)
	}
}

// writerStep is what the writer does after take.
type writerStep uint8

const (
	// stepWrite: write the batch, give it back with written, take again.
	stepWrite writerStep = iota
	// stepDatagrams: send each of the batch as a datagram, take again.
	stepDatagrams
	// stepAgain: nothing is queued, but signal was called meanwhile (a
	// replay may have texts to queue): look again, then take again.
	stepAgain
	// stepStop: nothing to write; the writer ends at once, and the next
	// frame starts another.
	stepStop
	// stepEnd: the queue is done. The writer writes final (if not nil) and
	// calls exited as it ends.
	stepEnd
)

// take tells the writer what to do next, with the frames to write now.
// The batch is given back with written.
func (q *sendQueue) take() (batch [][]byte, final []byte, step writerStep) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.state == queueClosed:
		return nil, nil, stepEnd
	case len(q.dgrams) > 0:
		batch, q.dgrams = q.dgrams, nil
		return batch, nil, stepDatagrams
	case len(q.frames) > 0 && q.state != queueHandshake:
		batch = q.frames
		q.frames, q.spare = q.spare[:0], nil
		return batch, nil, stepWrite
	case q.kicked:
		q.kicked = false
		return nil, nil, stepAgain
	case q.state == queueClosing:
		final, q.final = q.final, nil
		q.state = queueClosed
		return nil, final, stepEnd
	}
	// The writer ends: an idle connection keeps no batch slices either
	// (the next burst allocates one or two, which a burst's batches reuse).
	q.writing = false
	q.spare = nil
	if len(q.frames) == 0 { // not during the handshake
		q.frames = nil
	}
	return nil, nil, stepStop
}

// exited tells the queue that the writer that took stepEnd has ended.
func (q *sendQueue) exited() {
	q.mu.Lock()
	q.writing = false
	q.finishLocked()
	q.mu.Unlock()
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
	q.addLocked(-n)
	if cap(batch) <= 4096 {
		q.spare = batch[:0]
	}
}

// counted returns the bytes counted against the bound (by all the
// client's queues), and the bytes of this queue queued or being written
// (the others are reserved).
func (q *sendQueue) counted() (total, pending int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.b.used(), q.bytes - q.held
}

// signal tells the writer that something other than a frame may be ready
// for it (a replay's texts): a running writer looks again before it ends,
// and if none runs, one is started.
func (q *sendQueue) signal() {
	q.mu.Lock()
	if q.writing {
		q.kicked = true
	}
	start := q.startLocked()
	q.mu.Unlock()
	q.run(start)
}
