package garou_test

// Hostile clients: raw QUIC connections that speak the wire protocol
// (PROTOCOL.md) badly on purpose. Each test asserts the documented error
// code or close code, that a normal client alongside is still served
// promptly, and that the attacker's resources are released (it is no
// longer listed; goleak in TestMain checks the goroutines).

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"
)

// rawWait bounds every wait for something the server owes a raw client:
// long, since it only decides how long a failing test takes, and the race
// detector on a loaded two-core machine can stall a replay for seconds.
const rawWait = 15 * time.Second

// rawMsg is a server frame decoded without the library's types.
type rawMsg map[string]any

func (f rawMsg) typ() string { s, _ := f["type"].(string); return s }

func (f rawMsg) str(key string) string { s, _ := f[key].(string); return s }

func (f rawMsg) num(key string) uint64 { n, _ := f[key].(float64); return uint64(n) }

// rawClient is a QUIC connection to a Garou server driven byte by byte.
type rawClient struct {
	t  *testing.T
	qc *quic.Conn
	st *quic.Stream

	// The frames of every stream from the server, as they arrive: the
	// control stream's, then its end (err), and each room stream's (room
	// set). Read from the first read on.
	start  sync.Once
	frames chan rawRead
	done   chan struct{}
	held   []rawRead // room frames expect set aside

	// roomStream, if set before the first read, is called with each room
	// stream after its first frame (the joined) is read: returning false
	// stops reading that stream (the hook may have cancelled it).
	roomStream func(first rawMsg, str *quic.ReceiveStream) bool
	// roomEnds, if set before the first read, reports the end of each
	// room stream as a read with room set and err (io.EOF for a FIN).
	roomEnds bool
}

// rawRead is one frame from the server, or the end of the control stream.
type rawRead struct {
	f    rawMsg
	err  error
	room bool          // from a room's stream
	sid  quic.StreamID // the room stream's
}

// rawTLS is what any client in any language needs: TLS 1.3 (QUIC's
// minimum) with the ALPN garou.ALPN. The tests skip verification; real
// clients verify or pin (PROTOCOL.md).
func rawTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, NextProtos: []string{garou.ALPN}}
}

// rawConn opens a QUIC connection to srv, closed when the test ends.
func rawConn(t *testing.T, srv *garou.Server, conf *quic.Config) *quic.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rawWait)
	defer cancel()
	qc, err := quic.DialAddr(ctx, addrOf(srv), rawTLS(), conf)
	require.NoError(t, err)
	t.Cleanup(func() { _ = qc.CloseWithError(0, "test over") })
	return qc
}

// rawDial connects and opens the one bidirectional stream. Nothing is sent
// yet: the server learns of the stream with its first byte.
func rawDial(t *testing.T, srv *garou.Server) *rawClient {
	t.Helper()
	return rawDialConf(t, srv, nil)
}

func rawDialConf(t *testing.T, srv *garou.Server, conf *quic.Config) *rawClient {
	t.Helper()
	qc := rawConn(t, srv, conf)
	ctx, cancel := context.WithTimeout(context.Background(), rawWait)
	defer cancel()
	st, err := qc.OpenStreamSync(ctx)
	require.NoError(t, err)
	return &rawClient{t: t, qc: qc, st: st}
}

// write sends raw bytes.
func (r *rawClient) write(b []byte) {
	r.t.Helper()
	_, err := r.st.Write(b)
	require.NoError(r.t, err)
}

// rawFrame prefixes body with its 4-byte big-endian length.
func rawFrame(body string) []byte {
	b := make([]byte, 4, 4+len(body))
	binary.BigEndian.PutUint32(b, uint32(len(body)))
	return append(b, body...)
}

// send sends one frame with body as is.
func (r *rawClient) send(body string) { r.t.Helper(); r.write(rawFrame(body)) }

// sendJSON sends v, encoded as JSON, as one frame.
func (r *rawClient) sendJSON(v any) {
	r.t.Helper()
	b, err := json.Marshal(v)
	require.NoError(r.t, err)
	r.send(string(b))
}

// read reads the next frame of any stream, waiting at most rawWait; an
// error is the end of the control stream (or the wait's).
func (r *rawClient) read() (rawMsg, error) {
	rr := r.next()
	return rr.f, rr.err
}

// next returns the next frame set aside, else the next to arrive.
func (r *rawClient) next() rawRead {
	if len(r.held) > 0 {
		rr := r.held[0]
		r.held = r.held[1:]
		return rr
	}
	r.start.Do(r.listen)
	t := time.NewTimer(rawWait)
	defer t.Stop()
	select {
	case rr := <-r.frames:
		return rr
	case <-t.C:
		return rawRead{err: fmt.Errorf("no frame within %v: %w", rawWait, os.ErrDeadlineExceeded)}
	}
}

