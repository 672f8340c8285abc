package garou

import (
	"context"
	"runtime"
	"slices"
	"strings"
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
	// history store: it is held across HistoryStore.Append and Forget (or
	// AppendStarter.StartAppend, and the wait for the texts handed over
	// before a Forget or a shutdown), and
	// taken before mu, never while holding mu or the server's roomsMu. It
	// is a semaphore of one, so that a wait for it can end with a context.
	order chan struct{}

	mu      sync.Mutex
	members []*conn           // sorted by user ID: pages are ranges
	byUser  map[string]*conn  // user ID → member
	lanes   map[*conn]*lane   // member → the lane of its stream for the room
	mlanes  []*lane           // mlanes[i] is members[i]'s lane: fan-out needs no lookup
	replays map[*conn]*replay // members whose replay is streaming
	seq     uint64
	deleted bool

	// With an AppendStarter, texts are handed to the store in order with
	// r.order held and delivered in the same order once kept: next is the
	// Seq of the last handed over (r.mu), tail is closed once it has been
	// delivered or has failed (r.order), and gen counts the failures
	// (r.mu): a text handed over before a failure is not delivered.
	// pipe holds the texts handed over and not yet delivered, in sequence
	// order, delivering is true while one of their senders delivers them,
	// and out is its batch of frames (r.mu).
	next       uint64
	tail       chan struct{}
	gen        uint64
	pipe       []*pending
	delivering bool
	out        [][]byte

	// Presence: every join and leave is numbered (pseq) and gathered in
	// pending until the server's presence loop tells the members in one
	// frame (see flushPresenceLocked). Only the first presenceLimit+1
	// changes are kept: past that the frame carries the count alone.
	pseq     uint64
	pending  []presenceChange
	npending int                 // changes since the last frame, kept or not
	joining  map[string]struct{} // user IDs whose join is in pending
	queued   bool                // on the server's presence list
	told     time.Time           // when the last presence frame went out

	typed map[*conn]time.Time // when each member's typing was last told

	// With a broker (see broker.go): the room's live delivery, and the
	// filling of the holes in it. Guarded by mu.
	stopLive func() // stops the live delivery; nil once stopped
	open     bool   // opened on the broker, and not yet stopped
	heard    uint64 // the highest Seq the broker told of
	filling  bool   // a goroutine reads what the room misses

	// With a PresenceBroker: the members of every server the watch told
	// of (this one's too), by user ID, with the number of their entries
	// (a session moving between servers has two for a while); the stop of
	// the watch, and the entries of the members here. While the watch
	// runs, every change told comes from it, in the broker's order.
	remote    map[string]User
	nentries  map[string]int
	stopWatch func()
	entered   map[string]*entry
	untold    map[string]chan struct{} // members here whose join the watch has yet to tell
}

// presenceChange is a join or a leave not yet told.
type presenceChange struct {
	leave  bool
	user   User
	reason string
	seq    uint64 // its number from a PresenceBroker; 0: the next of the room's own
}

