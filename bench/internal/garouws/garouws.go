// Package garouws runs the Garou library under the benchmark over
// WebSocket (wsgarou) with TLS, as browsers reach it: the same server as
// garouimpl's, its connections served through wsgarou's http.Handler on an
// HTTPS listener, and a client that speaks the protocol's frames over
// binary messages (PROTOCOL.md §1.1). Its figures compare with ws-tls's.
package garouws

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/bench/internal/impl"
	"github.com/garou-chat/garou/bench/internal/proto"
	"github.com/garou-chat/garou/wsgarou"
)

// Impl describes Garou over WebSocket to the load generator.
var Impl = impl.Impl{Name: "garou-ws", Serve: Serve, Dial: Dial}

// Serve runs a Garou server, with garouimpl's limits, serving WebSockets
// over TLS only.
func Serve(ctx context.Context, cfg impl.ServerConfig, ready func(addr, fp string)) error {
	n := max(cfg.MaxConns, 1)
	srv, err := garou.NewServer(
		garou.WithLogger(cfg.Logger),
		garou.WithRateLimit(0, 0),
		garou.WithMaxConnections(n),
		garou.WithMaxConnectionsPerAddr(n),
		garou.WithMaxHandshakes(max(n, garou.DefaultMaxHandshakes)),
		garou.WithMaxRoomMembers(max(n, garou.DefaultMaxRoomMembers)),
		garou.WithSendQueueBytes(max(cfg.QueueBytes, garou.DefaultMaxMessageSize)),
	)
	if err != nil {
		return err
	}
	tlsConf, fp, err := proto.ServerTLS("http/1.1")
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/garou", wsgarou.New(srv, nil))
	hs := &http.Server{Handler: mux, ErrorLog: log.New(discard{}, "", 0), ReadHeaderTimeout: 30 * time.Second}
	ready(ln.Addr().String(), fp)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(tls.NewListener(ln, tlsConf)) }()
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	_ = hs.Close()
	_ = srv.Close() // the WebSockets too
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Client is the load side's client.
type Client struct {
	ws    *websocket.Conn
	room  string
	buf   []byte // what Receive has read and not yet parsed
	store []byte // buf's backing array
	ref   atomic.Uint64
}

// Dial connects and returns once the server has joined the client to
// room.
func Dial(ctx context.Context, addr, fp, name, room string) (impl.Client, error) {
	if room == "" {
		room = garou.DefaultRoom
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: proto.PinnedTLS(fp, "http/1.1")}}
	ws, _, err := websocket.Dial(ctx, "wss://"+addr+"/garou", &websocket.DialOptions{
		HTTPClient: hc, Subprotocols: []string{wsgarou.Subprotocol},
	})
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(-1)
	c := &Client{ws: ws, room: room}
	hello, _ := json.Marshal(map[string]any{"type": "hello", "name": name, "rooms": []map[string]string{{"room": room}}})
	if err := ws.Write(ctx, websocket.MessageBinary, proto.AppendFrame(nil, hello)); err != nil {
		ws.CloseNow()
		return nil, err
	}
	for _, want := range []string{"welcome", "joined"} {
		var f frame
		for f.Type != want {
			body, err := c.next(ctx)
			if err != nil {
				ws.CloseNow()
				return nil, fmt.Errorf("garou-ws: waiting for %s: %w", want, err)
			}
			if err := json.Unmarshal(body, &f); err != nil {
				ws.CloseNow()
				return nil, err
			}
			if f.Type == "bye" {
				ws.CloseNow()
				return nil, fmt.Errorf("garou-ws: refused: %s", f.Text)
			}
		}
	}
	return c, nil
}

type frame struct {
	Type string `json:"type"`
	From struct {
		Name string `json:"name"`
	} `json:"from"`
	Text string `json:"text"`
}

// next returns the next frame's body.
func (c *Client) next(ctx context.Context) ([]byte, error) {
	for {
		if len(c.buf) >= 4 {
			n := int(binary.BigEndian.Uint32(c.buf))
			if len(c.buf) >= 4+n {
				body := c.buf[4 : 4+n]
				c.buf = c.buf[4+n:]
				return body, nil
			}
		}
		if err := c.fill(ctx); err != nil {
			return nil, err
		}
	}
}

// fill appends the next message to buf, reading it into the space after
// buf's unparsed bytes, which it first moves to the start of the buffer: a
// body next returned is valid until the next call.
func (c *Client) fill(ctx context.Context) error {
	_, r, err := c.ws.Reader(ctx)
	if err != nil {
		return err
	}
	c.buf = append(c.store[:0], c.buf...)
	for {
		if len(c.buf) == cap(c.buf) {
			c.buf = slices.Grow(c.buf, max(4096, len(c.buf)))
		}
		n, err := r.Read(c.buf[len(c.buf):cap(c.buf)])
		c.buf = c.buf[:len(c.buf)+n]
		if err == io.EOF {
			c.store = c.buf[:0]
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Send writes a text; it does not wait for the server's ack.
func (c *Client) Send(ctx context.Context, text string) error {
	body, err := json.Marshal(map[string]any{"type": "text", "room": c.room, "text": text, "ref": c.ref.Add(1)})
	if err != nil {
		return err
	}
	return c.ws.Write(ctx, websocket.MessageBinary, proto.AppendFrame(nil, body))
}

// Receive returns the next text, skipping every other frame.
func (c *Client) Receive() (string, string, error) {
	for {
		body, err := c.next(context.Background())
		if err != nil {
			return "", "", err
		}
		typ, from, text, err := proto.ParseGarou(body)
		if err != nil {
			return "", "", err
		}
		if string(typ) == proto.TypeText {
			return string(from), string(text), nil
		}
	}
}

// Close closes the connection.
func (c *Client) Close() error { return c.ws.CloseNow() }