// listen starts reading the control stream and every room stream the
// server opens, until the connection or the test ends.
func (r *rawClient) listen() {
	r.frames = make(chan rawRead, 1024)
	r.done = make(chan struct{})
	r.t.Cleanup(func() { close(r.done) })
	put := func(rr rawRead) bool {
		select {
		case r.frames <- rr:
			return true
		case <-r.done:
			return false
		}
	}
	go func() {
		for {
			f, err := readRawFrame(r.st)
			if !put(rawRead{f: f, err: err}) || err != nil {
				return
			}
		}
	}()
	go func() {
		for {
			str, err := r.qc.AcceptUniStream(r.qc.Context())
			if err != nil {
				return
			}
			go func() {
				for first := true; ; first = false {
					f, err := readRawFrame(str)
					if err != nil {
						if r.roomEnds {
							put(rawRead{err: err, room: true, sid: str.StreamID()})
						}
						return
					}
					if !put(rawRead{f: f, room: true, sid: str.StreamID()}) {
						return
					}
					if first && r.roomStream != nil && !r.roomStream(f, str) {
						return
					}
				}
			}()
		}
	}()
}

// readRawFrame reads one frame from a stream.
func readRawFrame(st io.Reader) (rawMsg, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(st, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > garou.DefaultMaxMessageSize {
		return nil, fmt.Errorf("server sent a frame of %d bytes", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(st, body); err != nil {
		return nil, fmt.Errorf("stream ended inside a server frame: %w", err)
	}
	var f rawMsg
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("server frame is not a JSON object: %w: %q", err, body)
	}
	return f, nil
}

// roomTraffic are the frames a client in a room receives unasked.
var roomTraffic = map[string]bool{"presence": true, "text": true}

// expect returns the next frame of one of types, skipping room traffic;
// any other frame of the control stream fails the test. The other frames
// of room streams (joined, gap, ...) are set aside for the next reads: the
// streams are ordered each on its own, not with one another.
func (r *rawClient) expect(types ...string) rawMsg {
	r.t.Helper()
	for i, rr := range r.held {
		if slices.Contains(types, rr.f.typ()) {
			r.held = slices.Delete(r.held, i, i+1)
			return rr.f
		}
	}
	held := r.held
	r.held = nil
	defer func() { r.held = append(held, r.held...) }()
	for {
		rr := r.next()
		require.NoError(r.t, rr.err, "waiting for %v", types)
		if slices.Contains(types, rr.f.typ()) {
			return rr.f
		}
		if roomTraffic[rr.f.typ()] {
			continue
		}
		require.True(r.t, rr.room, "waiting for %v, got %v", types, rr.f)
		held = append(held, rr)
	}
}

// welcome returns the welcome, setting aside every frame of the room
// streams that came before it (they may overtake it) for the next reads.
func (r *rawClient) welcome() rawMsg {
	r.t.Helper()
	var held []rawRead
	defer func() { r.held = append(held, r.held...) }()
	for {
		rr := r.next()
		require.NoError(r.t, rr.err, "waiting for the welcome")
		if !rr.room {
			require.Equal(r.t, "welcome", rr.f.typ(), "%v", rr.f)
			return rr.f
		}
		held = append(held, rr)
	}
}

// expectError returns the next error frame and checks its code and ref (0:
// the frame carries none).
func (r *rawClient) expectError(code garou.ErrorCode, ref uint64) rawMsg {
	r.t.Helper()
	f := r.expect("error")
	require.Equal(r.t, string(code), f.str("code"), "%v", f)
	require.Equal(r.t, ref, f.num("ref"), "%v", f)
	return f
}

// hello says hello as name, in the default room, and returns the welcome
// once the lobby is joined.
func (r *rawClient) hello(name string) rawMsg {
	r.t.Helper()
	r.sendJSON(map[string]any{"type": "hello", "name": name})
	w := r.expect("welcome", "bye")
	require.Equal(r.t, "welcome", w.typ(), "hello refused: %v", w)
	j := r.expect("joined")
	require.Equal(r.t, garou.DefaultRoom, j.str("room"))
	return w
}

// closed reads until the connection ends and returns its close code and
// the server's bye, if it sent one. After a bye and the end of the stream
// it closes the connection itself, as the protocol asks a client to; a
// server that closes first is seen as a *quic.ApplicationError, whose code
// must be the one the bye announced. Frames before the bye other than
// room traffic fail the test.
func (r *rawClient) closed() (garou.CloseCode, rawMsg) {
	r.t.Helper()
	return r.closedAfter(false)
}

// closedIgnoringBye is closed for a client that does not close after the
// bye: the server must close the connection itself once it has lingered.
func (r *rawClient) closedIgnoringBye() (garou.CloseCode, rawMsg) {
	r.t.Helper()
	return r.closedAfter(true)
}

func (r *rawClient) closedAfter(ignoreBye bool) (garou.CloseCode, rawMsg) {
	r.t.Helper()
	var bye rawMsg
	for {
		rr := r.next()
		f, err := rr.f, rr.err
		if rr.room {
			continue // a room's last frames, or its stream's end
		}
		if err == nil {
			require.Nil(r.t, bye, "frame after the bye: %v", f)
			if f.typ() == "bye" {
				bye = f
				continue
			}
			require.True(r.t, roomTraffic[f.typ()], "waiting for the end, got %v", f)
			continue
		}
		if errors.Is(err, io.EOF) {
			require.NotNil(r.t, bye, "the stream ended without a bye")
			if !ignoreBye {
				_ = r.qc.CloseWithError(0, "bye")
				return garou.CloseCode(bye.num("close")), bye
			}
			select {
			case <-r.qc.Context().Done():
				err = context.Cause(r.qc.Context())
			case <-time.After(10 * time.Second):
				r.t.Fatal("the server did not close a connection that ignored its bye")
			}
		}
		code := appCode(r.t, err)
		if bye != nil {
			require.Equal(r.t, garou.CloseCode(bye.num("close")), code, "close code differs from the bye's")
		}
		return code, bye
	}
}

// appCode returns the close code of a connection the server closed.
func appCode(t *testing.T, err error) garou.CloseCode {
	t.Helper()
	var ae *quic.ApplicationError
	require.ErrorAs(t, err, &ae)
	require.True(t, ae.Remote, "closed locally: %v", err)
	return garou.CloseCode(ae.ErrorCode)
}

// connClosed waits for qc to be closed by the server and returns the code.
func connClosed(t *testing.T, qc *quic.Conn) garou.CloseCode {
	t.Helper()
	select {
	case <-qc.Context().Done():
	case <-time.After(rawWait):
		t.Fatal("the server did not close the connection")
	}
	return appCode(t, context.Cause(qc.Context()))
}

// exactlyOneRefused opens n connections to srv that say nothing, and checks
// that exactly one of them is refused at admission, with code: which one
// depends on the order in which the server admits them. It returns the
// others, still open.
func exactlyOneRefused(t *testing.T, srv *garou.Server, n int, code garou.CloseCode) []*quic.Conn {
	t.Helper()
	var open []*quic.Conn
	refused := 0
	ended := make(chan *quic.Conn, n)
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), rawWait)
		qc, err := quic.DialAddr(ctx, addrOf(srv), rawTLS(), nil)
		cancel()
		if err != nil { // the refusal overtook the end of the QUIC handshake
			require.Equal(t, code, appCode(t, err))
			refused++
			continue
		}
		t.Cleanup(func() { _ = qc.CloseWithError(0, "test over") })
		go func() { <-qc.Context().Done(); ended <- qc }()
		open = append(open, qc)
	}
	require.LessOrEqual(t, refused, 1, "more than one connection refused")
	if refused == 0 {
		select {
		case qc := <-ended:
			require.Equal(t, code, appCode(t, context.Cause(qc.Context())))
			open = slices.DeleteFunc(open, func(c *quic.Conn) bool { return c == qc })
		case <-time.After(rawWait):
			t.Fatalf("none of %d connections was refused", n)
		}
	}
	return open
}

