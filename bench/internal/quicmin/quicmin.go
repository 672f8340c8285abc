// Package quicmin is the smallest reasonable broadcast chat over quic-go,
// as lean as such a server can be, so that it is a floor for the others:
// one bidirectional stream per client (the client opens it), frames of a
// 4-byte big-endian length and a JSON object. The server stamps each text,
// encodes it once, and puts the same bytes on the queue of every member of
// the sender's room. A writer goroutine runs only while a client's queue
// is not empty, and coalesces everything queued into one stream write from
// a pooled buffer, so an idle client costs one goroutine (its reader) and
// a delivery costs no allocation.
package quicmin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/garou-chat/garou/bench/internal/impl"
	"github.com/garou-chat/garou/bench/internal/proto"
	"github.com/quic-go/quic-go"
)

// ALPN is the application protocol of this baseline.
const ALPN = "bench/1"

// maxWrite bounds one coalesced stream write.
const maxWrite = 64 << 10

// Impl describes this implementation to the load generator.
var Impl = impl.Impl{Name: "quic-min", Serve: Serve, Dial: Dial}

// serverConfig suits a chat server: one stream per client and nothing
// else, and small receive windows, since clients send short texts; they
// grow for a client that sends much (up to two frames of the largest
// size). These are the settings Garou's server uses too.
var serverConfig = quic.Config{
	MaxIdleTimeout:                 time.Minute,
	MaxIncomingStreams:             1,
	MaxIncomingUniStreams:          -1,
	InitialStreamReceiveWindow:     32 << 10,
	MaxStreamReceiveWindow:         2 * proto.MaxFrame,
	InitialConnectionReceiveWindow: 48 << 10,
	MaxConnectionReceiveWindow:     3 * proto.MaxFrame,
}

// clientConfig accepts no streams from the server and bounds the windows
// as Garou's client does.
var clientConfig = quic.Config{
	MaxIdleTimeout:             time.Minute,
	MaxIncomingStreams:         -1,
	MaxIncomingUniStreams:      -1,
	MaxStreamReceiveWindow:     2 * proto.MaxFrame,
	MaxConnectionReceiveWindow: 3 * proto.MaxFrame,
}

type server struct {
	queueBytes int
	log        *slog.Logger
	welcome    []byte

	mu     sync.Mutex
	rooms  map[string][]*client
	nextID uint64
}

type client struct {
	conn *quic.Conn
	str  *quic.Stream
	name string
	room string
	idx  int // in rooms[room], under server.mu

	mu      sync.Mutex
	queue   [][]byte // frames for the writer; shared, never modified
	spare   [][]byte // the writer's last slice, to reuse
	bytes   int      // queued and being written
	writing bool     // a writer goroutine is running
	closed  bool
	writer  sync.WaitGroup
}

// Serve runs the server until ctx ends.
func Serve(ctx context.Context, cfg impl.ServerConfig, ready func(addr, fp string)) error {
	tlsConf, fp, err := proto.ServerTLS(ALPN)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", cfg.Addr)
	if err != nil {
		return err
	}
	tr := &quic.Transport{Conn: pc}
	qconf := serverConfig
	ln, err := tr.Listen(tlsConf, &qconf)
	if err != nil {
		pc.Close()
		return err
	}
	welcome, _ := json.Marshal(proto.Server{Type: proto.TypeWelcome})
	s := &server{queueBytes: cfg.QueueBytes, log: cfg.Logger, welcome: proto.AppendFrame(nil, welcome), rooms: make(map[string][]*client)}
	ready(ln.Addr().String(), fp)
	var wg sync.WaitGroup
	for {
		conn, err := ln.Accept(ctx)
		if err != nil {
			break
		}
		wg.Go(func() { s.serve(ctx, conn) })
	}
	s.mu.Lock()
	for _, members := range s.rooms {
		for _, c := range members {
			c.close()
		}
	}
	s.mu.Unlock()
	ln.Close()
	tr.Close() // drops connections still in their handshake
	wg.Wait()
	return pc.Close()
}

// serve reads one client's hello and texts: the one goroutine a connected
// client always has.
func (s *server) serve(ctx context.Context, conn *quic.Conn) {
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	str, err := conn.AcceptStream(hctx)
	cancel()
	if err != nil {
		_ = conn.CloseWithError(1, "no stream")
		return
	}
	// Unbuffered: an idle connection holds no read buffer, and a text
	// costs two stream reads once, not once per delivery.
	fr := proto.NewFrameReader(str, 0)
	body, err := fr.Next()
	var hello proto.Client
	if err == nil {
		err = json.Unmarshal(body, &hello)
	}
	if err != nil || hello.Type != proto.TypeHello || hello.Name == "" {
		_ = conn.CloseWithError(1, "bad hello")
		return
	}
	c := &client{conn: conn, str: str, name: hello.Name, room: hello.Room}
	c.push(s.welcome, s.queueBytes)
	s.register(c)
	for {
		body, err := fr.Next()
		if err != nil {
			break
		}
		var m proto.Client
		if err := json.Unmarshal(body, &m); err != nil || m.Type != proto.TypeText {
			break
		}
		s.broadcast(c, m.Text)
	}
	s.unregister(c)
	c.close()
	c.writer.Wait()
}

func (s *server) register(c *client) {
	s.mu.Lock()
	c.idx = len(s.rooms[c.room])
	s.rooms[c.room] = append(s.rooms[c.room], c)
	s.mu.Unlock()
}

func (s *server) unregister(c *client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	members := s.rooms[c.room]
	if c.idx >= len(members) || members[c.idx] != c {
		return
	}
	last := len(members) - 1
	members[c.idx] = members[last]
	members[c.idx].idx = c.idx
	members[last] = nil
	if last == 0 {
		delete(s.rooms, c.room)
	} else {
		s.rooms[c.room] = members[:last]
	}
}

