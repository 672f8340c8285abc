package garou

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// conn is the server's side of one client connection. Its goroutine (serve)
// reads frames and handles them, hooks included; each of its streams (its
// lanes: the control stream and one per room) has a writer goroutine that
// drains the lane's send queue, and runs only while there is something to
// write. Nothing else ever writes to the streams.
type conn struct {
	s       *Server
	qc      transport // the connection: QUIC, or a Transport
	str     controlStream
	addrKey string
	log     *slog.Logger

	// Set by the handshake on the serve goroutine, read-only after welcome.
	user User
	from *User // the sender stamped on texts: ID and name only, and
	// allocated apart from the conn, so that history does not keep a
	// closed connection alive
	key      string
	session  string
	sent     *sentKeys // the session's idempotency keys; nil: none kept
	maxSize  int
	welcomed bool // guarded by s.mu

	// sessionID keys s.sessions: the session's ID with signed tokens,
	// which are renewed at each welcome (session is the latest), else the
	// token itself. resumedWith is the token the hello resumed the
	// session with, which resumes it again however old (see
	// Server.holdsLocked).
	sessionID, resumedWith string

	mu          sync.Mutex // a leaf lock: never held while taking another
	rooms       map[string]*room
	lanes       map[string]*lane // the room lanes, by room
	cause       *closeCause
	lingerUntil time.Time // set with a graceful cause: when delivery gives up
	lanesOpen   bool      // the welcome is queued: room lanes write at once

	// The lanes of rooms left, whose streams may still be being written:
	// touched only by serve (see awaitLeftLanes).
	left []*lane

	// A text or direct message is being handled (by serve): a shutdown
	// ends the connection once its reply is queued (see shutdown).
	saying      bool // guarded by mu
	shutdownDue bool // guarded by mu: a shutdown waits for the reply

	budget *budget    // bounds the bytes queued on all the lanes
	ctl    *lane      // the control stream's lane
	q      *sendQueue // ctl's queue
	// dgram: the client takes QUIC datagrams, and gets its signals so.
	// Set before the connection joins its first room, never changed.
	dgram bool

	// Token bucket, touched only by serve.
	tokens  float64
	last    time.Time
	strikes int
}

// closeCause is why the server ends a connection: the first cause wins.
type closeCause struct {
	code     CloseCode
	text     string
	reason   string // the leave reason the rooms are told
	graceful bool   // a bye frame is being delivered
}

func newConn(s *Server, qc transport, addrKey string) *conn {
	c := &conn{
		s:       s,
		qc:      qc,
		addrKey: addrKey,
		log:     s.log.With("remote", qc.RemoteAddr().String()),
		rooms:   make(map[string]*room),
		lanes:   make(map[string]*lane),
		budget:  &budget{limit: s.cfg.sendQueueBytes},
		maxSize: DefaultMaxMessageSize,
		tokens:  float64(s.cfg.burst),
	}
	c.q = newControlQueue(c.budget)
	c.ctl = newLane(c, "", c.q)
	return c
}

// serve runs the connection: handshake, then requests until the stream or
// the connection ends, then teardown.
func (c *conn) serve() {
	err := c.run()
	c.teardown(err)
}

func (c *conn) run() error {
	fr, err := c.handshake()
	if fr == nil {
		return err
	}
	return c.readLoop(fr)
}