// requireBye checks a closed() result.
// requireBye checks that the connection ended with a bye naming its close
// code, then that close code.
func requireBye(t *testing.T, code garou.CloseCode, bye rawMsg, wantClose garou.CloseCode) {
	t.Helper()
	require.NotNil(t, bye, "no bye before the close")
	require.Equal(t, wantClose, code, "close code (%v), bye %v", code, bye)
	require.Equal(t, wantClose.String(), bye.str("code"), "%v", bye)
	require.NotEmpty(t, bye.str("text"), "%v", bye)
}

var hostileServedN atomic.Int64

// requireDialsAgain waits until a normal client can connect again, once an
// attacker's connections have been released.
func requireDialsAgain(t *testing.T, srv *garou.Server) {
	t.Helper()
	require.Eventually(t, func() bool {
		c, err := dialErr(t, srv, "bob", garou.WithReconnect(0))
		if err != nil {
			return false
		}
		c.Close()
		return true
	}, rawWait, 50*time.Millisecond)
}

// malloryJoined starts a server with opts, a bystander alice, and a raw
// client, mallory, that said hello and whose join alice has seen.
func malloryJoined(t *testing.T, opts ...garou.ServerOption) (*garou.Server, *garou.Client, *rawClient) {
	t.Helper()
	srv := startServer(t, opts...)
	alice := bystander(t, srv)
	m := rawDial(t, srv)
	m.hello("mallory")
	awaitJoin(t, alice, "mallory")
	return srv, alice, m
}

// requireEjected checks the end of an attack: mallory's connection ends
// with the bye and close code given, alice sees mallory leave for reason,
// the server forgets mallory, and alice is still served.
func requireEjected(t *testing.T, srv *garou.Server, alice *garou.Client, m *rawClient, close garou.CloseCode, reason string) {
	t.Helper()
	c, bye := m.closed()
	requireBye(t, c, bye, close)
	require.Equal(t, reason, awaitLeave(t, alice, "mallory", rawWait).Reason)
	requireGone(t, srv, "mallory")
	requireServed(t, alice)
}

