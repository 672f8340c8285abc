// Package wsgarou serves Garou over WebSocket, for browsers and for
// networks that pass only HTTP.
//
// A Handler is an http.Handler a Go service mounts on its own mux, next to
// the Server's QUIC listener or instead of it:
//
//	mux.Handle("/garou", wsgarou.New(srv, &wsgarou.Options{OriginPatterns: []string{"chat.example.com"}}))
//
// Each WebSocket connection is one Garou connection of the Server: the
// same frames (PROTOCOL.md §2, length prefix included) as binary messages,
// the protocol version as the WebSocket subprotocol (Subprotocol), and the same
// rooms, hooks, limits, flood control and slow-consumer bound as QUIC.
// PROTOCOL.md's section on WebSocket says how the streams of QUIC map onto
// the one connection.
package wsgarou

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/garou-chat/garou"
)

// Subprotocol is the WebSocket subprotocol a client offers: the ALPN
// protocol of QUIC ("garou/4") with its slash, which a subprotocol may not
// hold (browsers refuse it), as a dot: "garou.4".
var Subprotocol = strings.Replace(garou.ALPN, "/", ".", 1)

// Options configure a Handler. A nil *Options is the defaults.
type Options struct {
	// OriginPatterns are the hosts (path.Match patterns, as
	// github.com/coder/websocket's AcceptOptions) of the pages allowed
	// to connect, besides the handler's own host. Default: none, only
	// pages served from the handler's own host.
	OriginPatterns []string
	// PingInterval is how often the server pings a connection (a
	// WebSocket ping, which browsers answer by themselves); a ping not
	// answered within the interval ends the connection, as QUIC's idle
	// timeout does. Default 30s; negative: never.
	PingInterval time.Duration
}

// DefaultPingInterval is Options.PingInterval's default.
const DefaultPingInterval = 30 * time.Second

// Handler serves Garou connections over WebSocket. Build it with New. It
// is safe for concurrent use; each request it serves returns once its
// connection and every goroutine serving it have ended.
type Handler struct {
	srv    *garou.Server
	accept websocket.AcceptOptions
	ping   time.Duration
}

// New returns a Handler serving srv's clients over WebSocket.
func New(srv *garou.Server, opts *Options) *Handler {
	if opts == nil {
		opts = &Options{}
	}
	ping := opts.PingInterval
	if ping == 0 {
		ping = DefaultPingInterval
	}
	return &Handler{
		srv:  srv,
		ping: ping,
		accept: websocket.AcceptOptions{
			Subprotocols:   []string{Subprotocol},
			OriginPatterns: opts.OriginPatterns,
			// No permessage-deflate: a message is small frames of JSON
			// that each client's connection would compress anew, at a
			// cost per message that the server's CPU pays for every
			// member of a room (the frame is encoded once for all).
			CompressionMode: websocket.CompressionDisabled,
		},
	}
}

// closeBound bounds the WebSocket close handshake: a client that does not
// read cannot hold the connection open.
const closeBound = time.Second

// chunkSize bounds what one read of the connection passes to the server.
const chunkSize = 32 << 10

// ServeHTTP upgrades the request to a WebSocket and serves it as a Garou
// connection until it ends. A request that is not a WebSocket upgrade, or
// from a page of another origin, is refused with an HTTP error; a client
// that does not offer the subprotocol (Subprotocol) is closed with the
// WebSocket status 1002 (protocol error).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hw := &hijacked{ResponseWriter: w}
	ws, err := websocket.Accept(hw, r, &h.accept)
	if err != nil {
		return // Accept has answered
	}
	if ws.Subprotocol() != Subprotocol {
		_ = ws.Close(websocket.StatusProtocolError, "the subprotocol "+Subprotocol+" is required")
		return
	}
	// Frames are read as a byte stream across messages: a message may hold
	// several frames, and the server's frame size limit is the bound.
	ws.SetReadLimit(-1)
	t := newConn(ws, hw, remoteAddr(r))
	go t.readLoop()
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		t.pingLoop(h.ping)
	}()
	_ = h.srv.ServeTransport(r.Context(), t)
	t.CloseWithError(garou.CloseNormal, "bye")
	<-t.readDone
	<-pinged
	t.flushers.Wait()
}

// hijacked keeps the network connection that websocket.Accept hijacks, so
// that deadlines bound the close handshake, and puts a holdConn under the
// WebSocket's buffered writer.
type hijacked struct {
	http.ResponseWriter
	conn net.Conn
	held *holdConn // nil if the writer came with something buffered
}

func (h *hijacked) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("wsgarou: the ResponseWriter cannot be hijacked")
	}
	c, rw, err := hj.Hijack()
	h.conn = c
	if err == nil && rw != nil && rw.Writer != nil && rw.Writer.Buffered() == 0 {
		h.held = &holdConn{Conn: c}
		rw.Writer.Reset(h.held)
	}
	return c, rw, err
}