// handshake accepts the stream and handles the hello. It returns the
// stream's reader once the client is welcomed, or nil and the error that
// ended the connection.
func (c *conn) handshake() (*frameReader, error) {
	// One deadline for the whole handshake, from the connection to the
	// hello: opening the stream late does not buy more time.
	deadline := time.Now().Add(c.s.cfg.handshakeTimeout)
	ctx, cancel := context.WithDeadline(c.qc.Context(), deadline)
	str, err := c.qc.acceptControl(ctx)
	cancel()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			c.fail(CloseHandshakeTimeout, "no stream opened within the handshake deadline", "")
		}
		return nil, err
	}
	c.mu.Lock()
	if c.cause != nil { // finished or failed during the handshake
		c.mu.Unlock()
		return nil, nil
	}
	c.str = str
	c.ctl.str = str
	c.mu.Unlock()

	fr := &frameReader{r: str, max: c.s.cfg.maxMessageSize}
	_ = str.SetReadDeadline(deadline)
	body, err := fr.next()
	if err != nil {
		return nil, c.readFailed(err)
	}
	req, derr := decodeRequest(body)
	switch {
	case derr != nil:
		c.finish(CloseProtocol, derr.(*Error).Text, "")
		return nil, nil
	case req.Type != frameHello:
		c.finish(CloseProtocol, `the first frame must be a "hello"`, "")
		return nil, nil
	}
	// A hello in 0-RTT may be a replay: nothing is done with it until the
	// handshake has completed, proving the client holds the keys. What
	// the client missed may be read and sent meanwhile (see early.go).
	var early map[string]uint64
	select {
	case <-c.qc.HandshakeComplete():
	default:
		early = c.replayEarly(req)
	}
	select {
	case <-c.qc.HandshakeComplete():
	case <-c.qc.Context().Done():
		return nil, context.Cause(c.qc.Context())
	}
	if !c.hello(req, early, deadline) {
		return nil, nil
	}
	c.mu.Lock()
	if c.cause == nil { // a finish during the hello keeps its deadline
		_ = str.SetReadDeadline(time.Time{})
	}
	c.mu.Unlock()

	return fr, nil
}

// readLoop reads and handles the client's requests after the welcome. An
// idle connection's goroutine is parked here, in Read: the handshake's
// frames are off its stack, and this one is small, so that the garbage
// collector shrinks the stack to its minimum.
func (c *conn) readLoop(fr *frameReader) error {
	for {
		body, err := fr.next()
		if err != nil {
			return c.readFailed(err)
		}
		c.s.stats.bytesIn.Add(uint64(frameHeaderLen + len(body)))
		if !c.serveFrame(body) {
			return nil
		}
	}
}

// serveFrame handles one frame after the welcome. It returns false when the
// connection is ending.
func (c *conn) serveFrame(body []byte) bool {
	if c.ending() {
		// Kicked, replaced or shut down: nothing more it says counts.
		return false
	}
	req, derr := decodeRequest(body)
	if derr != nil {
		c.s.logRefusal(c.log, slog.LevelWarn, "garou: bad frame", "user", c.user.Name, "err", derr)
		return c.refuse(req.Ref, derr.(*Error))
	}
	return c.handle(req)
}

// readFailed turns a read error into the right close; it returns err for
// teardown to pick the leave reason from.
func (c *conn) readFailed(err error) error {
	var tl *frameTooLargeError
	switch {
	case errors.As(err, &tl):
		c.s.logRefusal(c.log, slog.LevelWarn, "garou: frame too large", "user", c.user.Name, "size", tl.size)
		c.finish(CloseTooLarge, tl.Error(), "error")
	case errors.Is(err, errEmptyFrame):
		c.finish(CloseProtocol, "empty frame", "error")
	case errors.Is(err, io.ErrUnexpectedEOF):
		c.finish(CloseProtocol, "stream ended inside a frame", "error")
	case isTimeout(err) && !c.welcomed:
		c.finish(CloseHandshakeTimeout, "no hello within the handshake deadline", "")
	case errors.Is(err, io.EOF) && !c.welcomed:
		c.finish(CloseProtocol, "the stream ended before the hello", "")
	case isStreamReset(err) && !c.welcomed:
		c.finish(CloseProtocol, "the stream was reset before the hello", "")
	}
	return err
}