// requireServed checks that cli is served promptly: three texts it sends
// are acknowledged and come back, in order, and no text from anyone else
// arrives meanwhile (so nothing an attacker said was relayed before them).
func requireServed(t *testing.T, cli *garou.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	me := cli.User().Name
	var want []string
	for range 3 {
		text := fmt.Sprintf("%s is served (%d)", me, hostileServedN.Add(1))
		require.NoError(t, cli.Send(ctx, text), "%s not served promptly", me)
		want = append(want, text)
	}
	for len(want) > 0 {
		m, err := cli.Receive(ctx)
		require.NoError(t, err, "%s did not get its texts back promptly", me)
		switch m.Type {
		case garou.TypeText:
			require.NotNil(t, m.From, "%+v", m)
			require.Equal(t, me, m.From.Name, "a text from someone else reached %s: %q", me, m.Text)
			require.Equal(t, want[0], m.Text)
			want = want[1:]
		case garou.TypeError, garou.TypeDirect:
			t.Fatalf("%s got %+v", me, m)
		}
	}
}

// awaitLeave waits for cli to be told that name left, failing on any text
// from name before it: what an ended connection says must not be relayed.
func awaitLeave(t *testing.T, cli *garou.Client, name string, within time.Duration) garou.ChatMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		m, err := cli.Receive(ctx)
		require.NoError(t, err, "%s was not told within %v that %s left", cli.User().Name, within, name)
		switch m.Type {
		case garou.TypeText:
			require.False(t, m.From != nil && m.From.Name == name, "%s's text %q was relayed after its connection ended", name, m.Text)
		case garou.TypeLeave:
			if m.User.Name == name {
				return m
			}
		}
	}
}

// requireGone checks that name is no longer online.
func requireGone(t *testing.T, srv *garou.Server, name string) {
	t.Helper()
	require.NotContains(t, names(srv.Users()), name)
}

// bystander dials the well-behaved client that shares the server with the
// attacker.
func bystander(t *testing.T, srv *garou.Server, opts ...garou.ClientOption) *garou.Client {
	t.Helper()
	return dial(t, srv, "alice", append([]garou.ClientOption{garou.WithReconnect(0)}, opts...)...)
}

// awaitJoin waits for cli to be told that name joined.
func awaitJoin(t *testing.T, cli *garou.Client, name string) {
	t.Helper()
	for {
		if m := next(t, cli, garou.TypeJoin); m.User.Name == name {
			return
		}
	}
}

func TestHostileLengthPrefix4GiB(t *testing.T) {
	srv := startServer(t)
	alice := bystander(t, srv)

	// After the hello: refused from the prefix alone, before any body.
	m := rawDial(t, srv)
	m.hello("mallory")
	awaitJoin(t, alice, "mallory")
	m.write([]byte{0xff, 0xff, 0xff, 0xff})
	code, bye := m.closed()
	requireBye(t, code, bye, garou.CloseTooLarge)
	require.Contains(t, bye.str("text"), "4294967295")
	require.Equal(t, "error", awaitLeave(t, alice, "mallory", rawWait).Reason)
	requireGone(t, srv, "mallory")

	// Instead of the hello: the same.
	m2 := rawDial(t, srv)
	m2.write([]byte{0xff, 0xff, 0xff, 0xff, '{'})
	code, bye = m2.closed()
	requireBye(t, code, bye, garou.CloseTooLarge)
	requireServed(t, alice)
}

func TestHostileTruncatedFrameBeforeHello(t *testing.T) {
	const deadline = 500 * time.Millisecond
	srv := startServer(t, garou.WithHandshakeTimeout(deadline))
	alice := bystander(t, srv)

	// Declares 100 bytes, sends 10, then nothing: the handshake deadline
	// ends it.
	m := rawDial(t, srv)
	start := time.Now()
	m.write(append([]byte{0, 0, 0, 100}, `{"type":"h`...))
	code, bye := m.closed()
	requireBye(t, code, bye, garou.CloseHandshakeTimeout)
	require.Less(t, time.Since(start), deadline+2*time.Second)

	// Declares 100, sends 10, then ends its side of the stream.
	m2 := rawDial(t, srv)
	m2.write(append([]byte{0, 0, 0, 100}, `{"type":"h`...))
	require.NoError(t, m2.st.Close())
	code, bye = m2.closed()
	requireBye(t, code, bye, garou.CloseProtocol)

	require.Equal(t, []string{"alice"}, names(srv.Users()))
	requireServed(t, alice)
}

