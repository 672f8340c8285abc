package garou

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// maxCoalesce bounds one stream write made of queued frames.
const maxCoalesce = 64 << 10

// conn is the server's side of one client connection. Its goroutine (serve)
// reads frames and handles them, hooks included; a second goroutine
// (writeLoop) drains the send queue. Nothing else ever writes to the stream.
type conn struct {
	s       *Server
	qc      *quic.Conn
	str     *quic.Stream
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

	mu    sync.Mutex // a leaf lock: never held while taking another
	rooms map[string]*room
	cause *closeCause

	// The send queue: frames in order, bounded in bytes.
	qmu      sync.Mutex
	q, spare [][]byte
	qbytes   int
	qclosed  bool
	corked   bool   // the writer leaves the queue alone
	final    []byte // the last frame, written after the queue drains
	wake     chan struct{}
	wdone    chan struct{} // closed when writeLoop ends; nil if not started

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

func newConn(s *Server, qc *quic.Conn, addrKey string) *conn {
	return &conn{
		s:       s,
		qc:      qc,
		addrKey: addrKey,
		log:     s.log.With("remote", qc.RemoteAddr().String()),
		rooms:   make(map[string]*room),
		wake:    make(chan struct{}, 1),
		maxSize: DefaultMaxMessageSize,
		tokens:  float64(s.cfg.burst),
	}
}

// serve runs the connection: handshake, then requests until the stream or
// the connection ends, then teardown.
func (c *conn) serve() {
	err := c.run()
	c.teardown(err)
}

func (c *conn) run() error {
	// One deadline for the whole handshake, from the connection to the
	// hello: opening the stream late does not buy more time.
	deadline := time.Now().Add(c.s.cfg.handshakeTimeout)
	ctx, cancel := context.WithDeadline(c.qc.Context(), deadline)
	str, err := c.qc.AcceptStream(ctx)
	cancel()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			c.fail(CloseHandshakeTimeout, "no stream opened within the handshake deadline", "")
		}
		return err
	}
	c.mu.Lock()
	if c.cause != nil { // finished or failed during the handshake
		c.mu.Unlock()
		return nil
	}
	c.str = str
	c.wdone = make(chan struct{})
	c.mu.Unlock()
	c.s.wg.Go(c.writeLoop)

	fr := frameReader{r: str, max: c.s.cfg.maxMessageSize}
	_ = str.SetReadDeadline(deadline)
	body, err := fr.next()
	if err != nil {
		return c.readFailed(err)
	}
	req, derr := decodeRequest(body)
	switch {
	case derr != nil:
		c.finishWith(CloseProtocol, derr.(*Error), "")
		return nil
	case req.Type != frameHello:
		c.finish(CloseProtocol, CodeProtocol, `the first frame must be a "hello"`, "")
		return nil
	}
	if !c.hello(req, deadline) {
		return nil
	}
	c.mu.Lock()
	if c.cause == nil { // a finish during the hello keeps its deadline
		_ = str.SetReadDeadline(time.Time{})
	}
	c.mu.Unlock()

	for {
		body, err := fr.next()
		if err != nil {
			return c.readFailed(err)
		}
		if c.ending() {
			// Kicked, replaced or shut down: nothing more it says counts.
			return nil
		}
		req, derr := decodeRequest(body)
		if derr != nil {
			c.log.Warn("garou: bad frame", "user", c.user.Name, "err", derr)
			if c.strike() {
				return nil
			}
			c.sendError(req.Ref, derr.(*Error))
			continue
		}
		if !c.handle(req) {
			return nil
		}
	}
}

