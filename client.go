package garou

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/quic-go/quic-go"
)

// Client is a connection to a Garou server, kept alive across network
// failures: when its connection is lost it reconnects by itself, rejoins
// its rooms and receives what it missed (see WithReconnect).
//
// All methods are safe for concurrent use. Concurrent Sends are pipelined:
// their frames go out in the order the calls write them, and each returns
// when its own acknowledgement arrives. Messages are delivered to Receive
// in the order the server sent them.
type Client struct {
	cfg   clientConfig
	addr  string
	raddr net.Addr
	tls   *tls.Config
	quic  *quic.Config
	log   *slog.Logger

	incoming chan ChatMessage
	ctx      context.Context // ends with Close
	cancel   context.CancelFunc
	quit     <-chan struct{} // ctx.Done()
	done     chan struct{}   // closed when the client has stopped for good
	closing  sync.Once
	wg       sync.WaitGroup

	mu      sync.Mutex
	name    string // as asked in the hello
	user    User
	session string
	server  string // the server run that welcomed the client
	srvMax  int
	rooms   map[string]*roomState
	order   []string // rooms in join order
	cur     *clientConn
	ready   chan struct{} // closed while cur is usable
	pending map[uint64]chan reply
	nextRef uint64
	err     error // why the client stopped
}

// roomState is what resuming a room needs: the last sequence number
// received, and the room's sequence number when it was last (re)joined.
type roomState struct{ lastSeq, joinedSeq uint64 }

// clientConn is one QUIC connection of a Client.
type clientConn struct {
	once sync.Once
	pc   net.PacketConn
	tr   *quic.Transport
	qc   *quic.Conn
	str  *quic.Stream
	fr   frameReader
	wsem chan struct{} // one writer at a time, waiting with a context
	lost chan struct{} // closed when the connection ended
	bye  *reply        // the server's last frame, if it sent one
}

// Dial connects to the server at addr ("host:port") as name and returns
// once the server has welcomed the client. A refusal (name taken, server
// full, unauthorized, ...) is returned as a *CloseError whose Err, when the
// server said why, is an *Error with the code.
func Dial(ctx context.Context, addr, name string, opts ...ClientOption) (*Client, error) {
	cfg := defaultClientConfig()
	for _, o := range opts {
		if o != nil {
			o.applyClient(&cfg)
		}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("garou: resolve %s: %w", addr, err)
	}
	tlsConf, err := clientTLS(&cfg, addr)
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:   cfg,
		addr:  addr,
		raddr: raddr,
		tls:   tlsConf,
		quic: &quic.Config{
			HandshakeIdleTimeout:  cfg.connectTimeout,
			MaxIdleTimeout:        cfg.idleTimeout,
			KeepAlivePeriod:       cfg.keepAlive,
			MaxIncomingStreams:    -1,
			MaxIncomingUniStreams: -1,
			// Bounded windows: a client that stops reading is noticed by
			// the server (as a slow consumer) after a few MiB, not after
			// quic-go's default of many.
			MaxStreamReceiveWindow:     uint64(max(2*cfg.maxMessageSize, 2<<20)),
			MaxConnectionReceiveWindow: uint64(max(3*cfg.maxMessageSize, 3<<20)),
		},
		log:      cfg.logger,
		incoming: make(chan ChatMessage, cfg.receiveBuffer),
		done:     make(chan struct{}),
		name:     name,
		rooms:    make(map[string]*roomState),
		ready:    make(chan struct{}),
		pending:  make(map[uint64]chan reply),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.quit = c.ctx.Done()
	specs := make([]joinSpec, len(cfg.rooms))
	for i, r := range cfg.rooms {
		specs[i] = joinSpec{Room: r}
	}
	cc, err := c.connect(ctx, specs)
	if err != nil {
		c.cancel()
		return nil, err
	}
	_ = c.setConn(cc) // nobody can have closed c yet
	c.wg.Go(func() { c.run(cc) })
	return c, nil
}