// TestHostileTruncatedFrameAfterHello: after the hello there is no read
// deadline, so a frame that never completes stalls that connection only,
// like any idle connection, until QUIC's idle timeout drops it when the
// peer goes silent. Everyone else is served meanwhile.
func TestHostileTruncatedFrameAfterHello(t *testing.T) {
	const idle = 2 * time.Second
	srv := startServer(t, garou.WithIdleTimeout(idle))
	// The normal client keeps its connection alive well within the
	// server's idle timeout.
	alice := bystander(t, srv, garou.WithKeepAlive(200*time.Millisecond), garou.WithIdleTimeout(10*time.Second))

	// No keep-alives from the attacker: once it stops, nothing arrives
	// from it at all.
	m := rawDialConf(t, srv, &quic.Config{KeepAlivePeriod: 0, MaxIdleTimeout: 30 * time.Second})
	m.hello("mallory")
	awaitJoin(t, alice, "mallory")
	m.write(append([]byte{0, 0, 0, 100}, `{"type":"t`...))

	// The stall holds only mallory's connection.
	requireServed(t, alice)
	require.Contains(t, names(srv.Users()), "mallory")

	// Silence from mallory (alice is quiet too, so no acknowledgement of
	// room traffic comes from mallory either): the idle timeout ends it.
	l := awaitLeave(t, alice, "mallory", idle+rawWait)
	require.Equal(t, "timeout", l.Reason)
	requireGone(t, srv, "mallory")
	requireServed(t, alice)
}

func TestHostileRandomBytes(t *testing.T) {
	srv := startServer(t)
	alice := bystander(t, srv)
	rng := rand.New(rand.NewPCG(1, 2)) // fixed: a failure replays

	// Framed random bodies after the hello: each is a bad frame; the
	// connection stays open and usable.
	m := rawDial(t, srv)
	m.hello("mallory")
	awaitJoin(t, alice, "mallory")
	for range 5 {
		body := make([]byte, 1+rng.IntN(300))
		for i := range body {
			body[i] = byte(rng.Uint32())
		}
		m.write(rawFrame(string(body)))
		m.expectError(garou.CodeBadFrame, 0)
	}
	m.send(`{"type":"users","ref":7}`)
	require.Equal(t, uint64(7), m.expect("users").num("ref"))
	requireServed(t, alice)

	// Unframed random bytes instead of a hello: the first four are taken
	// as the length, over any limit (a zero first byte is made non-zero so
	// that the length is always at least 16 MiB).
	junk := make([]byte, 64)
	for i := range junk {
		junk[i] = byte(rng.Uint32())
	}
	junk[0] |= 0x80
	m2 := rawDial(t, srv)
	m2.write(junk)
	code, bye := m2.closed()
	requireBye(t, code, bye, garou.CloseTooLarge)

	require.ElementsMatch(t, []string{"alice", "mallory"}, names(srv.Users()))
	require.NoError(t, m.qc.CloseWithError(0, "done"))
	require.Equal(t, "quit", awaitLeave(t, alice, "mallory", rawWait).Reason)
	requireGone(t, srv, "mallory")
	requireServed(t, alice)
}

func TestHostileWrongShape(t *testing.T) {
	_, alice, m := malloryJoined(t)

	for i, body := range []string{
		`{"type":"text","text":5,"ref":1}`,
		`{"type":"text","text":["a"],"ref":2}`,
		`{"type":"join","room":{"name":"x"},"ref":3}`,
		`{"type":"join","room":"x","since":-1,"ref":4}`,
		`{"type":"text","text":"a","ref":5} {"type":"text","text":"b"}`,
		`{"ref":6}`,
		`{"type":null,"ref":7}`,
	} {
		m.send(body)
		m.expectError(garou.CodeBadFrame, uint64(i+1))
	}
	// Not an object at all, or not JSON: no ref can be read.
	for _, body := range []string{`[1,2,3]`, `"text"`, `{"type":"text",`, `nul`} {
		m.send(body)
		m.expectError(garou.CodeBadFrame, 0)
	}
	// Still a working connection: a good text is accepted.
	m.send(`{"type":"text","ref":50,"text":"fine now"}`)
	require.Equal(t, uint64(50), m.expect("ack").num("ref"))
	require.Equal(t, "fine now", next(t, alice, garou.TypeText).Text)
	requireServed(t, alice)
}

// TestHostileEmptyFrame: a zero length prefix is a protocol error that ends
// the connection.
func TestHostileEmptyFrame(t *testing.T) {
	srv, alice, m := malloryJoined(t)
	m.write([]byte{0, 0, 0, 0})
	requireEjected(t, srv, alice, m, garou.CloseProtocol, "error")
}

