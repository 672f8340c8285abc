package garou

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
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
// when its own acknowledgement arrives, whether or not anyone calls
// Receive. Every text carries an idempotency key, so that a Send cut off
// by a lost connection is retried on the next one and sequenced exactly
// once (across a restart of a server with a data directory too). A
// request waiting for its reply from a server silent for 250 ms, and a
// client that heard nothing for its probe interval (WithProbeInterval,
// 10 s), send a harmless request, so that a server that crashed and restarted answers with a
// stateless reset and the client reconnects at once. Messages are
// delivered to Receive in the order the server sent them. Connection
// state changes are reported to WithStateHandler.
type Client struct {
	cfg clientConfig
	// The service's addresses: Dial's first, then WithServers'; ep is the
	// one connected to, or being tried.
	eps    []*endpoint
	ep     atomic.Pointer[endpoint]
	quic   *quic.Config
	log    *slog.Logger
	keyPfx string        // idempotency keys are keyPfx + a counter
	keyN   atomic.Uint64 // the counter

	// The receive buffer (see WithReceiveBuffer). The readers append,
	// Receive takes from the front.
	rmu       sync.Mutex
	rq        []queued // from rhead on
	rhead     int
	overBytes int           // bytes of the messages past the buffer's size
	readAhead int           // the reader waits while overBytes reaches it
	avail     chan struct{} // a message was queued
	space     chan struct{} // a message was taken

	// State changes waiting for the handler's goroutine.
	smu   sync.Mutex
	sq    []StateChange
	swake chan struct{}

	ctx     context.Context // ends with Close
	cancel  context.CancelFunc
	quit    <-chan struct{} // ctx.Done()
	done    chan struct{}   // closed when the client has stopped for good
	closing sync.Once
	wg      sync.WaitGroup

	migrating sync.Mutex // one Migrate at a time

	mu      sync.Mutex
	name    string // as asked in the hello
	user    User
	session string
	server  string // the server run that welcomed the client
	srvMax  int
	rooms   map[string]*roomState
	order   []string // rooms in join order
	cur     *clientConn
	ready   chan struct{}  // closed while cur is usable
	leaving map[string]int // rooms a Leave is under way for: never rejoined
	// departing keeps the state of the rooms a Leave is under way for:
	// out of rooms (Rooms, resumes, sends), but still followed (texts,
	// presence) until the server has answered, as the client is still a
	// member until then, and is one again if the server refuses.
	departing map[string]*roomState
	pending   map[uint64]chan reply
	nextRef   uint64
	err       error // why the client stopped
	// The IDs of the latest direct messages received, on any connection:
	// one sent again after a server restart comes with the same ID, and
	// is dropped (see dispatch).
	directs recentIDs
}

// queued is a message waiting for Receive, with the size of its frame.
type queued struct {
	m    ChatMessage
	size int
}

// ConnState is the state of a Client's connection.
type ConnState int

// Connection states, reported to WithStateHandler.
const (
	// StateConnecting: Dial is making the first connection.
	StateConnecting ConnState = iota
	// StateConnected: the first connection was welcomed; Dial returns.
	StateConnected
	// StateReconnecting: the connection was lost, and attempt number
	// Attempt (from 1) is about to be made, after a backoff. Err says why
	// the connection was lost, or why the previous attempt failed.
	StateReconnecting
	// StateResumed: a reconnect was welcomed. The client is back in its
	// rooms, and what was said meanwhile follows through Receive.
	StateResumed
	// StateClosed: the client stopped for good. Err says why: ErrClosed
	// after Close, or the failure that ended it (see Client.Err).
	StateClosed
)

var connStateNames = [...]string{"connecting", "connected", "reconnecting", "resumed", "closed"}

func (s ConnState) String() string {
	if int(s) < len(connStateNames) {
		return connStateNames[s]
	}
	return fmt.Sprintf("ConnState(%d)", int(s))
}

// StateChange is one change of a Client's connection state.
type StateChange struct {
	State   ConnState
	Attempt int   // the reconnect attempt, from 1, in StateReconnecting
	Err     error // the cause, in StateReconnecting and StateClosed
}

// roomState is what resuming a room needs: the last sequence number
// received, and the room's sequence number when it was last (re)joined.
type roomState struct {
	lastSeq, joinedSeq uint64
	// presence is the number of the room's last join or leave the client
	// knows of: those numbered up to it are in its joined reply.
	presence uint64
	typed    time.Time // when Typing last sent a signal
}

// streamReader reads one stream from the server: the control stream, or
// the stream of one room.
type streamReader struct {
	fr    frameReader
	dec   replyDecoder
	batch []queued // messages read, not yet in the receive buffer
}

// roomReadBuffer is the read buffer of a room's stream: frames wholly in
// it are handed on without a copy, and a burst's in one batch.
const roomReadBuffer = 16 << 10

// maxRoomStreams is how many room streams the client lets the server have
// open at once: more than any server's rooms per client need, since a
// stream's credit comes back only once the client has read it to its end.
const maxRoomStreams = 1 << 12

// clientConn is one QUIC connection of a Client.
type clientConn struct {
	once sync.Once
	pc   net.PacketConn
	tr   *quic.Transport
	qc   *quic.Conn
	str  *quic.Stream
	ctl  streamReader  // the control stream's
	wsem chan struct{} // one writer at a time, waiting with a context
	lost chan struct{} // closed when the connection ended
	stop chan struct{} // closed by close: readers stop waiting for the receive buffer
	bye  *reply        // the server's last frame, if it sent one; the control reader's
	// heard is when the last frame was read (Unix nanoseconds), on any
	// stream, for requests waiting on a silent server to tell (see
	// replyProbe).
	heard atomic.Int64

	// The readers (control stream, room streams, their acceptor,
	// datagrams), started once the welcome is read. ended gets the
	// control reader's error: the connection's end.
	readers sync.WaitGroup
	ended   chan error

	// The rooms of the hello not yet answered (joined, or refused), and
	// a channel closed when none is left.
	amu      sync.Mutex
	await    map[string]bool
	answered chan struct{}
	// The room streams being read, and a signal when one ends.
	roomsOpen  int // guarded by amu
	roomsEnded chan struct{}

	// The sockets of the paths migrated to (Migrate): each stays open
	// until the connection ends, when close closes them all.
	pmu    sync.Mutex
	paths  []*quic.Transport
	closed bool
}

