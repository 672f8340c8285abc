// Package quicmin is the smallest reasonable broadcast chat over quic-go:
// one bidirectional stream per client (the client opens it), frames of a
// 4-byte big-endian length and a JSON object. The server stamps each text,
// encodes it once, and puts the same bytes on every client's bounded
// queue; a writer goroutine per client coalesces what is queued into one
// stream write.
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
	"github.com/garou-chat/garou/bench/internal/sendq"
	"github.com/quic-go/quic-go"
)

// ALPN is the application protocol of this baseline.
const ALPN = "bench/1"

// maxWrite bounds one coalesced stream write.
const maxWrite = 64 << 10

// Impl describes this implementation to the load generator.
var Impl = impl.Impl{Name: "quic-min", Serve: Serve, Dial: Dial}

type server struct {
	queueBytes int
	log        *slog.Logger

	mu      sync.Mutex
	clients []*client
	index   map[*client]int
	nextID  uint64
}

type client struct {
	conn *quic.Conn
	str  *quic.Stream
	name string
	q    *sendq.Queue
	once sync.Once
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
	ln, err := tr.Listen(tlsConf, &quic.Config{MaxIdleTimeout: time.Minute})
	if err != nil {
		pc.Close()
		return err
	}
	s := &server{queueBytes: cfg.QueueBytes, log: cfg.Logger, index: make(map[*client]int)}
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
	for _, c := range s.clients {
		c.close()
	}
	s.mu.Unlock()
	ln.Close()
	tr.Close() // drops connections still in their handshake
	wg.Wait()
	return pc.Close()
}

func (s *server) serve(ctx context.Context, conn *quic.Conn) {
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	str, err := conn.AcceptStream(hctx)
	cancel()
	if err != nil {
		_ = conn.CloseWithError(1, "no stream")
		return
	}
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
	c := &client{conn: conn, str: str, name: hello.Name, q: sendq.New(s.queueBytes)}
	welcome, _ := json.Marshal(proto.Server{Type: proto.TypeWelcome})
	c.q.Push(proto.AppendFrame(nil, welcome))
	s.register(c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.writeLoop()
	}()
	for {
		body, err := fr.Next()
		if err != nil {
			break
		}
		var m proto.Client
		if err := json.Unmarshal(body, &m); err != nil || m.Type != proto.TypeText {
			break
		}
		s.broadcast(c.name, m.Text)
	}
	s.unregister(c)
	c.close()
	<-done
}

func (s *server) register(c *client) {
	s.mu.Lock()
	s.index[c] = len(s.clients)
	s.clients = append(s.clients, c)
	s.mu.Unlock()
}

func (s *server) unregister(c *client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.index[c]
	if !ok {
		return
	}
	last := len(s.clients) - 1
	s.clients[i] = s.clients[last]
	s.index[s.clients[i]] = i
	s.clients[last] = nil
	s.clients = s.clients[:last]
	delete(s.index, c)
}

// broadcast stamps and encodes a text once and queues it for everyone,
// under the lock so that every client gets the texts in the same order.
func (s *server) broadcast(from, text string) {
	s.mu.Lock()
	s.nextID++
	body, err := json.Marshal(proto.Server{Type: proto.TypeText, From: from, ID: s.nextID, Text: text, Time: time.Now().UTC()})
	if err != nil {
		s.mu.Unlock()
		return
	}
	frame := proto.AppendFrame(make([]byte, 0, 4+len(body)), body)
	var slow []*client
	for _, c := range s.clients {
		if !c.q.Push(frame) {
			slow = append(slow, c)
		}
	}
	s.mu.Unlock()
	for _, c := range slow {
		s.log.Warn("quic-min: slow consumer dropped", "name", c.name)
		c.close()
	}
}

func (c *client) writeLoop() {
	var buf []byte
	for {
		items, ok := c.q.Take()
		if !ok {
			return
		}
		for _, f := range items {
			if len(buf)+len(f) > maxWrite && len(buf) > 0 {
				if _, err := c.str.Write(buf); err != nil {
					c.close()
					return
				}
				buf = buf[:0]
			}
			buf = append(buf, f...)
		}
		c.q.Done(items)
		if _, err := c.str.Write(buf); err != nil {
			c.close()
			return
		}
		buf = buf[:0]
		if cap(buf) > 4*maxWrite {
			buf = nil
		}
	}
}

func (c *client) close() {
	c.once.Do(func() {
		c.q.Close()
		_ = c.conn.CloseWithError(0, "")
	})
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

// Dial connects and returns once the server has welcomed the client. Every
// client has a UDP socket of its own, as a real client would.
func Dial(ctx context.Context, addr, fp, name string) (impl.Client, error) {
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
	if err := c.connect(ctx, raddr, fp, name); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) connect(ctx context.Context, raddr net.Addr, fp, name string) error {
	conn, err := c.tr.Dial(ctx, raddr, proto.PinnedTLS(fp, ALPN), &quic.Config{MaxIdleTimeout: time.Minute})
	if err != nil {
		return err
	}
	c.conn = conn
	if c.str, err = conn.OpenStreamSync(ctx); err != nil {
		return err
	}
	if err := c.write(proto.Client{Type: proto.TypeHello, Name: name}); err != nil {
		return err
	}
	c.fr = proto.NewFrameReader(c.str, 32<<10)
	if dl, ok := ctx.Deadline(); ok {
		_ = c.str.SetReadDeadline(dl)
	}
	body, err := c.fr.Next()
	if err != nil {
		return err
	}
	_ = c.str.SetReadDeadline(time.Time{})
	var m proto.Server
	if err := json.Unmarshal(body, &m); err != nil || m.Type != proto.TypeWelcome {
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

// incoming is the part of a server message the load needs.
type incoming struct {
	Type string `json:"type"`
	From string `json:"from"`
	Text string `json:"text"`
}

// Receive returns the next text.
func (c *Client) Receive() (string, string, error) {
	for {
		body, err := c.fr.Next()
		if err != nil {
			return "", "", err
		}
		var m incoming
		if err := json.Unmarshal(body, &m); err != nil {
			return "", "", err
		}
		if m.Type == proto.TypeText {
			return m.From, m.Text, nil
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