// broadcast stamps and encodes a text once and queues it for every member
// of the sender's room, under the lock so that every member gets the
// texts in the same order.
func (s *server) broadcast(from *client, text string) {
	s.mu.Lock()
	s.nextID++
	body, err := json.Marshal(proto.Server{Type: proto.TypeText, From: from.name, ID: s.nextID, Text: text, Time: time.Now().UTC()})
	if err != nil {
		s.mu.Unlock()
		return
	}
	frame := proto.AppendFrame(make([]byte, 0, 4+len(body)), body)
	var slow []*client
	for _, c := range s.rooms[from.room] {
		if !c.push(frame, s.queueBytes) {
			slow = append(slow, c)
		}
	}
	s.mu.Unlock()
	for _, c := range slow {
		s.log.Warn("quic-min: slow consumer dropped", "name", c.name)
		c.close()
	}
}

// push queues a frame without blocking and starts a writer if none is
// running. It reports false when the client is closed or the frame would
// pass the bound: the caller then drops the client as a slow consumer.
func (c *client) push(frame []byte, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.bytes+len(frame) > limit {
		return false
	}
	c.queue = append(c.queue, frame)
	c.bytes += len(frame)
	if !c.writing {
		c.writing = true
		c.writer.Add(1)
		go c.write()
	}
	return true
}

// writeBufs holds the buffers the writers coalesce frames into: only
// clients being written to hold one.
var writeBufs = sync.Pool{New: func() any { return new([]byte) }}

// write writes what is queued, everything at once, until the queue is
// empty, and ends.
func (c *client) write() {
	defer c.writer.Done()
	bp := writeBufs.Get().(*[]byte)
	defer writeBufs.Put(bp)
	for {
		c.mu.Lock()
		frames := c.queue
		if c.closed || len(frames) == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.queue, c.spare = c.spare[:0], nil
		c.mu.Unlock()
		buf, n, err := (*bp)[:0], 0, error(nil)
		for _, f := range frames {
			if len(buf)+len(f) > maxWrite && len(buf) > 0 {
				if _, err = c.str.Write(buf); err != nil {
					break
				}
				buf = buf[:0]
			}
			buf = append(buf, f...)
			n += len(f)
		}
		if err == nil {
			_, err = c.str.Write(buf)
		}
		if cap(buf) <= 4*maxWrite {
			*bp = buf[:0]
		}
		clear(frames)
		c.mu.Lock()
		c.bytes -= n
		if cap(frames) <= 4096 {
			c.spare = frames[:0]
		}
		c.mu.Unlock()
		if err != nil {
			c.close()
			return
		}
	}
}

// close drops what is queued and closes the connection, which ends the
// reader and a writer blocked in Write. It is idempotent.
func (c *client) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed, c.queue, c.spare = true, nil, nil
	c.mu.Unlock()
	_ = c.conn.CloseWithError(0, "")
}

// Client is the load side's client.
type Client struct {
	tr   *quic.Transport
	pc   net.PacketConn
	conn *quic.Conn
	str  *quic.Stream
	fr   *proto.FrameReader
	wmu  sync.Mutex
	wbuf []byte
}

// readBuffer is the client's read buffer, as large as Garou's client's: a
// frame wholly in it is decoded from there, and a stream read brings in
// everything the stream has up to that size.
const readBuffer = 32 << 10

// Dial connects and returns once the server has welcomed the client into
// room. Every client has a UDP socket of its own, as a real client would.
func Dial(ctx context.Context, addr, fp, name, room string) (impl.Client, error) {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	tr := &quic.Transport{Conn: pc}
	c := &Client{tr: tr, pc: pc}
	if err := c.connect(ctx, raddr, fp, name, room); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) connect(ctx context.Context, raddr net.Addr, fp, name, room string) error {
	qconf := clientConfig
	conn, err := c.tr.Dial(ctx, raddr, proto.PinnedTLS(fp, ALPN), &qconf)
	if err != nil {
		return err
	}
	c.conn = conn
	if c.str, err = conn.OpenStreamSync(ctx); err != nil {
		return err
	}
	if err := c.write(proto.Client{Type: proto.TypeHello, Name: name, Room: room}); err != nil {
		return err
	}
	c.fr = proto.NewFrameReader(c.str, readBuffer)
	if dl, ok := ctx.Deadline(); ok {
		_ = c.str.SetReadDeadline(dl)
	}
	body, err := c.fr.Next()
	if err != nil {
		return err
	}
	_ = c.str.SetReadDeadline(time.Time{})
	if typ, _, _, err := proto.ParseServer(body); err != nil || string(typ) != proto.TypeWelcome {
		return fmt.Errorf("quic-min: expected a welcome, got %q", body)
	}
	return nil
}

func (c *Client) write(m proto.Client) error {
	body, err := json.Marshal(m)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = proto.AppendFrame(c.wbuf[:0], body)
	_, err = c.str.Write(c.wbuf)
	return err
}

// Send writes a text; it does not wait for the server.
func (c *Client) Send(_ context.Context, text string) error {
	return c.write(proto.Client{Type: proto.TypeText, Text: text})
}

// Receive returns the next text. It allocates only the two strings it
// returns.
func (c *Client) Receive() (string, string, error) {
	for {
		body, err := c.fr.Next()
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

// Close closes the connection, the transport and the socket.
func (c *Client) Close() error {
	var err error
	if c.conn != nil {
		err = c.conn.CloseWithError(0, "")
	}
	c.tr.Close()
	return errors.Join(err, c.pc.Close())
}
