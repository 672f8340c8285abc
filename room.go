package garou

import (
	"sync"
	"time"
)

// room is one room: its members and its sequence. Its mutex orders
// everything said in it: a text is sequenced, kept and put on every
// member's send queue under the lock, so all members get the room's events
// in one order. Enqueueing never blocks (see conn.enqueue), so the lock is
// never held across a network write.
type room struct {
	s    *Server
	name string

	mu      sync.Mutex
	members []*conn       // iteration order is irrelevant
	index   map[*conn]int // position in members
	byUser  map[string]*conn
	seq     uint64
	deleted bool
}

func (r *room) users() []User {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.usersLocked()
}

// broadcastLocked puts one encoded frame on every member's queue except
// skip. r.mu is held.
func (r *room) broadcastLocked(frame []byte, skip *conn) {
	var notice []byte
	for _, m := range r.members {
		if m == skip {
			continue
		}
		if len(frame)-frameHeaderLen > m.maxSize {
			if notice == nil {
				notice = notDelivered(r.name)
			}
			m.enqueue(notice)
			continue
		}
		m.enqueue(frame)
	}
}

// publish sequences text from c (nil: the server) in the room, keeps it
// and delivers it.
func (r *room) publish(c *conn, from *User, text string) (ChatMessage, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.publishLocked(c, from, text)
}

// publishLocked is publish with r.mu held.
func (r *room) publishLocked(c *conn, from *User, text string) (ChatMessage, error) {
	if c != nil {
		if _, ok := r.index[c]; !ok {
			return ChatMessage{}, notInRoom(r.name)
		}
	} else if r.deleted {
		return ChatMessage{}, ErrNoSuchRoom
	}
	if r.s.draining.Load() {
		return ChatMessage{}, &Error{Code: CodeShutdown, Text: "server shutting down"}
	}
	msg := ChatMessage{
		Type: TypeText,
		Room: r.name,
		Seq:  r.seq + 1,
		ID:   r.s.newID(),
		From: from,
		Text: text,
		Time: time.Now().UTC(),
	}
	frame, err := encodeFrame(textFrame(&msg))
	if err != nil {
		return ChatMessage{}, err
	}
	if len(frame)-frameHeaderLen > r.s.cfg.maxMessageSize {
		return ChatMessage{}, &Error{Code: CodeTooLarge, Text: "the message would exceed the maximum message size"}
	}
	r.seq++
	r.s.cfg.history.Append(r.name, msg)
	r.broadcastLocked(frame, nil)
	return msg, nil
}

// join adds c to the room named spec.Room, creating it if needed: c gets a
// "joined" reply, then what it asked to replay, then everything said after;
// the other members are told, unless c takes the place of an earlier
// connection of the same session.
func (s *Server) join(c *conn, spec joinSpec, ref uint64) error {
	s.roomsMu.Lock()
	r := s.rooms[spec.Room]
	if r == nil {
		r = &room{s: s, name: spec.Room, index: make(map[*conn]int), byUser: make(map[string]*conn), seq: s.seqFloor}
		s.rooms[spec.Room] = r
	}
	r.mu.Lock()
	s.roomsMu.Unlock()
	defer r.mu.Unlock()

	if _, ok := r.index[c]; ok {
		c.enqueue(c.encodeList(joinedFrame(ref, r.name, r.usersLocked(), r.seq)))
		return nil
	}
	old := r.byUser[c.user.ID]
	if old != nil && !s.current(c) {
		return &Error{Code: CodeShutdown, Text: "your connection is ending: the session was resumed on another connection"}
	}
	if old == nil && len(r.members) >= s.cfg.maxRoomMembers {
		return &Error{Code: CodeRoomFull, Text: "room " + r.name + " is full"}
	}
	if old != nil {
		r.removeLocked(old)
		old.dropRoom(r.name)
	}
	r.addLocked(c)
	c.addRoom(r)
	c.enqueue(c.encodeList(joinedFrame(ref, r.name, r.usersLocked(), r.seq)))
	r.replayLocked(c, spec)
	if old == nil {
		r.broadcastLocked(mustEncode(joinFrame(r.name, &c.user, time.Now().UTC())), c)
	}
	return nil
}

// replayLocked sends c the history it asked for: the texts after
// spec.Since (with a gap notice for those no longer kept), or the last
// spec.History texts.
func (r *room) replayLocked(c *conn, spec joinSpec) {
	h := r.s.cfg.history
	var msgs []ChatMessage
	switch {
	case spec.Since != nil:
		since := *spec.Since
		if since > r.seq || spec.lostRun {
			// The server no longer knows this room's past (it restarted):
			// what came after since is lost, with no known end.
			c.enqueue(mustEncode(gapFrame(r.name, since+1, 0)))
			return
		}
		if since == r.seq {
			return
		}
		var oldest uint64
		msgs, oldest = h.After(r.name, since)
		if oldest == 0 || oldest > since+1 {
			to := r.seq
			if oldest != 0 {
				to = oldest - 1
			}
			c.enqueue(mustEncode(gapFrame(r.name, since+1, to)))
		}
	case spec.History > 0:
		msgs = h.Last(r.name, spec.History)
	}
	for _, m := range msgs {
		f := mustEncode(textFrame(&m))
		if len(f)-frameHeaderLen > c.maxSize {
			f = notDelivered(r.name)
		}
		c.enqueue(f)
	}
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
		s.roomsMu.Lock()
		r.mu.Lock()
		if len(r.members) == 0 && !r.deleted {
			r.deleted = true
			delete(s.rooms, r.name)
			s.seqFloor = max(s.seqFloor, r.seq)
			s.cfg.history.Forget(r.name)
		}
		r.mu.Unlock()
		s.roomsMu.Unlock()
	}
	return was
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
