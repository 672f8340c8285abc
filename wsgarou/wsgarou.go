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
	t := newConn(ws, hw.conn, remoteAddr(r))
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
}

// hijacked keeps the network connection that websocket.Accept hijacks, so
// that deadlines bound the close handshake.
type hijacked struct {
	http.ResponseWriter
	conn net.Conn
}

func (h *hijacked) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("wsgarou: the ResponseWriter cannot be hijacked")
	}
	c, rw, err := hj.Hijack()
	h.conn = c
	return c, rw, err
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
type conn struct {
	ws    *websocket.Conn
	raw   net.Conn
	addr  net.Addr
	ctx   context.Context
	stop  context.CancelCauseFunc
	chunk chan []byte
	// readDone is closed when the read loop ends: the connection is
	// closed.
	readDone chan struct{}
	rdl      deadline
	pending  []byte // read by Read only

	wmu sync.Mutex
	wdl time.Time // the write deadline of the control stream
	// welcomed is closed by the control stream's first write (the
	// welcome, or a bye): room frames wait for it, so that the client
	// reads its welcome first, as a client of QUIC's does.
	welcomed    chan struct{}
	welcomeOnce sync.Once

	closeOnce sync.Once
}

func newConn(ws *websocket.Conn, raw net.Conn, addr net.Addr) *conn {
	ctx, stop := context.WithCancelCause(context.Background())
	return &conn{
		ws:       ws,
		raw:      raw,
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
	buf := make([]byte, chunkSize)
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
				break
			}
			if err != nil {
				return err
			}
		}
	}
}

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

// Write implements garou.SendStream: p, whole frames, is one message.
func (c *conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	dl := c.wdl
	c.wmu.Unlock()
	n, err := write(c.ws, dl, p)
	c.welcomeOnce.Do(func() { close(c.welcomed) })
	return n, err
}

// SetWriteDeadline implements garou.SendStream.
func (c *conn) SetWriteDeadline(t time.Time) error {
	c.wmu.Lock()
	c.wdl = t
	c.wmu.Unlock()
	return nil
}

// Close implements garou.SendStream: the control stream ends with the
// connection, which the client closes on reading the bye.
func (c *conn) Close() error { return nil }

func write(ws *websocket.Conn, dl time.Time, p []byte) (int, error) {
	ctx := context.Background()
	if !dl.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl)
		defer cancel()
	}
	if err := ws.Write(ctx, websocket.MessageBinary, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// roomStream writes one room's frames on the connection.
type roomStream struct {
	c   *conn
	mu  sync.Mutex
	wdl time.Time
}

func (r *roomStream) Write(p []byte) (int, error) {
	r.mu.Lock()
	dl := r.wdl
	r.mu.Unlock()
	select {
	case <-r.c.welcomed:
	case <-r.c.ctx.Done():
		return 0, context.Cause(r.c.ctx)
	}
	return write(r.c.ws, dl, p)
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

// errTimeout is a read past the read deadline.
var errTimeout error = timeoutError{}

type timeoutError struct{}

func (timeoutError) Error() string   { return "wsgarou: read deadline passed" }
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