// readFailed turns a read error into the right close; it returns err for
// teardown to pick the leave reason from.
func (c *conn) readFailed(err error) error {
	var tl *frameTooLargeError
	switch {
	case errors.As(err, &tl):
		c.log.Warn("garou: frame too large", "user", c.user.Name, "size", tl.size)
		c.finish(CloseTooLarge, CodeTooLarge, tl.Error(), "error")
	case errors.Is(err, errEmptyFrame):
		c.finish(CloseProtocol, CodeBadFrame, "empty frame", "error")
	case errors.Is(err, io.ErrUnexpectedEOF):
		c.finish(CloseProtocol, CodeBadFrame, "stream ended inside a frame", "error")
	case isTimeout(err) && !c.welcomed:
		c.finish(CloseHandshakeTimeout, CodeHandshakeSlow, "no hello within the handshake deadline", "")
	}
	return err
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

// hello handles the first frame. It reports whether the client was welcomed.
func (c *conn) hello(req request, deadline time.Time) bool {
	refuse := func(close CloseCode, code ErrorCode, text string) bool {
		c.log.Info("garou: hello refused", "name", req.Name, "code", code, "text", text)
		c.finish(close, code, text, "")
		return false
	}
	if req.MaxSize != 0 && req.MaxSize < MinMessageSize {
		return refuse(CloseProtocol, CodeProtocol, "max_size below the protocol minimum")
	}
	if req.MaxSize != 0 {
		c.maxSize = req.MaxSize
	}
	if err := ValidateName(req.Name); err != nil {
		return refuse(CloseNameRejected, CodeBadName, err.Error())
	}
	rooms := []joinSpec{{Room: DefaultRoom}}
	if req.Rooms != nil {
		rooms = *req.Rooms
	}
	for i := range rooms {
		// Sequence numbers of another run of the server mean nothing here.
		rooms[i].lostRun = req.Server != "" && req.Server != c.s.idPfx
	}
	if len(rooms) > c.s.cfg.maxRoomsPerClient {
		return refuse(CloseProtocol, CodeRoomLimit, "too many rooms in hello")
	}
	for _, r := range rooms {
		if err := ValidateRoom(r.Room); err != nil {
			return refuse(CloseProtocol, CodeBadRoom, err.Error())
		}
	}
	name := req.Name
	if auth := c.s.cfg.auth; auth != nil {
		ctx, cancel := context.WithDeadline(c.qc.Context(), deadline)
		n, err := auth(ctx, Hello{Name: req.Name, Token: req.Token, RemoteAddr: c.qc.RemoteAddr()})
		cancel()
		if err != nil {
			return refuse(CloseUnauthorized, CodeUnauthorized, c.refusal(err, "not authorized"))
		}
		if n != name {
			if err := ValidateName(n); err != nil {
				c.log.Error("garou: authenticator returned an invalid name", "name", n, "err", err)
				return refuse(CloseInternal, CodeInternal, "the server could not name you")
			}
			name = n
		}
	}
	old, code, text := c.s.register(c, name, req.Session)
	if code != "" {
		closeCode := CloseNameRejected
		if code == CodeServerShutdown {
			closeCode = CloseServerShutdown
		}
		return refuse(closeCode, code, text)
	}
	// The hello's rooms are joined before the welcome is sent, so that a
	// client that has its welcome is in its rooms and misses nothing said
	// after. Their replies queue behind the welcome: the queue is corked
	// until the welcome is put at its head.
	c.cork(true)
	for _, spec := range rooms {
		if err := c.joinRoom(spec, 0); err != nil {
			e := asError(err)
			c.enqueue(mustEncode(reply{ChatMessage: ChatMessage{Type: TypeError, Room: spec.Room, Code: e.Code, Text: e.Text}}))
		}
	}
	c.log.Debug("garou: welcomed", "user", c.user.Name, "id", c.user.ID, "resumed", old != nil)
	c.pushFront(c.encodeList(reply{
		ChatMessage: ChatMessage{Type: frameWelcome, User: &c.user, Users: c.s.Users()},
		Session:     c.session,
		Server:      c.s.idPfx,
		MaxSize:     c.s.cfg.maxMessageSize,
	}))
	c.cork(false)
	if old != nil {
		old.finish(CloseReplaced, CodeReplaced, "the session was resumed on another connection", "reconnected")
	}
	return true
}

// handle handles one request after the handshake. It returns false when the
// connection is ending.
func (c *conn) handle(req request) bool {
	if req.Type != frameBye {
		if c.s.cfg.rate > 0 && !c.allow() {
			if c.strike() {
				return false
			}
			c.sendError(req.Ref, &Error{Code: CodeRateLimited, Text: "you are sending too fast"})
			return true
		}
		c.strikes = 0
	}
	switch req.Type {
	case frameText, frameDirect:
		ack, err := c.sayOnce(req)
		if err != nil {
			c.sendError(req.Ref, asError(err))
			break
		}
		c.enqueue(mustEncode(reply{ChatMessage: ack, Ref: req.Ref}))
	case frameJoin:
		spec := joinSpec{Room: req.Room, Since: req.Since, History: req.History}
		if err := c.joinRoom(spec, req.Ref); err != nil {
			c.sendError(req.Ref, asError(err))
		}
	case frameLeave:
		name := orDefault(req.Room, DefaultRoom)
		r := c.room(name)
		if r == nil || !c.s.leave(c, r, "left") {
			c.sendError(req.Ref, notInRoom(name))
			return true
		}
		c.runLeaveHook(name, "left")
		c.enqueue(mustEncode(reply{ChatMessage: ChatMessage{Type: frameAck, Room: name}, Ref: req.Ref}))
	case frameUsers:
		c.enqueue(c.encodeList(reply{ChatMessage: ChatMessage{Type: TypeUsers, Users: c.s.Users()}, Ref: req.Ref}))
	case frameMembers:
		name := orDefault(req.Room, DefaultRoom)
		r := c.room(name)
		if r == nil {
			c.sendError(req.Ref, notInRoom(name))
			return true
		}
		c.enqueue(c.encodeList(reply{ChatMessage: ChatMessage{Type: TypeUsers, Room: r.name, Users: r.users()}, Ref: req.Ref}))
	case frameBye:
		c.finish(CloseNormal, "", "bye", "quit")
		return false
	case frameHello:
		c.finish(CloseProtocol, CodeProtocol, "a second hello", "error")
		return false
	}
	return true
}

// sayOnce handles a text or a direct message with its idempotency key: a
// key the session has already had sequenced gets the original
// acknowledgement, and nothing is said again.
func (c *conn) sayOnce(req request) (ChatMessage, error) {
	if req.Key != "" && !validKey(req.Key) {
		return ChatMessage{}, &Error{Code: CodeBadFrame, Text: `"key" must be 1 to 64 ASCII letters, digits, '-', '_', '.' or ':'`}
	}
	if req.Key == "" || c.sent == nil {
		return c.say(req)
	}
	c.sent.mu.Lock()
	defer c.sent.mu.Unlock()
	if ack, ok := c.sent.acks[req.Key]; ok {
		return ack, nil
	}
	ack, err := c.say(req)
	if err == nil {
		c.sent.record(req.Key, ack, c.s.cfg.sendKeyWindow)
	}
	return ack, err
}

// say handles a text or a direct message: filter, sequence, deliver. It
// returns the acknowledgement to send.
func (c *conn) say(req request) (ChatMessage, error) {
	if req.Text == "" {
		return ChatMessage{}, &Error{Code: CodeBadText, Text: "empty text"}
	}
	in := Incoming{From: c.user, Text: req.Text}
	var r *room
	if req.Type == frameText {
		in.Room = orDefault(req.Room, DefaultRoom)
		if r = c.room(in.Room); r == nil {
			return ChatMessage{}, notInRoom(in.Room)
		}
	} else {
		if req.To == "" {
			return ChatMessage{}, &Error{Code: CodeNoSuchUser, Text: `a direct message needs "to"`}
		}
		in.To = req.To
	}
	text := req.Text
	if f := c.s.cfg.filter; f != nil {
		t, err := f(c.qc.Context(), in)
		if err != nil {
			return ChatMessage{}, &Error{Code: CodeRejected, Text: c.refusal(err, "message rejected")}
		}
		if t == "" {
			return ChatMessage{}, &Error{Code: CodeRejected, Text: "message rejected"}
		}
		text = t
	}
	if r != nil {
		msg, err := r.publish(c, c.from, text)
		if err != nil {
			return ChatMessage{}, err
		}
		return ChatMessage{Type: frameAck, Room: r.name, Seq: msg.Seq, ID: msg.ID}, nil
	}
	return c.direct(req.To, text)
}

func (c *conn) direct(to, text string) (ChatMessage, error) {
	if c.s.draining.Load() {
		return ChatMessage{}, &Error{Code: CodeShuttingDown, Text: "server shutting down"}
	}
	target := c.s.lookupName(to)
	if target == nil {
		return ChatMessage{}, &Error{Code: CodeNoSuchUser, Text: "no user " + to + " is online"}
	}
	msg := ChatMessage{Type: TypeDirect, ID: c.s.newID(), From: c.from, To: target.user.Name, Text: text, Time: time.Now().UTC()}
	frame := mustEncode(reply{ChatMessage: msg})
	if len(frame)-frameHeaderLen > min(c.s.cfg.maxMessageSize, target.maxSize) {
		return ChatMessage{}, &Error{Code: CodeTooLarge, Text: "the message would exceed the recipient's size limit"}
	}
	if !target.enqueue(frame) {
		return ChatMessage{}, &Error{Code: CodeNoSuchUser, Text: "no user " + to + " is online"}
	}
	return ChatMessage{Type: frameAck, ID: msg.ID, To: msg.To}, nil
}

func (c *conn) joinRoom(spec joinSpec, ref uint64) error {
	if c.ending() {
		return &Error{Code: CodeShuttingDown, Text: "your connection is ending"}
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
	return c.s.join(c, spec, ref)
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

func (c *conn) addRoom(r *room) {
	c.mu.Lock()
	c.rooms[r.name] = r
	c.mu.Unlock()
}

func (c *conn) dropRoom(name string) {
	c.mu.Lock()
	delete(c.rooms, name)
	c.mu.Unlock()
}

// encodeList encodes a frame carrying a user list so that it fits the
// client's size limit: a list too long for it is cut, and the frame says
// so with "truncated".
func (c *conn) encodeList(r reply) []byte {
	f := mustEncode(r)
	for len(f)-frameHeaderLen > c.maxSize && len(r.Users) > 0 {
		r.Users = r.Users[:len(r.Users)/2]
		r.Truncated = true
		f = mustEncode(r)
	}
	return f
}

// refusal is the text a client gets for a hook's error: the reason given
// to Refuse, or def for any other error, which is logged instead.
func (c *conn) refusal(err error, def string) string {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Text
	}
	c.log.Warn("garou: hook failed", "user", c.user.Name, "err", err)
	return def
}

func asError(err error) *Error {
	if e, ok := errors.AsType[*Error](err); ok {
		return e
	}
	return &Error{Code: CodeInternal, Text: err.Error()}
}

func (c *conn) sendError(ref uint64, e *Error) {
	c.enqueue(mustEncode(reply{ChatMessage: ChatMessage{Type: TypeError, Code: e.Code, Text: e.Text}, Ref: ref}))
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
		c.finish(CloseFlooding, CodeRateLimited, "too many refused frames", "flooding")
		return true
	}
	return false
}

// teardown ends the connection, once: it leaves every room (telling the
// members), forgets the user, closes the connection, and waits for the
// writer.
func (c *conn) teardown(readErr error) {
	c.mu.Lock()
	cause := c.cause
	rooms := make([]*room, 0, len(c.rooms))
	for _, r := range c.rooms {
		rooms = append(rooms, r)
	}
	c.mu.Unlock()
	reason := leaveReason(cause, readErr)
	c.s.unregister(c)
	for _, r := range rooms {
		if c.s.leave(c, r, reason) {
			c.runLeaveHook(r.name, reason)
		}
	}
	c.mu.Lock()
	wdone, graceful := c.wdone, c.cause != nil && c.cause.graceful
	c.mu.Unlock()
	if !graceful {
		// Nothing more is owed to this client: close now, which also
		// unblocks a writer stuck on a client that does not read.
		c.closeQueue(nil)
		c.closeConn()
	}
	if wdone != nil {
		// Bounded: a graceful writer has a write deadline and a linger,
		// which Server.Close cuts short.
		select {
		case <-wdone:
		case <-c.s.closedCh:
			c.closeConn()
			<-wdone
		}
	}
	c.closeConn()
}

// closeConn closes the QUIC connection with the recorded cause.
func (c *conn) closeConn() {
	code, text := CloseNormal, "bye"
	c.mu.Lock()
	if c.cause != nil {
		code, text = c.cause.code, c.cause.text
	}
	c.mu.Unlock()
	_ = c.qc.CloseWithError(quic.ApplicationErrorCode(code), text)
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
	return true
}

// finish ends the connection gracefully: what is queued is delivered, then
// a "bye" frame with code and text, then the stream is closed; the client
// closes the connection on reading it, or the server does after a linger.
// It never blocks.
func (c *conn) finish(close CloseCode, code ErrorCode, text, reason string) {
	c.finishWith(close, &Error{Code: code, Text: text}, reason)
}

func (c *conn) finishWith(close CloseCode, e *Error, reason string) {
	// One critical section: whether the writer has started decides whether
	// this end is graceful, and run starts it only while no cause is set.
	c.mu.Lock()
	if c.cause != nil {
		c.mu.Unlock()
		return
	}
	started := c.wdone != nil
	c.cause = &closeCause{code: close, text: e.Text, reason: reason, graceful: started}
	c.mu.Unlock()
	if !started {
		c.s.goFor(c, c.closeConn)
		return
	}
	// Stop reading at once: the user leaves its rooms now, while the bye
	// is delivered.
	_ = c.str.SetReadDeadline(time.Now())
	// Bound the delivery: a client that does not read cannot hold the
	// connection open.
	_ = c.str.SetWriteDeadline(time.Now().Add(lingerTimeout))
	c.closeQueue(mustEncode(reply{ChatMessage: ChatMessage{Type: frameBye, Code: e.Code, Text: e.Text}, Close: close}))
}

// fail closes the connection at once, dropping what is queued. It never
// blocks.
func (c *conn) fail(close CloseCode, text, reason string) {
	c.setCause(closeCause{code: close, text: text, reason: reason})
	c.closeQueue(nil)
	c.s.goFor(c, c.closeConn)
}

// enqueue puts a frame on the send queue without blocking, and reports
// whether it did (not when the connection is ending). A client whose
// queue passes the bound is disconnected as a slow consumer.
func (c *conn) enqueue(frame []byte) bool {
	c.qmu.Lock()
	if c.qclosed {
		c.qmu.Unlock()
		return false
	}
	if c.qbytes+len(frame) > c.s.cfg.sendQueueBytes {
		c.qclosed = true
		if c.corked {
			c.q, c.qbytes = nil, 0
		}
		c.qmu.Unlock()
		c.log.Warn("garou: slow consumer disconnected", "user", c.user.Name, "queued", c.qbytes)
		c.fail(CloseSlowConsumer, "you read too slowly", "slow")
		return false
	}
	c.q = append(c.q, frame)
	c.qbytes += len(frame)
	first := len(c.q) == 1
	c.qmu.Unlock()
	if first {
		c.signal()
	}
	return true
}

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// cork stops (true) or resumes (false) the writer's draining.
func (c *conn) cork(on bool) {
	c.qmu.Lock()
	c.corked = on
	c.qmu.Unlock()
	if !on {
		c.signal()
	}
}

// pushFront puts a frame at the head of the (corked) queue.
func (c *conn) pushFront(frame []byte) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.qclosed {
		return
	}
	c.q = append(c.q, nil)
	copy(c.q[1:], c.q)
	c.q[0] = frame
	c.qbytes += len(frame)
}

