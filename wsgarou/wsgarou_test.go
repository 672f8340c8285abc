package wsgarou_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/wsgarou"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// world is a server serving QUIC on 127.0.0.1 and WebSocket through an
// HTTP server on 127.0.0.1.
type world struct {
	srv *garou.Server
	udp string // the QUIC address
	ws  string // the WebSocket URL
}

func newWorld(t *testing.T, opts ...garou.ServerOption) *world {
	t.Helper()
	return newWorldWS(t, nil, opts...)
}

func newWorldWS(t *testing.T, wsOpts *wsgarou.Options, opts ...garou.ServerOption) *world {
	t.Helper()
	srv, err := garou.NewServer(append([]garou.ServerOption{garou.WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	require.NoError(t, err)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), pc) }()
	<-srv.Ready()
	hs := httptest.NewServer(wsgarou.New(srv, wsOpts))
	t.Cleanup(func() {
		require.NoError(t, srv.Close())
		require.NoError(t, <-served)
		hs.Close()
		pc.Close()
	})
	return &world{srv: srv, udp: pc.LocalAddr().String(), ws: "ws" + strings.TrimPrefix(hs.URL, "http")}
}

func (w *world) quic(t *testing.T, ctx context.Context, name string, opts ...garou.ClientOption) *garou.Client {
	t.Helper()
	c, err := garou.Dial(ctx, w.udp, name, append([]garou.ClientOption{garou.WithFingerprint(w.srv.Fingerprint())}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// wsClient speaks the protocol over a WebSocket, frame by frame, as a
// browser page does.
type wsClient struct {
	t   *testing.T
	ctx context.Context
	ws  *websocket.Conn
	buf []byte
}

func (w *world) dialWS(t *testing.T, ctx context.Context) *wsClient {
	t.Helper()
	ws, _, err := websocket.Dial(ctx, w.ws, &websocket.DialOptions{Subprotocols: []string{wsgarou.Subprotocol}})
	require.NoError(t, err)
	ws.SetReadLimit(-1)
	t.Cleanup(func() { ws.CloseNow() })
	return &wsClient{t: t, ctx: ctx, ws: ws}
}

// hello dials and says hello, and returns the client once welcomed.
func (w *world) hello(t *testing.T, ctx context.Context, hello map[string]any) *wsClient {
	c := w.dialWS(t, ctx)
	hello["type"] = "hello"
	c.send(hello)
	c.expect("welcome")
	return c
}

func (c *wsClient) send(v any) {
	body, err := json.Marshal(v)
	require.NoError(c.t, err)
	c.sendRaw(append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...))
}

func (c *wsClient) sendRaw(b []byte) {
	require.NoError(c.t, c.ws.Write(c.ctx, websocket.MessageBinary, b))
}

// next returns the next frame the server sent, or the error that ended
// the connection.
func (c *wsClient) next() (map[string]any, error) {
	for {
		if len(c.buf) >= 4 {
			n := int(binary.BigEndian.Uint32(c.buf))
			if len(c.buf) >= 4+n {
				var f map[string]any
				require.NoError(c.t, json.Unmarshal(c.buf[4:4+n], &f))
				c.buf = c.buf[4+n:]
				return f, nil
			}
		}
		typ, b, err := c.ws.Read(c.ctx)
		if err != nil {
			return nil, err
		}
		require.Equal(c.t, websocket.MessageBinary, typ)
		c.buf = append(c.buf, b...)
	}
}

// expect returns the next frame of type typ, skipping presence and typing.
func (c *wsClient) expect(typ string) map[string]any {
	c.t.Helper()
	for {
		f, err := c.next()
		require.NoError(c.t, err, "waiting for %q", typ)
		switch f["type"] {
		case typ:
			return f
		case "presence", "typing":
			continue
		}
		require.Failf(c.t, "unexpected frame", "want %q, got %v", typ, f)
	}
}

// closed reads until the server's bye, and then closes the connection as
// PROTOCOL.md asks a client to; or until the connection ends without one.
// It returns the bye (nil if none) and the WebSocket close status (-1
// after a bye).
func (c *wsClient) closed() (bye map[string]any, st websocket.StatusCode) {
	for {
		f, err := c.next()
		if err != nil {
			return nil, websocket.CloseStatus(err)
		}
		if f["type"] == "bye" {
			c.ws.Close(websocket.StatusNormalClosure, "")
			return f, -1
		}
	}
}

// TestOneOrder: a WebSocket client and a QUIC client in one room see its
// texts in one order, with the same sequence numbers.
func TestOneOrder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := newWorld(t)
	q := w.quic(t, ctx, "quinn", garou.WithRooms("lobby"))
	b := w.hello(t, ctx, map[string]any{"name": "webby", "rooms": []map[string]any{{"room": "lobby"}}})
	b.expect("joined")

	const n = 20
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			if _, err := q.SendTo(ctx, "lobby", fmt.Sprintf("q%d", i)); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for i := range n {
		b.send(map[string]any{"type": "text", "room": "lobby", "text": fmt.Sprintf("w%d", i), "ref": i + 1})
	}
	require.NoError(t, <-errc)

	var web, quic []string
	for len(web) < 2*n {
		f, err := b.next()
		require.NoError(t, err)
		if f["type"] == "text" {
			require.Equal(t, "lobby", f["room"])
			web = append(web, fmt.Sprintf("%v:%v", f["seq"], f["text"]))
		}
	}
	for len(quic) < 2*n {
		m, err := q.Receive(ctx)
		require.NoError(t, err)
		if m.Type == garou.TypeText {
			quic = append(quic, fmt.Sprintf("%d:%s", m.Seq, m.Text))
		}
	}
	require.Equal(t, quic, web)
}

// TestRooms: a WebSocket client in several busy rooms at once, whose
// frames of every room and of the control stream share its connection,
// gets every text of each room once and in the room's order, and the acks
// of its own texts.
func TestRooms(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := newWorld(t, garou.WithRateLimit(0, 0))
	rooms := []string{"a", "b", "c"}
	var specs []map[string]any
	for _, r := range rooms {
		specs = append(specs, map[string]any{"room": r})
	}
	b := w.hello(t, ctx, map[string]any{"name": "webby", "rooms": specs})
	for range rooms {
		b.expect("joined")
	}
	const n = 200
	errc := make(chan error, len(rooms))
	for _, r := range rooms {
		q := w.quic(t, ctx, "q"+r, garou.WithRooms(r))
		go func() {
			for i := range n {
				if _, err := q.SendTo(ctx, r, fmt.Sprintf("%s%d", r, i)); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for i := range n {
		b.send(map[string]any{"type": "text", "room": "a", "text": fmt.Sprintf("w%d", i), "ref": i + 1})
	}
	next := map[string]float64{} // the next seq of each room
	quic := map[string]int{}     // the QUIC client's texts seen, per room
	acks := 0
	for acks < n || len(quic) < len(rooms) || quic["a"] < n || quic["b"] < n || quic["c"] < n {
		f, err := b.next()
		require.NoError(t, err, "acks %d, texts of the QUIC clients %v", acks, quic)
		switch f["type"] {
		case "text":
			r := f["room"].(string)
			if next[r] == 0 {
				next[r] = f["seq"].(float64)
			}
			require.Equal(t, next[r], f["seq"], "room %s", r)
			next[r]++
			if text := f["text"].(string); text[0] != 'w' {
				require.Equal(t, fmt.Sprintf("%s%d", r, quic[r]), text)
				quic[r]++
			}
		case "ack":
			acks++
			require.Equal(t, float64(acks), f["ref"])
		}
	}
	for range rooms {
		require.NoError(t, <-errc)
	}
}

// TestHostile: bad input over WebSocket gets the errors PROTOCOL.md
// documents, and the server goes on serving others.
func TestHostile(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := newWorld(t, garou.WithMaxMessageSize(4096))

	t.Run("bad frame", func(t *testing.T) {
		c := w.hello(t, ctx, map[string]any{"name": "bad", "rooms": []any{}})
		c.sendRaw([]byte{0, 0, 0, 3, '{', '{', '{'})
		e := c.expect("error")
		require.Equal(t, "bad_frame", e["code"])
		c.send(map[string]any{"type": "users", "ref": 7}) // still served
		require.EqualValues(t, 7, c.expect("users")["ref"])
	})
	t.Run("too large", func(t *testing.T) {
		c := w.hello(t, ctx, map[string]any{"name": "large"})
		c.sendRaw([]byte{0, 0, 0x10, 1}) // 4097 bytes: refused from the prefix
		bye, _ := c.closed()
		require.Equal(t, "too_large", bye["code"])
		require.EqualValues(t, garou.CloseTooLarge, bye["close"])
	})
	t.Run("empty frame", func(t *testing.T) {
		c := w.hello(t, ctx, map[string]any{"name": "empty", "rooms": []any{}})
		c.sendRaw([]byte{0, 0, 0, 0})
		bye, _ := c.closed()
		require.Equal(t, "protocol", bye["code"])
	})
	t.Run("text message", func(t *testing.T) {
		c := w.hello(t, ctx, map[string]any{"name": "texty", "rooms": []any{}})
		require.NoError(t, c.ws.Write(ctx, websocket.MessageText, []byte(`{"type":"users"}`)))
		bye, st := c.closed()
		require.Nil(t, bye)
		require.Equal(t, websocket.StatusCode(4000+int(garou.CloseProtocol)), st)
	})
	t.Run("frame across messages", func(t *testing.T) {
		// The messages are one byte stream: a frame may span them.
		c := w.dialWS(t, ctx)
		body := []byte(`{"type":"hello","name":"split"}`)
		prefix := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
		c.sendRaw(prefix[:2])
		c.sendRaw(append(prefix[2:], body[:5]...))
		c.sendRaw(body[5:])
		c.expect("welcome")
	})
	t.Run("no subprotocol", func(t *testing.T) {
		ws, _, err := websocket.Dial(ctx, w.ws, nil)
		require.NoError(t, err)
		defer ws.CloseNow()
		_, _, err = ws.Read(ctx)
		require.Equal(t, websocket.StatusProtocolError, websocket.CloseStatus(err))
	})
	t.Run("origin", func(t *testing.T) {
		h := http.Header{"Origin": {"https://evil.example"}}
		_, resp, err := websocket.Dial(ctx, w.ws, &websocket.DialOptions{Subprotocols: []string{wsgarou.Subprotocol}, HTTPHeader: h})
		require.Error(t, err)
		require.Equal(t, http.StatusForbidden, resp.StatusCode)
	})
	t.Run("flooding", func(t *testing.T) {
		c := w.hello(t, ctx, map[string]any{"name": "flood", "rooms": []any{}})
		var b []byte
		for range 200 {
			b = append(b, 0, 0, 0, 2, '{', '}') // bad frames, many in one message
		}
		c.sendRaw(b)
		bye, _ := c.closed()
		require.Equal(t, "flooding", bye["code"])
	})
	// Others were served all along.
	q := w.quic(t, ctx, "after")
	require.NoError(t, q.Send(ctx, "still here"))
}

// TestSlowConsumer: a WebSocket client that stops reading is cut as a slow
// consumer, and the others in its room go on receiving.
func TestSlowConsumer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	w := newWorld(t, garou.WithMaxMessageSize(4096), garou.WithSendQueueBytes(256<<10))
	// A small receive buffer: the server's writes block soon.
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	ws, _, err := websocket.Dial(ctx, w.ws, &websocket.DialOptions{
		Subprotocols: []string{wsgarou.Subprotocol},
		HTTPClient:   &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}},
	})
	require.NoError(t, err)
	defer ws.CloseNow()
	slow := &wsClient{t: t, ctx: ctx, ws: ws}
	slow.send(map[string]any{"type": "hello", "name": "slow", "rooms": []map[string]any{{"room": "r"}}})
	slow.expect("welcome")
	slow.expect("joined")
	reader := w.quic(t, ctx, "reader", garou.WithRooms("r"))

	// The slow client reads nothing from here on; the reader reads all,
	// without a reconnection.
	require.Equal(t, uint64(0), w.srv.Stats().Closes[garou.CloseSlowConsumer])
	text := strings.Repeat("x", 2000)
	got := make(chan error, 1)
	progress := make(chan struct{}, 64)
	const n, window = 3000, 32
	go func() {
		for i := 0; i < n; {
			m, err := reader.Receive(ctx)
			if err != nil {
				got <- err
				return
			}
			if m.Type == garou.TypeText {
				i++
				progress <- struct{}{}
			}
		}
		got <- nil
	}()
	// Paced by the reader: at most window texts ahead of it.
	for i := range n {
		if i >= window {
			select {
			case <-progress:
			case err := <-got:
				require.NoError(t, err)
			}
		}
		_, err := w.srv.Publish(ctx, "r", text)
		require.NoError(t, err)
	}
	require.NoError(t, <-got)
	// Its leave is told: it was cut.
	for {
		m, err := reader.Receive(ctx)
		require.NoError(t, err)
		if m.Type == garou.TypeLeave && m.User.Name == "slow" {
			require.Equal(t, "slow", m.Reason)
			break
		}
	}
	require.Equal(t, uint64(1), w.srv.Stats().Closes[garou.CloseSlowConsumer])
	// Its connection is closed: with the status 4259 if the close frame
	// could still be written after what the client did not read, which
	// here it could not.
	bye, st := slow.closed()
	require.Nil(t, bye)
	require.Contains(t, []websocket.StatusCode{-1, websocket.StatusCode(4000 + int(garou.CloseSlowConsumer))}, st)
}

// TestPing: a client that answers no ping (here: reads nothing) is cut
// after a ping interval or two, and its rooms are told it was lost.
func TestPing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := newWorldWS(t, &wsgarou.Options{PingInterval: 100 * time.Millisecond})
	q := w.quic(t, ctx, "watcher", garou.WithRooms("r"))
	mute := w.dialWS(t, ctx)
	mute.send(map[string]any{"type": "hello", "name": "mute", "rooms": []map[string]any{{"room": "r"}}})
	start := time.Now()
	for {
		m, err := q.Receive(ctx)
		require.NoError(t, err)
		if m.Type == garou.TypeLeave && m.User.Name == "mute" {
			require.Equal(t, "lost", m.Reason)
			break
		}
	}
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestSubprotocol(t *testing.T) {
	require.Equal(t, "garou.4", wsgarou.Subprotocol)
}

// TestHandshakeTimeout: a WebSocket that sends no hello is told so within
// the handshake timeout, as a QUIC connection is.
func TestHandshakeTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := newWorld(t, garou.WithHandshakeTimeout(200*time.Millisecond))
	c := w.dialWS(t, ctx)
	start := time.Now()
	bye, _ := c.closed()
	require.Equal(t, "handshake_timeout", bye["code"])
	require.Less(t, time.Since(start), 5*time.Second)
}