// Dial connects to the server at addr ("host:port") as name and returns
// once the server has welcomed the client and answered for the rooms of the
// hello (Rooms then lists those joined). A refusal (name taken, server
// full, unauthorized, ...) is returned as a *CloseError whose Err, when the
// server said why, is an *Error with the code; a server that does not
// answer within the connect timeout, as an error wrapping ErrNoAnswer.
// Dial does not retry.
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
	eps := make([]*endpoint, 0, 1+len(cfg.servers))
	for i, a := range append([]string{addr}, cfg.servers...) {
		ep, err := newEndpoint(&cfg, i, a)
		if err != nil {
			return nil, err
		}
		eps = append(eps, ep)
	}
	c := &Client{
		cfg: cfg,
		eps: eps,
		quic: &quic.Config{
			// The server sends signals (typing) as datagrams to a client
			// that takes them.
			EnableDatagrams:      true,
			HandshakeIdleTimeout: cfg.connectTimeout,
			MaxIdleTimeout:       cfg.idleTimeout,
			KeepAlivePeriod:      cfg.keepAlive,
			MaxIncomingStreams:   -1,
			// The server opens a stream for each room the client is in.
			MaxIncomingUniStreams: maxRoomStreams,
			// Bounded windows: a client that stops reading is noticed by
			// the server (as a slow consumer) after a few MiB, not after
			// quic-go's default of many. The connection's window is a few
			// streams' worth: a room whose stream waits for a lost packet
			// holds what came after the hole, and the other rooms go on.
			MaxStreamReceiveWindow:     uint64(max(2*cfg.maxMessageSize, 2<<20)),
			MaxConnectionReceiveWindow: uint64(max(8*cfg.maxMessageSize, 8<<20)),
		},
		log:       cfg.logger,
		keyPfx:    newKeyPrefix(),
		readAhead: max(DefaultReadAhead, cfg.maxMessageSize),
		avail:     make(chan struct{}, 1),
		space:     make(chan struct{}, 1),
		swake:     make(chan struct{}, 1),
		done:      make(chan struct{}),
		name:      name,
		rooms:     make(map[string]*roomState),
		ready:     make(chan struct{}),
		leaving:   make(map[string]int),
		departing: make(map[string]*roomState),
		pending:   make(map[uint64]chan reply),
	}
	c.ep.Store(eps[0])
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.quit = c.ctx.Done()
	if cfg.onState != nil {
		c.wg.Go(c.notifyLoop)
	}
	c.emit(StateChange{State: StateConnecting})
	specs := make([]joinSpec, len(cfg.rooms))
	for i, r := range cfg.rooms {
		specs[i] = joinSpec{Room: r}
	}
	cc, err := c.connect(ctx, specs)
	if err != nil {
		c.stop(err)
		c.cancel()
		c.wg.Wait()
		return nil, err
	}
	_ = c.setConn(cc) // nobody can have closed c yet
	c.emit(StateChange{State: StateConnected})
	c.wg.Go(func() { c.run(cc) })
	return c, nil
}

// endpoint is one address of the service, with what dialing it needs.
type endpoint struct {
	i     int // its place in Client.eps
	addr  string
	raddr net.Addr
	tls   *tls.Config
}

func newEndpoint(cfg *clientConfig, i int, addr string) (*endpoint, error) {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("garou: resolve %s: %w", addr, err)
	}
	tlsConf, err := clientTLS(cfg, addr)
	if err != nil {
		return nil, err
	}
	return &endpoint{i: i, addr: addr, raddr: raddr, tls: tlsConf}, nil
}

// serverAddr is the address connected to, or being tried.
func (c *Client) serverAddr() string { return c.ep.Load().addr }

// newKeyPrefix returns a random prefix for a client's idempotency keys:
// keys stay unique across the clients of a user session.
func newKeyPrefix() string {
	var b [9]byte
	_, _ = crand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:]) + "."
}

// emit hands a state change to the handler's goroutine.
func (c *Client) emit(sc StateChange) {
	if c.cfg.onState == nil {
		return
	}
	c.smu.Lock()
	c.sq = append(c.sq, sc)
	c.smu.Unlock()
	signal(c.swake)
}

// notifyLoop calls the state handler, in order, until StateClosed.
func (c *Client) notifyLoop() {
	for {
		<-c.swake
		c.smu.Lock()
		batch := c.sq
		c.sq = nil
		c.smu.Unlock()
		for _, sc := range batch {
			c.cfg.onState(sc)
			if sc.State == StateClosed {
				return
			}
		}
	}
}

