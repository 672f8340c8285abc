package wsgarou

import (
	"context"
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"
)

// pair returns the server's side of a WebSocket over 127.0.0.1, as the
// Handler makes it, and the client's.
func pair(t *testing.T) (*conn, *websocket.Conn) {
	t.Helper()
	accepted := make(chan *conn, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hw := &hijacked{ResponseWriter: w}
		ws, err := websocket.Accept(hw, r, &websocket.AcceptOptions{Subprotocols: []string{Subprotocol}})
		if err != nil {
			return
		}
		c := newConn(ws, hw, remoteAddr(r))
		go c.readLoop()
		accepted <- c
		<-c.readDone
		c.flushers.Wait()
	}))
	t.Cleanup(hs.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http"), &websocket.DialOptions{Subprotocols: []string{Subprotocol}})
	require.NoError(t, err)
	ws.SetReadLimit(-1)
	c := <-accepted
	t.Cleanup(func() {
		// The client first: the server's close handshake does not wait
		// for a client that does not read.
		_ = ws.CloseNow()
		_ = c.CloseWithError(0, "bye")
	})
	return c, ws
}

func frame(body string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// TestCoalesce: what the streams wrote while the flusher was busy goes out
// as one message, in the order written.
func TestCoalesce(t *testing.T) {
	c, ws := pair(t)
	require.NotNil(t, c.held, "the message goes out in one write of the connection")
	// As if a flusher were busy sending: the writes wait in the buffer.
	c.wmu.Lock()
	c.flushing = true
	c.wmu.Unlock()
	_, err := c.Write(frame(`{"type":"welcome"}`))
	require.NoError(t, err)
	r1, r2 := &roomStream{c: c}, &roomStream{c: c}
	_, err = r1.Write(append(frame(`{"room":"a","seq":1}`), frame(`{"room":"a","seq":2}`)...))
	require.NoError(t, err)
	_, err = r2.Write(frame(`{"room":"b","seq":1}`))
	require.NoError(t, err)
	c.flushers.Add(1)
	go c.flush()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	typ, msg, err := ws.Read(ctx)
	require.NoError(t, err)
	require.Equal(t, websocket.MessageBinary, typ)
	var want []byte
	for _, b := range []string{`{"type":"welcome"}`, `{"room":"a","seq":1}`, `{"room":"a","seq":2}`, `{"room":"b","seq":1}`} {
		want = append(want, frame(b)...)
	}
	require.Equal(t, want, msg)
}

// TestWriteBound: a client that reads nothing holds at most maxPending
// bytes in the buffer; a write past it waits, and fails once its deadline
// passes, with a timeout error.
func TestWriteBound(t *testing.T) {
	c, _ := pair(t)
	big := frame(strings.Repeat("x", 16<<10))
	var err error
	for i := 0; i < 4096 && err == nil; i++ { // far more than the socket buffers take
		_, err = c.Write(big)
		c.wmu.Lock()
		require.LessOrEqual(t, len(c.out), maxPending)
		c.wmu.Unlock()
		if i == 0 {
			require.NoError(t, c.SetWriteDeadline(time.Now().Add(100*time.Millisecond)))
		}
	}
	require.Error(t, err)
	var te interface{ Timeout() bool }
	require.True(t, errors.As(err, &te) && te.Timeout(), "want a timeout, got %v", err)
	require.ErrorIs(t, err, errWriteTimeout)
}

// TestWriteAllocs: a write of a frame allocates nothing once the
// connection is busy.
func TestWriteAllocs(t *testing.T) {
	c, ws := pair(t)
	go func() {
		for {
			if _, _, err := ws.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	f := frame(`{"type":"text","room":"lobby","seq":1,"text":"hi"}`)
	for range 100 {
		_, err := c.Write(f)
		require.NoError(t, err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := c.Write(f); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs)
}
