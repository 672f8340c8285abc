package garou

import (
	"context"
	"sync"
	"time"
)

// room is one room: its members and its sequence. Its mutex orders
// everything said in it: a text is sequenced and put on every member's send
// queue under the lock, so all members get the room's events in one order.
// Enqueueing never blocks (see conn.enqueue), so the lock is never held
// across a network write, nor across a call to the history store.
type room struct {
	s    *Server
	name string

	// order serialises the texts of the room, and its removal, around the
	// history store: it is held across HistoryStore.Append and Forget, and
	// taken before mu, never while holding mu or the server's roomsMu. It
	// is a semaphore of one, so that a wait for it can end with a context.
	order chan struct{}

	mu      sync.Mutex
	members []*conn       // iteration order is irrelevant
	index   map[*conn]int // position in members
	byUser  map[string]*conn
	replays map[*conn]*replay // members whose replay is streaming
	seq     uint64
	deleted bool
}

func newRoom(s *Server, name string, seq uint64) *room {
	return &room{s: s, name: name, order: make(chan struct{}, 1), index: make(map[*conn]int),
		byUser: make(map[string]*conn), seq: seq}
}

// lockOrder waits for the room's order, or for ctx to end.
func (r *room) lockOrder(ctx context.Context) error {
	select {
	case r.order <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *room) unlockOrder() { <-r.order }

func (r *room) users() []User {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.usersLocked()
}

// broadcastLocked puts one encoded frame on every member's queue except
// skip, or behind the replay of a member that has one streaming. r.mu is
// held.
func (r *room) broadcastLocked(frame []byte, skip *conn) {
	var notice []byte
	for _, m := range r.members {
		if m == skip {
			continue
		}
		f := frame
		if len(frame)-frameHeaderLen > m.maxSize {
			if notice == nil {
				notice = notDelivered(r.name)
			}
			f = notice
		}
		if len(r.replays) != 0 {
			if rp := r.replays[m]; rp != nil {
				rp.holdLocked(f)
				continue
			}
		}
		m.enqueue(f)
	}
}

// publish sequences text from c (nil: the server) in the room, keeps it
// and delivers it. The history store is called with no room lock held: a
// slow store delays only the texts of this room.
func (r *room) publish(ctx context.Context, c *conn, from *User, text string) (ChatMessage, error) {
	if err := r.lockOrder(ctx); err != nil {
		return ChatMessage{}, err
	}
	defer r.unlockOrder()
	r.mu.Lock()
	if c != nil {
		if _, ok := r.index[c]; !ok {
			r.mu.Unlock()
			return ChatMessage{}, notInRoom(r.name)
		}
	} else if r.deleted {
		r.mu.Unlock()
		return ChatMessage{}, ErrNoSuchRoom
	}
	// Only publish changes seq, and r.order is held: seq+1 is this text's.
	seq := r.seq + 1
	r.mu.Unlock()
	if r.s.draining.Load() {
		return ChatMessage{}, &Error{Code: CodeShutdown, Text: "server shutting down"}
	}
	msg := ChatMessage{
		Type: TypeText,
		Room: r.name,
		Seq:  seq,
		ID:   r.s.newID(),
		From: from,
		Text: text,
		Time: time.Now().UTC(),
	}
	frame, err := encodeTextFrame(&msg)
	if err != nil {
		return ChatMessage{}, err
	}
	if len(frame)-frameHeaderLen > r.s.cfg.maxMessageSize {
		return ChatMessage{}, &Error{Code: CodeTooLarge, Text: "the message would exceed the maximum message size"}
	}
	if err := r.s.cfg.history.Append(ctx, r.name, msg); err != nil {
		r.s.log.Error("garou: history append failed", "room", r.name, "seq", seq, "err", err)
		return ChatMessage{}, errHistory
	}
	r.mu.Lock()
	// Kept, so sequenced: delivered even if c was replaced meanwhile.
	r.seq = seq
	r.broadcastLocked(frame, nil)
	r.mu.Unlock()
	return msg, nil
}

// errHistory is what a client is told when the history store fails.
var errHistory = &Error{Code: CodeInternal, Text: "the room's history is unavailable"}

// join adds c to the room named spec.Room, creating it if needed: c gets a
// "joined" reply, then what it asked to replay, then everything said after;
// the other members are told, unless c takes the place of an earlier
// connection of the same session. It returns the replay to fetch, if any,
// once no lock is held.
func (s *Server) join(c *conn, spec joinSpec, ref uint64) (*replay, error) {
	s.roomsMu.Lock()
	r := s.rooms[spec.Room]
	if r == nil {
		r = newRoom(s, spec.Room, s.seqFloor)
		s.rooms[spec.Room] = r
	}
	r.mu.Lock()
	s.roomsMu.Unlock()
	defer r.mu.Unlock()

	if _, ok := r.index[c]; ok {
		c.enqueue(c.encodeList(joinedFrame(ref, r.name, r.usersLocked(), r.seq)))
		return nil, nil
	}
	old := r.byUser[c.user.ID]
	if old != nil && !s.current(c) {
		return nil, &Error{Code: CodeShutdown, Text: "your connection is ending: the session was resumed on another connection"}
	}
	if old == nil && len(r.members) >= s.cfg.maxRoomMembers {
		return nil, &Error{Code: CodeRoomFull, Text: "room " + r.name + " is full"}
	}
	if old != nil {
		r.removeLocked(old)
		old.dropRoom(r.name)
	}
	r.addLocked(c)
	c.addRoom(r)
	c.enqueue(c.encodeList(joinedFrame(ref, r.name, r.usersLocked(), r.seq)))
	rp := r.replayLocked(c, spec, ref)
	if old == nil {
		r.broadcastLocked(mustEncode(joinFrame(r.name, &c.user, time.Now().UTC())), c)
	}
	return rp, nil
}

func (r *room) usersLocked() []User {
	users := make([]User, len(r.members))
	for i, m := range r.members {
		users[i] = m.user
	}
	sortUsers(users)
	return users
}

func (r *room) addLocked(c *conn) {
	r.index[c] = len(r.members)
	r.members = append(r.members, c)
	r.byUser[c.user.ID] = c
}

func (r *room) removeLocked(c *conn) bool {
	i, ok := r.index[c]
	if !ok {
		return false
	}
	last := len(r.members) - 1
	r.members[i] = r.members[last]
	r.index[r.members[i]] = i
	r.members[last] = nil
	r.members = r.members[:last]
	delete(r.index, c)
	if r.byUser[c.user.ID] == c {
		delete(r.byUser, c.user.ID)
	}
	if rp := r.replays[c]; rp != nil {
		rp.cancelLocked()
	}
	return true
}

// leave removes c from r, tells the remaining members with reason, and
// removes the room with its history when nobody is left. It reports
// whether c was a member.
func (s *Server) leave(c *conn, r *room, reason string) bool {
	r.mu.Lock()
	was := r.removeLocked(c)
	if was {
		r.broadcastLocked(mustEncode(leaveFrame(r.name, &c.user, reason, time.Now().UTC())), nil)
	}
	empty := len(r.members) == 0
	r.mu.Unlock()
	c.dropRoom(r.name)
	if empty {
		s.removeIfEmpty(r)
	}
	return was
}

// removeIfEmpty removes r with its history if it has no member. The
// history is forgotten first, with no lock but r.order held (so no text is
// kept meanwhile), and the room is removed only if still empty then: a
// client that joins meanwhile finds the room without its past.
func (s *Server) removeIfEmpty(r *room) {
	if r.lockOrder(s.runCtx) != nil {
		return // closing: the room goes with the server
	}
	defer r.unlockOrder()
	r.mu.Lock()
	empty := len(r.members) == 0 && !r.deleted
	r.mu.Unlock()
	if !empty {
		return
	}
	if err := s.cfg.history.Forget(s.runCtx, r.name); err != nil {
		s.log.Error("garou: history forget failed", "room", r.name, "err", err)
	}
	s.roomsMu.Lock()
	r.mu.Lock()
	if len(r.members) == 0 && !r.deleted {
		r.deleted = true
		delete(s.rooms, r.name)
		s.seqFloor = max(s.seqFloor, r.seq)
	}
	r.mu.Unlock()
	s.roomsMu.Unlock()
}

// notDelivered tells a client that a message of room was over its size
// limit.
func notDelivered(room string) []byte {
	return mustEncode(errorFrame(0, room, &Error{Code: CodeNotDelivered,
		Text: "a message was over your size limit and was not delivered"}))
}

// mustEncode encodes a frame built by the server itself; only a bug makes
// it fail.
func mustEncode(v any) []byte {
	f, err := encodeFrame(v)
	if err != nil {
		panic("garou: encoding a server frame: " + err.Error())
	}
	return f
}