// signal wakes whoever waits on ch, without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// connect makes one connection and says hello; it returns once welcomed.
func (c *Client) connect(parent context.Context, rooms []joinSpec) (_ *clientConn, err error) {
	ctx, cancel := context.WithTimeout(parent, c.cfg.connectTimeout)
	defer cancel()
	pc, err := c.cfg.listenPacket(ctx)
	if err != nil {
		return nil, fmt.Errorf("garou: open UDP socket: %w", err)
	}
	cc := &clientConn{pc: pc, tr: &quic.Transport{Conn: pc}, lost: make(chan struct{}), stop: make(chan struct{}),
		roomsEnded: make(chan struct{}, 1), wsem: make(chan struct{}, 1)}
	defer func() {
		if err != nil {
			cc.close(CloseNormal, "handshake failed")
			cc.readers.Wait()
		}
	}()
	// With WithZeroRTT, DialEarly returns at once when the TLS session
	// can be resumed: the hello then goes in 0-RTT, and the welcome comes
	// one round trip sooner. The server acts on it only once the
	// handshake completes.
	ep := c.ep.Load()
	if c.cfg.zeroRTT {
		cc.qc, err = cc.tr.DialEarly(ctx, ep.raddr, ep.tls, c.quic)
	} else {
		cc.qc, err = cc.tr.Dial(ctx, ep.raddr, ep.tls, c.quic)
	}
	if err != nil {
		if parent.Err() == nil && noAnswer(err) {
			return nil, fmt.Errorf("%w: nothing answered at %s within %v", ErrNoAnswer, c.serverAddr(), c.cfg.connectTimeout)
		}
		return nil, c.handshakeErr(err)
	}
	// Cancelling ctx (Close, or Dial's context) cuts the wait for the
	// welcome short.
	stop := context.AfterFunc(ctx, func() { cc.close(CloseNormal, "cancelled") })
	defer func() {
		if !stop() && err == nil {
			err = ctx.Err() // cc was closed under us
		}
	}()
	// The server answers for each room of the hello right after the
	// welcome: joined on the room's stream, or an error on the control
	// stream. The answers are awaited before returning, so the client's
	// rooms are known when Dial or a reconnect returns.
	cc.amu.Lock()
	cc.await = make(map[string]bool, len(rooms))
	for _, spec := range rooms {
		cc.await[orDefault(spec.Room, DefaultRoom)] = true
	}
	cc.answered = make(chan struct{})
	if len(cc.await) == 0 {
		close(cc.answered)
	}
	cc.amu.Unlock()
	// Room streams are read from now on: a resume in 0-RTT may get what
	// it missed before the welcome (the server's early replay).
	c.acceptRooms(cc)
	r, err := c.hello(ctx, cc, rooms)
	if errors.Is(err, quic.Err0RTTRejected) {
		// The server did not take the early data (a ticket of another
		// run, say): nothing of it counted. Say hello again in 1-RTT.
		if cc.qc, err = cc.qc.NextConnection(ctx); err == nil {
			c.acceptRooms(cc)
			r, err = c.hello(ctx, cc, rooms)
		}
	}
	if err != nil {
		select {
		case <-cc.qc.HandshakeComplete():
		default:
			// An early connection whose handshake then failed (the
			// server's certificate changed, say) fails like a dial.
			if cause := context.Cause(cc.qc.Context()); cause != nil {
				return nil, c.handshakeErr(cause)
			}
		}
		return nil, err
	}
	c.mu.Lock()
	c.user = *r.User.user()
	c.session = r.Session
	c.server = r.Server
	c.srvMax = r.MaxSize
	c.mu.Unlock()
	c.startReading(cc)
	select {
	case <-cc.answered:
	case err := <-cc.ended:
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	_ = cc.str.SetReadDeadline(time.Time{})
	cc.heard.Store(time.Now().UnixNano())
	// The rooms' joined replies came on their own streams, in any order:
	// the client's rooms keep the hello's.
	at := make(map[string]int, len(rooms))
	for i, spec := range rooms {
		at[orDefault(spec.Room, DefaultRoom)] = i
	}
	c.mu.Lock()
	slices.SortStableFunc(c.order, func(a, b string) int {
		i, ok := at[a]
		j, ok2 := at[b]
		switch {
		case ok && ok2:
			return i - j
		case ok:
			return -1
		case ok2:
			return 1
		}
		return 0
	})
	c.mu.Unlock()
	return cc, nil
}

// startReading starts the readers of cc's control stream and datagrams,
// once the welcome is read.
func (c *Client) startReading(cc *clientConn) {
	cc.ended = make(chan error, 1)
	cc.readers.Go(func() { cc.ended <- c.read(cc, &cc.ctl, true) })
	cc.readers.Go(func() { c.readDatagrams(cc) })
}

// acceptRooms starts reading each room stream the server opens on cc's
// QUIC connection, until it ends.
func (c *Client) acceptRooms(cc *clientConn) {
	qc := cc.qc
	cc.readers.Go(func() { c.acceptRoomsOn(cc, qc) })
}

func (c *Client) acceptRoomsOn(cc *clientConn, qc *quic.Conn) {
	for {
		str, err := qc.AcceptUniStream(qc.Context())
		if err != nil {
			return
		}
		rd := &streamReader{fr: frameReader{r: bufio.NewReaderSize(str, roomReadBuffer), max: c.cfg.maxMessageSize}}
		cc.amu.Lock()
		cc.roomsOpen++
		cc.amu.Unlock()
		cc.readers.Go(func() {
			_ = c.read(cc, rd, false)
			cc.amu.Lock()
			cc.roomsOpen--
			cc.amu.Unlock()
			signal(cc.roomsEnded)
		})
	}
}

// byeWait bounds how long a client that read the server's bye waits for
// its room streams to end before closing the connection.
const byeWait = 2 * time.Second

// drainRooms waits, at most byeWait, for the room streams being read to
// end: the server ends them before it sends its bye, so that their last
// frames reach Receive before the connection closes.
func (cc *clientConn) drainRooms() {
	t := time.NewTimer(byeWait)
	defer t.Stop()
	for {
		cc.amu.Lock()
		n := cc.roomsOpen
		cc.amu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-cc.roomsEnded:
		case <-t.C:
			return
		case <-cc.stop:
			return
		}
	}
}

// answer notes the server's answer for a room of the hello.
func (cc *clientConn) answer(room string) {
	cc.amu.Lock()
	defer cc.amu.Unlock()
	if cc.await[room] {
		delete(cc.await, room)
		if len(cc.await) == 0 {
			close(cc.answered)
		}
	}
}

// hello opens cc's stream, says hello and returns the welcome.
func (c *Client) hello(ctx context.Context, cc *clientConn, rooms []joinSpec) (reply, error) {
	var err error
	cc.str, err = cc.qc.OpenStreamSync(ctx)
	if err != nil {
		return reply{}, fmt.Errorf("garou: connect to %s: %w", c.serverAddr(), closeErrorFrom(err))
	}
	cc.ctl.fr = frameReader{r: bufio.NewReaderSize(cc.str, 32<<10), max: c.cfg.maxMessageSize}
	c.mu.Lock()
	hello := request{Type: frameHello, Name: c.name, Token: c.cfg.token, Session: c.session,
		Server: c.server, MaxSize: c.cfg.maxMessageSize, Rooms: &rooms}
	c.mu.Unlock()
	if _, err := cc.write(ctx, mustEncode(hello)); err != nil {
		return reply{}, fmt.Errorf("garou: connect to %s: %w", c.serverAddr(), closeErrorFrom(err))
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = cc.str.SetReadDeadline(dl)
	}
	var r reply
	if _, err := c.readReply(cc, &cc.ctl, &r, true); err != nil {
		return reply{}, err
	}
	if r.Type != frameWelcome {
		return reply{}, fmt.Errorf("garou: server answered the hello with %q", r.Type)
	}
	return r, nil
}