// connect makes one connection and says hello; it returns once welcomed.
func (c *Client) connect(ctx context.Context, rooms []joinSpec) (_ *clientConn, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.connectTimeout)
	defer cancel()
	pc, err := c.cfg.listenPacket(ctx)
	if err != nil {
		return nil, fmt.Errorf("garou: open UDP socket: %w", err)
	}
	cc := &clientConn{pc: pc, tr: &quic.Transport{Conn: pc}, lost: make(chan struct{}), wsem: make(chan struct{}, 1)}
	defer func() {
		if err != nil {
			cc.close(CloseNormal, "handshake failed")
		}
	}()
	cc.qc, err = cc.tr.Dial(ctx, c.raddr, c.tls, c.quic)
	if err != nil {
		return nil, fmt.Errorf("garou: connect to %s: %w", c.addr, closeErrorFrom(err))
	}
	// Cancelling ctx (Close, or Dial's context) cuts the wait for the
	// welcome short.
	stop := context.AfterFunc(ctx, func() { cc.close(CloseNormal, "cancelled") })
	defer func() {
		if !stop() && err == nil {
			err = ctx.Err() // cc was closed under us
		}
	}()
	cc.str, err = cc.qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("garou: connect to %s: %w", c.addr, closeErrorFrom(err))
	}
	cc.fr = frameReader{r: bufio.NewReaderSize(cc.str, 32<<10), max: c.cfg.maxMessageSize}
	c.mu.Lock()
	hello := request{Type: frameHello, Name: c.name, Token: c.cfg.token, Session: c.session,
		Server: c.server, MaxSize: c.cfg.maxMessageSize, Rooms: &rooms}
	c.mu.Unlock()
	if err := cc.write(ctx, mustEncode(hello)); err != nil {
		return nil, fmt.Errorf("garou: connect to %s: %w", c.addr, closeErrorFrom(err))
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = cc.str.SetReadDeadline(dl)
	}
	body, err := cc.fr.next()
	if err != nil {
		return nil, c.connErr(cc, err)
	}
	r, err := decodeReply(body)
	if err != nil {
		return nil, err
	}
	switch r.Type {
	case frameWelcome:
	case frameBye:
		cc.bye = &r
		return nil, byeError(&r)
	default:
		return nil, fmt.Errorf("garou: server answered the hello with %q", r.Type)
	}
	_ = cc.str.SetReadDeadline(time.Time{})
	c.mu.Lock()
	c.user = *r.User.user()
	c.session = r.Session
	c.server = r.Server
	c.srvMax = r.MaxSize
	c.mu.Unlock()
	return cc, nil
}

// connErr explains a read error on cc: the server's bye, its close code,
// or the error itself.
func (c *Client) connErr(cc *clientConn, err error) error {
	if cc.bye != nil {
		return byeError(cc.bye)
	}
	if ce := closeErrorFrom(err); ce != err {
		return ce
	}
	return fmt.Errorf("garou: connection to %s: %w", c.addr, err)
}

func byeError(r *reply) error {
	return &CloseError{Code: r.Close, Reason: r.Text, Remote: true}
}

// write writes one frame, giving up when ctx ends: a server that reads
// slowly (QUIC flow control) cannot hold a caller past its context. A
// frame cut short leaves the stream out of step, so the connection is
// then closed (and the client reconnects).
func (cc *clientConn) write(ctx context.Context, frame []byte) error {
	select {
	case cc.wsem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-cc.wsem }()
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		_ = cc.str.SetWriteDeadline(time.Now())
	})
	n, err := cc.str.Write(frame)
	if !stop() {
		<-fired
		_ = cc.str.SetWriteDeadline(time.Time{})
	}
	if err != nil && n > 0 {
		_ = cc.qc.CloseWithError(quic.ApplicationErrorCode(CloseProtocol), "frame write interrupted")
	}
	return err
}

// close ends the connection and releases its socket.
func (cc *clientConn) close(code CloseCode, reason string) {
	cc.once.Do(func() {
		if cc.qc != nil {
			_ = cc.qc.CloseWithError(quic.ApplicationErrorCode(code), reason)
		}
		_ = cc.tr.Close()
		_ = cc.pc.Close()
	})
}

