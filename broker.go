package garou

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
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
// A Broker covers the texts of rooms: their order, their history, their
// delivery to the members on every server, and resume on any server;
// Publish from any server. A Broker that is also a UserBroker carries
// direct messages and Kick to users on other servers, and keeps names
// unique across them (atomically if it is a NameHolder). One that is a
// PresenceBroker shares rooms' members, joins and leaves; otherwise a
// room's member list and its presence frames are its members on this
// server. One that is a UserLister lists the users of every server in
// Server.Users and the "users" request; otherwise they list this
// server's.
//
// The server calls a Broker with no lock held and never while a room's
// texts are being delivered. All methods may be called concurrently, for
// the same room too, except that one server publishes one room's texts
// one at a time, each once the previous returned (so a sender's texts keep
// their order, and its acknowledgement follows its text to the room's
// members on its server); a PublishStarter is handed them one at a time
// instead, each without waiting for the previous. The contexts end when
// the request that needs the call is abandoned, or with Server.Close.
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
	// timeout, a lost connection): the client is told "internal" (or
	// "unavailable" when the error wraps ErrUnavailable: the broker's
	// service was out of reach for longer than it waits) and, retrying
	// with the same key, gets the text kept once.
	Publish(ctx context.Context, room string, m ChatMessage, key string) (ChatMessage, error)

	// After returns the kept texts of room with Seq > seq, oldest first,
	// and the Seq of the oldest text kept, or of any kept text no later
	// than seq+1 (0 when none is kept): what tells the server whether
	// texts after seq are lost, and so announced as a gap. The texts have
	// no hole, except for numbers that hold no text and never will (a
	// number the broker gave up on), which the server announces as a gap
	// too.
	// It may return fewer than all of them (a bound of its own): the
	// server asks again from the last it got.
	After(ctx context.Context, room string, seq uint64) (msgs []ChatMessage, oldest uint64, err error)

	// Epoch identifies the numbering the broker keeps: it must change
	// whenever the texts and their numbers are lost (the broker's
	// storage made anew), so that a client never resumes by number across
	// two histories. The server reads it for each welcome and each hello
	// that resumes, so it must answer at once, from what the broker
	// knows, and may change while the servers run: a client that resumes
	// with an earlier epoch is told a gap of unknown end in each room
	// (PROTOCOL.md section 9), and then takes the room's numbers as
	// they are.
	Epoch() string
}

// A PublishStarter is a Broker that takes a room's next text before the
// previous one is kept, so that the texts said at once in one room on one
// server share a round trip to the broker instead of waiting for one
// each. The server then calls StartPublish instead of Publish for its
// members' texts (Server.Publish to a room with no member here still calls
// Publish).
//
// Ordering: the server calls StartPublish for a room's texts one at a
// time (never two of a room at once; the rooms' concurrently), and calls
// wait from another goroutine, perhaps after the next text's
// StartPublish. The broker sequences the texts of one sender (m.From)
// that a server started in one room in the order StartPublish was called
// (other texts may come between them); texts of different senders started
// before the earlier ones are kept may be numbered in either order, as
// texts said at the same moment. Every wait is called exactly once, and returns what
// Publish would: the text as kept, with its Seq, or an error, which fails
// that text alone. The server delivers a text, and acknowledges it, once
// its wait and those of every earlier text of the room have returned.
//
// ctx is the server's own, which ends when it closes: a text is not
// withdrawn when its sender goes. StartPublish must not block for long;
// it may return a wait that reports an error at once.
type PublishStarter interface {
	Broker
	// StartPublish queues m, with Publish's rules, and returns at once;
	// wait returns once m is kept, or is known not to be.
	StartPublish(ctx context.Context, room string, m ChatMessage, key string) (wait func() (ChatMessage, error))
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
	if pb := s.presenceBroker(); pb != nil {
		if err := r.watchRoom(ctx, pb); err != nil {
			// The room still works, its presence this server's own.
			s.log.Error("garou: broker presence watch failed", "room", name, "err", err)
		}
	}
	return r, nil
}