// closeQueue refuses further frames; the writer drains what is queued, then
// writes final (if any) and closes the stream.
func (c *conn) closeQueue(final []byte) {
	c.qmu.Lock()
	if !c.qclosed {
		c.qclosed = true
		c.final = final
		if c.corked {
			// Ended during its hello: no welcome will come, so the
			// replies of its rooms must not go out without it.
			c.q, c.qbytes = nil, 0
		}
	}
	c.qmu.Unlock()
	c.signal()
}

// writeLoop drains the send queue, packing queued frames into as few stream
// writes as it can. No lock is held while writing.
func (c *conn) writeLoop() {
	defer close(c.wdone)
	// However the writer ends, the connection is over: a write error means
	// the stream is gone, and a drained closed queue means teardown.
	defer c.closeConn()
	defer func() {
		c.qmu.Lock()
		c.qclosed = true
		c.q, c.qbytes = nil, 0
		c.qmu.Unlock()
	}()
	// The coalescing buffer is borrowed per batch, so an idle connection
	// holds none.
	var buf []byte
	defer func() { putWriteBuf(buf) }()
	for {
		select {
		case <-c.wake:
		case <-c.qc.Context().Done():
			return
		}
		c.qmu.Lock()
		if c.corked && !c.qclosed {
			c.qmu.Unlock()
			continue
		}
		batch := c.q
		c.q, c.spare = c.spare[:0], nil
		c.qmu.Unlock()

		buf = getWriteBuf()
		n := 0
		for i, f := range batch {
			n += len(f)
			if len(f) >= maxCoalesce {
				if err := c.flush(&buf); err != nil {
					return
				}
				if _, err := c.str.Write(f); err != nil {
					return
				}
			} else {
				if len(buf)+len(f) > maxCoalesce {
					if err := c.flush(&buf); err != nil {
						return
					}
				}
				buf = append(buf, f...)
			}
			batch[i] = nil
		}
		if err := c.flush(&buf); err != nil {
			return
		}
		putWriteBuf(buf)
		buf = nil

		c.qmu.Lock()
		c.qbytes -= n
		c.spare = batch[:0]
		done := c.qclosed && len(c.q) == 0
		final := c.final
		c.qmu.Unlock()
		if done {
			if final != nil {
				c.linger(final)
			}
			return
		}
	}
}

var writeBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, maxCoalesce)
	return &b
}}

func getWriteBuf() []byte { return (*writeBufs.Get().(*[]byte))[:0] }

func putWriteBuf(b []byte) {
	if b == nil || cap(b) > maxCoalesce {
		return
	}
	writeBufs.Put(&b)
}

func (c *conn) flush(buf *[]byte) error {
	if len(*buf) == 0 {
		return nil
	}
	_, err := c.str.Write(*buf)
	*buf = (*buf)[:0]
	return err
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