// noAnswer reports whether a QUIC dial failed for want of an answer: its
// deadline passed, or the handshake timed out.
func noAnswer(err error) bool {
	_, handshake := errors.AsType[*quic.HandshakeTimeoutError](err)
	_, idle := errors.AsType[*quic.IdleTimeoutError](err)
	return handshake || idle || errors.Is(err, context.DeadlineExceeded)
}

// handshakeErr explains a failed QUIC handshake in the user's terms: a
// certificate that is not the pinned one, or not trusted, without the
// QUIC error around it. The server's fingerprint is not shown: a pin must
// come from the server's operator over a channel the user trusts, never
// from what the server being doubted presents.
func (c *Client) handshakeErr(err error) error {
	if errors.Is(err, ErrFingerprintMismatch) {
		return fmt.Errorf("%w (server %s): compare the pin with the fingerprint the server's operator gives you, over a channel you trust", ErrFingerprintMismatch, c.serverAddr())
	}
	if cve, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return fmt.Errorf("garou: the certificate of %s is not trusted: %w", c.serverAddr(), cve)
	}
	return fmt.Errorf("garou: connect to %s: %w", c.serverAddr(), closeErrorFrom(err))
}

// readReply reads and decodes the next frame of a stream of cc into r and
// returns its size. A malformed frame closes cc. On the control stream, a
// failed read is explained (connErr), and a bye, the server's last word,
// is returned as the error it carries. A room's stream ends with io.EOF
// (the room was left) or with the connection; a bye or welcome on it is
// malformed.
func (c *Client) readReply(cc *clientConn, rd *streamReader, r *reply, control bool) (int, error) {
	body, err := rd.fr.next()
	if err != nil {
		if !control {
			if !errors.Is(err, io.EOF) && cc.qc.Context().Err() == nil {
				cc.close(CloseProtocol, "a room stream ended inside a frame")
			}
			return 0, err
		}
		return 0, c.connErr(cc, err)
	}
	if err := rd.dec.decode(body, r); err != nil {
		cc.close(CloseProtocol, "malformed frame")
		return 0, err
	}
	switch {
	case r.Type == frameBye && control:
		bye := *r
		cc.bye = &bye
		return 0, byeError(&bye)
	case !control && (r.Type == frameBye || r.Type == frameWelcome):
		cc.close(CloseProtocol, "a "+r.Type+" on a room stream")
		return 0, fmt.Errorf("garou: the server sent a %q on a room stream", r.Type)
	}
	return len(body), nil
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
	return fmt.Errorf("garou: connection to %s: %w", c.serverAddr(), err)
}

func byeError(r *reply) error {
	return &CloseError{Code: r.Close, Reason: r.Text, Remote: true}
}

// write writes one frame, giving up when ctx ends: a server that reads
// slowly (QUIC flow control) cannot hold a caller past its context. A
// frame cut short leaves the stream out of step, so the connection is
// then closed (and the client reconnects).
//
// started reports whether any of the frame was written: the server may
// then have it.
func (cc *clientConn) write(ctx context.Context, frame []byte) (started bool, err error) {
	select {
	case cc.wsem <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-cc.wsem }()
	if err := ctx.Err(); err != nil {
		return false, err // both were ready: write nothing
	}
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
	return n > 0, err
}

// close ends the connection and releases its socket.
func (cc *clientConn) close(code CloseCode, reason string) {
	cc.once.Do(func() {
		close(cc.stop)
		if cc.qc != nil {
			_ = cc.qc.CloseWithError(quic.ApplicationErrorCode(code), reason)
		}
		_ = cc.tr.Close()
		_ = cc.pc.Close()
		cc.pmu.Lock()
		cc.closed = true
		paths := cc.paths
		cc.paths = nil
		cc.pmu.Unlock()
		for _, tr := range paths {
			_ = tr.Close()
			_ = tr.Conn.Close()
		}
	})
}

// Migrate moves the client's connection to a new UDP socket, as a phone
// that leaves Wi-Fi for cellular does, without reconnecting: the session,
// its rooms and its place in them stay as they are, nobody sees the user
// leave, and nothing said meanwhile is lost or repeated. It opens the new
// socket (WithLocalAddr's address, a new port), checks that the server
// answers on it, and moves the connection there; the old socket stays
// open, for packets still in flight, until the connection ends.
//
// If the new path is not confirmed before ctx ends, or the server refuses
// migration, Migrate returns the error and the connection stays where it
// was; if the old path is dead too, the client reconnects as for any lost
// connection. Migrate waits for a connection while the client reconnects.
// It is safe to call from any goroutine; concurrent calls migrate in turn.
func (c *Client) Migrate(ctx context.Context) error {
	c.migrating.Lock()
	defer c.migrating.Unlock()
	cc, err := c.conn(ctx)
	if err != nil {
		return err
	}
	pc, err := c.cfg.listenPacket(ctx)
	if err != nil {
		return fmt.Errorf("garou: migrate: open UDP socket: %w", err)
	}
	tr := &quic.Transport{Conn: pc}
	drop := func() {
		_ = tr.Close()
		_ = pc.Close()
	}
	path, err := cc.qc.AddPath(tr)
	if err != nil {
		drop()
		return fmt.Errorf("garou: migrate: %w", err)
	}
	if err := path.Probe(ctx); err != nil {
		_ = path.Close()
		drop()
		return fmt.Errorf("garou: migrate: the server did not answer on the new path: %w", err)
	}
	// Registered before the switch: once packets leave from the new
	// socket, it must live as long as the connection.
	cc.pmu.Lock()
	if cc.closed {
		cc.pmu.Unlock()
		drop()
		return fmt.Errorf("garou: migrate: the connection ended: %w", context.Cause(cc.qc.Context()))
	}
	cc.paths = append(cc.paths, tr)
	cc.pmu.Unlock()
	if err := path.Switch(); err != nil {
		return fmt.Errorf("garou: migrate: %w", err)
	}
	return nil
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
		unwatch := c.watch(cc)
		err := <-cc.ended
		c.mu.Lock()
		c.cur = nil
		c.ready = make(chan struct{})
		c.mu.Unlock()
		close(cc.lost)
		cc.close(CloseNormal, "bye")
		cc.readers.Wait() // they end with the connection
		unwatch()
		if !c.shouldReconnect(err) {
			c.stop(err)
			return
		}
		c.log.Info("garou: connection lost, reconnecting", "err", err)
		next, rerr := c.reconnect(err)
		if rerr != nil {
			c.stop(rerr)
			return
		}
		if !c.setConn(next) {
			c.stop(ErrClosed)
			return
		}
		c.emit(StateChange{State: StateResumed})
		cc = next
	}
}