func isStreamReset(err error) bool {
	se, ok := errors.AsType[*quic.StreamError](err)
	return ok && se.Remote
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

// hello handles the first frame; early is what replayEarly sent. It
// reports whether the client was welcomed.
func (c *conn) hello(req request, early map[string]uint64, deadline time.Time) bool {
	refuse := func(close CloseCode, text string) bool {
		c.s.logRefusal(c.log, slog.LevelInfo, "garou: hello refused", "name", req.Name, "code", close, "text", text)
		c.finish(close, text, "")
		return false
	}
	if req.MaxSize != 0 && req.MaxSize < MinMessageSize {
		return refuse(CloseProtocol, "max_size below the protocol minimum")
	}
	if req.MaxSize != 0 {
		c.maxSize = req.MaxSize
	}
	if err := ValidateName(req.Name); err != nil {
		return refuse(CloseBadName, err.Error())
	}
	rooms := []joinSpec{{Room: DefaultRoom}}
	if req.Rooms != nil {
		rooms = *req.Rooms
	}
	for i := range rooms {
		// Sequence numbers of another run of the server mean nothing here.
		rooms[i].lostRun = req.Server != "" && req.Server != c.s.epoch()
	}
	resumeAfterEarly(rooms, early)
	if len(rooms) > c.s.cfg.maxRoomsPerClient {
		return refuse(CloseProtocol, "too many rooms in hello")
	}
	for _, r := range rooms {
		if err := ValidateRoom(r.Room); err != nil {
			return refuse(CloseProtocol, err.Error())
		}
		if e := checkSince(r.Since); e != nil {
			return refuse(CloseProtocol, e.Text)
		}
	}
	id := Identity{Name: req.Name}
	if auth := c.s.cfg.auth; auth != nil {
		ctx, cancel := context.WithDeadline(c.qc.Context(), deadline)
		got, err := auth(ctx, Hello{Name: req.Name, Token: req.Token, RemoteAddr: c.qc.RemoteAddr()})
		cancel()
		if err != nil {
			return refuse(CloseUnauthorized, c.refusal(err, "not authorized"))
		}
		got.Name = orDefault(got.Name, req.Name)
		if got.Name != req.Name {
			if err := ValidateName(got.Name); err != nil {
				c.log.Error("garou: authenticator returned an invalid name", "name", got.Name, "err", err)
				return refuse(CloseInternal, "the server could not name you")
			}
		}
		if len(got.ID) > maxIdentityID {
			c.log.Error("garou: authenticator returned an ID over 128 bytes", "name", got.Name)
			return refuse(CloseInternal, "the server could not identify you")
		}
		id = got
	}
	c.dgram = c.qc.datagrams()
	old, restored, code, text := c.s.register(c, id, req.Session)
	if code != CloseNormal {
		return refuse(code, text)
	}
	if text := c.s.claim(c, old, req.Session); text != "" {
		return refuse(CloseNameTaken, text)
	}
	c.s.attach(c)
	// The hello's rooms are joined before the welcome is sent, so that a
	// client that has its welcome is in its rooms and misses nothing said
	// after. Their replies queue behind the welcome: the queue holds its
	// first slot for it until now.
	for _, spec := range rooms {
		if err := c.joinRoom(spec, 0); err != nil {
			e := c.asError(err)
			c.enqueue(mustEncode(errorFrame(0, spec.Room, e)))
			c.closeEarlyLane(orDefault(spec.Room, DefaultRoom))
		}
	}
	used0RTT := c.qc.used0RTT()
	c.log.Info("garou: welcomed", "user", c.user.Name, "id", c.user.ID, "resumed", old != nil, "early", used0RTT, "restored", restored)
	c.s.stats.welcomes.Add(1)
	if old != nil || restored {
		c.s.stats.resumes.Add(1)
	}
	if used0RTT {
		c.s.stats.early.Add(1)
	}
	c.q.welcome(mustEncode(welcomeFrame(&c.user, c.s.online(), c.session, c.s.epoch(), c.s.cfg.maxMessageSize)))
	// The hello's rooms' streams open once the welcome is queued: a
	// client hears of its rooms after its welcome.
	c.mu.Lock()
	c.lanesOpen = true
	held := c.roomLanesLocked()
	c.mu.Unlock()
	for _, l := range held {
		l.q.open()
	}
	if old != nil {
		old.finish(CloseReplaced, "the session was resumed on another connection", "reconnected")
	}
	return true
}

// handle handles one request after the handshake. It returns false when the
// connection is ending.
//
// Every refused request (an error reply) counts toward flooding, as bad
// frames do; only a request the server carried out resets the count.
func (c *conn) handle(req request) bool {
	switch req.Type {
	case frameBye:
		c.finish(CloseNormal, "bye", "quit")
		return false
	case frameHello:
		c.finish(CloseProtocol, "a second hello", "error")
		return false
	case frameText, frameDirect:
		// A shutdown waits for its reply (see shutdown).
		c.setSaying(true)
		defer c.setSaying(false)
	}
	if c.s.cfg.rate > 0 && !c.allow() {
		return c.refuse(req.Ref, &Error{Code: CodeRateLimited, Text: "you are sending too fast"})
	}
	if err := c.request(req); err != nil {
		return c.refuse(req.Ref, c.asError(err))
	}
	c.strikes = 0
	return true
}

// request carries out a request after the hello; an error is its refusal.
func (c *conn) request(req request) error {
	switch req.Type {
	case frameText, frameDirect:
		ack, err := c.sayOnce(req)
		if err != nil {
			return err
		}
		ack.Ref = req.Ref
		f := mustEncode(ack)
		// A text's ack follows its echo on the room's stream: written
		// together, they go in one packet, where an ack of its own on
		// the control stream would cost the sender a packet per text.
		if l := c.lane(ack.Room); ack.Room == "" || l == nil || !l.enqueue(f) {
			c.enqueue(f)
		}
	case frameJoin:
		if e := checkSince(req.Since); e != nil {
			return e
		}
		return c.joinRoom(joinSpec{Room: req.Room, Since: req.Since, History: req.History}, req.Ref)
	case frameLeave:
		name := orDefault(req.Room, DefaultRoom)
		if c.lane(name) != nil && !c.awaitLeftLanes() {
			return &Error{Code: CodeShutdown, Text: "your connection is ending"}
		}
		r := c.room(name)
		l := c.lane(name)
		if r == nil || l == nil || !c.s.leave(c, r, "left") {
			return notInRoom(name)
		}
		c.runLeaveHook(name, "left")
		// The room's stream ends with the reply: nothing of the room
		// follows it (the room no longer delivers to the lane).
		l.enqueue(mustEncode(ackLeave(req.Ref, name)))
		l.q.close(nil)
		c.mu.Lock()
		if c.lanes[name] == l {
			delete(c.lanes, name)
		}
		c.mu.Unlock()
		c.left = append(c.left, l)
	case frameTyping:
		name := orDefault(req.Room, DefaultRoom)
		r := c.room(name)
		if r == nil || !r.typing(c) {
			return notInRoom(name)
		}
		if req.Ref != 0 {
			c.enqueue(mustEncode(ackLeave(req.Ref, name)))
		}
	case frameUsers:
		if e := checkCursor(req.Cursor); e != nil {
			return e
		}
		page, next, n := c.s.userPage(req.Cursor)
		c.enqueue(c.encodePage(usersFrame(req.Ref, "", page, next, n)))
	case frameMembers:
		name := orDefault(req.Room, DefaultRoom)
		r := c.room(name)
		if r == nil {
			return notInRoom(name)
		}
		if e := checkCursor(req.Cursor); e != nil {
			return e
		}
		page, next, n := r.page(req.Cursor)
		c.enqueue(c.encodePage(usersFrame(req.Ref, r.name, page, next, n)))
	}
	return nil
}

// awaitLeftLanes waits, before a leave, while the streams of as many
// rooms left as the client may be in are still being written (or opened:
// the client gives the credit for a new stream once it has read an old
// one to its end). Each holds a writer goroutine: a client that leaves
// room after room and reads none of their streams holds up its own
// requests, at a bounded cost. It reports false if the connection ended
// meanwhile.
func (c *conn) awaitLeftLanes() bool {
	for {
		c.left = slices.DeleteFunc(c.left, func(l *lane) bool { return l.q.isDone() })
		if len(c.left) < c.s.cfg.maxRoomsPerClient {
			return true
		}
		select {
		case <-c.left[0].q.done:
		case <-c.qc.Context().Done():
			return false
		}
	}
}

// setSaying notes whether serve is handling a text or direct message; once
// it no longer is, it ends the connection if a shutdown waited for it.
func (c *conn) setSaying(saying bool) {
	c.mu.Lock()
	c.saying = saying
	due := !saying && c.shutdownDue
	c.mu.Unlock()
	if due {
		c.finish(CloseServerShutdown, "server shutting down", "shutdown")
	}
}

// shutdown ends the connection for the server's shutdown: at once, or,
// while a text or direct message is being handled, once its reply is
// queued. (A text accepted before the shutdown began is queued already:
// the shutdown waited for it. Its ack comes before the bye.)
func (c *conn) shutdown() {
	c.mu.Lock()
	if c.saying {
		c.shutdownDue = true
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.finish(CloseServerShutdown, "server shutting down", "shutdown")
}

// checkCursor refuses a cursor no server gives: cursors are user IDs.
func checkCursor(cursor string) *Error {
	if len(cursor) > maxIdentityID {
		return &Error{Code: CodeBadFrame, Text: `"cursor" is not one the server gave: too long`}
	}
	return nil
}

// maxSince is the largest "since" a client may send: sequence numbers stay
// below it (2^53, what every JSON reader represents exactly), and since+1,
// the first number a resume asks for, must not overflow.
const maxSince = 1 << 53

func checkSince(since *uint64) *Error {
	if since != nil && *since > maxSince {
		return &Error{Code: CodeBadFrame, Text: `"since" is out of range: at most 2^53`}
	}
	return nil
}

// refuse answers a refused or bad frame with e and counts it toward
// flooding (a failure of the server's own, or of its broker's, does not
// count). It reports whether the connection goes on.
func (c *conn) refuse(ref uint64, e *Error) bool {
	if e.Code != CodeInternal && e.Code != CodeUnavailable && c.strike() {
		return false
	}
	c.s.stats.refused(e.Code)
	c.sendError(ref, e)
	return true
}

// sayOnce handles a text or a direct message with its idempotency key: a
// key the session has already had sequenced gets the original
// acknowledgement, and nothing is said again.
func (c *conn) sayOnce(req request) (reply, error) {
	if req.Key != "" && !validKey(req.Key) {
		return reply{}, &Error{Code: CodeBadFrame, Text: `"key" must be 1 to 64 ASCII letters, digits, '-', '_', '.' or ':'`}
	}
	if req.Key == "" || c.sent == nil {
		return c.say(req)
	}
	c.sent.mu.Lock()
	defer c.sent.mu.Unlock()
	if ack, ok := c.sent.lookup(req.Key); ok {
		return ack, nil
	}
	if req.Type == frameText && c.sent.restored {
		// A session restored from its token may have said this text
		// before: its key is then with the text in the room's history.
		room := orDefault(req.Room, DefaultRoom)
		if c.room(room) != nil {
			if !c.sent.recall(c.qc.Context(), c.s.cfg.history, room, c.s.cfg.sendKeyWindow) {
				c.log.Error("garou: history unreadable: a restored session's text cannot be told from a retry", "room", room)
				return reply{}, errHistory
			}
			if ack, ok := c.sent.lookup(req.Key); ok {
				return ack, nil
			}
		}
	}
	ack, err := c.say(req)
	if err == nil {
		c.sent.record(req.Key, ack, c.s.cfg.sendKeyWindow)
	}
	return ack, err
}

// say handles a text or a direct message: filter, sequence, deliver. It
// returns the acknowledgement to send.
func (c *conn) say(req request) (reply, error) {
	if req.Text == "" {
		return reply{}, &Error{Code: CodeBadText, Text: "empty text"}
	}
	in := Incoming{From: c.user, Text: req.Text}
	var r *room
	if req.Type == frameText {
		in.Room = orDefault(req.Room, DefaultRoom)
		if r = c.room(in.Room); r == nil {
			return reply{}, notInRoom(in.Room)
		}
	} else {
		if req.To == "" {
			return reply{}, &Error{Code: CodeNoSuchUser, Text: `a direct message needs "to"`}
		}
		in.To = req.To
	}
	text := req.Text
	if f := c.s.cfg.filter; f != nil {
		t, err := f(c.qc.Context(), in)
		if err != nil {
			return reply{}, &Error{Code: CodeRejected, Text: c.refusal(err, "message rejected")}
		}
		if t == "" {
			return reply{}, &Error{Code: CodeRejected, Text: "message rejected"}
		}
		text = t
	}
	if r != nil {
		var key string
		if req.Key != "" && c.sent != nil {
			key = c.sent.senderKey(req.Key)
		}
		msg, err := r.publish(c.qc.Context(), c, c.from, text, key, req.Key)
		if err != nil {
			return reply{}, err
		}
		return ackText(0, r.name, msg.Seq, msg.ID), nil
	}
	return c.direct(req.To, text, c.directID(req.Key))
}

// directID returns the ID of a direct message sent with key: for a keyed
// message, one that is the same each time it is sent again, so that its
// recipient drops a copy it already has; otherwise a new one. On servers
// sharing a UserBroker it is derived from the sender's name key and key,
// as the broker's key of a text is, so that the message sent again on
// another server of the service (or after "unavailable", when the first
// try may have reached the recipient) has the ID its recipient saw. On a
// server alone it is derived from the session and the key when the
// session's token outlives its connections (a data directory), so that
// the message sent again after a restart, which the server no longer
// knows it delivered, keeps its ID.
func (c *conn) directID(key string) string {
	switch {
	case key == "":
	case c.s.userBroker() != nil:
		return serviceDirectID(c.key, key)
	case c.sent != nil && c.sent.sid != "" && c.s.tokens != nil:
		return c.s.tokens.directID(c.sent.sid, key)
	}
	return c.s.newID()
}

func (c *conn) direct(to, text, id string) (reply, error) {
	if c.s.draining.Load() {
		return reply{}, &Error{Code: CodeShutdown, Text: "server shutting down"}
	}
	target := c.s.lookupName(to)
	if ub := c.s.userBroker(); target == nil && ub != nil {
		return c.directRemote(ub, to, text, id)
	}
	if target == nil {
		return reply{}, noSuchUser(to)
	}
	msg := ChatMessage{Type: TypeDirect, ID: id, From: c.from, To: target.user.Name, Text: text, Time: time.Now().UTC()}
	frame := mustEncode(textFrame(&msg))
	if len(frame)-frameHeaderLen > min(c.s.cfg.maxMessageSize, target.maxSize) {
		return reply{}, &Error{Code: CodeTooLarge, Text: "the message would exceed the recipient's size limit"}
	}
	if !target.enqueue(frame) {
		return reply{}, noSuchUser(to)
	}
	c.s.stats.directs.Add(1)
	return ackDirect(0, msg.ID, msg.To), nil
}

func (c *conn) joinRoom(spec joinSpec, ref uint64) error {
	if c.ending() {
		return &Error{Code: CodeShutdown, Text: "your connection is ending"}
	}
	spec.Room = orDefault(spec.Room, DefaultRoom)
	if err := ValidateRoom(spec.Room); err != nil {
		return &Error{Code: CodeBadRoom, Text: err.Error()}
	}
	c.mu.Lock()
	_, in := c.rooms[spec.Room]
	n := len(c.rooms)
	c.mu.Unlock()
	if !in && n >= c.s.cfg.maxRoomsPerClient {
		return &Error{Code: CodeRoomLimit, Text: "you are in the maximum number of rooms"}
	}
	if hook := c.s.cfg.onJoin; hook != nil && !in {
		if err := hook(c.qc.Context(), c.user, spec.Room); err != nil {
			return &Error{Code: CodeRejected, Text: c.refusal(err, "you may not join "+spec.Room)}
		}
	}
	rp, err := c.s.join(c, spec, ref)
	if rp != nil {
		rp.fetch()
	}
	return err
}

func (c *conn) runLeaveHook(room, reason string) {
	if hook := c.s.cfg.onLeave; hook != nil {
		hook(c.user, room, reason)
	}
}

func (c *conn) room(name string) *room {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rooms[name]
}

// addRoom makes c a member of r, with a new lane for the room's stream,
// which it returns. The lane is held until the welcome while c is in its
// handshake, and closed at once if c is ending.
func (c *conn) addRoom(r *room) *lane {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rooms[r.name] = r
	l := c.lanes[r.name]
	switch {
	case l != nil && l.early:
		// The join goes on on the stream of its early replay.
		l.early = false
	default:
		if l != nil {
			l.q.close(nil)
		}
		l = newLane(c, r.name, newRoomQueue(c.budget, c.lanesOpen))
		c.lanes[r.name] = l
	}
	if c.cause != nil {
		l.q.close(nil)
	}
	return l
}

// dropRoom removes r from c's rooms. The room's lane stays until
// teardown, or until the leave's reply closes it.
func (c *conn) dropRoom(name string) {
	c.mu.Lock()
	delete(c.rooms, name)
	c.mu.Unlock()
}

// lane returns the lane of a room c is in, or nil.
func (c *conn) lane(room string) *lane {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lanes[room]
}

// roomLanes returns c's room lanes.
func (c *conn) roomLanes() []*lane {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.roomLanesLocked()
}

func (c *conn) roomLanesLocked() []*lane {
	lanes := make([]*lane, 0, len(c.lanes))
	for _, l := range c.lanes {
		lanes = append(lanes, l)
	}
	return lanes
}

// dropQueues closes every lane's queue and discards what they hold.
func (c *conn) dropQueues() {
	c.q.drop()
	for _, l := range c.roomLanes() {
		l.q.drop()
	}
}

// waitRoomLanes waits, until the graceful end's deadline, for the room
// lanes to deliver what they hold: the bye comes after the rooms' last
// frames.
func (c *conn) waitRoomLanes() {
	c.mu.Lock()
	lanes, until := c.roomLanesLocked(), c.lingerUntil
	c.mu.Unlock()
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	for _, l := range lanes {
		select {
		case <-l.q.done:
		case <-t.C:
			return
		case <-c.s.closedCh:
			return
		}
	}
}

// encodePage encodes a frame carrying a page of users so that it fits the
// client's size limit: a page too long for it is cut, and its "next"
// cursor continues after the last user it keeps. (A page of one user fits
// any limit: IDs and names are bounded far below MinMessageSize.)
func (c *conn) encodePage(r reply) []byte {
	f := mustEncode(r)
	for len(f)-frameHeaderLen > c.maxSize && len(r.Users) > 1 {
		r.Users = r.Users[:len(r.Users)/2]
		r.Next = r.Users[len(r.Users)-1].ID
		f = mustEncode(r)
	}
	return f
}

// refusal is the text a client gets for a hook's error: the reason given
// to Refuse, or def for any other error, which is logged instead.
func (c *conn) refusal(err error, def string) string {
	if r, ok := errors.AsType[*refusal](err); ok {
		return r.reason
	}
	c.log.Warn("garou: hook failed", "user", c.user.Name, "err", err)
	return def
}

// asError is the error reply for err: an *Error as it is, anything else
// (a failure of the server's) logged and answered as "internal".
func (c *conn) asError(err error) *Error {
	if e, ok := errors.AsType[*Error](err); ok {
		return e
	}
	c.log.Error("garou: request failed", "user", c.user.Name, "err", err)
	return &Error{Code: CodeInternal, Text: "the server failed; try again"}
}

// sendError sends an error reply. Its text is cut to fit the client's
// size limit whatever it quotes (PROTOCOL.md §2: the server never sends a
// larger frame).
func (c *conn) sendError(ref uint64, e *Error) {
	f := mustEncode(errorFrame(ref, "", e))
	if len(f)-frameHeaderLen > c.maxSize {
		f = mustEncode(errorFrame(ref, "", &Error{Code: e.Code, Text: truncate(e.Text, maxQuoted)}))
	}
	c.enqueue(f)
}

// allow takes a token from the bucket.
func (c *conn) allow() bool {
	now := time.Now()
	if !c.last.IsZero() {
		c.tokens = min(float64(c.s.cfg.burst), c.tokens+now.Sub(c.last).Seconds()*c.s.cfg.rate)
	}
	c.last = now
	if c.tokens >= 1 {
		c.tokens--
		return true
	}
	return false
}

// strike counts a refused or bad frame; a client that gets burst of them in
// a row is flooding and is closed. It reports whether it was.
func (c *conn) strike() bool {
	c.strikes++
	if c.strikes > max(c.s.cfg.burst, 10) {
		c.finish(CloseFlooding, "too many refused frames", "flooding")
		return true
	}
	return false
}

// teardown ends the connection, once: it leaves every room (telling the
// members), forgets the user, closes the connection, and waits for the
// lanes' queues to be done and their writers, if any run, to end.
func (c *conn) teardown(readErr error) {
	c.mu.Lock()
	cause := c.cause
	rooms := make([]*room, 0, len(c.rooms))
	for _, r := range c.rooms {
		rooms = append(rooms, r)
	}
	c.mu.Unlock()
	reason := leaveReason(cause, readErr)
	if c.welcomed {
		c.log.Info("garou: disconnected", "user", c.user.Name, "id", c.user.ID, "reason", reason)
	}
	c.s.unregister(c)
	c.s.detach(c)
	for _, r := range rooms {
		if c.s.leave(c, r, reason) {
			c.runLeaveHook(r.name, reason)
		}
	}
	c.mu.Lock()
	graceful := c.cause != nil && c.cause.graceful
	c.mu.Unlock()
	if !graceful {
		// Nothing more is owed to this client: close now, which also
		// unblocks a writer stuck on a client that does not read.
		c.dropQueues()
		c.closeConn()
	}
	// Bounded: a graceful writer has a write deadline and a linger,
	// which Server.Close cuts short. A writer blocked sending a datagram
	// (quic-go waits while its datagram queue is full, which a client that
	// stops acknowledging keeps it) has no deadline: past both, closing
	// the connection frees it.
	bound := time.NewTimer(3 * lingerTimeout)
	defer bound.Stop()
	closed := false
	for _, l := range append(c.roomLanes(), c.ctl) {
		if !closed {
			select {
			case <-l.q.done:
				continue
			case <-c.s.closedCh:
			case <-bound.C:
			}
			closed = true
			c.closeConn()
		}
		<-l.q.done
	}
	c.closeConn()
}

// closeConn closes the connection with the recorded cause.
func (c *conn) closeConn() {
	code, text := CloseNormal, "bye"
	c.mu.Lock()
	if c.cause != nil {
		code, text = c.cause.code, c.cause.text
	}
	c.mu.Unlock()
	c.qc.close(c.s, code, text)
}

func leaveReason(cause *closeCause, err error) string {
	if cause != nil && cause.reason != "" {
		return cause.reason
	}
	if ae, ok := errors.AsType[*quic.ApplicationError](err); ok && ae.Remote && ae.ErrorCode == 0 {
		return "quit"
	}
	if errors.Is(err, io.EOF) {
		return "quit"
	}
	if _, ok := errors.AsType[*quic.IdleTimeoutError](err); ok {
		return "timeout"
	}
	return "lost"
}

// ending reports whether the server has decided to end the connection.
func (c *conn) ending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause != nil
}

// setCause records why the connection ends, if nothing did before.
func (c *conn) setCause(cause closeCause) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause != nil {
		return false
	}
	c.cause = &cause
	c.s.stats.closed(cause.code)
	return true
}

