package garou

import (
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// maxCoalesce bounds one stream write made of queued frames.
const maxCoalesce = 64 << 10

// lane is one stream the server writes to a client, with its send queue
// and, while the queue has something to write, its writer goroutine. A
// connection has a control lane (the stream the client opened: the
// welcome, replies, direct messages, the bye) and one lane per room it is
// in (a stream the server opens: the joined reply, the replayed past, the
// room's texts and presence, the left reply). A packet lost for one room's
// stream delays only that room: QUIC delivers each stream in order, and
// the streams independently.
//
// Nothing but the lane's writer writes to its stream, and no lock is held
// while it writes. The queues of a connection share one budget, so a
// client that stops reading any of its streams is cut as a slow consumer.
type lane struct {
	c    *conn
	room string // "" for the control lane
	q    *sendQueue

	// str is the control stream, set by the handshake before the queue
	// opens, or the room's stream, opened by the lane's first writer.
	// Written under c.mu (read there by finish), and only by the writer
	// for a room.
	str laneStream

	replays []*replay // guarded by c.mu: the room's past being streamed
	early   bool      // guarded by c.mu: opened by replayEarly, not joined yet
}

// laneStream is what a lane writes to: a *quic.Stream (control) or a
// *quic.SendStream (room), or a Transport's streams.
type laneStream interface {
	Write(p []byte) (int, error)
	Close() error
	SetWriteDeadline(t time.Time) error
}

func newLane(c *conn, room string, q *sendQueue) *lane {
	l := &lane{c: c, room: room, q: q}
	// A writer is started only while the queue is open or closing, and
	// teardown waits for every lane's queue to be done: the wait group's
	// count is above zero whenever one starts.
	q.start = func() { c.s.wg.Go(l.writeLoop) }
	return l
}

// enqueue puts a frame on the lane's queue without blocking, and reports
// whether it did (not when the connection or the lane is ending). A client
// whose queues pass their budget is disconnected as a slow consumer.
func (l *lane) enqueue(frame []byte) bool {
	ok, over, queued := l.q.push(frame)
	if over {
		l.c.slow(queued)
	}
	return ok
}

// enqueueAll is enqueue for frames that go out together: they are queued
// at once, so that the writer takes them in one batch, and sends them in
// as few packets as they fill.
func (l *lane) enqueueAll(frames [][]byte) bool {
	ok, over, queued := l.q.pushAll(frames)
	if over {
		l.c.slow(queued)
	}
	return ok
}

// writeLoop drains the lane's queue, packing queued frames into as few
// stream writes as it can, and streams replays as the queue empties. It is
// started by the queue when a frame arrives and no writer runs, and it ends
// as soon as the queue is empty.
func (l *lane) writeLoop() {
	c := l.c
	for {
		l.pump()
		batch, final, step := l.q.take()
		switch step {
		case stepStop:
			return
		case stepAgain:
			continue
		case stepDatagrams:
			for _, d := range batch {
				// Lost, too large or refused: a signal that may be lost.
				_ = c.qc.SendDatagram(d)
			}
			continue
		case stepEnd:
			l.end(final)
			l.q.exited()
			return
		}
		err := l.write(batch)
		if err != nil {
			l.failed(err)
			l.q.exited()
			return
		}
		n := 0
		for _, f := range batch {
			n += len(f)
		}
		c.s.stats.bytesOut.Add(uint64(n))
		l.q.written(batch)
	}
}

// write writes a batch of frames, opening the room's stream first if
// this is the lane's first write.
func (l *lane) write(batch [][]byte) error {
	if l.str == nil {
		if err := l.open(); err != nil {
			return err
		}
	}
	if len(batch) == 1 {
		// Nothing to coalesce: written as it is, from this frame, so
		// that a new writer's stack is not grown to write one frame.
		_, err := l.str.Write(batch[0])
		return err
	}
	return l.coalesce(batch)
}

// open opens the room's stream. It waits while the client allows no more
// streams (its MAX_STREAMS credit): the room's frames queue meanwhile,
// bounded by the budget.
func (l *lane) open() error {
	c := l.c
	str, err := c.qc.openRoom(c.qc.Context())
	if err != nil {
		return err
	}
	c.mu.Lock()
	l.str = str
	if c.cause != nil && c.cause.graceful {
		// finish bounded the other streams' delivery before this one
		// opened: bound this one the same way.
		_ = str.SetWriteDeadline(c.lingerUntil)
	}
	c.mu.Unlock()
	return nil
}

// end finishes the lane once its queue is done. The control lane writes
// the final frame (the bye) after the room lanes have delivered what they
// had, then lingers and closes the connection; a room lane closes its
// stream, so that the client reads it to its end.
func (l *lane) end(final []byte) {
	c := l.c
	if l.room != "" {
		if l.str != nil {
			_ = l.str.Close()
		}
		return
	}
	if final != nil {
		c.waitRoomLanes()
		c.linger(final)
	}
	c.closeConn()
}

// failed handles a failed write: the stream is gone, or its delivery
// passed its deadline. A stream the client stopped (STOP_SENDING), which
// the protocol does not allow, ends the connection as a protocol error.
// Otherwise the control stream's failure ends the connection, and so does
// a room stream's past the graceful end's deadline; any other failure of
// a room stream is the connection's own end (the client closed it, or it
// was lost), which the connection's reader reports: telling the rooms of
// a protocol error then would misreport a client that quit.
func (l *lane) failed(err error) {
	c := l.c
	l.q.drop()
	// (No stream is reset: a stopped one was reset by QUIC, and a client
	// that saw a room stream reset before the connection's close could
	// take it for the server's protocol error, and reconnect after a
	// final close.)
	switch se, ok := errors.AsType[*quic.StreamError](err); {
	case ok && se.Remote && l.room == "":
		c.fail(CloseProtocol, "the control stream was stopped", "error")
	case ok && se.Remote:
		c.fail(CloseProtocol, "the stream of room "+l.room+" was stopped", "error")
	case l.room == "" || isTimeout(err):
		c.closeConn()
	}
}

// coalesce writes a batch of frames, coalesced into writes of up to
// maxCoalesce bytes. The frames are copied into a buffer borrowed for the
// batch, so an idle connection holds none.
func (l *lane) coalesce(batch [][]byte) error {
	total := 0
	for _, f := range batch {
		if len(f) < maxCoalesce {
			total += len(f)
		}
	}
	bp := writeBufs.Get().(*[]byte)
	buf := slices.Grow((*bp)[:0], min(total, maxCoalesce))
	defer func() {
		if cap(buf) <= maxCoalesce {
			*bp = buf[:0]
			writeBufs.Put(bp)
		}
	}()
	for _, f := range batch {
		if len(f) >= maxCoalesce {
			if err := l.flush(&buf); err != nil {
				return err
			}
			if _, err := l.str.Write(f); err != nil {
				return err
			}
			continue
		}
		if len(buf)+len(f) > maxCoalesce {
			if err := l.flush(&buf); err != nil {
				return err
			}
		}
		buf = append(buf, f...)
	}
	return l.flush(&buf)
}

// writeBufs holds the buffers writers coalesce frames into. A buffer is
// only as large as the batches it served needed (chat frames are small),
// and at most maxCoalesce.
var writeBufs = sync.Pool{New: func() any { return new([]byte) }}

func (l *lane) flush(buf *[]byte) error {
	if len(*buf) == 0 {
		return nil
	}
	_, err := l.str.Write(*buf)
	*buf = (*buf)[:0]
	return err
}
