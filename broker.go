package garou

import (
	"context"
	"time"
)

// A Broker makes several servers one chat service: it sequences and keeps
// the texts of every room for all of them, and carries each text to every
// server that has members in its room. A server given one (WithBroker)
// numbers no text itself and keeps none: its HistoryStore is not used, and
// the broker's Epoch is the numbering clients resume by (welcome's
// "server"), the same on every server of the service.
//
// Without a broker (the default) the server is the whole service: it
// numbers each room's texts itself and keeps them in its HistoryStore.
//
// This first version of the seam covers the texts of rooms: their order,
// their history, their delivery to the members on every server, and resume
// on any server. Presence (Users, Members, joins and leaves), direct
// messages, Kick and Publish still reach only the server they are asked of:
// a room's member list is its members on this server, a direct message
// reaches a user connected to this server, and Publish says a text only in
// a room with members here (the text then reaches every server).
//
// The server calls a Broker with no lock held and never while a room's
// texts are being delivered. All methods may be called concurrently, for
// the same room too. The contexts end when the request that needs the
// call is abandoned, or with Server.Close.
type Broker interface {
	// Open starts delivering room's texts to this server: from its call
	// until the stop function it returns is called, the broker calls
	// deliver with each text of room as it is sequenced, by any server.
	// deliver must be called from one goroutine at a time per Open, in
	// the order of Seq, and must not be called after stop returns; it
	// does not block. A text may be delivered more than once, or not at
	// all (a live delivery is at most once): the server drops what it
	// already has, and reads what it missed with After when it sees a
	// text whose Seq is past the next it expects. So a broker that may
	// have lost deliveries (its connection was cut, its buffer overflowed)
	// must, once it knows, deliver the room's latest text again: without
	// a later text, the server cannot know what it missed. A text may be
	// delivered before Open returns.
	//
	// Open returns the Seq of room's latest text (0 for a room that never
	// had one). An error refuses the join that needed the room, with an
	// error "internal". The server opens a room when its first member on
	// this server joins, and stops it when the last leaves or the server
	// stops; it may open a room again while an earlier Open of it is
	// being stopped.
	Open(ctx context.Context, room string, deliver func(ChatMessage)) (last uint64, stop func(), err error)

	// Publish sequences m (a TypeText of m.Room, with ID, From, Text and
	// Time set, Seq 0) after room's latest text, keeps it, and sends it
	// to every server that has room open. It returns the text as kept,
	// with its Seq. key, when not empty, identifies the text across
	// retries, on any server: a Publish whose key was already kept keeps
	// nothing and returns the text kept first (its Seq, ID and Time), for
	// as long as the broker remembers keys (its own window). The server
	// derives key from the sender's name and the client's idempotency key.
	//
	// A Publish that returns an error may still have kept the text (a
	// timeout, a lost connection): the client is told "internal" and,
	// retrying with the same key, gets the text kept once.
	Publish(ctx context.Context, room string, m ChatMessage, key string) (ChatMessage, error)

	// After returns the kept texts of room with Seq > seq, oldest first,
	// with no hole, and the Seq of the oldest text kept, or of any kept
	// text no later than seq+1 (0 when none is kept): what tells the
	// server whether texts after seq are lost, and so announced as a gap.
	// It may return fewer than all of them (a bound of its own): the
	// server asks again from the last it got.
	After(ctx context.Context, room string, seq uint64) (msgs []ChatMessage, oldest uint64, err error)

	// Epoch identifies the numbering the broker keeps: it must change
	// whenever the texts and their numbers are lost (the broker's
	// storage made anew), so that a client never resumes by number across
	// two histories. It is read once, by NewServer.
	Epoch() string
}

// WithBroker makes the server one of several sharing a Broker: the texts
// of its rooms are numbered, kept and carried to the other servers by the
// broker (see Broker for what it covers, and what not yet). Default: none;
// the server alone is the service, and numbers and keeps texts itself
// (WithHistoryStore).
func WithBroker(b Broker) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.broker = b })
}

// openRoom makes the room named name, open on the broker, with the Seq of
// its latest text; or returns the error that refuses the join.
func (s *Server) openRoom(ctx context.Context, name string) (*room, error) {
	r := newRoom(s, name, 0)
	last, stop, err := s.cfg.broker.Open(ctx, name, r.receive)
	if err != nil {
		s.log.Error("garou: broker open failed", "room", name, "err", err)
		return nil, errHistory
	}
	r.mu.Lock()
	r.stopLive = stop
	r.seq = last
	r.open = true
	heard := r.heard
	r.mu.Unlock()
	if heard > last {
		r.fillGap(heard)
	}
	return r, nil
}

// closeRoom stops r's live delivery from the broker, if open.
func (r *room) closeRoom() {
	r.mu.Lock()
	stop := r.stopLive
	r.stopLive, r.open = nil, false
	r.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// receive is the room's deliver function given to Broker.Open: a text in
// order is delivered to the members, one already delivered is dropped, one
// past a hole has the hole read from the broker first.
func (r *room) receive(m ChatMessage) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.open && m.Seq == r.seq+1 {
		r.applyLocked(m)
		return
	}
	r.heard = max(r.heard, m.Seq)
	r.startFillLocked()
}

// fillGap reads from the broker what the room misses up to seq.
func (r *room) fillGap(seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.heard = max(r.heard, seq)
	r.startFillLocked()
}