// finish ends the connection gracefully: what is queued is delivered, then
// a "bye" frame with code and text, then the stream is closed; the client
// closes the connection on reading it, or the server does after a linger.
// It never blocks.
func (c *conn) finish(close CloseCode, text, reason string) {
	// One critical section: whether the stream is open decides whether
	// this end is graceful, and run opens it only while no cause is set.
	c.mu.Lock()
	if c.cause != nil {
		c.mu.Unlock()
		return
	}
	started := c.str != nil
	c.cause = &closeCause{code: close, text: text, reason: reason, graceful: started}
	c.s.stats.closed(close)
	// Bound the delivery: a client that does not read cannot hold the
	// connection open. A room stream opened later gets the same bound.
	c.lingerUntil = time.Now().Add(lingerTimeout)
	lanes := c.roomLanesLocked()
	for _, l := range lanes {
		if l.str != nil {
			_ = l.str.SetWriteDeadline(c.lingerUntil)
		}
	}
	c.mu.Unlock()
	if !started {
		c.s.goFor(c, c.closeConn)
		return
	}
	// Stop reading at once: the user leaves its rooms now, while the bye
	// is delivered.
	_ = c.str.SetReadDeadline(time.Now())
	_ = c.str.SetWriteDeadline(c.lingerUntil)
	// The rooms' streams deliver what they hold and end; the bye follows
	// on the control stream once they have (see lane.end).
	for _, l := range lanes {
		l.q.close(nil)
	}
	c.q.close(mustEncode(byeFrame(close, text)))
}

// fail closes the connection at once, dropping what is queued. It never
// blocks.
func (c *conn) fail(close CloseCode, text, reason string) {
	c.setCause(closeCause{code: close, text: text, reason: reason})
	c.dropQueues()
	c.s.goFor(c, c.closeConn)
}

// enqueue puts a frame on the control stream's queue without blocking,
// and reports whether it did (not when the connection is ending). A client
// whose queues pass their budget is disconnected as a slow consumer.
func (c *conn) enqueue(frame []byte) bool { return c.ctl.enqueue(frame) }

// slow cuts a client whose send queue passed its bound with queued bytes.
func (c *conn) slow(queued int) {
	c.log.Warn("garou: slow consumer disconnected", "user", c.user.Name, "queued", queued)
	c.fail(CloseSlowConsumer, "you read too slowly", "slow")
}

// linger writes the last frame, closes the stream, and gives the client a
// moment to read it and close the connection itself before closing it.
func (c *conn) linger(final []byte) {
	if _, err := c.str.Write(final); err != nil {
		return
	}
	_ = c.str.Close()
	t := time.NewTimer(lingerTimeout)
	defer t.Stop()
	select {
	case <-c.qc.Context().Done():
	case <-t.C:
	case <-c.s.closedCh:
	}
}