func TestHostileUnknownType(t *testing.T) {
	srv, alice, m := malloryJoined(t)
	m.send(`{"type":"shout","ref":3,"text":"HELLO"}`)
	m.expectError(garou.CodeUnknownType, 3)
	m.send(`{"type":"TEXT","ref":4,"text":"hi"}`) // types are case-sensitive
	m.expectError(garou.CodeUnknownType, 4)
	m.send(`{"type":"ack","ref":5}`) // a server rawMsg type
	m.expectError(garou.CodeUnknownType, 5)
	requireServed(t, alice)

	// Instead of the hello it ends the connection.
	m2 := rawDial(t, srv)
	m2.send(`{"type":"shout","name":"x"}`)
	code, bye := m2.closed()
	requireBye(t, code, bye, garou.CloseProtocol)

	require.NoError(t, m.qc.CloseWithError(0, "done"))
	awaitLeave(t, alice, "mallory", rawWait)
	requireGone(t, srv, "mallory")
}

func TestHostileInvalidUTF8(t *testing.T) {
	srv, alice, m := malloryJoined(t)
	for _, text := range []string{"bad \xff byte", "\xc3", "surrogate \xed\xa0\x80", "overlong \xc0\xaf"} {
		m.send(`{"type":"text","ref":9,"text":"` + text + `"}`)
		// The frame is refused whole, before it is parsed: no ref.
		m.expectError(garou.CodeBadFrame, 0)
	}
	requireServed(t, alice) // and none of mallory's texts reached alice

	// In a hello's name: refused, and the connection ends.
	m2 := rawDial(t, srv)
	m2.send("{\"type\":\"hello\",\"name\":\"bob\xff\"}")
	code, bye := m2.closed()
	requireBye(t, code, bye, garou.CloseProtocol)
	require.ElementsMatch(t, []string{"alice", "mallory"}, names(srv.Users()))
}

func TestHostileNames(t *testing.T) {
	srv := startServer(t)
	alice := bystander(t, srv)
	for _, tc := range []struct {
		what, name string
		code       garou.CloseCode
	}{
		{"too long", strings.Repeat("m", garou.MaxNameLen+1), garou.CloseBadName},
		{"empty", "", garou.CloseBadName},
		{"control character", "mal\x1blory", garou.CloseBadName},
		{"newline", "mal\nlory", garou.CloseBadName},
		{"invisible character", "mal\u200blory", garou.CloseBadName},
		{"bidi override", "mal\u202elory", garou.CloseBadName},
		{"leading space", " mallory", garou.CloseBadName},
		{"look-alike, Cyrillic a", "\u0430lice", garou.CloseBadName},
		{"look-alike, Greek o", "b\u03bfb", garou.CloseBadName},
		{"case variant of a taken name", "Alice", garou.CloseNameTaken},
		{"upper case of a taken name", "ALICE", garou.CloseNameTaken},
	} {
		t.Run(tc.what, func(t *testing.T) {
			m := rawDial(t, srv)
			m.sendJSON(map[string]any{"type": "hello", "name": tc.name})
			code, bye := m.closed()
			requireBye(t, code, bye, tc.code)
		})
	}
	require.Equal(t, []string{"alice"}, names(srv.Users()))
	requireServed(t, alice)
}

// TestHostileForgedFrom: fields the server stamps (from, id, seq, time) or
// that the protocol does not define are refused, never relayed.
func TestHostileForgedFrom(t *testing.T) {
	_, alice, m := malloryJoined(t)

	a := alice.User()
	for i, v := range []map[string]any{
		{"type": "text", "text": "I am alice", "from": map[string]any{"id": a.ID, "name": a.Name}},
		{"type": "text", "text": "I am alice", "from": "alice"},
		{"type": "direct", "to": "alice", "text": "trust me", "from": map[string]any{"name": "alice"}},
		{"type": "text", "text": "old news", "seq": 1, "id": "x-1", "time": "2020-01-01T00:00:00Z"},
		{"type": "text", "text": "hi", "user": map[string]any{"name": "alice"}},
	} {
		v["ref"] = i + 1
		m.sendJSON(v)
		f := m.expectError(garou.CodeBadFrame, uint64(i+1))
		require.Contains(t, f.str("text"), "unknown field")
	}
	requireServed(t, alice) // nothing mallory sent reached alice

	// mallory's own texts carry mallory's identity, whatever it claims.
	m.send(`{"type":"text","ref":9,"text":"honest"}`)
	m.expect("ack")
	got := next(t, alice, garou.TypeText)
	require.Equal(t, "honest", got.Text)
	require.Equal(t, "mallory", got.From.Name)
}

func TestHostileSecondHello(t *testing.T) {
	srv := startServer(t)
	alice := bystander(t, srv)
	m := rawDial(t, srv)
	w := m.hello("mallory")
	awaitJoin(t, alice, "mallory")
	// A second hello, trying to take over alice's name.
	m.sendJSON(map[string]any{"type": "hello", "name": "alice", "session": w.str("session")})
	code, bye := m.closed()
	requireBye(t, code, bye, garou.CloseProtocol)
	require.Equal(t, "error", awaitLeave(t, alice, "mallory", rawWait).Reason)
	requireGone(t, srv, "mallory")
	require.Equal(t, []string{"alice"}, names(srv.Users()))
	requireServed(t, alice)
}