func (c *Client) shouldReconnect(err error) bool {
	select {
	case <-c.quit:
		return false
	default:
	}
	return c.cfg.reconnects > 0 && !final(err)
}

// final reports whether err, ending a connection or a connection attempt,
// means that trying again cannot help: the server ended the session on
// purpose or refused it for good (see CloseCode.Reconnect), or its certificate is
// not trusted.
func final(err error) bool {
	if ce, ok := errors.AsType[*CloseError](err); ok && ce.Remote {
		return !ce.Code.Reconnect()
	}
	if errors.Is(err, ErrFingerprintMismatch) {
		return true
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return true
	}
	if te, ok := errors.AsType[*quic.TransportError](err); ok && te.ErrorCode.IsCryptoError() {
		return true // the TLS handshake failed: it will fail again
	}
	return false
}

// reconnect tries to connect again with backoff and full jitter, resuming
// every room after the last sequence number received. cause is why the
// connection was lost.
func (c *Client) reconnect(cause error) (*clientConn, error) {
	last := cause
	for attempt := range c.cfg.reconnects {
		c.emit(StateChange{State: StateReconnecting, Attempt: attempt + 1, Err: last})
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
		if n := len(c.eps); n > 1 {
			// The service's next address: the one lost may be down.
			c.ep.Store(c.eps[(c.ep.Load().i+1)%n])
		}
		cc, err := c.connect(c.ctx, c.resumeSpecs())
		if err == nil {
			return cc, nil
		}
		if c.ctx.Err() != nil {
			return nil, ErrClosed
		}
		last = err
		if final(err) {
			return nil, err // refused: trying again will not help
		}
		c.log.Info("garou: reconnect failed", "attempt", attempt+1, "err", err)
	}
	if last == cause {
		return nil, fmt.Errorf("garou: gave up reconnecting after %d attempts: %w", c.cfg.reconnects, cause)
	}
	return nil, fmt.Errorf("garou: gave up reconnecting after %d attempts: %w (connection lost: %w)", c.cfg.reconnects, last, cause)
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
	c.emit(StateChange{State: StateClosed, Err: err})
}

// maxBatch bounds the messages the reader hands to the receive buffer at
// once.
const maxBatch = 64

// read dispatches the frames of one stream of cc until it ends or fails.
// The messages of the frames that are in the read buffer already go to the
// receive buffer together, before the next read that may wait.
func (c *Client) read(cc *clientConn, rd *streamReader, control bool) error {
	var r reply
	for {
		if len(rd.batch) > 0 && (len(rd.batch) >= maxBatch || !rd.fr.hasFrame()) && !c.flush(rd, cc.stop) {
			return ErrClosed
		}
		size, err := c.readReply(cc, rd, &r, control)
		if err != nil {
			if !c.flush(rd, cc.stop) {
				return ErrClosed
			}
			if control && cc.bye != nil {
				cc.drainRooms()
			}
			return err
		}
		cc.heard.Store(time.Now().UnixNano())
		if !c.dispatch(cc, rd, &r, size) {
			return ErrClosed
		}
	}
}

// dispatch handles one frame other than a bye: a reply goes to its waiter
// at once, after the messages read before it on its stream (see flush), a
// message to the reader's batch for the receive buffer. It reports false
// if the client or cc closed while it waited for room in the buffer.
func (c *Client) dispatch(cc *clientConn, rd *streamReader, r *reply, size int) bool {
	c.track(r)
	if r.Ref == 0 && r.Room != "" && (r.Type == frameJoined || r.Type == string(TypeError) && ErrorCode(r.Code) != CodeNotDelivered) {
		cc.answer(r.Room)
	}
	if r.Ref != 0 {
		if !c.flush(rd, cc.stop) {
			return false
		}
		c.mu.Lock()
		ch := c.pending[r.Ref]
		delete(c.pending, r.Ref)
		c.mu.Unlock()
		if ch != nil {
			ch <- *r
		}
		return true
	}
	switch r.Type {
	case frameJoined, frameAck, frameWelcome:
		return true
	case framePresence:
		msgs := c.presence(r)
		for _, m := range msgs {
			rd.batch = append(rd.batch, queued{m: m, size: size/len(msgs) + msgOverhead})
		}
		return true
	case string(TypeGap):
		if r.Empty {
			return true // numbers without a text: nothing to tell
		}
	case frameDirect:
		// A direct message sent again by its sender after a server
		// restart has the ID of the copy received before.
		c.mu.Lock()
		dup := r.ID != "" && c.directs.seen(r.ID, directWindow)
		c.mu.Unlock()
		if dup {
			return true
		}
	}
	rd.batch = append(rd.batch, queued{m: r.message(), size: size + msgOverhead})
	return true
}