// holdConn is the connection under the WebSocket's buffered writer (4 KiB
// with net/http). While the flusher holds it, what that writer passes on
// is kept, and goes out in one write when the flusher releases it: a
// message of frames is one TLS write, where the buffered writer alone
// makes two or more of it (its first 4 KiB with the frame header, then
// the rest). Outside, writes (pings, the close frame) pass through.
type holdConn struct {
	net.Conn
	mu   sync.Mutex
	held bool
	buf  []byte
}

func (h *holdConn) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held {
		h.buf = append(h.buf, p...)
		return len(p), nil
	}
	return h.Conn.Write(p)
}

// hold starts keeping what is written.
func (h *holdConn) hold() {
	h.mu.Lock()
	h.held = true
	if h.buf == nil {
		h.buf = getBuf()
	}
	h.mu.Unlock()
}

// release writes what was kept, and stops keeping.
func (h *holdConn) release() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held = false
	if len(h.buf) == 0 {
		return nil
	}
	_, err := h.Conn.Write(h.buf)
	h.buf = h.buf[:0]
	return err
}

// idle gives the buffer back to the pool: the flusher ends.
func (h *holdConn) idle() {
	h.mu.Lock()
	if !h.held {
		putBuf(h.buf)
		h.buf = nil
	}
	h.mu.Unlock()
}

func remoteAddr(r *http.Request) net.Addr {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return &net.TCPAddr{}
}

// conn is one WebSocket connection as a garou.Transport and its control
// stream. Its read loop reads the messages and hands their bytes to the
// control stream's reader (the server's connection goroutine), one chunk
// at a time, so that TCP's flow control holds back a client the server
// does not read; once the reader has stopped reading (a read deadline
// passed), it discards what comes, so that the close handshake is read.
//
// Its streams' writes (the control stream's and every room's) go into one
// buffer, which one flusher goroutine, running while the buffer holds
// something, sends as one message: one WebSocket frame and one TLS write
// for whatever all of the connection's streams had ready (see flush).
type conn struct {
	ws    *websocket.Conn
	raw   net.Conn
	held  *holdConn // under ws's writer, or nil
	addr  net.Addr
	ctx   context.Context
	stop  context.CancelCauseFunc
	chunk chan []byte
	// readDone is closed when the read loop ends: the connection is
	// closed.
	readDone chan struct{}
	rdl      deadline
	pending  []byte // read by Read only

	wdlMu sync.Mutex
	wdl   time.Time // the write deadline of the control stream
	// welcomed is closed by the control stream's first write (the
	// welcome, or a bye): room frames wait for it, so that the client
	// reads its welcome first, as a client of QUIC's does.
	welcomed    chan struct{}
	welcomeOnce sync.Once

	wmu      sync.Mutex
	out      []byte        // written by the streams, not yet sent; whole frames
	flushing bool          // a flusher runs
	werr     error         // the flusher's failure: every write after fails
	drained  chan struct{} // made by a write that waits for room in out, closed when out is taken
	flushers sync.WaitGroup

	closeOnce sync.Once
}

func newConn(ws *websocket.Conn, hw *hijacked, addr net.Addr) *conn {
	ctx, stop := context.WithCancelCause(context.Background())
	return &conn{
		ws:       ws,
		raw:      hw.conn,
		held:     hw.held,
		addr:     addr,
		ctx:      ctx,
		stop:     stop,
		chunk:    make(chan []byte),
		readDone: make(chan struct{}),
		welcomed: make(chan struct{}),
		rdl:      newDeadline(),
	}
}

func (c *conn) readLoop() {
	defer close(c.readDone)
	err := c.readMessages()
	if st := websocket.CloseStatus(err); st == websocket.StatusNormalClosure || st == websocket.StatusGoingAway {
		err = io.EOF
	}
	c.stop(err)
}

func (c *conn) readMessages() error {
	for {
		typ, r, err := c.ws.Reader(context.Background())
		if err != nil {
			return err
		}
		if typ != websocket.MessageBinary {
			// The server's reader learns it from the closed connection.
			go c.CloseWithError(garou.CloseProtocol, "frames are binary messages; a text message came")
			_, _ = io.Copy(io.Discard, r)
			continue
		}
		if err := c.readMessage(r); err != nil {
			return err
		}
	}
}