// TestHostileIgnoresBye: a client that reads its bye but never closes the
// connection is closed by the server after the linger, with the bye's code.
func TestHostileIgnoresBye(t *testing.T) {
	srv, alice, m := malloryJoined(t)
	m.send(`{"type":"hello","name":"mallory"}`)
	start := time.Now()
	code, bye := m.closedIgnoringBye()
	requireBye(t, code, bye, garou.CloseProtocol)
	require.Less(t, time.Since(start), 8*time.Second)
	requireGone(t, srv, "mallory")
	requireServed(t, alice)
}

func TestHostileNoHello(t *testing.T) {
	const deadline = 500 * time.Millisecond
	srv := startServer(t, garou.WithHandshakeTimeout(deadline))
	alice := bystander(t, srv)

	// Connects and never opens a stream (opening one sends nothing until
	// its first byte): closed at the deadline, with no stream to say bye on.
	start := time.Now()
	qc := rawConn(t, srv, nil)
	require.Equal(t, garou.CloseHandshakeTimeout, connClosed(t, qc))
	require.Less(t, time.Since(start), deadline+2*time.Second)

	// Opens the stream but says something else first.
	m := rawDial(t, srv)
	m.send(`{"type":"text","text":"no hello from me"}`)
	code, bye := m.closed()
	requireBye(t, code, bye, garou.CloseProtocol)

	// Says bye before hello.
	m2 := rawDial(t, srv)
	m2.send(`{"type":"bye"}`)
	code, bye = m2.closed()
	requireBye(t, code, bye, garou.CloseProtocol)

	require.Equal(t, []string{"alice"}, names(srv.Users()))
	requireServed(t, alice)
}

// TestHostileHandshakeDeadlineFromConnect: the handshake deadline counts
// from the connection, not from the opening of the stream: a client that
// opens its stream just before the deadline gets no extra time.
func TestHostileHandshakeDeadlineFromConnect(t *testing.T) {
	const deadline = time.Second
	srv := startServer(t, garou.WithHandshakeTimeout(deadline))
	alice := bystander(t, srv)
	m := rawDial(t, srv)
	start := time.Now()
	// The attack's timing: wait until just before the deadline (or until
	// the server closes the connection, which would be early).
	select {
	case <-m.qc.Context().Done():
		t.Fatalf("closed %v after connecting, before the deadline of %v", time.Since(start), deadline)
	case <-time.After(deadline * 8 / 10):
	}
	m.write([]byte{0}) // opens the stream: one byte of a length prefix
	code, bye := m.closed()
	requireBye(t, code, bye, garou.CloseHandshakeTimeout)
	require.Less(t, time.Since(start), deadline+500*time.Millisecond,
		"the handshake deadline restarted when the stream was opened")
	requireServed(t, alice)
}

