package garou

import "sync/atomic"

// replay streams the past of one room to one member as its connection
// drains: the texts are read from history when the member joins, and the
// writer encodes and queues them only while its send queue is under half
// full, so a replay larger than the queue's bound never cuts a client that
// reads. Meanwhile the room's live
// frames for that member are held behind the replay (counted against the
// same bound), and queued when the replay ends, so the member gets the
// room's texts in sequence, without a duplicate or a hole.
type replay struct {
	r    *room
	c    *conn
	l    *lane         // the room's lane of c
	ref  uint64        // the join's ref, for an error reply
	from uint64        // replay the texts with from < Seq ≤ upto
	upto uint64        // the room's last Seq when c joined
	gaps bool          // a resume: texts no longer kept are told as a gap
	msgs []ChatMessage // fetched and not yet queued; owned by the writer
	last uint64        // the Seq of the last text or gap queued; owned by the writer
	next []byte        // msgs[0] encoded, when it waits for room

	fetched atomic.Bool // msgs are set

	// Guarded by r.mu.
	held      [][]byte
	heldBytes int
	cancelled bool
}

// replayLocked starts the replay c asked for on joining r: the texts after
// spec.Since (with a gap notice for those no longer kept), or the last
// spec.History texts. r.mu is held; the caller reads the history with
// fetch once r.mu is released.
func (r *room) replayLocked(c *conn, spec joinSpec, ref uint64) *replay {
	l := r.lanes[c]
	rp := &replay{r: r, c: c, l: l, ref: ref, upto: r.seq}
	switch {
	case spec.Since != nil:
		since := *spec.Since
		if since > r.seq || spec.lostRun {
			// The server no longer knows this room's past (it restarted):
			// what came after since is lost, with no known end.
			l.enqueue(mustEncode(gapFrame(r.name, since+1, 0)))
			return nil
		}
		if since == r.seq {
			return nil
		}
		rp.from, rp.gaps = since, true
	case spec.History > 0:
		rp.from = r.seq - min(r.seq, uint64(spec.History))
		if rp.from == r.seq {
			return nil
		}
	default:
		return nil
	}
	if r.replays == nil {
		r.replays = make(map[*conn]*replay)
	}
	r.replays[c] = rp
	c.mu.Lock()
	l.replays = append(l.replays, rp)
	c.mu.Unlock()
	return rp
}

// holdLocked keeps a live frame of the room until the replay ends. r.mu is
// held.
func (rp *replay) holdLocked(f []byte) {
	ok, over, queued := rp.l.q.reserve(len(f))
	if over {
		rp.c.slow(queued)
	}
	if !ok {
		return
	}
	rp.held = append(rp.held, f)
	rp.heldBytes += len(f)
}

// cancelLocked ends the replay early: its member left the room. r.mu is
// held.
func (rp *replay) cancelLocked() {
	delete(rp.r.replays, rp.c)
	rp.l.q.unreserve(rp.heldBytes)
	rp.held, rp.heldBytes, rp.cancelled = nil, 0, true
}

// fetch reads the replay's texts from history, queues the gap notice or
// error reply that goes before them, and hands the texts to the writer.
// Called right after the join, by the goroutine that joined, with no lock
// held: the history keeps a bounded number of texts, and a room that talks
// on would push out what its member is owed.
func (rp *replay) fetch() {
	defer rp.l.q.signal()
	defer rp.fetched.Store(true)
	c, r := rp.c, rp.r
	msgs, oldest, err := r.s.after(c.qc.Context(), r.name, rp.from, rp.upto)
	if err != nil {
		c.log.Error("garou: history read failed", "room", r.name, "err", err)
		// Unasked (no ref): the join already had its one reply, "joined".
		rp.push(mustEncode(errorFrame(0, r.name, errHistory)))
		if rp.gaps {
			rp.push(mustEncode(gapFrame(r.name, rp.from+1, rp.upto)))
		}
		return
	}
	// Texts said after the join come live, held behind the replay.
	for len(msgs) > 0 && msgs[len(msgs)-1].Seq > rp.upto {
		msgs = msgs[:len(msgs)-1]
	}
	rp.msgs = msgs
	rp.last = rp.from
	if rp.gaps && (oldest == 0 || oldest > rp.from+1) {
		to := rp.upto
		if oldest != 0 {
			to = min(to, oldest-1)
		}
		rp.push(mustEncode(gapFrame(r.name, rp.from+1, to)))
		rp.last = to
	}
}

// pump moves replayed texts onto the lane's queue while the client's
// queues are under half their budget, and ends each replay by queueing
// the live frames held behind it. Called by the writer, before each batch:
// texts are encoded only as the connection drains.
func (l *lane) pump() {
	c := l.c
	half := l.q.b.limit / 2
	for {
		c.mu.Lock()
		if len(l.replays) == 0 {
			c.mu.Unlock()
			return
		}
		rp := l.replays[0]
		c.mu.Unlock()
		if !rp.fetched.Load() { // fetch signals the writer once done
			return
		}
		for len(rp.msgs) > 0 {
			f := rp.next
			if f == nil {
				f = mustEncode(textFrame(&rp.msgs[0]))
				if len(f)-frameHeaderLen > c.maxSize {
					f = notDelivered(rp.r.name)
				}
				if seq := rp.msgs[0].Seq; rp.gaps && seq > rp.last+1 {
					// A number that holds no text (a broker's).
					f = append(mustEncode(emptyFrame(rp.r.name, rp.last+1, seq-1)), f...)
				}
				rp.next = f
			}
			// Frames held behind replays count: the room's live texts
			// go first. One frame at least when nothing is being
			// written, or nothing would wake the writer.
			if total, pending := l.q.counted(); pending > 0 && total+len(f) > half {
				return // the writer calls again once this is written
			}
			rp.last = max(rp.last, rp.msgs[0].Seq)
			rp.msgs[0], rp.next = ChatMessage{}, nil
			rp.msgs = rp.msgs[1:]
			if cancelled, ok := rp.push(f); cancelled {
				break
			} else if !ok {
				return
			}
		}
		rp.finish()
		c.mu.Lock()
		l.replays[0] = nil
		l.replays = l.replays[1:]
		c.mu.Unlock()
	}
}

// push queues a frame of the replay unless the member has left the room
// (checked under the room's lock: nothing of the replay follows a leave).
func (rp *replay) push(f []byte) (cancelled, ok bool) {
	rp.r.mu.Lock()
	defer rp.r.mu.Unlock()
	if rp.cancelled {
		return true, false
	}
	return false, rp.l.enqueue(f)
}

// finish switches the member to live delivery: the frames held during the
// replay are queued, in order, and the room's next ones go straight to the
// queue.
func (rp *replay) finish() {
	r := rp.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if rp.cancelled {
		return
	}
	delete(r.replays, rp.c)
	rp.l.q.pushReserved(rp.held)
	rp.held, rp.heldBytes = nil, 0
}