// readMessage hands a message's bytes to Read, a chunk at a time. The
// buffer it reads into is borrowed for the message only: a connection
// waiting for its client's next message holds none.
func (c *conn) readMessage(r io.Reader) error {
	bp := chunks.Get().(*[]byte)
	defer chunks.Put(bp)
	buf := *bp
	for {
		n, err := r.Read(buf)
		if n > 0 {
			select {
			case c.chunk <- append([]byte(nil), buf[:n]...):
			case <-c.rdl.wait():
				// Nobody reads any more: discard.
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// chunks holds the buffers messages are read into.
var chunks = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// pingLoop pings every interval until the connection ends, and ends the
// connection when a ping is not answered within the interval.
func (c *conn) pingLoop(every time.Duration) {
	if every < 0 {
		return
	}
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(c.ctx, every)
		err := c.ws.Ping(ctx)
		cancel()
		if err != nil {
			if c.ctx.Err() == nil {
				_ = c.ws.CloseNow() // the read loop ends, and with it the connection
			}
			return
		}
		t.Reset(every)
	}
}

// Context implements garou.Transport.
func (c *conn) Context() context.Context { return c.ctx }

// RemoteAddr implements garou.Transport.
func (c *conn) RemoteAddr() net.Addr { return c.addr }

// AcceptStream implements garou.Transport: the control stream is the
// connection.
func (c *conn) AcceptStream(context.Context) (garou.Stream, error) { return c, nil }

// OpenStream implements garou.Transport: a room's frames are written on
// the connection, between the others'.
func (c *conn) OpenStream(context.Context) (garou.SendStream, error) {
	return &roomStream{c: c}, nil
}

// CloseWithError implements garou.Transport: a close code of Garou's,
// other than CloseNormal (WebSocket status 1000), is the WebSocket status
// 4000 plus the code.
func (c *conn) CloseWithError(code garou.CloseCode, text string) error {
	c.closeOnce.Do(func() {
		st := websocket.StatusNormalClosure
		if code != garou.CloseNormal {
			st = websocket.StatusCode(4000 + int(code))
		}
		if c.raw != nil {
			_ = c.raw.SetDeadline(time.Now().Add(closeBound))
		}
		_ = c.ws.Close(st, truncate(text, 123))
	})
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// Read implements garou.Stream.
func (c *conn) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		select {
		case b := <-c.chunk:
			c.pending = b
		case <-c.rdl.wait():
			return 0, errTimeout
		case <-c.readDone:
			select {
			case b := <-c.chunk:
				c.pending = b
			default:
				return 0, context.Cause(c.ctx)
			}
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// SetReadDeadline implements garou.Stream.
func (c *conn) SetReadDeadline(t time.Time) error {
	c.rdl.set(t)
	return nil
}

// Write implements garou.SendStream: p, whole frames, goes out with what
// the other streams write.
func (c *conn) Write(p []byte) (int, error) {
	c.wdlMu.Lock()
	dl := c.wdl
	c.wdlMu.Unlock()
	n, err := c.write(p, dl)
	c.welcomeOnce.Do(func() { close(c.welcomed) })
	return n, err
}

// SetWriteDeadline implements garou.SendStream.
func (c *conn) SetWriteDeadline(t time.Time) error {
	c.wdlMu.Lock()
	c.wdl = t
	c.wdlMu.Unlock()
	return nil
}

// Close implements garou.SendStream: the control stream ends with the
// connection, which the client closes on reading the bye.
func (c *conn) Close() error { return nil }

// maxPending bounds what the streams of a connection may have written and
// the flusher not yet taken: past it, a write waits (until its deadline)
// for the flusher. With the message being sent, a connection holds at most
// twice this, besides the server's send queues (whose bound, the
// slow-consumer one, this keeps: a client that does not read holds the
// streams' writes here, and their queues fill).
const maxPending = 64 << 10

// write puts p, whole frames, in the connection's buffer, starts a flusher
// if none runs, and yields the processor once (see flush). It waits while
// the buffer is full, at most until dl (if not zero), and fails once the
// connection has failed.
func (c *conn) write(p []byte, dl time.Time) (int, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	c.wmu.Lock()
	for c.werr == nil && len(c.out) > 0 && len(c.out)+len(p) > maxPending {
		if c.drained == nil {
			c.drained = make(chan struct{})
		}
		drained := c.drained
		c.wmu.Unlock()
		var expired <-chan time.Time
		if !dl.IsZero() {
			if timer == nil {
				timer = time.NewTimer(time.Until(dl))
			}
			expired = timer.C
		}
		var err error
		select {
		case <-drained:
		case <-expired:
			err = errWriteTimeout
		case <-c.ctx.Done():
			err = context.Cause(c.ctx)
		}
		if err != nil {
			return 0, err
		}
		c.wmu.Lock()
	}
	if err := c.werr; err != nil {
		c.wmu.Unlock()
		return 0, err
	}
	if c.out == nil {
		c.out = getBuf()
	}
	c.out = append(c.out, p...)
	start := !c.flushing
	c.flushing = true
	c.wmu.Unlock()
	if start {
		c.flushers.Add(1)
		go c.flush()
	}
	runtime.Gosched()
	return len(p), nil
}

// flush sends what the streams have written, as one binary message at a
// time, until nothing is left.
//
// Both it, before it takes the buffer, and each write, once its frames are
// in the buffer, yield the processor once: the goroutines already runnable
// (the other deliveries of the text that woke them, the readers of the
// next texts) run first and queue their frames, so that the stream's
// writer finds them as its next batch (rather than each frame waking a
// writer of its own) and the flusher sends them with the other streams'
// in one write; a busy server sends many frames per system call, an idle
// one at once. (Writing each stream's batch as it came cost a TLS record
// and a system call for about one frame, under load most of the server's
// CPU: 4-6 µs per delivery in the benchmark's burst, 0.4 µs now.)
func (c *conn) flush() {
	defer c.flushers.Done()
	var spare []byte // the buffer last sent, for the streams to fill next
	for {
		runtime.Gosched()
		c.wmu.Lock()
		if len(c.out) == 0 || c.werr != nil {
			// Nothing more, or nothing more can go: the buffers go back to
			// the pool, so that an idle connection holds none.
			c.flushing = false
			out := c.out
			c.out = nil
			c.wmu.Unlock()
			putBuf(out)
			putBuf(spare)
			if c.held != nil {
				c.held.idle()
			}
			return
		}
		buf := c.out
		c.out, spare = spare, nil
		c.wakeLocked()
		c.wmu.Unlock()
		if err := c.send(buf); err != nil {
			c.wmu.Lock()
			c.werr = err
			c.wakeLocked()
			c.wmu.Unlock()
			// The connection is broken: its read loop learns it too.
			_ = c.ws.CloseNow()
		}
		spare = buf[:0]
	}
}

// send writes buf as one binary message, in one write of the connection
// when it can (holdConn).
func (c *conn) send(buf []byte) error {
	if c.held == nil {
		return c.ws.Write(context.Background(), websocket.MessageBinary, buf)
	}
	c.held.hold()
	err := c.ws.Write(context.Background(), websocket.MessageBinary, buf)
	if rerr := c.held.release(); err == nil {
		err = rerr
	}
	return err
}

// wakeLocked wakes the writes waiting for room in the buffer.
func (c *conn) wakeLocked() {
	if c.drained != nil {
		close(c.drained)
		c.drained = nil
	}
}

// bufs holds the buffers of the connections' writes while no flusher
// runs. A buffer is as large as the largest message it held, and kept
// only up to twice maxPending.
var bufs = sync.Pool{New: func() any { return new([]byte) }}

func getBuf() []byte { return (*bufs.Get().(*[]byte))[:0] }

func putBuf(b []byte) {
	if cap(b) == 0 || cap(b) > 2*maxPending {
		return
	}
	b = b[:0]
	bufs.Put(&b)
}

// roomStream writes one room's frames on the connection.
type roomStream struct {
	c        *conn
	welcomed bool // c.welcomed is closed: written by one writer at a time
	mu       sync.Mutex
	wdl      time.Time
}

func (r *roomStream) Write(p []byte) (int, error) {
	r.mu.Lock()
	dl := r.wdl
	r.mu.Unlock()
	if !r.welcomed {
		select {
		case <-r.c.welcomed:
			r.welcomed = true
		case <-r.c.ctx.Done():
			return 0, context.Cause(r.c.ctx)
		}
	}
	return r.c.write(p, dl)
}

func (r *roomStream) SetWriteDeadline(t time.Time) error {
	r.mu.Lock()
	r.wdl = t
	r.mu.Unlock()
	return nil
}

// Close ends the room's frames: the last (a "left" reply, or what came
// before the bye) says so.
func (r *roomStream) Close() error { return nil }

// errTimeout is a read past the read deadline, errWriteTimeout a write.
var (
	errTimeout      error = timeoutError("wsgarou: read deadline passed")
	errWriteTimeout error = timeoutError("wsgarou: write deadline passed")
)

type timeoutError string

func (e timeoutError) Error() string { return string(e) }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// deadline is a read deadline as a channel closed when it passes.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	ch    chan struct{}
}

func newDeadline() deadline { return deadline{ch: make(chan struct{})} }

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.ch // the timer closed it: wait no more, a new one follows
	}
	d.timer = nil
	closed := isClosed(d.ch)
	if t.IsZero() {
		if closed {
			d.ch = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.ch = make(chan struct{})
		}
		ch := d.ch
		d.timer = time.AfterFunc(dur, func() { close(ch) })
		return
	}
	if !closed {
		close(d.ch)
	}
}

func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
