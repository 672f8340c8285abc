// Package sendq is the per-client send queue of the baseline servers: a
// FIFO of encoded messages bounded in bytes, drained by one writer
// goroutine that takes everything queued at once.
package sendq

import "sync"

// Queue is safe for one writer goroutine and any number of producers.
type Queue struct {
	mu     sync.Mutex
	items  [][]byte
	spare  [][]byte
	bytes  int
	limit  int
	closed bool
	wake   chan struct{}
}

// New returns a queue that refuses a push past limit bytes.
func New(limit int) *Queue {
	return &Queue{limit: limit, wake: make(chan struct{}, 1)}
}

// Push queues b without blocking. It reports false when the queue is closed
// or b would pass the bound: the caller then drops the client as a slow
// consumer. b is shared, never modified.
func (q *Queue) Push(b []byte) bool {
	q.mu.Lock()
	if q.closed || q.bytes+len(b) > q.limit {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, b)
	q.bytes += len(b)
	first := len(q.items) == 1
	q.mu.Unlock()
	if first {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// Take waits until something is queued or the queue is closed, and returns
// everything queued. It returns ok false once the queue is closed. The
// caller hands the slice back with Done after writing it.
func (q *Queue) Take() (items [][]byte, ok bool) {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return nil, false
		}
		if len(q.items) > 0 {
			items = q.items
			q.items, q.spare = q.spare[:0], nil
			q.mu.Unlock()
			return items, true
		}
		q.mu.Unlock()
		<-q.wake
	}
}

// Done gives back a slice returned by Take once its items are written.
func (q *Queue) Done(items [][]byte) {
	n := 0
	for i, b := range items {
		n += len(b)
		items[i] = nil
	}
	q.mu.Lock()
	q.bytes -= n
	if cap(items) <= 4096 {
		q.spare = items[:0]
	}
	q.mu.Unlock()
}

// Close drops what is queued and wakes the writer, whose Take returns
// false.
func (q *Queue) Close() {
	q.mu.Lock()
	q.closed = true
	q.items = nil
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