func TestHostileExtraStreams(t *testing.T) {
	srv, alice, m := malloryJoined(t)

	// The server grants one bidirectional stream and no unidirectional
	// one: QUIC flow control refuses more.
	for range 20 {
		_, err := m.qc.OpenStream()
		var limit *quic.StreamLimitReachedError
		require.ErrorAs(t, err, &limit)
		_, err = m.qc.OpenUniStream()
		require.ErrorAs(t, err, &limit)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err := m.qc.OpenStreamSync(ctx)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// Mallory's one stream still works, and so does everyone else's.
	m.send(`{"type":"users","ref":1}`)
	require.Equal(t, uint64(1), m.expect("users").num("ref"))
	requireServed(t, alice)

	require.NoError(t, m.qc.CloseWithError(0, "done"))
	require.Equal(t, "quit", awaitLeave(t, alice, "mallory", rawWait).Reason)
	requireGone(t, srv, "mallory")
}

// TestHostileFlooding: texts over the rate limit are refused with
// rate_limited; a client that goes on is closed for flooding.
func TestHostileFlooding(t *testing.T) {
	const burst = 3
	threshold := max(burst, 10) // refused frames in a row before the close
	// One token every 100 s: none comes back during the test.
	srv, alice, m := malloryJoined(t, garou.WithRateLimit(0.01, burst))

	// Everything in one write, as fast as it goes: the burst, the
	// refusals, the one refusal too many, and one more text.
	var b []byte
	total := burst + threshold + 2
	for i := 1; i <= total; i++ {
		b = append(b, rawFrame(fmt.Sprintf(`{"type":"text","ref":%d,"text":"spam %d"}`, i, i))...)
	}
	m.write(b)
	// The acks come on the room's stream, the refusals and the bye on the
	// control stream: each in order, in no order with one another.
	var acks, refused []uint64
	var bye rawMsg
	for len(acks) < burst || bye == nil {
		rr := m.next()
		if errors.Is(rr.err, io.EOF) && !rr.room && bye != nil {
			continue // the control stream ended after the bye; the room's may still come
		}
		require.NoError(t, rr.err, "acks %v, refusals %v, bye %v", acks, refused, bye)
		switch f := rr.f; f.typ() {
		case "ack":
			acks = append(acks, f.num("ref"))
		case "error":
			require.Equal(t, string(garou.CodeRateLimited), f.str("code"), "%v", f)
			refused = append(refused, f.num("ref"))
		case "bye":
			bye = f
		default:
			require.True(t, roomTraffic[f.typ()], "%v", f)
		}
	}
	for i := range burst {
		require.Equal(t, uint64(i+1), acks[i])
	}
	require.Len(t, refused, threshold)
	for i := range threshold {
		require.Equal(t, uint64(burst+1+i), refused[i])
	}
	requireBye(t, garou.CloseCode(bye.num("close")), bye, garou.CloseFlooding)

	// alice got the burst, then mallory's leave, and nothing after the
	// burst.
	for i := 1; i <= burst; i++ {
		require.Equal(t, fmt.Sprintf("spam %d", i), next(t, alice, garou.TypeText).Text)
	}
	require.Equal(t, "flooding", awaitLeave(t, alice, "mallory", rawWait).Reason)
	requireGone(t, srv, "mallory")
	requireServed(t, alice) // alice has a bucket of her own
}

// TestHostileBadFrameFlood: bad frames count as refusals too; once the
// server has closed the flooder, nothing more it sends is handled.
func TestHostileBadFrameFlood(t *testing.T) {
	const burst = 3
	threshold := max(burst, 10)
	srv, alice, m := malloryJoined(t, garou.WithRateLimit(0.01, burst))

	var b []byte
	for i := 1; i <= threshold+1; i++ {
		b = append(b, rawFrame(fmt.Sprintf(`{"type":"nope","ref":%d}`, i))...)
	}
	b = append(b, rawFrame(`{"type":"text","ref":99,"text":"said after being closed"}`)...)
	m.write(b)
	for i := 1; i <= threshold; i++ {
		m.expectError(garou.CodeUnknownType, uint64(i))
	}
	requireEjected(t, srv, alice, m, garou.CloseFlooding, "flooding")
}

// TestHostileKickedClientKeepsTalking: a kicked client that ignores its
// bye and goes on sending is not heard, and leaves its rooms at once.
func TestHostileKickedClientKeepsTalking(t *testing.T) {
	srv, alice, m := malloryJoined(t)

	require.NoError(t, srv.Kick("mallory", "behave"))
	m.send(`{"type":"text","ref":1,"text":"you cannot kick me"}`)
	l := awaitLeave(t, alice, "mallory", 2*time.Second)
	require.Equal(t, "kicked", l.Reason)
	requireGone(t, srv, "mallory")

	code, bye := m.closed()
	requireBye(t, code, bye, garou.CloseKicked)
	require.Equal(t, "behave", bye.str("text"))
	requireServed(t, alice)
}

func TestHostileConnectionsPerAddress(t *testing.T) {
	const limit = 3
	srv := startServer(t, garou.WithMaxConnectionsPerAddr(limit))
	alice := bystander(t, srv) // 127.0.0.1, like everyone here: one of three

	m1 := rawDial(t, srv)
	m1.hello("mallory1")
	// Two more, silent: one is admitted, the other, over the limit, is
	// closed at once, before any stream.
	silent := exactlyOneRefused(t, srv, 2, garou.CloseTooManyConns)
	// So is a library client, which says why.
	_, err := dialErr(t, srv, "bob", garou.WithReconnect(0))
	code, ok := garou.CloseCodeOf(err)
	require.True(t, ok, "%v", err)
	require.Equal(t, garou.CloseTooManyConns, code)

	requireServed(t, alice)

	// Released: once the attacker's connections are gone, the address may
	// connect again.
	require.NoError(t, m1.qc.CloseWithError(0, "done"))
	for _, qc := range silent {
		require.NoError(t, qc.CloseWithError(0, "done"))
	}
	require.Equal(t, "quit", awaitLeave(t, alice, "mallory1", rawWait).Reason)
	requireGone(t, srv, "mallory1")
	requireDialsAgain(t, srv)
	requireServed(t, alice)
}

// TestHostileHandshakeSlots: connections that never say hello hold a
// handshake slot each, until the handshake deadline frees it; while all are
// taken, newcomers are refused with server_full, and users already
// welcomed are not affected.
func TestHostileHandshakeSlots(t *testing.T) {
	const slots, deadline = 2, time.Second
	srv := startServer(t, garou.WithMaxHandshakes(slots), garou.WithHandshakeTimeout(deadline))
	alice := bystander(t, srv)
	silent := exactlyOneRefused(t, srv, slots+1, garou.CloseServerFull)
	requireServed(t, alice)
	for _, qc := range silent {
		require.Equal(t, garou.CloseHandshakeTimeout, connClosed(t, qc))
	}
	// The slots are free again.
	requireDialsAgain(t, srv)
	requireServed(t, alice)
}
