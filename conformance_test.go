package garou

// PROTOCOL.md conformance: every example frame in the document is checked
// against the code. Client examples must decode as requests; server
// examples must have the shape (frame type, the set of fields, nested ones
// included, and the code of an error or bye) of a frame a real server sent
// over QUIC in the scenario below, so that the document cannot drift from
// the wire.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"
)

// docFrames returns the one-line JSON frames of PROTOCOL.md's json blocks,
// by the number of the section ("5", "6", ...) they are in.
func docFrames(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open("PROTOCOL.md")
	require.NoError(t, err)
	defer f.Close()
	out := make(map[string][]string)
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	section, inJSON := "", false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			section, _, _ = strings.Cut(strings.TrimPrefix(line, "## "), ".")
		case line == "```json":
			inJSON = true
		case strings.HasPrefix(line, "```"):
			inJSON = false
		case inJSON && strings.HasPrefix(line, `{"type":`):
			out[section] = append(out[section], line)
		}
	}
	require.NoError(t, sc.Err())
	return out
}

// shape describes a frame by its type, its fields (nested objects' and
// list elements' fields as "from.id", "users[].name") and the code of an
// error or bye: everything but the values that change from run to run.
func shape(body []byte) string {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return "not JSON: " + err.Error()
	}
	var keys []string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				keys = append(keys, prefix+k)
				walk(prefix+k+".", e)
			}
		case []any:
			for _, e := range v {
				walk(strings.TrimSuffix(prefix, ".")+"[].", e)
			}
		}
	}
	walk("", m)
	sort.Strings(keys)
	keys = slices.Compact(keys)
	s := fmt.Sprintf("%v %v", m["type"], keys)
	if m["type"] == "error" || m["type"] == "bye" {
		s += fmt.Sprintf(" code=%v", m["code"])
	}
	return s
}

func TestProtocolDocumentClientFramesDecode(t *testing.T) {
	frames := docFrames(t)
	require.NotEmpty(t, frames["5"])
	for _, f := range frames["5"] {
		_, err := decodeRequest([]byte(f))
		require.NoError(t, err, "PROTOCOL.md §5 example %s", f)
	}
}

// TestProtocolDocumentServerFramesAreSent runs a scenario that makes the
// server send every kind of frame PROTOCOL.md §6 shows, captures what it
// sends, and checks each example against the captured shapes.
func TestProtocolDocumentServerFramesAreSent(t *testing.T) {
	sent := &shapes{seen: make(map[string]string)}
	quiet := WithLogger(slog.New(slog.DiscardHandler))

	// Server one: rooms, texts, direct messages, lists, errors, kick.
	s1, addr1 := conformanceServer(t, quiet, WithMaxRoomMembers(2))
	alice := wireDial(t, addr1, sent)
	alice.send(`{"type":"hello","name":"alice","rooms":[{"room":"lobby"}]}`)
	alice.expect("welcome")
	alice.expect("joined")
	bob := wireDial(t, addr1, sent)
	bob.send(`{"type":"hello","name":"bob","rooms":[{"room":"lobby","history":5},{"room":"dev"}]}`)
	bob.expect("welcome")
	bob.expect("joined")
	bob.expect("joined")
	alice.expect("presence") // bob joined
	_, err := s1.Publish(context.Background(), "dev", "announcement")
	require.NoError(t, err)
	bob.expect("text")
	alice.send(`{"type":"join","ref":5,"room":"dev","history":10}`)
	alice.expect("joined")
	alice.expect("text") // the announcement, replayed
	alice.send(`{"type":"typing","room":"lobby"}`)
	bob.expect("typing")
	alice.send(`{"type":"text","ref":1,"room":"lobby","text":"hi bob"}`)
	alice.expect("text")
	alice.expect("ack")
	alice.send(`{"type":"direct","ref":4,"to":"BOB","text":"psst"}`)
	alice.expect("ack")
	bob.expect("direct")
	alice.send(`{"type":"users","ref":10}`)
	alice.expect("users")
	alice.send(`{"type":"members","ref":11,"room":"lobby"}`)
	alice.expect("users")
	carol := wireDial(t, addr1, sent)
	carol.send(`{"type":"hello","name":"carol","rooms":[{"room":"lobby"},{"room":"dev"}]}`)
	carol.expect("welcome")
	carol.expect("error") // dev is full
	alice.send(`{"type":"leave","ref":8,"room":"dev"}`)
	alice.expect("ack")
	for !strings.Contains(string(bob.expectIn("presence", "dev")), `"op":"leave"`) { // alice left dev
	}
	alice.send(`{"type":"text","ref":13,"room":"dev","text":"hello?"}`)
	alice.expect("error")
	alice.send(`{"type":"text","ref":15,"from":{"id":"1","name":"x"},"text":"spoof"}`)
	alice.expect("error")
	alice.send("{\"type\":\"text\",\"text\":\"\xff\"}")
	alice.expect("error")
	taken := wireDial(t, addr1, sent)
	taken.send(`{"type":"hello","name":"bob"}`)
	taken.expect("bye")
	huge := wireDial(t, addr1, sent)
	_, err = huge.st.Write([]byte{0xff, 0xff, 0xff, 0xff})
	require.NoError(t, err)
	huge.expect("bye")
	require.NoError(t, s1.Kick("bob", "go away"))
	bob.expect("bye")
	alice.send(`{"type":"bye"}`)
	alice.expect("bye")

	// Server two: rate limit, size limits, gaps, shutdown.
	s2, addr2 := conformanceServer(t, quiet, WithRateLimit(1, 1), WithHistorySize(1), WithPresenceLimit(0))
	dave := wireDial(t, addr2, sent)
	dave.send(`{"type":"hello","name":"dave","max_size":4096}`)
	dave.expect("welcome")
	dave.expect("joined")
	erin := wireDial(t, addr2, sent)
	erin.send(`{"type":"hello","name":"erin"}`)
	erin.expect("welcome")
	erin.expect("joined")
	dave.expect("presence") // erin joined: the count alone
	for _, text := range []string{"one", "two", strings.Repeat("x", 5000)} {
		_, err := s2.Publish(context.Background(), DefaultRoom, text)
		require.NoError(t, err)
	}
	dave.expect("error") // not_delivered: the third is over its max_size
	erin.send(`{"type":"users","ref":1}`)
	erin.send(`{"type":"users","ref":2}`)
	erin.expect("error") // rate_limited
	frank := wireDial(t, addr2, sent)
	frank.send(`{"type":"hello","name":"frank","rooms":[{"room":"lobby","since":1},{"room":"fresh","since":7}]}`)
	frank.expect("welcome")
	frank.expect("joined")
	frank.expect("gap")
	frank.expect("joined")
	frank.expect("gap")
	shut := make(chan error, 1)
	go func() { shut <- s2.Shutdown(context.Background()) }()
	for _, w := range []*wireConn{dave, erin, frank} {
		w.expect("bye")
		_ = w.qc.CloseWithError(0, "bye") // as a client should, not waiting for the linger
	}
	require.NoError(t, <-shut)

	frames := docFrames(t)
	require.NotEmpty(t, frames["6"])
	for _, f := range frames["6"] {
		want := shape([]byte(f))
		sent.mu.Lock()
		_, ok := sent.seen[want]
		sent.mu.Unlock()
		if !ok {
			t.Errorf("PROTOCOL.md §6 shows a frame the server did not send in this shape:\n  doc:  %s\n  shape %s\nsent:\n%s", f, want, sent)
		}
	}
}