// setConn makes cc the current connection. It reports false, having
// closed cc, when the client was closed meanwhile: Close cancels c.ctx
// before it looks for the current connection under c.mu.
func (c *Client) setConn(cc *clientConn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx.Err() != nil {
		cc.close(CloseNormal, "bye")
		return false
	}
	c.cur = cc
	close(c.ready)
	return true
}

// run reads the current connection; when it is lost, it reconnects, until
// the client stops for good.
func (c *Client) run(cc *clientConn) {
	for {
		err := c.read(cc)
		c.mu.Lock()
		c.cur = nil
		c.ready = make(chan struct{})
		c.mu.Unlock()
		close(cc.lost)
		cc.close(CloseNormal, "bye")
		if !c.shouldReconnect(err) {
			c.stop(err)
			return
		}
		c.log.Info("garou: connection lost, reconnecting", "err", err)
		next, rerr := c.reconnect()
		if rerr != nil {
			c.stop(rerr)
			return
		}
		if !c.setConn(next) {
			c.stop(ErrClosed)
			return
		}
		cc = next
	}
}

func (c *Client) shouldReconnect(err error) bool {
	select {
	case <-c.quit:
		return false
	default:
	}
	if c.cfg.reconnects == 0 {
		return false
	}
	var ce *CloseError
	return !errors.As(err, &ce) // the server ended it on purpose
}

// reconnect tries to connect again with backoff and full jitter, resuming
// every room after the last sequence number received.
func (c *Client) reconnect() (*clientConn, error) {
	var last error
	for attempt := range c.cfg.reconnects {
		d := c.cfg.backoffMin
		for range attempt {
			if d >= c.cfg.backoffMax/2 {
				d = c.cfg.backoffMax
				break
			}
			d *= 2
		}
		t := time.NewTimer(rand.N(d) + 1)
		select {
		case <-c.quit:
			t.Stop()
			return nil, ErrClosed
		case <-t.C:
		}
		cc, err := c.connect(c.ctx, c.resumeSpecs())
		if err == nil {
			return cc, nil
		}
		last = err
		var ce *CloseError
		if errors.As(err, &ce) && ce.Code != CloseServerFull && ce.Code != CloseTooManyConns {
			return nil, err // refused: trying again will not help
		}
		c.log.Info("garou: reconnect failed", "attempt", attempt+1, "err", err)
	}
	return nil, fmt.Errorf("garou: gave up reconnecting after %d attempts: %w", c.cfg.reconnects, last)
}

func (c *Client) resumeSpecs() []joinSpec {
	c.mu.Lock()
	defer c.mu.Unlock()
	specs := make([]joinSpec, 0, len(c.order))
	for _, name := range c.order {
		seq := c.rooms[name].lastSeq
		specs = append(specs, joinSpec{Room: name, Since: &seq})
	}
	return specs
}

// stop ends the client for good with err.
func (c *Client) stop(err error) {
	select {
	case <-c.quit:
		if !isRemoteClose(err) {
			err = ErrClosed
		}
	default:
	}
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
	close(c.done)
}

// read dispatches frames until the connection fails.
func (c *Client) read(cc *clientConn) error {
	for {
		body, err := cc.fr.next()
		if err != nil {
			return c.connErr(cc, err)
		}
		r, err := decodeReply(body)
		if err != nil {
			cc.close(CloseProtocol, "malformed frame")
			return err
		}
		if r.Type == frameBye {
			cc.bye = &r
			// Close our side: the server has said all it will.
			return byeError(&r)
		}
		c.track(&r)
		if r.Ref != 0 {
			c.mu.Lock()
			ch := c.pending[r.Ref]
			delete(c.pending, r.Ref)
			c.mu.Unlock()
			if ch != nil {
				ch <- r
			}
			continue
		}
		switch r.Type {
		case frameJoined, frameAck, frameWelcome:
			continue
		}
		select {
		case c.incoming <- r.message():
		case <-c.quit:
			return ErrClosed
		}
	}
}

