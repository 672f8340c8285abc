// Package wstls is the WebSocket baseline: the classic gorilla/websocket
// chat hub over TLS 1.3. A hub goroutine owns the rooms and their members,
// stamps each text and encodes it once for the sender's room; every client
// has a bounded send queue and a
// writer goroutine that writes what is queued as one WebSocket message of
// newline-separated JSON texts (at most maxWrite bytes each) in one TLS
// write, as the Garou WebSocket path packs several frames in one message;
// the client reads each message into one reused buffer.
package wstls

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/garou-chat/garou/bench/internal/impl"
	"github.com/garou-chat/garou/bench/internal/proto"
	"github.com/garou-chat/garou/bench/internal/sendq"
	"github.com/gorilla/websocket"
)

// maxWrite bounds one coalesced TLS write.
const maxWrite = 64 << 10

// Impl describes this implementation to the load generator.
var Impl = impl.Impl{Name: "ws-tls", Serve: Serve, Dial: Dial}

type inbound struct {
	from *client
	text string
}

type hub struct {
	queueBytes int
	log        *slog.Logger
	register   chan *client
	unregister chan *client
	broadcast  chan inbound
	done       <-chan struct{}
	rooms      map[string]map[*client]struct{}
	nextID     uint64
}

type client struct {
	ws   *websocket.Conn
	bc   *batchConn
	name string
	room string
	q    *sendq.Queue
}

var upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024}

// Serve runs the server until ctx ends.
func Serve(ctx context.Context, cfg impl.ServerConfig, ready func(addr, fp string)) error {
	tlsConf, fp, err := proto.ServerTLS("http/1.1")
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	h := &hub{
		queueBytes: cfg.QueueBytes,
		log:        cfg.Logger,
		register:   make(chan *client),
		unregister: make(chan *client),
		broadcast:  make(chan inbound),
		done:       ctx.Done(),
		rooms:      make(map[string]map[*client]struct{}),
	}
	var wg sync.WaitGroup
	hubDone := make(chan struct{})
	go func() {
		defer close(hubDone)
		h.run()
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		ws, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		wg.Go(func() { h.serve(ws) })
	})
	srv := &http.Server{Handler: mux, ErrorLog: log.New(discard{}, "", 0), ReadHeaderTimeout: 30 * time.Second}
	ready(ln.Addr().String(), fp)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(&batchListener{Listener: tls.NewListener(ln, tlsConf)}) }()
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	_ = srv.Close()
	<-hubDone // the hub closed every client
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// run owns the rooms until the server stops.
func (h *hub) run() {
	welcome, _ := json.Marshal(proto.Server{Type: proto.TypeWelcome})
	for {
		select {
		case c := <-h.register:
			c.q.Push(welcome)
			if h.rooms[c.room] == nil {
				h.rooms[c.room] = make(map[*client]struct{})
			}
			h.rooms[c.room][c] = struct{}{}
		case c := <-h.unregister:
			h.remove(c)
		case m := <-h.broadcast:
			h.nextID++
			body, err := json.Marshal(proto.Server{Type: proto.TypeText, From: m.from.name, ID: h.nextID, Text: m.text, Time: time.Now().UTC()})
			if err != nil {
				continue
			}
			for c := range h.rooms[m.from.room] {
				if !c.q.Push(body) {
					h.log.Warn("ws-tls: slow consumer dropped", "name", c.name)
					h.remove(c)
					_ = c.ws.Close()
				}
			}
		case <-h.done:
			for _, members := range h.rooms {
				for c := range members {
					c.q.Close()
					_ = c.ws.Close()
				}
			}
			return
		}
	}
}

// remove takes c out of its room and closes its queue.
func (h *hub) remove(c *client) {
	members := h.rooms[c.room]
	if _, ok := members[c]; !ok {
		return
	}
	delete(members, c)
	if len(members) == 0 {
		delete(h.rooms, c.room)
	}
	c.q.Close()
}

// serve is the read pump: the hello, then texts to the hub.
func (h *hub) serve(ws *websocket.Conn) {
	defer ws.Close()
	ws.SetReadLimit(proto.MaxFrame)
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	var hello proto.Client
	if err := ws.ReadJSON(&hello); err != nil || hello.Type != proto.TypeHello || hello.Name == "" {
		return
	}
	_ = ws.SetReadDeadline(time.Time{})
	bc, ok := ws.NetConn().(*batchConn)
	if !ok {
		return
	}
	c := &client{ws: ws, bc: bc, name: hello.Name, room: hello.Room, q: sendq.New(h.queueBytes)}
	select {
	case h.register <- c:
	case <-h.done:
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.writePump()
	}()
	for {
		_, body, err := ws.ReadMessage()
		if err != nil {
			break
		}
		var m proto.Client
		if err := json.Unmarshal(body, &m); err != nil || m.Type != proto.TypeText {
			break
		}
		select {
		case h.broadcast <- inbound{from: c, text: m.Text}:
		case <-h.done:
		}
	}
	select {
	case h.unregister <- c:
	case <-h.done:
	}
	_ = ws.Close()
	<-done
}