// closeRoom stops r's live delivery from the broker, if open.
func (r *room) closeRoom() {
	r.mu.Lock()
	stop, unwatch := r.stopLive, r.stopWatch
	r.stopLive, r.stopWatch, r.open = nil, nil, false
	for id := range r.untold {
		r.toldLocked(id)
	}
	r.mu.Unlock()
	if stop != nil {
		stop()
	}
	if unwatch != nil {
		unwatch()
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
		// A hole filled late: what came after it is read.
		r.startFillLocked()
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
// is the room's filler (r.filling is set): a read that fails is tried
// again, after a pause from 10 ms doubling up to 1 s, until it succeeds,
// the room closes or ctx ends, and fill clears r.filling as it ends.
// Without, a failed read leaves the hole to a filler it starts.
func (r *room) fill(ctx context.Context, owner bool, upto uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pause := 10 * time.Millisecond
	for r.open && r.seq < max(r.heard, upto) {
		from := r.seq
		r.mu.Unlock()
		msgs, oldest, err := r.s.cfg.broker.After(ctx, r.name, from)
		r.mu.Lock()
		if err != nil {
			r.s.log.Error("garou: broker read failed", "room", r.name, "err", err)
			if !owner {
				r.startFillLocked()
				break
			}
			r.mu.Unlock()
			t := time.NewTimer(pause)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
			r.mu.Lock()
			if ctx.Err() != nil {
				break
			}
			pause = min(2*pause, time.Second)
			continue
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
// longer kept (so never to be delivered), and an empty one for the
// numbers msgs skip (that hold no text). r.mu is held.
func (r *room) applyAllLocked(msgs []ChatMessage, oldest uint64) {
	if len(msgs) == 0 && oldest > r.seq+1 {
		r.broadcastLocked(mustEncode(gapFrame(r.name, r.seq+1, oldest-1)), nil)
		r.seq = oldest - 1
	}
	for _, m := range msgs {
		if m.Seq > r.seq+1 {
			r.broadcastLocked(mustEncode(emptyFrame(r.name, r.seq+1, m.Seq-1)), nil)
			r.seq = m.Seq - 1
		}
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
		r.awaitJoinTold(ctx, c)
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
		return ChatMessage{}, publishError(err)
	}
	r.deliverKept(ctx, kept)
	return kept, nil
}

// deliverKept delivers every text of the room up to kept, which the broker
// has just kept.
func (r *room) deliverKept(ctx context.Context, kept ChatMessage) {
	r.mu.Lock()
	r.heard = max(r.heard, kept.Seq)
	if r.open && r.seq+1 == kept.Seq {
		// The room's next: delivered now, without waiting for its live
		// copy (dropped when it comes) or reading it back.
		r.applyLocked(kept)
	}
	behind := r.seq < kept.Seq
	r.mu.Unlock()
	if behind {
		r.fill(ctx, false, 0)
	}
}

// publishStarted is publish with a PublishStarter: the text is handed to
// the broker with r.order held, so that the server's texts of the room are
// sequenced in the order they were handed over; r.order is then released,
// and the text delivered once kept and once every text handed over before
// it is delivered or has failed, so that the sender's acknowledgement
// follows its text as with Publish.
func (r *room) publishStarted(ctx context.Context, ps PublishStarter, c *conn, from *User, text, senderKey, key string) (ChatMessage, error) {
	if err := r.lockOrder(ctx); err != nil {
		return ChatMessage{}, err
	}
	locked := true
	defer func() {
		if locked {
			r.unlockOrder()
		}
	}()
	// Its join before its text; its number at the least, for the size check.
	next, err := r.admit(c, true)
	if err != nil {
		return ChatMessage{}, err
	}
	msg, _, err := r.newText(next, from, text, senderKey)
	if err != nil {
		return ChatMessage{}, err
	}
	msg.Seq = 0 // the broker's to give
	if key != "" && c != nil {
		key = c.key + "\x00" + key // as publishBrokered
	}
	prev, done := r.tail, make(chan struct{})
	r.tail = done
	defer close(done)
	start := time.Now()
	wait := ps.StartPublish(r.s.runCtx, r.name, msg, key)
	r.unlockOrder()
	locked = false
	kept, err := wait()
	r.s.stats.history(time.Since(start), err)
	if prev != nil {
		<-prev
	}
	if err != nil {
		r.s.log.Error("garou: broker publish failed", "room", r.name, "err", err)
		return ChatMessage{}, publishError(err)
	}
	r.deliverKept(ctx, kept)
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

// A UserBroker is a Broker that also reaches the users of other servers:
// a direct message to, or Kick of, a user connected to another server of
// the service goes through it. A server whose Broker is a UserBroker
// attaches each user it welcomes, and detaches it when its connection
// ends.
//
// A user is known by its name key: its name in the canonical form under
// which names are unique (two names that differ only in case, width or
// confusable letters have one key). A hello asks the other servers, with
// a Take, whether its name is online there; two hellos of one name on two
// servers at the same instant may both pass, and a message to that name
// then reaches both, unless the broker is also a NameHolder.
type UserBroker interface {
	Broker
	// Attach makes the user whose name key is name reachable on this
	// server: until detach is called, each UserMessage sent to it with
	// SendUser, from any server, is handed to handle, whose error the
	// sender gets. handle may be called concurrently and does not block.
	Attach(ctx context.Context, name string, handle func(UserMessage) error) (detach func(), err error)
	// SendUser hands m to the server where the user whose name key is name
	// is attached, and returns handle's error there (an *Error keeps its
	// code); ErrNoSuchUser when no server has the user; an error wrapping
	// ErrUnavailable when the user may be online but cannot be reached
	// for now (the broker's service, or the user's server, is out of
	// reach). m may then have been handed over all the same: a direct
	// message is told to its sender as "unavailable", sent again with its
	// key, and has the same ID each time, so its recipient drops a copy.
	SendUser(ctx context.Context, name string, m UserMessage) error
}

// A UserMessage is what one server asks of another about a user
// connected there.
type UserMessage struct {
	// Direct, when set, is a direct message (TypeDirect, with ID, From,
	// To, Text and Time) to deliver to the user.
	Direct *ChatMessage
	// Kick, when set, disconnects the user, telling it Reason.
	Kick   bool
	Reason string
	// Take, when set, says that a user of this name is connecting to
	// another server, with a session token whose digest is Session (""
	// for a new session; the token itself, a secret, does not travel).
	// If Session is the digest of the session of the user's connection
	// here (the client moved to another server, and this one has not
	// noticed yet), that connection ends, as a session resumed
	// elsewhere, and handle returns nil; otherwise the name is taken, and
	// handle says so.
	Take    bool
	Session string
	// Taken, when set, says that the user's name, held for the user's
	// session here (NameHolder), was taken by another session while this
	// server could not renew its hold (it was out of the broker's reach
	// for longer than the hold's bound): the other servers already took
	// the user for gone, and the name is the new holder's. The connection
	// ends with CloseNameTaken, and the user's rooms are told it left as
	// "lost". Only the broker of the user's own server sends it.
	Taken bool
}

// A NameHolder is a UserBroker that holds each name online for one
// session at a time across the servers of the service, atomically: of two
// hellos of one name on two servers at the same instant, one holds it and
// the other is refused as taken. A server whose Broker is a NameHolder
// holds the name of each user it welcomes (after the Take, which ends the
// connection a moved client left behind), and releases it when the
// connection ends. A hold the broker finds taken by another session (its
// server could not renew it for too long) is told to the user's
// attachment with UserMessage.Taken.
type NameHolder interface {
	UserBroker
	// Hold holds the name key name for the session whose digest is
	// session, until release is called; a server that stops without
	// releasing it (a crash) loses it after the broker's own bound. A
	// name already held for session, or for resumed (not empty: the
	// digest of the session the client resumes, from another server),
	// passes to this hold; held for another session, Hold returns
	// ErrNameTaken. release is idempotent, and releases nothing that
	// another hold has taken since.
	Hold(ctx context.Context, name, session, resumed string) (release func(), err error)
}

// userBroker returns the server's broker if it reaches other servers'
// users.
func (s *Server) userBroker() UserBroker {
	ub, _ := s.cfg.broker.(UserBroker)
	return ub
}

// attach makes c's user reachable from the other servers, and listed
// there, until detach. A failure is logged: the user is then reachable
// from this server only.
func (s *Server) attach(c *conn) {
	s.attachListed(c)
	ub := s.userBroker()
	if ub == nil {
		return
	}
	key := c.key
	detach, err := ub.Attach(c.qc.Context(), key, func(m UserMessage) error { return s.handleUser(key, m) })
	if err != nil {
		s.log.Error("garou: broker attach failed", "user", c.user.Name, "err", err)
		return
	}
	s.attachMu.Lock()
	if s.attached == nil {
		s.attached = make(map[*conn]func())
	}
	s.attached[c] = detach
	s.attachMu.Unlock()
}

// attachListed lists c's user on the broker, if it is a UserLister, until
// detach. A failure is logged: the other servers then do not list the
// user.
func (s *Server) attachListed(c *conn) {
	ul := s.userLister()
	if ul == nil {
		return
	}
	ctx, cancel := context.WithTimeout(c.qc.Context(), 5*time.Second)
	defer cancel()
	offline, err := ul.Online(ctx, c.user)
	if err != nil {
		s.log.Error("garou: broker user listing failed", "user", c.user.Name, "err", err)
		return
	}
	s.attachMu.Lock()
	if s.listed == nil {
		s.listed = make(map[*conn]func())
	}
	s.listed[c] = offline
	s.attachMu.Unlock()
}

// codeNameTaken is what a server answers another that asks to Take a name
// one of its users has. It never reaches a client.
const codeNameTaken ErrorCode = "name_taken"

// claim asks the other servers whether c's user, registered here with the
// session token session (resuming old's session here, if not nil), may be
// online here: the name must not be taken on another server, except by
// this very session (a client that moved here), whose connection there
// then ends. It returns the refusal's text when the name is taken, else
// "". A broker that fails to answer leaves the name to this server. Two
// clients taking one name on two servers at the same instant may both get
// it.
//
// With a NameHolder, the name is then held for c's session: of two hellos
// of one name at the same instant, the one that does not hold it is
// refused.
func (s *Server) claim(c *conn, old *conn, session string) string {
	ub := s.userBroker()
	if ub == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(c.qc.Context(), 5*time.Second)
	defer cancel()
	var digest string
	if session != "" {
		digest = sessionDigest(session)
	}
	if old == nil { // a session resumed here is this server's already
		err := ub.SendUser(ctx, c.key, UserMessage{Take: true, Session: digest})
		e, ok := errors.AsType[*Error](err)
		switch {
		case err == nil, errors.Is(err, ErrNoSuchUser):
		case ok && e.Code == codeNameTaken:
			return fmt.Sprintf("the name %q is taken", c.user.Name)
		default:
			s.log.Error("garou: broker name check failed", "user", c.user.Name, "err", err)
		}
	}
	nh, ok := ub.(NameHolder)
	if !ok {
		return ""
	}
	if old != nil {
		// Held for the session's connection here, under the token it
		// was welcomed with, which may be newer than the hello's (a
		// data directory's tokens are renewed at each welcome).
		digest = sessionDigest(old.session)
	}
	release, err := nh.Hold(ctx, c.key, sessionDigest(c.session), digest)
	switch {
	case errors.Is(err, ErrNameTaken):
		return fmt.Sprintf("the name %q is taken", c.user.Name)
	case err != nil:
		// As a failed Take: the name is left to this server.
		s.log.Error("garou: broker name hold failed", "user", c.user.Name, "err", err)
		return ""
	}
	s.attachMu.Lock()
	if s.held == nil {
		s.held = make(map[*conn]func())
	}
	s.held[c] = release
	s.attachMu.Unlock()
	return ""
}

// sessionDigest is what identifies a session token to other servers.
func sessionDigest(token string) string {
	sum := sha256.Sum256([]byte("garou session\x00" + token))
	return hex.EncodeToString(sum[:])
}

// detach undoes attach, once c's connection has ended.
func (s *Server) detach(c *conn) {
	s.attachMu.Lock()
	detach := s.attached[c]
	delete(s.attached, c)
	release := s.held[c]
	delete(s.held, c)
	offline := s.listed[c]
	delete(s.listed, c)
	s.attachMu.Unlock()
	if detach != nil {
		detach()
	}
	if offline != nil {
		offline()
	}
	if release != nil {
		release()
	}
}

// handleUser carries out what another server asks of the user whose name
// key is key.
func (s *Server) handleUser(key string, m UserMessage) error {
	s.mu.Lock()
	target := s.names[key]
	s.mu.Unlock()
	switch {
	case target == nil:
		return ErrNoSuchUser
	case m.Taken:
		target.finish(CloseNameTaken, "the name was taken on another server while this one was out of reach", "lost")
		return nil
	case m.Take && m.Session != "" && (m.Session == sessionDigest(target.session) ||
		target.resumedWith != "" && m.Session == sessionDigest(target.resumedWith)):
		target.finish(CloseReplaced, "the session was resumed on another server", "reconnected")
		return nil
	case m.Take:
		return &Error{Code: codeNameTaken, Text: "the name is taken on another server"}
	case m.Kick:
		target.finish(CloseKicked, orDefault(m.Reason, "kicked by the server"), "kicked")
		return nil
	case m.Direct == nil || m.Direct.Type != TypeDirect:
		return nil // nothing this version knows to do
	}
	frame := mustEncode(textFrame(m.Direct))
	if len(frame)-frameHeaderLen > target.maxSize {
		return &Error{Code: CodeTooLarge, Text: "the message would exceed the recipient's size limit"}
	}
	if !target.enqueue(frame) {
		return ErrNoSuchUser
	}
	return nil
}

// directRemote sends a direct message from c to the user called to on
// another server, through the broker.
func (c *conn) directRemote(ub UserBroker, to, text, id string) (reply, error) {
	msg := ChatMessage{Type: TypeDirect, ID: id, From: c.from, To: to, Text: text, Time: time.Now().UTC()}
	if len(mustEncode(textFrame(&msg)))-frameHeaderLen > c.s.cfg.maxMessageSize {
		return reply{}, &Error{Code: CodeTooLarge, Text: "the message would exceed the maximum message size"}
	}
	err := ub.SendUser(c.qc.Context(), nameKey(to), UserMessage{Direct: &msg})
	switch e, ok := errors.AsType[*Error](err); {
	case err == nil:
	case errors.Is(err, ErrNoSuchUser):
		return reply{}, noSuchUser(to)
	case errors.Is(err, ErrUnavailable):
		return reply{}, errUserUnavailable
	case ok:
		return reply{}, e
	default:
		c.log.Error("garou: broker direct failed", "to", to, "err", err)
		return reply{}, &Error{Code: CodeInternal, Text: "the message could not be delivered"}
	}
	c.s.stats.directs.Add(1)
	return ackDirect(0, msg.ID, msg.To), nil
}

// kickRemote kicks the user called name from the server it is on, through
// the broker.
func (s *Server) kickRemote(ub UserBroker, name, reason string) error {
	ctx, cancel := context.WithTimeout(s.runCtx, 5*time.Second)
	defer cancel()
	return ub.SendUser(ctx, nameKey(name), UserMessage{Kick: true, Reason: reason})
}

// publishRemote says text as the server in a room with no member here,
// through the broker: its members on other servers get it.
func (s *Server) publishRemote(ctx context.Context, room, text, key string) (ChatMessage, error) {
	if err := ValidateRoom(room); err != nil {
		return ChatMessage{}, err
	}
	if s.draining.Load() {
		return ChatMessage{}, &Error{Code: CodeShutdown, Text: "server shutting down"}
	}
	msg := ChatMessage{Type: TypeText, Room: room, ID: s.newID(), Text: text, Time: time.Now().UTC()}
	if len(mustEncode(textFrame(&msg)))-frameHeaderLen > s.cfg.maxMessageSize {
		return ChatMessage{}, &Error{Code: CodeTooLarge, Text: "the message would exceed the maximum message size"}
	}
	kept, err := s.cfg.broker.Publish(ctx, room, msg, key)
	if err != nil {
		s.log.Error("garou: broker publish failed", "room", room, "err", err)
		return ChatMessage{}, publishError(err)
	}
	return kept, nil
}

// errUnavailable is what a client is told when the broker gave up on a
// text because its service was out of reach (ErrUnavailable).
var errUnavailable = &Error{Code: CodeUnavailable, Text: "the service cannot keep texts for now; try again"}

// errUserUnavailable is what a client is told when the broker could not
// reach the recipient of a direct message for now (ErrUnavailable).
var errUserUnavailable = &Error{Code: CodeUnavailable, Text: "the recipient cannot be reached for now; try again"}

// publishError is the error a client is told for the failed Publish err.
func publishError(err error) *Error {
	if errors.Is(err, ErrUnavailable) {
		return errUnavailable
	}
	return errHistory
}

// A PresenceBroker is a Broker that also shares presence: the members of a
// room on every server are its members on each (in Members, in the count
// and first page of "joined", in "members" pages and in the counts of
// presence frames), and their joins and leaves are told to the members on
// every server. The broker puts a room's changes in one order and numbers
// them (PresenceChange.Seq): every server tells its members the same
// changes, this server's own too, in that order and under those numbers
// (presence_seq), so that members on two servers see one history, and a
// client skips exactly what its "joined" counted.
//
// A server whose Broker is a PresenceBroker enters each user that joins a
// room here, and makes it leave with the leave's reason; and it watches
// each room it has open. While a room is watched, its members are told
// the joins and leaves of this server too only as the watch tells them; a
// room whose watch could not start tells this server's changes itself,
// numbered by the server as without a broker.
type PresenceBroker interface {
	Broker
	// Enter makes u a member of room on this server for the other
	// servers, until leave is called, which tells them reason. A server
	// that stops without leaving (a crash) has its members leave, with
	// reason "lost", after the broker's own bound.
	Enter(ctx context.Context, room string, u User) (leave func(reason string), err error)
	// Watch calls change with the members of room on every server, this
	// one's included (as joins), before it returns, then with each of
	// their joins and leaves, one call at a time, in the room's one order
	// with increasing Seq, until stop is called. A user with several
	// entries (a session moving between servers) is told joining with its
	// first and leaving with its last.
	Watch(ctx context.Context, room string, change func(PresenceChange)) (stop func(), err error)
}

// A PresenceChange is a join or leave of a room, on any server.
type PresenceChange struct {
	Leave  bool
	User   User
	Reason string // a leave's
	// Seq numbers the change in the room's one order of changes, the
	// same on every server: each change a Watch tells has a higher Seq
	// than the one before (not necessarily the next). It is the
	// presence_seq the server tells its members.
	Seq uint64
}

// presenceBroker returns the server's broker if it shares presence.
func (s *Server) presenceBroker() PresenceBroker {
	pb, _ := s.cfg.broker.(PresenceBroker)
	return pb
}

// An entry is a member's presence entered on the broker.
type entry struct {
	done  chan struct{} // closed once entered, or failed to
	leave func(string)
}

// enter enters u into room on the broker, once no lock is held.
func (s *Server) enter(pb PresenceBroker, e *entry, r *room, u User) {
	defer close(e.done)
	ctx, cancel := context.WithTimeout(s.runCtx, 5*time.Second)
	defer cancel()
	leave, err := pb.Enter(ctx, r.name, u)
	if err != nil {
		s.log.Error("garou: broker presence enter failed", "room", r.name, "user", u.Name, "err", err)
		r.mu.Lock()
		r.toldLocked(u.ID) // never to be told: its texts wait no more
		r.mu.Unlock()
		return
	}
	e.leave = leave
}

// toldLocked marks the join of the member here whose user ID is id as
// told (or never to be). r.mu is held.
func (r *room) toldLocked(id string) {
	if ch := r.untold[id]; ch != nil {
		close(ch)
		delete(r.untold, id)
	}
}

// awaitJoinTold waits, up to a second, until the join of c, a member here
// of a watched room, has been told as the watch tells it: nobody hears
// from c before hearing that c joined.
func (r *room) awaitJoinTold(ctx context.Context, c *conn) {
	r.mu.Lock()
	ch := r.untold[c.user.ID]
	r.mu.Unlock()
	if ch == nil {
		return
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
	}
}

// exit makes e's member leave on the broker, once entered.
func (e *entry) exit(reason string) {
	<-e.done
	if e.leave != nil {
		e.leave(reason)
	}
}

// watchRoom starts hearing r's presence on other servers.
func (r *room) watchRoom(ctx context.Context, pb PresenceBroker) error {
	stop, err := pb.Watch(ctx, r.name, r.remoteChange)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.stopWatch = stop
	r.mu.Unlock()
	return nil
}

// remoteChange tells the members a join or leave the broker's watch told
// of, on any server, numbered by the broker: a user's join when its first
// entry comes, its leave when its last goes, unless it is a member here
// (its session moved here). A joiner here is not told its own join (see
// flushPresenceLocked).
func (r *room) remoteChange(ch PresenceChange) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := ch.User.ID
	n := r.nentries[id]
	switch {
	case ch.Leave && n == 0:
		return // a leave of a user not told
	case ch.Leave:
		n--
	default:
		n++
	}
	if n == 0 {
		delete(r.nentries, id)
		delete(r.remote, id)
	} else {
		if r.nentries == nil {
			r.nentries = make(map[string]int)
			r.remote = make(map[string]User)
		}
		r.nentries[id] = n
		if !ch.Leave {
			r.remote[id] = ch.User
		}
	}
	_, local := r.byUser[id]
	if !ch.Leave && local {
		defer r.toldLocked(id) // once gathered, so its texts follow it
	}
	if !(!ch.Leave && n == 1 || ch.Leave && n == 0 && !local) {
		return // another entry of a user told, or a moved session's old one
	}
	r.notePresenceLocked(presenceChange{leave: ch.Leave, user: ch.User, reason: ch.Reason, seq: ch.Seq}, nil)
}

// allLocked returns the members on every server, sorted by ID. r.mu is
// held.
func (r *room) allLocked() []User {
	users := make([]User, 0, len(r.members)+len(r.remote))
	for _, m := range r.members {
		users = append(users, m.user)
	}
	for id, u := range r.remote {
		if _, local := r.byUser[id]; !local {
			users = append(users, u)
		}
	}
	slices.SortFunc(users, func(a, b User) int { return strings.Compare(a.ID, b.ID) })
	return users
}

// A UserLister is a Broker that lists the users online on every server of
// the service: Server.Users and the "users" request then list them all,
// and count them all. A server whose Broker is a UserLister lists each
// user it welcomes with Online, and unlists it when its connection ends.
type UserLister interface {
	Broker
	// Online lists u, a user welcomed on this server, among the users of
	// the service until offline is called. A server that stops without
	// calling it (a crash) has its users unlisted after the broker's own
	// bound. offline is idempotent.
	Online(ctx context.Context, u User) (offline func(), err error)
	// Users returns the users listed by the other servers, as last heard
	// of: one listed a moment ago on another server may be missing, one
	// unlisted a moment ago still there. The server calls it for each
	// Server.Users and "users" request, so it answers from what the
	// broker already knows, without a round trip each time if it can.
	Users(ctx context.Context) ([]User, error)
}

// userLister returns the server's broker if it lists the users of every
// server.
func (s *Server) userLister() UserLister {
	ul, _ := s.cfg.broker.(UserLister)
	return ul
}

// withRemoteUsers adds to users, this server's, the users the broker lists
// on the other servers, each ID once. A broker that fails to answer leaves
// users as they are.
func (s *Server) withRemoteUsers(users []User) []User {
	ul := s.userLister()
	if ul == nil {
		return users
	}
	ctx, cancel := context.WithTimeout(s.runCtx, 5*time.Second)
	defer cancel()
	remote, err := ul.Users(ctx)
	if err != nil {
		s.log.Error("garou: broker user list failed", "err", err)
		return users
	}
	seen := make(map[string]struct{}, len(users))
	for _, u := range users {
		seen[u.ID] = struct{}{}
	}
	for _, u := range remote {
		if _, dup := seen[u.ID]; !dup {
			seen[u.ID] = struct{}{}
			users = append(users, u)
		}
	}
	return users
}