// track keeps the per-room state resuming needs.
func (c *Client) track(r *reply) {
	switch MessageType(r.Type) {
	case frameJoined:
		c.mu.Lock()
		if st := c.rooms[r.Room]; st == nil {
			c.rooms[r.Room] = &roomState{lastSeq: r.LastSeq, joinedSeq: r.LastSeq}
			c.order = append(c.order, r.Room)
		} else {
			st.joinedSeq = r.LastSeq
		}
		c.mu.Unlock()
	case TypeText:
		c.mu.Lock()
		if st := c.rooms[r.Room]; st != nil && r.Seq > st.lastSeq {
			st.lastSeq = r.Seq
		}
		c.mu.Unlock()
	case TypeGap:
		c.mu.Lock()
		if st := c.rooms[r.Room]; st != nil {
			switch {
			case r.GapTo == 0:
				// The server lost the room's past (it restarted): follow
				// its numbering from the join on.
				st.lastSeq = st.joinedSeq
			case r.GapTo > st.lastSeq:
				st.lastSeq = r.GapTo
			}
		}
		c.mu.Unlock()
	case TypeError:
		// A room of the hello refused (full, rejected by a hook): it is
		// not the client's any more, and is not asked for again.
		if r.Ref == 0 && r.Room != "" && ErrorCode(r.Code) != CodeNotDelivered {
			c.mu.Lock()
			delete(c.rooms, r.Room)
			c.order = slices.DeleteFunc(c.order, func(s string) bool { return s == r.Room })
			c.mu.Unlock()
		}
	}
}

// request sends req and waits for the reply with its ref. If the connection
// is lost before the reply, a text or direct message fails with
// ErrConnectionLost (it may have been accepted); any other request, being
// idempotent, is sent again on the next connection.
func (c *Client) request(ctx context.Context, req request) (reply, error) {
	for {
		cc, err := c.conn(ctx)
		if err != nil {
			return reply{}, err
		}
		ch := make(chan reply, 1)
		c.mu.Lock()
		c.nextRef++
		req.Ref = c.nextRef
		c.pending[req.Ref] = ch
		c.mu.Unlock()
		frame := mustEncode(req)
		if len(frame)-frameHeaderLen > min(c.cfg.maxMessageSize, c.serverMax()) {
			c.forget(req.Ref)
			return reply{}, ErrTooLarge
		}
		if err := cc.write(ctx, frame); err != nil {
			c.forget(req.Ref)
			if ctx.Err() != nil {
				return reply{}, ctx.Err()
			}
			if req.Type == frameText || req.Type == frameDirect {
				return reply{}, ErrConnectionLost
			}
			select { // retry once the connection is replaced
			case <-cc.lost:
			case <-ctx.Done():
				return reply{}, ctx.Err()
			}
			continue
		}
		select {
		case r := <-ch:
			if r.Type == string(TypeError) {
				return r, &Error{Code: ErrorCode(r.Code), Text: r.Text}
			}
			return r, nil
		case <-ctx.Done():
			c.forget(req.Ref)
			return reply{}, ctx.Err()
		case <-cc.lost:
			select { // the reply may have come just before the loss
			case r := <-ch:
				if r.Type == string(TypeError) {
					return r, &Error{Code: ErrorCode(r.Code), Text: r.Text}
				}
				return r, nil
			default:
			}
			c.forget(req.Ref)
			if req.Type == frameText || req.Type == frameDirect {
				return reply{}, ErrConnectionLost
			}
		}
	}
}

func (c *Client) forget(ref uint64) {
	c.mu.Lock()
	delete(c.pending, ref)
	c.mu.Unlock()
}

func (c *Client) serverMax() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.srvMax == 0 {
		return DefaultMaxMessageSize
	}
	return c.srvMax
}