// presence turns a presence frame into what Receive returns: its joins and
// leaves newer than those the client knows of, each with the room's count
// after it, or one TypePresence message when the frame has the count alone.
func (c *Client) presence(r *reply) []ChatMessage {
	c.mu.Lock()
	st := c.followedLocked(r.Room)
	if st == nil || r.PresenceSeq <= st.presence {
		c.mu.Unlock()
		return nil // a room left, or changes the joined reply counted
	}
	known := st.presence
	st.presence = r.PresenceSeq
	c.mu.Unlock()
	if len(r.Changes) == 0 {
		return []ChatMessage{{Type: TypePresence, Room: r.Room, Count: r.Count, Time: r.Time}}
	}
	// The changes are numbered up to PresenceSeq, densely unless each
	// has its own number (servers sharing presence through a broker);
	// count is the room's count before the first of them.
	first := r.PresenceSeq - uint64(len(r.Changes)) + 1
	count := r.Count
	for _, ch := range r.Changes {
		count -= ch.delta()
	}
	msgs := make([]ChatMessage, 0, len(r.Changes))
	for i, ch := range r.Changes {
		count += ch.delta()
		seq := first + uint64(i)
		if ch.Seq != 0 {
			seq = ch.Seq
		}
		if seq <= known || ch.delta() == 0 {
			continue
		}
		msgs = append(msgs, ChatMessage{Type: MessageType(ch.Op), Room: r.Room, Seq: seq, User: ch.User.user(),
			Reason: ch.Reason, Count: count, Time: r.Time})
	}
	return msgs
}

// readDatagrams hands the signals the server sends as QUIC datagrams
// (typing) to Receive, until the connection ends. A signal that finds the
// receive buffer past its read-ahead is dropped: it may be lost anyway.
func (c *Client) readDatagrams(cc *clientConn) {
	for {
		b, err := cc.qc.ReceiveDatagram(cc.qc.Context())
		if err != nil {
			return
		}
		r, err := decodeReply(b)
		if err != nil || MessageType(r.Type) != TypeTyping {
			continue // only signals come so; anything else is not ours
		}
		c.mu.Lock()
		followed := c.followedLocked(r.Room) != nil
		c.mu.Unlock()
		if !followed {
			continue // overtook its room's joined reply, or came after a leave
		}
		c.offer(queued{m: r.message(), size: len(b) + msgOverhead})
	}
}

// offer adds one message to the receive buffer unless the buffer is past
// its read-ahead, without waiting.
func (c *Client) offer(q queued) {
	c.rmu.Lock()
	if c.overBytes >= c.readAhead {
		c.rmu.Unlock()
		return
	}
	if len(c.rq)-c.rhead >= c.cfg.receiveBuffer {
		c.overBytes += q.size
	}
	c.rq = append(c.rq, q)
	c.rmu.Unlock()
	signal(c.avail)
}

// msgOverhead is what a buffered message counts for beyond its frame.
const msgOverhead = 256

// flush moves a reader's batch to the receive buffer, under one lock,
// then, while the messages past the buffer's size reach the read-ahead,
// waits for Receive to take some (see WithReceiveBuffer). It reports false
// if stop or the client closed meanwhile.
func (c *Client) flush(rd *streamReader, stop <-chan struct{}) bool {
	if len(rd.batch) == 0 {
		return true
	}
	c.rmu.Lock()
	if c.rhead > 0 && len(c.rq)+len(rd.batch) > cap(c.rq) && c.rhead >= len(c.rq)/2 {
		// Reuse the taken half of the array rather than grow it.
		n := copy(c.rq, c.rq[c.rhead:])
		clear(c.rq[n:])
		c.rq, c.rhead = c.rq[:n], 0
	}
	for i := range rd.batch {
		if len(c.rq)-c.rhead+i >= c.cfg.receiveBuffer {
			c.overBytes += rd.batch[i].size
		}
	}
	if len(c.rq) == 0 {
		// Receive has taken everything: the batch becomes the buffer, and
		// the buffer's emptied array the next batch, without a copy.
		c.rq, rd.batch = rd.batch, c.rq[:0]
	} else {
		c.rq = append(c.rq, rd.batch...)
		clear(rd.batch)
		rd.batch = rd.batch[:0]
	}
	full := c.overBytes >= c.readAhead
	c.rmu.Unlock()
	signal(c.avail)
	for full {
		select {
		case <-c.space:
		case <-stop:
			return false
		case <-c.quit:
			return false
		}
		c.rmu.Lock()
		full = c.overBytes >= c.readAhead
		c.rmu.Unlock()
	}
	return true
}

// pop takes the first message of the receive buffer.
func (c *Client) pop() (ChatMessage, bool) {
	c.rmu.Lock()
	if c.rhead == len(c.rq) {
		c.rmu.Unlock()
		return ChatMessage{}, false
	}
	m := c.rq[c.rhead].m
	wasFull := c.overBytes >= c.readAhead
	if i := c.rhead + c.cfg.receiveBuffer; i < len(c.rq) {
		c.overBytes -= c.rq[i].size // now inside the buffer
	}
	c.rq[c.rhead] = queued{}
	c.rhead++
	if c.rhead == len(c.rq) {
		c.rq, c.rhead = c.rq[:0], 0
	}
	more := c.rhead < len(c.rq)
	c.rmu.Unlock()
	if wasFull {
		signal(c.space) // the reader may be waiting
	}
	if more {
		signal(c.avail) // another Receive may be waiting
	}
	return m, true
}