func newRoom(s *Server, name string, seq uint64) *room {
	return &room{s: s, name: name, order: make(chan struct{}, 1), byUser: make(map[string]*conn),
		lanes: make(map[*conn]*lane), seq: seq, next: seq}
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

// settle waits until the texts handed to the store are delivered or have
// failed, or until ctx ends. r.order is held, so no more are handed over
// meanwhile.
func (r *room) settle(ctx context.Context) error {
	if r.tail == nil {
		return nil
	}
	select {
	case <-r.tail:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// broadcastLocked puts one encoded frame on every member's queue except
// skip, or behind the replay of a member that has one streaming. r.mu is
// held.
func (r *room) broadcastLocked(frame []byte, skip *conn) {
	var notice []byte
	for i, m := range r.members {
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
		r.deliverLocked(i, f)
	}
}

// broadcastAllLocked puts frames, in order, on every member's queue, in
// one push for each member that takes them all as they are. r.mu is held.
func (r *room) broadcastAllLocked(frames [][]byte) {
	switch len(frames) {
	case 0:
		return
	case 1:
		r.broadcastLocked(frames[0], nil)
		return
	}
	largest := 0
	for _, f := range frames {
		largest = max(largest, len(f)-frameHeaderLen)
	}
	for i, m := range r.members {
		if largest > m.maxSize || len(r.replays) != 0 && r.replays[m] != nil {
			for _, f := range frames {
				if len(f)-frameHeaderLen > m.maxSize {
					f = notDelivered(r.name)
				}
				r.deliverLocked(i, f)
			}
			continue
		}
		r.mlanes[i].enqueueAll(frames)
	}
}

// deliverLocked puts frame on the queue of the stream for the room of
// member i, or behind its replay if one is streaming. r.mu is held.
func (r *room) deliverLocked(i int, frame []byte) {
	if len(r.replays) != 0 {
		if rp := r.replays[r.members[i]]; rp != nil {
			rp.holdLocked(frame)
			return
		}
	}
	r.mlanes[i].enqueue(frame)
}

// publish sequences text from c (nil: the server) in the room, keeps it
// (with senderKey: see ChatMessage.SenderKey) and delivers it. key is the
// client's idempotency key ("" for none), for a Broker. The history store
// is called with no room lock held: a slow store delays only the texts of
// this room.
func (r *room) publish(ctx context.Context, c *conn, from *User, text, senderKey, key string) (ChatMessage, error) {
	if st, ok := r.s.cfg.history.(AppendStarter); ok && r.s.cfg.broker == nil {
		return r.publishPipelined(ctx, st, c, from, text, senderKey)
	}
	if ps, ok := r.s.cfg.broker.(PublishStarter); ok {
		return r.publishStarted(ctx, ps, c, from, text, senderKey, key)
	}
	if err := r.lockOrder(ctx); err != nil {
		return ChatMessage{}, err
	}
	defer r.unlockOrder()
	// Only publish changes seq, and r.order is held: seq+1 is this text's.
	seq, err := r.admit(c, false)
	if err != nil {
		return ChatMessage{}, err
	}
	msg, frame, err := r.newText(seq, from, text, senderKey)
	if err != nil {
		return ChatMessage{}, err
	}
	if r.s.cfg.broker != nil {
		msg.Seq = 0 // the broker's to give
		return r.publishBrokered(ctx, c, msg, key)
	}
	start := time.Now()
	err = r.s.cfg.history.Append(ctx, r.name, msg)
	r.s.stats.history(time.Since(start), err)
	if err != nil {
		r.s.log.Error("garou: history append failed", "room", r.name, "seq", seq, "err", err)
		return ChatMessage{}, errHistory
	}
	r.mu.Lock()
	// Kept, so sequenced: delivered even if c was replaced meanwhile.
	r.seq = seq
	r.s.stats.texts.Add(1)
	r.s.stats.deliveries.Add(uint64(len(r.members)))
	if c != nil {
		r.announceJoinLocked(c) // its join before its text
	}
	r.broadcastLocked(frame, nil)
	r.mu.Unlock()
	return msg, nil
}

// admit checks, with r.order held, that c (nil: the server) may say a
// text in r now, and returns the room's next number as known here; with
// announce, c's join is told first if it was not yet.
func (r *room) admit(c *conn, announce bool) (next uint64, err error) {
	r.mu.Lock()
	if c != nil {
		if !r.isMemberLocked(c) {
			r.mu.Unlock()
			return 0, notInRoom(r.name)
		}
		if announce {
			r.announceJoinLocked(c)
		}
	} else if r.deleted {
		r.mu.Unlock()
		return 0, ErrNoSuchRoom
	}
	next = r.seq + 1
	r.mu.Unlock()
	if r.s.draining.Load() {
		return 0, &Error{Code: CodeShutdown, Text: "server shutting down"}
	}
	return next, nil
}

// newText makes the text from says in r as number seq, and its frame,
// refused when the frame is over the server's size limit.
func (r *room) newText(seq uint64, from *User, text, senderKey string) (ChatMessage, []byte, error) {
	msg := ChatMessage{Type: TypeText, Room: r.name, Seq: seq, ID: r.s.newID(), From: from, Text: text,
		Time: time.Now().UTC(), SenderKey: senderKey}
	frame, err := encodeTextFrame(&msg)
	if err != nil {
		return ChatMessage{}, nil, err
	}
	if len(frame)-frameHeaderLen > r.s.cfg.maxMessageSize {
		return ChatMessage{}, nil, &Error{Code: CodeTooLarge, Text: "the message would exceed the maximum message size"}
	}
	return msg, frame, nil
}

// publishPipelined is publish with a store that takes a room's next text
// before the previous one is kept: the text is sequenced and handed to
// the store with r.order held, then r.order is released and the text
// delivered, in sequence order, once kept. A failure fails the texts
// handed over after it too (they are not delivered, and the store
// replaces them with the next text numbered after the last delivered), so
// the numbering delivered has no hole.
func (r *room) publishPipelined(ctx context.Context, st AppendStarter, c *conn, from *User, text, senderKey string) (ChatMessage, error) {
	if err := r.lockOrder(ctx); err != nil {
		return ChatMessage{}, err
	}
	locked := true
	defer func() {
		if locked {
			r.unlockOrder()
		}
	}()
	if _, err := r.admit(c, false); err != nil {
		return ChatMessage{}, err
	}
	var (
		msg      ChatMessage
		frame    []byte
		seq, gen uint64
	)
	for {
		// A failure of a text handed over earlier may set next back while
		// this one is made: its number is taken only if next is unchanged.
		r.mu.Lock()
		seq, gen = r.next+1, r.gen
		r.mu.Unlock()
		var err error
		if msg, frame, err = r.newText(seq, from, text, senderKey); err != nil {
			return ChatMessage{}, err
		}
		r.mu.Lock()
		taken := gen == r.gen
		if taken {
			r.next = seq
		}
		r.mu.Unlock()
		if taken {
			break
		}
	}
	e := &pending{seq: seq, gen: gen, frame: frame, c: c, done: make(chan struct{})}
	r.mu.Lock()
	r.pipe = append(r.pipe, e)
	r.mu.Unlock()
	r.tail = e.done
	start := time.Now()
	// Once handed over, the text is kept or fails whatever becomes of its
	// sender (the context is the server's): a text withdrawn would fail
	// the texts behind it.
	wait := st.StartAppend(r.s.runCtx, r.name, msg)
	r.unlockOrder()
	locked = false
	err := wait()
	r.s.stats.history(time.Since(start), err)
	r.mu.Lock()
	e.settled, e.err = true, err
	if !r.delivering {
		r.deliverSettledLocked()
	}
	r.mu.Unlock()
	<-e.done
	if e.failed {
		if e.first {
			r.s.log.Error("garou: history append failed", "room", r.name, "seq", seq, "err", e.err)
		}
		return ChatMessage{}, errHistory
	}
	return msg, nil
}

// pending is a text handed to an AppendStarter and not yet delivered.
// Its fields but done are guarded by r.mu until done is closed, and read
// by its sender after.
type pending struct {
	seq, gen uint64
	frame    []byte
	c        *conn // the sender; nil for the server
	done     chan struct{}
	settled  bool  // its wait returned, with err
	err      error // the store's
	failed   bool  // not delivered
	first    bool  // the first failure of its generation: its sender logs it
}

// deliverSettledLocked delivers the texts at the head of r.pipe whose
// store call has returned, in sequence order, and closes their done. It
// makes r.delivering true meanwhile: a sender whose wait returns then
// leaves the delivery to it. r.mu is held, and released once at most.
//
// A commit returns the waits of the texts it kept at once, and their
// senders run one after another: the first would find the others not yet
// settled and deliver its text alone, each text leaving in a packet of its
// own to every member. So while a text behind the head is still out, the
// deliverer first yields once, for the senders woken by the same commit to
// note theirs; it then delivers all that are settled in one batch, which
// a member's queue takes in one push and its writer sends in one write.
func (r *room) deliverSettledLocked() {
	if len(r.pipe) == 0 || !r.pipe[0].settled {
		return
	}
	r.delivering = true
	if slices.ContainsFunc(r.pipe[1:], func(e *pending) bool { return !e.settled }) {
		r.mu.Unlock()
		runtime.Gosched()
		r.mu.Lock()
	}
	n := 0
	for n < len(r.pipe) && r.pipe[n].settled {
		n++
	}
	out := r.out[:0]
	kept := 0
	for _, e := range r.pipe[:n] {
		if e.err != nil || e.gen != r.gen {
			e.failed = true
			if e.gen == r.gen {
				// The texts handed over after this one fail too (the
				// store keeps none of them); the next is numbered after
				// the last delivered, reusing numbers no member was told.
				e.first = true
				r.gen++
				r.next = r.seq
			}
			continue
		}
		// Kept, so sequenced: delivered even if its sender was replaced
		// meanwhile.
		r.seq = e.seq
		kept++
		if e.c != nil && r.joining != nil {
			if _, ok := r.joining[e.c.user.ID]; ok { // its join before its text
				r.broadcastAllLocked(out)
				out = out[:0]
				r.announceJoinLocked(e.c)
			}
		}
		out = append(out, e.frame)
	}
	r.broadcastAllLocked(out)
	clear(out)
	r.out = out[:0]
	r.s.stats.texts.Add(uint64(kept))
	r.s.stats.deliveries.Add(uint64(kept * len(r.members)))
	for _, e := range r.pipe[:n] {
		close(e.done)
	}
	m := copy(r.pipe, r.pipe[n:])
	clear(r.pipe[m:])
	r.pipe = r.pipe[:m]
	r.delivering = false
}

// typing tells the room's other members that c is typing, at most once
// every TypingTimeout/4 per member and room, and never in a room over the
// presence limit (where, as for joins, nobody could follow who types). It
// reports false when c is not a member.
func (r *room) typing(c *conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.isMemberLocked(c) {
		return false
	}
	if len(r.members) > r.s.cfg.presenceLimit {
		return true
	}
	now := time.Now()
	if last, ok := r.typed[c]; ok && now.Sub(last) < TypingTimeout/4 {
		return true
	}
	if r.typed == nil {
		r.typed = make(map[*conn]time.Time)
	}
	r.typed[c] = now
	r.announceJoinLocked(c) // its join before its typing
	frame := mustEncode(typingFrame(r.name, c.from))
	for i, m := range r.members {
		switch {
		case m == c:
		case m.dgram:
			// Lost now and then, never behind texts or retransmissions.
			m.q.pushDatagram(frame[frameHeaderLen:])
		default:
			r.deliverLocked(i, frame)
		}
	}
	return true
}

// errHistory is what a client is told when the history store fails.
var errHistory = &Error{Code: CodeInternal, Text: "the room's history is unavailable"}

// join adds c to the room named spec.Room, creating it if needed: c gets a
// "joined" reply, then what it asked to replay, then everything said after;
// the other members are told, unless c takes the place of an earlier
// connection of the same session. It returns the replay to fetch, if any,
// once no lock is held.
func (s *Server) join(c *conn, spec joinSpec, ref uint64) (*replay, error) {
	if s.cfg.broker != nil && spec.Since != nil && !spec.lostRun {
		s.catchUp(c.qc.Context(), spec.Room, *spec.Since)
	}
	// A room created here continues the numbering its store kept across
	// restarts. Asked with no lock held; a room created meanwhile wins.
	var kept uint64
	if k, ok := s.cfg.history.(SeqKeeper); ok && s.cfg.broker == nil && s.lookupRoom(spec.Room) == nil {
		var err error
		if kept, err = k.LastSeq(c.qc.Context(), spec.Room); err != nil {
			s.log.Error("garou: history last seq failed", "room", spec.Room, "err", err)
		}
	}
	s.roomsMu.Lock()
	r := s.rooms[spec.Room]
	if r == nil && s.cfg.broker != nil {
		// Opened on the broker with no lock held; a room opened meanwhile
		// wins, and this one is stopped once the join is done.
		s.roomsMu.Unlock()
		opened, err := s.openRoom(c.qc.Context(), spec.Room)
		if err != nil {
			return nil, err
		}
		s.roomsMu.Lock()
		if r = s.rooms[spec.Room]; r == nil {
			r = opened
			s.rooms[spec.Room] = r
		} else {
			defer opened.closeRoom()
		}
	}
	if r == nil {
		r = newRoom(s, spec.Room, max(s.seqFloor, kept))
		s.rooms[spec.Room] = r
	}
	// A new member's presence is entered on a PresenceBroker once the
	// room's lock is released (deferred before its release, so run after).
	var e *entry
	pb := s.presenceBroker()
	defer func() {
		if e != nil {
			s.enter(pb, e, r, c.user)
		}
	}()
	r.mu.Lock()
	s.roomsMu.Unlock()
	defer r.mu.Unlock()

	if r.isMemberLocked(c) {
		r.lanes[c].enqueue(r.joinedLocked(c, ref))
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
	l := c.addRoom(r)
	r.addLocked(c, l)
	switch {
	case old == nil && r.stopWatch == nil:
		// Numbered before the joined reply, whose snapshot includes it:
		// c is never told of its own join.
		r.notePresenceLocked(presenceChange{user: c.user}, c)
	case old == nil && pb != nil:
		// A watched room's changes are told as the broker's watch tells
		// them, this one too: c's texts wait for it (awaitJoinTold).
		if r.untold == nil {
			r.untold = make(map[string]chan struct{})
		}
		r.toldLocked(c.user.ID)
		r.untold[c.user.ID] = make(chan struct{})
	}
	if old == nil && pb != nil { // a resumed session's entry stays
		e = &entry{done: make(chan struct{})}
		if r.entered == nil {
			r.entered = make(map[string]*entry)
		}
		r.entered[c.user.ID] = e
	}
	l.enqueue(r.joinedLocked(c, ref))
	return r.replayLocked(c, spec, ref), nil
}

// joinedLocked encodes the "joined" reply to c: the room's count and
// first page of members, and the numbers its presence and texts are at.
// In a room over the presence limit it carries the count alone, as its
// presence frames do: a page of names nobody asked for would cost every
// joiner of a crowd a frame of kilobytes.
func (r *room) joinedLocked(c *conn, ref uint64) []byte {
	var page []User
	var next string
	if r.countLocked() <= r.s.cfg.presenceLimit {
		page, next = r.pageLocked("")
	}
	return c.encodePage(joinedFrame(ref, r.name, page, next, r.countLocked(), r.seq, r.pseq))
}

func (r *room) users() []User {
	r.mu.Lock()
	var users []User
	if len(r.remote) != 0 {
		users = r.allLocked()
	} else {
		users = make([]User, len(r.members))
		for i, m := range r.members {
			users[i] = m.user
		}
	}
	r.mu.Unlock()
	sortUsers(users)
	return users
}

// page returns the members after cursor (a user ID; "" for the first), at
// most PageSize of them, with the cursor of the next page ("" if none) and
// the member count.
func (r *room) page(cursor string) (page []User, next string, total int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	page, next = r.pageLocked(cursor)
	return page, next, r.countLocked()
}

// countLocked is the number of the room's members, on every server.
func (r *room) countLocked() int {
	if len(r.remote) == 0 {
		return len(r.members)
	}
	n := len(r.members)
	for id := range r.remote {
		if _, local := r.byUser[id]; !local {
			n++
		}
	}
	return n
}

func (r *room) pageLocked(cursor string) ([]User, string) {
	if len(r.remote) != 0 {
		return pageOf(r.allLocked(), cursor)
	}
	i := 0
	if cursor != "" {
		i, _ = slices.BinarySearchFunc(r.members, cursor, byID)
		if i < len(r.members) && r.members[i].user.ID == cursor {
			i++
		}
	}
	end := min(i+PageSize, len(r.members))
	page := make([]User, end-i)
	for j, m := range r.members[i:end] {
		page[j] = m.user
	}
	var next string
	if end < len(r.members) {
		next = page[len(page)-1].ID
	}
	return page, next
}

func byID(m *conn, id string) int { return strings.Compare(m.user.ID, id) }

// pageOf is pageLocked over users sorted by ID.
func pageOf(users []User, cursor string) ([]User, string) {
	i := 0
	if cursor != "" {
		i, _ = slices.BinarySearchFunc(users, cursor, func(u User, id string) int { return strings.Compare(u.ID, id) })
		if i < len(users) && users[i].ID == cursor {
			i++
		}
	}
	end := min(i+PageSize, len(users))
	page := slices.Clone(users[i:end])
	var next string
	if end < len(users) {
		next = page[len(page)-1].ID
	}
	return page, next
}

func (r *room) isMemberLocked(c *conn) bool { return r.byUser[c.user.ID] == c }

// addLocked adds c, whose user is not a member, in its place by user ID.
// Moving the pointers after it costs microseconds even in a room of
// thousands, and keeps pages cheap.
func (r *room) addLocked(c *conn, l *lane) {
	i, _ := slices.BinarySearchFunc(r.members, c.user.ID, byID)
	r.members = slices.Insert(r.members, i, c)
	r.mlanes = slices.Insert(r.mlanes, i, l)
	r.byUser[c.user.ID] = c
	r.lanes[c] = l
}

func (r *room) removeLocked(c *conn) bool {
	if !r.isMemberLocked(c) {
		return false
	}
	i, _ := slices.BinarySearchFunc(r.members, c.user.ID, byID)
	r.members = slices.Delete(r.members, i, i+1)
	r.mlanes = slices.Delete(r.mlanes, i, i+1)
	delete(r.byUser, c.user.ID)
	delete(r.lanes, c)
	delete(r.typed, c)
	if rp := r.replays[c]; rp != nil {
		rp.cancelLocked()
	}
	return true
}

// notePresenceLocked numbers a join or leave and gathers it for the next
// presence frame, or tells it at once, to every member but skip, when the
// interval is 0. r.mu is held.
func (r *room) notePresenceLocked(ch presenceChange, skip *conn) {
	if ch.seq != 0 {
		r.pseq = max(r.pseq, ch.seq)
	} else {
		r.pseq++
	}
	r.npending++
	if r.npending <= r.s.cfg.presenceLimit {
		r.pending = append(r.pending, ch)
	}
	if !ch.leave {
		if r.joining == nil {
			r.joining = make(map[string]struct{})
		}
		r.joining[ch.user.ID] = struct{}{}
	}
	if r.s.cfg.presenceInterval == 0 {
		r.flushPresenceLocked(skip)
		return
	}
	if !r.queued {
		r.queued = true
		r.s.queuePresence(r)
	}
}

// announceJoinLocked tells the room's gathered presence now if c's join is
// among it and would be told by name, so that nobody hears from c before
// hearing that c joined. A count names nobody: it waits its turn. r.mu is
// held.
func (r *room) announceJoinLocked(c *conn) {
	if r.joining == nil || r.countOnlyLocked() {
		return
	}
	if _, ok := r.joining[c.user.ID]; ok {
		r.flushPresenceLocked(nil)
	}
}

// countOnlyLocked reports whether the next presence frame carries the
// count alone: the room, or the changes gathered, pass the presence limit.
func (r *room) countOnlyLocked() bool {
	return r.countLocked() > r.s.cfg.presenceLimit || r.npending > r.s.cfg.presenceLimit
}

// A room's presence frames go out at most every interval times its
// members ÷ presenceSpread, between 1 and maxPresenceEvery intervals: 200
// ms up to 20 members, 2 s for 100, 10 s from 250 on, with the defaults.
const (
	presenceSpread   = 10
	maxPresenceEvery = 50
)

// presenceDueLocked reports whether the room's gathered changes are due to
// be told at now: when the room was last told at least its spacing ago.
// Each presence frame costs a packet to every member, so a room that told
// its presence every interval would cost O(members) packets per interval
// for as long as people come and go: spaced by the room's size, telling
// it costs O(presenceSpread) packets per interval, whatever its size. A
// crowd's joins then arrive in fewer, larger frames, or as a count.
func (r *room) presenceDueLocked(now time.Time) bool {
	times := min(max(r.countLocked()/presenceSpread, 1), maxPresenceEvery)
	return now.Sub(r.told) >= time.Duration(times)*r.s.cfg.presenceInterval
}

// flushPresenceLocked tells the members what joined and left since the
// last presence frame: one frame for all of them, with the changes while
// the room and the changes are within the presence limit, else with the
// count alone (so too for a member whose size limit the changes pass).
// skip, if not nil, is not told. r.mu is held.
func (r *room) flushPresenceLocked(skip *conn) {
	if r.npending == 0 {
		return
	}
	r.told = time.Now()
	now := r.told.UTC()
	var counts, full []byte
	var own map[*conn]int // joiners here whose join the broker numbered: its index
	if !r.countOnlyLocked() {
		full = mustEncode(presenceFrame(r.name, r.pseq, r.countLocked(), r.pending, now))
		for j, ch := range r.pending {
			if m := r.byUser[ch.user.ID]; ch.seq != 0 && !ch.leave && m != nil {
				if own == nil {
					own = make(map[*conn]int)
				}
				own[m] = j
			}
		}
	}
	for i, m := range r.members {
		if m == skip {
			continue
		}
		f := full
		if j, ok := own[m]; ok {
			// Its own join, numbered after its joined: not told to it,
			// as without a broker. The changes carry their numbers.
			rest := slices.Delete(slices.Clone(r.pending), j, j+1)
			if len(rest) == 0 {
				continue
			}
			f = mustEncode(presenceFrame(r.name, r.pseq, r.countLocked(), rest, now))
		}
		if f == nil || len(f)-frameHeaderLen > m.maxSize {
			if counts == nil {
				counts = mustEncode(presenceFrame(r.name, r.pseq, r.countLocked(), nil, now))
			}
			f = counts
		}
		r.deliverLocked(i, f)
	}
	clear(r.pending)
	r.pending = r.pending[:0]
	r.npending = 0
	r.joining = nil
}

// leave removes c from r, tells the remaining members with reason, and
// removes the room with its history when nobody is left. It reports
// whether c was a member.
func (s *Server) leave(c *conn, r *room, reason string) bool {
	r.mu.Lock()
	was := r.removeLocked(c)
	var e *entry
	if was {
		if r.stopWatch == nil { // else told as the watch tells it
			r.notePresenceLocked(presenceChange{leave: true, user: c.user, reason: reason}, nil)
		}
		r.toldLocked(c.user.ID)
		e = r.entered[c.user.ID]
		delete(r.entered, c.user.ID)
	}
	empty := len(r.members) == 0
	r.mu.Unlock()
	if e != nil {
		e.exit(reason)
	}
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
	if s.isStopped() {
		// Shutting down: the room goes with the server, and its history
		// stays in the store, for a durable one to serve the next run.
		return
	}
	if r.lockOrder(s.runCtx) != nil {
		return // closing: the room goes with the server
	}
	defer r.unlockOrder()
	if r.settle(s.runCtx) != nil {
		return // closing: the room goes with the server
	}
	r.mu.Lock()
	empty := len(r.members) == 0 && !r.deleted
	r.mu.Unlock()
	if !empty {
		return
	}
	if s.cfg.broker == nil { // a broker's rooms outlive their members here
		if err := s.cfg.history.Forget(s.runCtx, r.name); err != nil {
			s.log.Error("garou: history forget failed", "room", r.name, "err", err)
		}
	}
	s.roomsMu.Lock()
	r.mu.Lock()
	removed := len(r.members) == 0 && !r.deleted
	if removed {
		r.deleted = true
		delete(s.rooms, r.name)
		s.seqFloor = max(s.seqFloor, r.seq)
	}
	r.mu.Unlock()
	s.roomsMu.Unlock()
	if removed {
		r.closeRoom()
	}
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