// conn waits for a usable connection.
func (c *Client) conn(ctx context.Context) (*clientConn, error) {
	for {
		c.mu.Lock()
		cc, ready := c.cur, c.ready
		c.mu.Unlock()
		if cc != nil {
			return cc, nil
		}
		select {
		case <-ready:
		case <-c.done:
			return nil, c.Err()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Err returns why the client stopped, or nil while it runs. After Close it
// is ErrClosed; after the server ended the session, a *CloseError.
func (c *Client) Err() error {
	select {
	case <-c.done:
	default:
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// User returns the client's user as the server welcomed it.
func (c *Client) User() User {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.user
}

// Rooms returns the rooms the client is in, in the order it joined them.
func (c *Client) Rooms() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.order)
}

// Send says text in DefaultRoom. It returns nil once the server has
// accepted and sequenced it; the text then also arrives through Receive,
// like every member's. ErrConnectionLost means the outcome is unknown.
func (c *Client) Send(ctx context.Context, text string) error {
	_, err := c.SendTo(ctx, DefaultRoom, text)
	return err
}

// SendTo says text in room and returns its sequence number once the server
// has accepted it.
func (c *Client) SendTo(ctx context.Context, room, text string) (seq uint64, err error) {
	if err := checkText(text); err != nil {
		return 0, err
	}
	r, err := c.request(ctx, request{Type: frameText, Room: room, Text: text})
	return r.Seq, err
}

// SendDirect sends text to the online user called to, and only to them. An
// *Error with CodeNoSuchUser says nobody of that name is online.
func (c *Client) SendDirect(ctx context.Context, to, text string) error {
	if err := checkText(text); err != nil {
		return err
	}
	_, err := c.request(ctx, request{Type: frameDirect, To: to, Text: text})
	return err
}

func checkText(text string) error {
	if text == "" {
		return fmt.Errorf("%w: empty", ErrInvalidText)
	}
	if !utf8.ValidString(text) {
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidText)
	}
	return nil
}

// Join joins room and returns its members. With history > 0 the server
// first replays up to that many of the room's latest texts through
// Receive. Joining a room the client is in returns its members again.
func (c *Client) Join(ctx context.Context, room string, history int) ([]User, error) {
	if err := ValidateRoom(room); err != nil {
		return nil, err
	}
	r, err := c.request(ctx, request{Type: frameJoin, Room: room, History: history})
	return fromWireList(r.Users), err
}

// Leave leaves room.
func (c *Client) Leave(ctx context.Context, room string) error {
	_, err := c.request(ctx, request{Type: frameLeave, Room: room})
	if err == nil {
		c.mu.Lock()
		delete(c.rooms, room)
		c.order = slices.DeleteFunc(c.order, func(s string) bool { return s == room })
		c.mu.Unlock()
	}
	return err
}

// Users returns the users online on the server.
func (c *Client) Users(ctx context.Context) ([]User, error) {
	r, err := c.request(ctx, request{Type: frameUsers})
	return fromWireList(r.Users), err
}

// Members returns the members of a room the client is in.
func (c *Client) Members(ctx context.Context, room string) ([]User, error) {
	r, err := c.request(ctx, request{Type: frameMembers, Room: room})
	return fromWireList(r.Users), err
}

// Receive returns the next message from the server, in order: texts (its
// own included), direct messages, joins, leaves, gaps and error messages
// not tied to a request. After the client stopped it returns the messages
// still buffered, then the reason it stopped (ErrClosed after Close).
func (c *Client) Receive(ctx context.Context) (ChatMessage, error) {
	select {
	case m := <-c.incoming:
		return m, nil
	default:
	}
	select {
	case m := <-c.incoming:
		return m, nil
	case <-c.done:
		select {
		case m := <-c.incoming:
			return m, nil
		default:
			return ChatMessage{}, c.Err()
		}
	case <-ctx.Done():
		return ChatMessage{}, ctx.Err()
	}
}

// Close tells the server the client is leaving, closes the connection and
// returns once every goroutine of the client has ended. It is idempotent.
func (c *Client) Close() error {
	c.closing.Do(func() {
		c.cancel()
		c.mu.Lock()
		cc := c.cur
		c.mu.Unlock()
		if cc != nil {
			_ = cc.qc.CloseWithError(quic.ApplicationErrorCode(CloseNormal), "bye")
		}
	})
	c.wg.Wait()
	return nil
}

func isRemoteClose(err error) bool {
	var ce *CloseError
	return errors.As(err, &ce) && ce.Remote
}