// track keeps the per-room state resuming needs.
func (c *Client) track(r *reply) {
	switch MessageType(r.Type) {
	case frameJoined:
		c.mu.Lock()
		if st := c.rooms[r.Room]; st == nil {
			if r.Ref == 0 && c.leaving[r.Room] > 0 {
				// A reconnect's hello, written before a Leave began:
				// the Leave, retried on this connection, leaves it.
				c.mu.Unlock()
				return
			}
			c.rooms[r.Room] = &roomState{lastSeq: r.LastSeq, joinedSeq: r.LastSeq, presence: r.PresenceSeq}
			c.order = append(c.order, r.Room)
		} else {
			st.joinedSeq = r.LastSeq
			st.presence = r.PresenceSeq
		}
		c.mu.Unlock()
	case TypeText:
		c.mu.Lock()
		if st := c.followedLocked(r.Room); st != nil && r.Seq > st.lastSeq {
			st.lastSeq = r.Seq
		}
		c.mu.Unlock()
	case TypeGap:
		c.mu.Lock()
		if st := c.followedLocked(r.Room); st != nil {
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

// followedLocked returns the state of a room the client is in or is
// leaving. c.mu is held.
func (c *Client) followedLocked(room string) *roomState {
	if st := c.rooms[room]; st != nil {
		return st
	}
	return c.departing[room]
}

// request sends req and waits for the reply with its ref. If the connection
// is lost before the reply, the request is sent again on the next
// connection: every request is idempotent, texts and direct messages by
// their key. A keyed request refused as "unavailable" (the service's broker
// is out of reach) is sent again after a pause, until ctx ends. A keyed request that gives up says whether its frame was ever
// written (ErrOutcomeUnknown) or not (ErrNotSent).
func (c *Client) request(ctx context.Context, req request) (reply, error) {
	written := false
	var pause time.Duration
	giveUp := func(cause error) error {
		switch {
		case req.Key == "":
			return cause
		case written:
			return fmt.Errorf("%w: %w", ErrOutcomeUnknown, cause)
		default:
			return fmt.Errorf("%w: %w", ErrNotSent, cause)
		}
	}
	for {
		cc, err := c.conn(ctx)
		if err != nil {
			return reply{}, giveUp(err)
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
			if written {
				return reply{}, giveUp(ErrTooLarge) // the server's limit shrank
			}
			return reply{}, ErrTooLarge
		}
		started, err := cc.write(ctx, frame)
		written = written || started
		if err != nil {
			c.forget(req.Ref)
			if ctx.Err() != nil {
				return reply{}, giveUp(ctx.Err())
			}
			select { // retry once the connection is replaced
			case <-cc.lost:
			case <-ctx.Done():
				return reply{}, giveUp(ctx.Err())
			}
			continue
		}
		r, ok, err := c.await(ctx, cc, ch)
		if ok && req.Key != "" && ErrorCode(r.Code) == CodeUnavailable && r.Type == string(TypeError) {
			// The service cannot keep it for now: the same again,
			// with its key, once a pause has passed.
			if err := unavailablePause(ctx, c.done, &pause); err != nil {
				return reply{}, giveUp(err)
			}
			continue
		}
		if ok {
			return answer(r)
		}
		if err != nil {
			c.forget(req.Ref)
			return reply{}, giveUp(err)
		}
		c.forget(req.Ref) // the connection was lost: try again on the next
	}
}

// unavailablePause waits before a request refused as "unavailable" is
// sent again: 100 ms, doubling up to 2 s, or until ctx ends or the
// client closes (done).
func unavailablePause(ctx context.Context, done <-chan struct{}, pause *time.Duration) error {
	*pause = min(max(2**pause, 100*time.Millisecond), 2*time.Second)
	t := time.NewTimer(*pause)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-done: // the client closed: the next attempt says so
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// replyProbe is how long a request waits for its reply, hearing nothing
// from the server, before the client sends a probe (see probe).
const replyProbe = 250 * time.Millisecond

// await waits for the reply on ch to a request written on cc. It returns
// the reply, or ctx's error, or neither when cc was lost. Whenever the
// server has been silent for replyProbe, it probes.
func (c *Client) await(ctx context.Context, cc *clientConn, ch chan reply) (reply, bool, error) {
	select { // no timer for the replies already there
	case r := <-ch:
		return r, true, nil
	default:
	}
	t := time.NewTimer(replyProbe)
	defer t.Stop()
	for {
		select {
		case r := <-ch:
			return r, true, nil
		case <-t.C:
			silent := time.Since(time.Unix(0, cc.heard.Load()))
			if silent < replyProbe {
				t.Reset(replyProbe - silent)
				continue
			}
			c.probe(ctx, cc)
			t.Reset(replyProbe)
		case <-ctx.Done():
			select { // the reply may have come meanwhile
			case r := <-ch:
				return r, true, nil
			default:
			}
			return reply{}, false, ctx.Err()
		case <-cc.lost:
			select { // the reply may have come just before the loss
			case r := <-ch:
				return r, true, nil
			default:
			}
			return reply{}, false, nil
		}
	}
}

// probe sends the server a request that changes nothing and whose reply
// nobody waits for: the page of a room's members after the last possible
// one (of the users online, for a client in no room). A server that is
// merely slow answers it in turn. A server that crashed and came back
// does not know the connection, and answers its packet with a QUIC
// stateless reset, so the client learns at once that the connection is
// gone, and reconnects: a request whose frame the crashed server had
// received, and acknowledged at the QUIC level, leaves the client nothing
// else to send, and keep-alive PINGs are too small to be answered so.
func (c *Client) probe(ctx context.Context, cc *clientConn) {
	c.mu.Lock()
	c.nextRef++
	req := request{Type: frameUsers, Ref: c.nextRef, Cursor: "\uffff"}
	if len(c.order) > 0 {
		req.Type, req.Room = frameMembers, c.order[0]
	}
	c.mu.Unlock()
	_, _ = cc.write(ctx, mustEncode(req))
}

// watch probes cc whenever the server has been silent for the probe
// interval (WithProbeInterval; the keep-alive period if shorter), so that
// a client that sends nothing also learns soon, from a stateless reset,
// that a server that crashed and restarted no longer knows its connection
// (QUIC's keep-alive PINGs are too small to be answered so). It holds no
// goroutine while it waits. The function it returns stops it, once any
// probe under way has ended; cc is closed by then, so that a probe cannot
// block.
func (c *Client) watch(cc *clientConn) (stop func()) {
	period := min(c.cfg.keepAlive, c.cfg.probe)
	if period <= 0 {
		return func() {}
	}
	var mu sync.Mutex // held by a probe under way, and by stop
	stopped := false
	var t *time.Timer
	mu.Lock() // t is set before the first run reads it
	defer mu.Unlock()
	t = time.AfterFunc(period, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		silent := time.Since(time.Unix(0, cc.heard.Load()))
		if silent >= period {
			ctx, cancel := context.WithTimeout(c.ctx, period)
			c.probe(ctx, cc)
			cancel()
			silent = 0
		}
		t.Reset(period - silent)
	})
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}

func answer(r reply) (reply, error) {
	if r.Type == string(TypeError) {
		return r, &Error{Code: ErrorCode(r.Code), Text: r.Text}
	}
	return r, nil
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
// accepted and sequenced it, exactly once; the text then also arrives
// through Receive, like every member's. If the connection is lost first,
// Send sends the text again on the next connection, with the same
// idempotency key: the server acknowledges a text it already has without
// sequencing it again. If ctx ends or the client stops first, the error
// wraps ErrOutcomeUnknown when the text was written (it may have been
// sequenced), ErrNotSent when it never was; it also wraps the cause. A
// text the server refuses as CodeUnavailable (servers sharing a broker
// that is out of reach) is sent again, with its key, every 100 ms to 2 s
// until accepted or ctx ends: set a deadline on ctx to bound the wait.
func (c *Client) Send(ctx context.Context, text string) error {
	_, err := c.SendTo(ctx, DefaultRoom, text)
	return err
}

// SendTo says text in room and returns its sequence number once the server
// has accepted it. It is exactly-once as Send is.
func (c *Client) SendTo(ctx context.Context, room, text string) (seq uint64, err error) {
	if err := checkText(text); err != nil {
		return 0, err
	}
	r, err := c.request(ctx, request{Type: frameText, Room: room, Text: text, Key: c.newKey()})
	return r.Seq, err
}

// SendDirect sends text to the online user called to, and only to them,
// exactly once as Send does: one sent again after a restart of a server
// with a data directory, which keeps no direct messages, or to another
// server sharing a broker, comes again with the same ID, and a Client
// receiving it drops the copy. One refused as CodeUnavailable (the
// recipient's server is out of reach for now) is sent again as a text is.
// An *Error with CodeNoSuchUser says nobody of that name is online.
func (c *Client) SendDirect(ctx context.Context, to, text string) error {
	if err := checkText(text); err != nil {
		return err
	}
	_, err := c.request(ctx, request{Type: frameDirect, To: to, Text: text, Key: c.newKey()})
	return err
}

func (c *Client) newKey() string {
	return c.keyPfx + strconv.FormatUint(c.keyN.Add(1), 36)
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

// Join joins room and returns the first page of its members (all of them
// in a room of up to PageSize) with its member count; Members pages
// through the rest. In a room over the server's presence limit (see
// WithPresenceLimit) the page has no names, only the count: Members lists
// them from cursor "". With history > 0 the server first replays up to that
// many of the room's latest texts through Receive. Joining a room the
// client is in returns its first page again.
func (c *Client) Join(ctx context.Context, room string, history int) (Page, error) {
	if err := ValidateRoom(room); err != nil {
		return Page{}, err
	}
	r, err := c.request(ctx, request{Type: frameJoin, Room: room, History: history})
	return r.page(), err
}

// Typing tells the other members of room ("" is DefaultRoom) that this
// user is typing; they receive a TypeTyping message. Call it as the user
// types: it sends at most one signal every TypingTimeout/2 per room, and
// returns at once without waiting for the server. A signal is not a
// message: it is not sequenced, not kept, and may be lost (a room over
// the server's presence limit gets none). It returns an *Error with
// CodeNotInRoom for a room the client is not in.
func (c *Client) Typing(ctx context.Context, room string) error {
	room = orDefault(room, DefaultRoom)
	now := time.Now()
	c.mu.Lock()
	st := c.rooms[room]
	if st == nil {
		c.mu.Unlock()
		return notInRoom(room)
	}
	if now.Sub(st.typed) < TypingTimeout/2 {
		c.mu.Unlock()
		return nil
	}
	st.typed = now
	c.mu.Unlock()
	cc, err := c.conn(ctx)
	if err != nil {
		return err
	}
	_, err = cc.write(ctx, mustEncode(request{Type: frameTyping, Room: room}))
	return err
}

// Leave leaves room ("" is DefaultRoom). The room is out of Rooms from the
// call on, and no reconnect rejoins it, even one racing the Leave. Leaving
// a room the client is not in returns an *Error with CodeNotInRoom. If the
// server refuses (rate limit), the room is the client's again; if ctx
// ends first, it is not: the next reconnect leaves it on the server.
func (c *Client) Leave(ctx context.Context, room string) error {
	room = orDefault(room, DefaultRoom)
	c.mu.Lock()
	st, had := c.rooms[room]
	if had {
		delete(c.rooms, room)
		c.order = slices.DeleteFunc(c.order, func(s string) bool { return s == room })
		c.departing[room] = st
	}
	c.leaving[room]++
	c.mu.Unlock()
	_, err := c.request(ctx, request{Type: frameLeave, Room: room})
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leaving[room]--; c.leaving[room] == 0 {
		delete(c.leaving, room)
	}
	if had && c.departing[room] == st {
		delete(c.departing, room)
	}
	var e *Error
	if had && errors.As(err, &e) {
		if e.Code == CodeNotInRoom {
			return nil // left on a connection lost before its answer
		}
		if _, back := c.rooms[room]; !back {
			c.rooms[room] = st
			c.order = append(c.order, room)
		}
	}
	return err
}

// Users returns a page of the users online on the server (on every server
// of the service, when its servers' broker lists them), in the order of
// their IDs: the first for cursor "", else the one after the page whose
// Next cursor is given.
func (c *Client) Users(ctx context.Context, cursor string) (Page, error) {
	r, err := c.request(ctx, request{Type: frameUsers, Cursor: cursor})
	return r.page(), err
}

// Members returns a page of the members of a room the client is in ("" is
// DefaultRoom), in the order of their IDs: the first for cursor "", else
// the one after the page whose Next cursor is given.
func (c *Client) Members(ctx context.Context, room, cursor string) (Page, error) {
	r, err := c.request(ctx, request{Type: frameMembers, Room: room, Cursor: cursor})
	return r.page(), err
}

// Receive returns the next message from the server, in order: texts (its
// own included), direct messages, joins, leaves, gaps and error messages
// not tied to a request. After the client stopped it returns the messages
// still buffered, then the reason it stopped (ErrClosed after Close).
func (c *Client) Receive(ctx context.Context) (ChatMessage, error) {
	for {
		if m, ok := c.pop(); ok {
			return m, nil
		}
		select {
		case <-c.avail:
		case <-c.done:
			if m, ok := c.pop(); ok {
				return m, nil
			}
			return ChatMessage{}, c.Err()
		case <-ctx.Done():
			return ChatMessage{}, ctx.Err()
		}
	}
}

// Close tells the server the client is leaving, closes the connection and
// returns once every goroutine of the client has ended, the state handler's
// last call (StateClosed) included. It is idempotent.
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