// writePump writes what is queued as few WebSocket messages, each a
// batch of newline-separated texts, in as few TLS writes as it can.
func (c *client) writePump() {
	defer c.ws.Close()
	for {
		items, ok := c.q.Take()
		if !ok {
			return
		}
		c.bc.Hold()
		for len(items) > 0 {
			w, err := c.ws.NextWriter(websocket.TextMessage)
			n := 0
			for size := 0; err == nil && n < len(items) && (n == 0 || size+len(items[n]) < maxWrite); n++ {
				size += len(items[n]) + 1
				if _, err = w.Write(items[n]); err == nil {
					_, err = w.Write(newline)
				}
			}
			if err == nil {
				err = w.Close()
			}
			if err == nil && c.bc.Buffered() >= maxWrite {
				err = c.bc.Flush()
			}
			if err != nil {
				return
			}
			c.q.Done(items[:n])
			items = items[n:]
		}
		if err := c.bc.Release(); err != nil {
			return
		}
	}
}

var newline = []byte{'\n'}

// batchConn lets the writer hold the writes of several WebSocket messages
// and pass them to TLS at once; outside Hold it writes through.
type batchConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  []byte
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.hold {
		b.buf = append(b.buf, p...)
		return len(p), nil
	}
	return b.Conn.Write(p)
}

// Hold starts buffering writes.
func (b *batchConn) Hold() {
	b.mu.Lock()
	b.hold = true
	b.mu.Unlock()
}

// Buffered is how many bytes are held.
func (b *batchConn) Buffered() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.buf)
}

// Flush writes what is held and goes on holding.
func (b *batchConn) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

// Release writes what is held and stops holding.
func (b *batchConn) Release() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hold = false
	return b.flushLocked()
}

func (b *batchConn) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(b.buf)
	b.buf = b.buf[:0]
	if cap(b.buf) > 4*maxWrite {
		b.buf = nil
	}
	return err
}

type batchListener struct{ net.Listener }

func (l *batchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &batchConn{Conn: c}, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Client is the load side's client.
type Client struct {
	ws      *websocket.Conn
	wmu     sync.Mutex
	buf     []byte // the last message read, reused
	pending []byte // what of buf is still to be parsed
}

// Dial connects and returns once the server has welcomed the client into
// room.
func Dial(ctx context.Context, addr, fp, name, room string) (impl.Client, error) {
	d := websocket.Dialer{TLSClientConfig: proto.PinnedTLS(fp, "http/1.1"), HandshakeTimeout: 30 * time.Second}
	ws, _, err := d.DialContext(ctx, "wss://"+addr+"/ws", nil)
	if err != nil {
		return nil, err
	}
	c := &Client{ws: ws}
	if err := ws.WriteJSON(proto.Client{Type: proto.TypeHello, Name: name, Room: room}); err != nil {
		ws.Close()
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = ws.SetReadDeadline(dl)
	}
	body, err := c.next()
	var m proto.Server
	if err == nil {
		err = json.Unmarshal(body, &m)
	}
	if err != nil || m.Type != proto.TypeWelcome {
		ws.Close()
		return nil, fmt.Errorf("ws-tls: expected a welcome: %v", err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	return c, nil
}

// Send writes a text; it does not wait for the server.
func (c *Client) Send(_ context.Context, text string) error {
	body, err := json.Marshal(proto.Client{Type: proto.TypeText, Text: text})
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.ws.WriteMessage(websocket.TextMessage, body)
}

// Receive returns the next text, decoded as quic-min's client does.
func (c *Client) Receive() (string, string, error) {
	for {
		body, err := c.next()
		if err != nil {
			return "", "", err
		}
		typ, from, text, err := proto.ParseServer(body)
		if err != nil {
			return "", "", err
		}
		if string(typ) == proto.TypeText {
			return string(from), string(text), nil
		}
	}
}

// next returns the next JSON text of the server's messages, each message
// read whole into the client's one buffer.
func (c *Client) next() ([]byte, error) {
	for len(c.pending) == 0 {
		_, r, err := c.ws.NextReader()
		if err != nil {
			return nil, err
		}
		c.buf = c.buf[:0]
		for {
			if len(c.buf) == cap(c.buf) {
				c.buf = append(c.buf, 0)[:len(c.buf)]
			}
			n, err := r.Read(c.buf[len(c.buf):cap(c.buf)])
			c.buf = c.buf[:len(c.buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, err
			}
		}
		c.pending = c.buf
	}
	body := c.pending
	if i := bytes.IndexByte(body, '\n'); i >= 0 {
		body, c.pending = body[:i], body[i+1:]
	} else {
		c.pending = nil
	}
	return body, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.ws.Close() }