// startFillLocked starts reading what the room misses from the broker, on
// a goroutine the server waits for, unless one is already at it. r.mu is
// held.
func (r *room) startFillLocked() {
	if !r.open || r.filling || r.seq >= r.heard {
		return
	}
	r.filling = true
	r.s.fills.Add(1)
	go func() {
		defer r.s.fills.Done()
		r.fill(r.s.runCtx, true, 0)
	}()
}

// fill reads from the broker and delivers the texts the room misses, up to
// the highest it has heard of, or upto if higher. With owner, the caller
// is the room's filler (r.filling is set) and fill clears r.filling as it
// ends. A read that fails is logged, and the next text heard past the hole
// tries again.
func (r *room) fill(ctx context.Context, owner bool, upto uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.open && r.seq < max(r.heard, upto) {
		from := r.seq
		r.mu.Unlock()
		msgs, oldest, err := r.s.cfg.broker.After(ctx, r.name, from)
		r.mu.Lock()
		if err != nil {
			r.s.log.Error("garou: broker read failed", "room", r.name, "err", err)
			break
		}
		if r.seq == from {
			r.applyAllLocked(msgs, oldest)
			if r.seq == from {
				break // nothing more to read: the next text heard tries again
			}
		}
	}
	if owner {
		r.filling = false
	}
}

// applyAllLocked delivers msgs, read from the broker after the room's last
// text, with a gap notice first for the texts between the two that are no
// longer kept (so never to be delivered). r.mu is held.
func (r *room) applyAllLocked(msgs []ChatMessage, oldest uint64) {
	first := oldest
	if len(msgs) > 0 {
		first = msgs[0].Seq
	}
	if first > r.seq+1 {
		r.broadcastLocked(mustEncode(gapFrame(r.name, r.seq+1, first-1)), nil)
		r.seq = first - 1
	}
	for _, m := range msgs {
		if m.Seq == r.seq+1 {
			r.applyLocked(m)
		}
	}
}

// applyLocked delivers m, the room's next text, to its members. r.mu is
// held.
func (r *room) applyLocked(m ChatMessage) {
	frame, err := encodeTextFrame(&m)
	if err != nil {
		frame = notDelivered(r.name)
	}
	r.seq = m.Seq
	r.s.stats.texts.Add(1)
	r.s.stats.deliveries.Add(uint64(len(r.members)))
	r.broadcastLocked(frame, nil)
}

// catchUp delivers the texts of the room named name up to seq, if it is
// open here and behind: a client resuming from another server may have
// seen texts this one has not received yet, and would otherwise be told
// they are lost.
func (s *Server) catchUp(ctx context.Context, name string, seq uint64) {
	r := s.lookupRoom(name)
	if r == nil {
		return // opened by the join, at the broker's latest
	}
	r.fill(ctx, false, seq)
}

// publishBrokered is publish with a broker: the broker sequences and keeps
// the text, and the room delivers every text up to it before it returns,
// so the sender's acknowledgement follows its text as without a broker.
// r.order is held; msg has no Seq yet.
func (r *room) publishBrokered(ctx context.Context, c *conn, msg ChatMessage, key string) (ChatMessage, error) {
	if c != nil {
		r.mu.Lock()
		r.announceJoinLocked(c) // its join before its text
		r.mu.Unlock()
	}
	if key != "" && c != nil {
		// By name, not ID: a user without an ID of the host's own has
		// another on each server, and a retry goes to another server.
		key = c.key + "\x00" + key
	}
	start := time.Now()
	kept, err := r.s.cfg.broker.Publish(ctx, r.name, msg, key)
	r.s.stats.history(time.Since(start), err)
	if err != nil {
		r.s.log.Error("garou: broker publish failed", "room", r.name, "err", err)
		return ChatMessage{}, errHistory
	}
	r.mu.Lock()
	r.heard = max(r.heard, kept.Seq)
	r.mu.Unlock()
	r.fill(ctx, false, 0)
	return kept, nil
}

// stopRooms stops the live delivery of every room and waits for the reads
// of what they missed to end. Called once the server's connections are
// gone.
func (s *Server) stopRooms() {
	if s.cfg.broker == nil {
		return
	}
	s.cancelRun()
	s.roomsMu.Lock()
	rooms := make([]*room, 0, len(s.rooms))
	for _, r := range s.rooms {
		rooms = append(rooms, r)
	}
	s.roomsMu.Unlock()
	for _, r := range rooms {
		r.closeRoom()
	}
	s.fills.Wait()
}

// after returns the kept texts of room with from < Seq ≤ upto (or more),
// and the Seq of the oldest kept: from the broker, asked as often as its
// bound needs, or from the history store.
func (s *Server) after(ctx context.Context, room string, from, upto uint64) ([]ChatMessage, uint64, error) {
	if s.cfg.broker == nil {
		return s.cfg.history.After(ctx, room, from)
	}
	var all []ChatMessage
	var oldest uint64
	for from < upto {
		msgs, o, err := s.cfg.broker.After(ctx, room, from)
		if err != nil {
			return nil, 0, err
		}
		if oldest == 0 {
			oldest = o
		}
		if len(msgs) == 0 || msgs[len(msgs)-1].Seq <= from {
			break
		}
		all = append(all, msgs...)
		from = msgs[len(msgs)-1].Seq
	}
	return all, oldest, nil
}