type shapes struct {
	mu   sync.Mutex
	seen map[string]string // shape → a frame of that shape
}

func (s *shapes) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range s.seen {
			if !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(&b, "  %s\n    %s\n", k, s.seen[k])
	}
	return b.String()
}

func conformanceServer(t *testing.T, opts ...ServerOption) (*Server, string) {
	t.Helper()
	srv, err := NewServer(opts...)
	require.NoError(t, err)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(context.Background(), pc)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
		_ = pc.Close()
	})
	return srv, pc.LocalAddr().String()
}

// wireConn is a client that speaks raw frames and records the shape of
// every frame it receives.
type wireConn struct {
	t      *testing.T
	qc     *quic.Conn
	st     *quic.Stream
	frames chan []byte // from every stream, as they arrive
	held   [][]byte    // frames expect passed over, in order
}

func wireDial(t *testing.T, addr string, sent *shapes) *wireConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{ALPN}}, nil)
	require.NoError(t, err)
	st, err := qc.OpenStreamSync(ctx)
	require.NoError(t, err)
	w := &wireConn{t: t, qc: qc, st: st, frames: make(chan []byte, 64)}
	done := make(chan struct{})
	var readers sync.WaitGroup
	read := func(r io.Reader) {
		fr := frameReader{r: r, max: DefaultMaxMessageSize}
		for {
			body, err := fr.next()
			if err != nil {
				return
			}
			b := slices.Clone(body)
			sh := shape(b)
			sent.mu.Lock()
			sent.seen[sh] = string(b)
			sent.mu.Unlock()
			w.frames <- b
		}
	}
	readers.Go(func() { read(st) })
	readers.Go(func() {
		for { // the room streams
			rs, err := qc.AcceptUniStream(context.Background())
			if err != nil {
				return
			}
			readers.Go(func() { read(rs) })
		}
	})
	go func() {
		defer close(done)
		readers.Wait()
		close(w.frames)
	}()
	t.Cleanup(func() {
		_ = qc.CloseWithError(0, "test over")
		for range w.frames { // drain so the reader can end
		}
		<-done
	})
	return w
}

func (w *wireConn) send(body string) {
	w.t.Helper()
	_, err := w.st.Write(append(encodeLen(len(body)), body...))
	require.NoError(w.t, err)
}

func encodeLen(n int) []byte { return []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)} }

// expect returns the first frame of type typ, of those passed over before
// or of those to come. The streams (control, and one per room) are each in
// order, not with one another: a frame passed over may be one a later
// expect waits for.
func (w *wireConn) expect(typ string) []byte {
	w.t.Helper()
	return w.expectIn(typ, "")
}

// expectIn is expect for a frame of room (any, if "").
func (w *wireConn) expectIn(typ, room string) []byte {
	w.t.Helper()
	is := func(b []byte) bool {
		var head struct{ Type, Room string }
		require.NoError(w.t, json.Unmarshal(b, &head))
		return head.Type == typ && (room == "" || head.Room == room)
	}
	if i := slices.IndexFunc(w.held, is); i >= 0 {
		b := w.held[i]
		w.held = slices.Delete(w.held, i, i+1)
		return b
	}
	timeout := time.After(5 * time.Second)
	for {
		select {
		case b, ok := <-w.frames:
			require.True(w.t, ok, "connection ended waiting for %q", typ)
			if is(b) {
				return b
			}
			w.held = append(w.held, b)
		case <-timeout:
			w.t.Fatalf("no %q frame within 5 s", typ)
		}
	}
}
