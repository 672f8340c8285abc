package garou_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSendExactlyOnceAcrossCut: a client whose socket is dropped, for
// longer than a reconnect attempt, with 200 sends in flight: every text
// is in every member's sequence exactly once, and every Send that returned
// nil is among them.
func TestSendExactlyOnceAcrossCut(t *testing.T) {
	const total = 200
	// History enough for the sender to resume without a gap.
	srv := startServer(t, garou.WithRateLimit(0, 0), garou.WithHistorySize(2*total))
	var sock cuttable
	states := make(chan garou.StateChange, 64)
	sender := dial(t, srv, "sender", garou.WithPacketConn(sock.listen), garou.WithConnectTimeout(300*time.Millisecond),
		garou.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond),
		garou.WithStateHandler(func(sc garou.StateChange) { states <- sc }))
	watcher := dial(t, srv, "watcher")

	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		acked = map[string]bool{}
		begun = make(chan struct{}, total)
	)
	for i := range total {
		wg.Go(func() {
			text := fmt.Sprint(i)
			begun <- struct{}{}
			if err := sender.Send(ctxT(t), text); assert.NoError(t, err) {
				mu.Lock()
				acked[text] = true
				mu.Unlock()
			}
		})
	}
	for range total / 2 {
		<-begun
	}
	sock.cut(true)
	// Held down until the client has tried and failed once at least.
	for sc := range states {
		if sc.State == garou.StateReconnecting && sc.Attempt == 2 {
			break
		}
	}
	sock.release()
	wg.Wait()
	require.Len(t, acked, total)

	collect := func(c *garou.Client) []string {
		var texts []string
		seen := map[string]bool{}
		for len(texts) < total {
			m := next(t, c, garou.TypeText, garou.TypeGap)
			require.Equal(t, garou.TypeText, m.Type, "no gap expected: %+v", m)
			require.False(t, seen[m.Text], "%q sequenced twice", m.Text)
			seen[m.Text] = true
			texts = append(texts, m.Text)
		}
		return texts
	}
	want := collect(watcher)
	require.Equal(t, want, collect(sender))
	for text := range acked {
		require.Contains(t, want, text)
	}
	// Nothing more: a duplicate would come after the first 200.
	require.NoError(t, sender.Send(ctxT(t), "end"))
	require.Equal(t, "end", next(t, watcher, garou.TypeText).Text)
}

// TestSendNeverWaitsOnReceive: a sender that never calls Receive, with a
// receive buffer of 2, still gets its acknowledgements and replies.
func TestSendNeverWaitsOnReceive(t *testing.T) {
	srv := startServer(t)
	c := dial(t, srv, "deaf", garou.WithReceiveBuffer(2))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 4 {
		require.NoError(t, c.Send(ctx, fmt.Sprint(i)))
	}
	users, err := c.Users(ctx, "")
	require.NoError(t, err)
	require.Len(t, users.Users, 1)
	// Nothing was lost meanwhile.
	for i := range 4 {
		require.Equal(t, fmt.Sprint(i), next(t, c, garou.TypeText).Text)
	}
}

// TestSendOutcome: a Send that gives up says whether its text may have
// been accepted.
func TestSendOutcome(t *testing.T) {
	release := make(chan struct{})
	srv := startServer(t, garou.WithMessageFilter(func(ctx context.Context, in garou.Incoming) (string, error) {
		if in.Text == "slow" {
			<-release
		}
		return in.Text, nil
	}))
	c := dial(t, srv, "a")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := c.Send(ctx, "never")
	require.ErrorIs(t, err, garou.ErrNotSent)
	require.ErrorIs(t, err, context.Canceled)

	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = c.Send(ctx, "slow")
	require.ErrorIs(t, err, garou.ErrOutcomeUnknown)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	close(release)
	require.Equal(t, "slow", next(t, c, garou.TypeText).Text) // it was sequenced after all

	require.NoError(t, c.Close())
	err = c.Send(context.Background(), "late")
	require.ErrorIs(t, err, garou.ErrNotSent)
	require.ErrorIs(t, err, garou.ErrClosed)
}

// TestIdempotencyKeys: the server sequences a key once per session, also
// across a resume, and answers a retry with the original ack.
func TestIdempotencyKeys(t *testing.T) {
	srv := startServer(t, garou.WithSendKeyWindow(2))
	watcher := dial(t, srv, "watcher")
	r := rawDial(t, srv)
	w := r.hello("raw")

	r.sendJSON(map[string]any{"type": "text", "ref": 1, "text": "once", "key": "k-1"})
	a1 := r.expect("ack")
	r.sendJSON(map[string]any{"type": "text", "ref": 2, "text": "once", "key": "k-1"})
	a2 := r.expect("ack")
	require.Equal(t, uint64(2), a2.num("ref"))
	require.Equal(t, a1.num("seq"), a2.num("seq"))
	require.Equal(t, a1.str("id"), a2.str("id"))

	// A resume of the session keeps its keys.
	r2 := rawDial(t, srv)
	r2.sendJSON(map[string]any{"type": "hello", "name": "raw", "session": w.str("session")})
	r2.expect("welcome")
	r2.expect("joined")
	r2.sendJSON(map[string]any{"type": "text", "ref": 1, "text": "once", "key": "k-1"})
	a3 := r2.expect("ack")
	require.Equal(t, a1.str("id"), a3.str("id"))

	// The window holds the last 2 keys: k-1 is forgotten after 2 more.
	for i, k := range []string{"k-2", "k-3"} {
		r2.sendJSON(map[string]any{"type": "text", "ref": 2 + i, "text": k, "key": k})
		r2.expect("ack")
	}
	r2.sendJSON(map[string]any{"type": "text", "ref": 9, "text": "again", "key": "k-1"})
	require.NotEqual(t, a1.str("id"), r2.expect("ack").str("id"))

	for _, bad := range []string{"", "a b", "é", string(make([]byte, garou.MaxKeyLen+1))} {
		if bad == "" {
			continue // absent: no key
		}
		r2.sendJSON(map[string]any{"type": "text", "ref": 10, "text": "x", "key": bad})
		r2.expectError(garou.CodeBadFrame, 10)
	}

	var got []string
	for range 4 {
		got = append(got, next(t, watcher, garou.TypeText).Text)
	}
	require.Equal(t, []string{"once", "k-2", "k-3", "again"}, got)
}

// TestStateChanges: the state handler sees the first connection, a loss
// with its cause, the resume, and the end.
func TestStateChanges(t *testing.T) {
	srv := startServer(t)
	var sock cuttable
	states := make(chan garou.StateChange, 16)
	c := dial(t, srv, "s", garou.WithPacketConn(sock.listen),
		garou.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond),
		garou.WithStateHandler(func(sc garou.StateChange) { states <- sc }))
	require.Equal(t, garou.StateConnecting, (<-states).State)
	require.Equal(t, garou.StateConnected, (<-states).State)
	sock.cut(false)
	sc := <-states
	require.Equal(t, garou.StateReconnecting, sc.State)
	require.Equal(t, 1, sc.Attempt)
	require.Error(t, sc.Err)
	for sc.State == garou.StateReconnecting {
		sc = <-states
	}
	require.Equal(t, garou.StateResumed, sc.State)
	require.NoError(t, c.Close())
	sc = <-states
	require.Equal(t, garou.StateClosed, sc.State)
	require.ErrorIs(t, sc.Err, garou.ErrClosed)
}

// devCert makes a self-signed certificate, for servers that must present
// the same one across a restart.
func devCert(t *testing.T) (*tls.Config, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, garou.Fingerprint(der)
}

// restartable is a server that can be shut down and started again on the
// same address.
type restartable struct {
	t    *testing.T
	addr string
	pc   net.PacketConn
	srv  *garou.Server
	stop func()
}

func (r *restartable) start(opts ...garou.ServerOption) {
	r.t.Helper()
	pc, err := net.ListenPacket("udp", r.addr)
	require.NoError(r.t, err)
	r.addr = pc.LocalAddr().String()
	r.pc = pc
	srv, err := garou.NewServer(append([]garou.ServerOption{garou.WithLogger(quiet)}, opts...)...)
	require.NoError(r.t, err)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(context.Background(), pc) }()
	r.srv = srv
	r.stop = func() {
		require.NoError(r.t, srv.Shutdown(ctxT(r.t)))
		require.NoError(r.t, <-errc)
		pc.Close()
	}
	r.t.Cleanup(func() {
		srv.Close()
		if r.stop != nil {
			r.stop()
			r.stop = nil
		}
	})
}

func (r *restartable) shutdown() { r.stop(); r.stop = nil }

// crash stops the server as a killed process would: its socket is closed
// under it, so its clients are told nothing.
func (r *restartable) crash() {
	r.pc.Close()
	require.NoError(r.t, r.srv.Close())
	r.shutdown()
}

// TestShutdownIsReconnected: a server's graceful shutdown (a deploy) is
// retried; the client resumes on the server that comes back.
func TestShutdownIsReconnected(t *testing.T) {
	conf, fp := devCert(t)
	r := &restartable{t: t, addr: "127.0.0.1:0"}
	r.start(garou.WithTLSConfig(conf))
	states := make(chan garou.StateChange, 64)
	c, err := garou.Dial(ctxT(t), r.addr, "deployed", garou.WithFingerprint(fp),
		garou.WithReconnectBackoff(time.Millisecond, 50*time.Millisecond), garou.WithConnectTimeout(time.Second),
		garou.WithStateHandler(func(sc garou.StateChange) { states <- sc }))
	require.NoError(t, err)
	defer c.Close()
	r.shutdown()
	for sc := range states {
		if sc.State == garou.StateReconnecting {
			code, ok := garou.CloseCodeOf(sc.Err)
			require.True(t, ok, "%v", sc.Err)
			require.Equal(t, garou.CloseServerShutdown, code)
			break
		}
	}
	r.start(garou.WithTLSConfig(conf))
	for sc := range states {
		require.NotEqual(t, garou.StateClosed, sc.State, "%v", sc.Err)
		if sc.State == garou.StateResumed {
			break
		}
	}
	require.NoError(t, c.Send(ctxT(t), "back"))
	require.Equal(t, []string{garou.DefaultRoom}, c.Rooms())
}

// TestPermanentFailuresAreNotRetried: a server back with another
// certificate, and a kick, end the client at once.
func TestPermanentFailuresAreNotRetried(t *testing.T) {
	r := &restartable{t: t, addr: "127.0.0.1:0"}
	r.start()
	c, err := garou.Dial(ctxT(t), r.addr, "pinned", garou.WithFingerprint(r.srv.Fingerprint()),
		garou.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond), garou.WithReconnect(1000))
	require.NoError(t, err)
	defer c.Close()
	r.shutdown()
	r.start() // a new self-signed certificate
	_, err = c.Receive(ctxT(t))
	for err == nil {
		_, err = c.Receive(ctxT(t))
	}
	require.ErrorIs(t, err, garou.ErrFingerprintMismatch)

	k := dial(t, r.srv, "kicked", garou.WithReconnect(1000))
	require.NoError(t, r.srv.Kick("kicked", "bye"))
	_, err = k.Receive(ctxT(t))
	for err == nil {
		_, err = k.Receive(ctxT(t))
	}
	code, _ := garou.CloseCodeOf(err)
	require.Equal(t, garou.CloseKicked, code)
}

// TestDialNoAnswer: nothing listening is reported as such, within the
// connect timeout.
func TestDialNoAnswer(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := pc.LocalAddr().String()
	pc.Close()
	start := time.Now()
	_, err = garou.Dial(ctxT(t), addr, "a", garou.WithInsecureSkipVerify(), garou.WithConnectTimeout(300*time.Millisecond))
	require.ErrorIs(t, err, garou.ErrNoAnswer)
	require.Less(t, time.Since(start), 3*time.Second)
}

// TestRoomsRightAfterDial: the rooms of the hello are the client's when
// Dial returns.
func TestRoomsRightAfterDial(t *testing.T) {
	srv := startServer(t, garou.WithJoinHook(func(_ context.Context, _ garou.User, room string) error {
		if room == "closed" {
			return garou.Refuse("no")
		}
		return nil
	}))
	c := dial(t, srv, "a", garou.WithRooms("one", "closed", "two"))
	require.Equal(t, []string{"one", "two"}, c.Rooms())
}

// TestLeaveDefaultRoom: Leave(ctx, "") leaves DefaultRoom, on both sides.
func TestLeaveDefaultRoom(t *testing.T) {
	srv := startServer(t)
	c := dial(t, srv, "a", garou.WithRooms(garou.DefaultRoom, "other"))
	require.NoError(t, c.Leave(ctxT(t), ""))
	require.Equal(t, []string{"other"}, c.Rooms())
	require.Empty(t, srv.Members(garou.DefaultRoom))
}

// TestLeftRoomIsNotRejoined: a reconnect, even one racing the Leave, does
// not bring the client back into a room it left.
func TestLeftRoomIsNotRejoined(t *testing.T) {
	srv := startServer(t)
	var sock cuttable
	states := make(chan garou.StateChange, 16)
	c := dial(t, srv, "a", garou.WithRooms("x", "y", "z"), garou.WithPacketConn(sock.listen),
		garou.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond),
		garou.WithStateHandler(func(sc garou.StateChange) { states <- sc }))
	awaitState := func(want garou.ConnState) {
		for sc := range states {
			if sc.State == want {
				return
			}
		}
	}
	require.NoError(t, c.Leave(ctxT(t), "x"))
	// Leave while the connection is down: it completes on the next one.
	sock.cut(true)
	awaitState(garou.StateReconnecting)
	left := make(chan error, 1)
	go func() { left <- c.Leave(ctxT(t), "y") }()
	sock.release()
	require.NoError(t, <-left)
	awaitState(garou.StateResumed)
	require.Equal(t, []string{"z"}, c.Rooms())
	// And another reconnect keeps it so.
	sock.cut(false)
	awaitState(garou.StateResumed)
	require.Equal(t, []string{"z"}, c.Rooms())
	for _, room := range []string{"x", "y"} {
		require.Empty(t, srv.Members(room), room)
	}
	require.Equal(t, []string{"a"}, names(srv.Members("z")))
	_, err := c.Members(ctxT(t), "y", "")
	var e *garou.Error
	require.True(t, errors.As(err, &e), "%v", err)
	require.Equal(t, garou.CodeNotInRoom, e.Code)
}

// TestReceiveBackPressure: a client that stops reading past its buffer
// and read-ahead stops taking frames, then goes on where it stopped once
// Receive makes room: nothing lost, nothing out of order.
func TestReceiveBackPressure(t *testing.T) {
	const total = 400 // 400 × 4 KB: past the 1 MiB read-ahead
	srv := startServer(t, garou.WithRateLimit(0, 0))
	slow := dial(t, srv, "slow", garou.WithReceiveBuffer(1), garou.WithReconnect(0))
	talker := dial(t, srv, "talker")
	text := strings.Repeat("x", 4000)
	for i := range total {
		_, err := talker.SendTo(ctxT(t), garou.DefaultRoom, fmt.Sprintf("%d%s", i, text[:3990]))
		require.NoError(t, err)
	}
	for i := range total {
		m := next(t, slow, garou.TypeText)
		require.Equal(t, fmt.Sprintf("%d", i), m.Text[:len(fmt.Sprint(i))])
	}
}

// TestRefusedReconnectIsFinal: an authenticator that refuses a client
// reconnecting ends it after that one attempt, however many it may make.
func TestRefusedReconnectIsFinal(t *testing.T) {
	var refuse atomic.Bool
	srv := startServer(t, garou.WithAuthenticator(func(_ context.Context, h garou.Hello) (garou.Identity, error) {
		if refuse.Load() {
			return garou.Identity{}, garou.Refuse("not any more")
		}
		return garou.Identity{}, nil
	}))
	states := make(chan garou.StateChange, 64)
	var sock cuttable
	c := dial(t, srv, "ann", garou.WithPacketConn(sock.listen), garou.WithReconnect(1000),
		garou.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond),
		garou.WithStateHandler(func(sc garou.StateChange) { states <- sc }))
	refuse.Store(true)
	sock.cut(false)
	attempts := 0
	for {
		select {
		case sc := <-states:
			switch sc.State {
			case garou.StateReconnecting:
				attempts++
			case garou.StateClosed:
				require.Equal(t, 1, attempts, "a refusal is not retried")
				code, ok := garou.CloseCodeOf(sc.Err)
				require.True(t, ok, "%v", sc.Err)
				require.Equal(t, garou.CloseUnauthorized, code)
				require.Contains(t, c.Err().Error(), "not any more")
				return
			}
		case <-ctxT(t).Done():
			t.Fatalf("the client did not stop after %d attempts", attempts)
		}
	}
}

// TestRestartWithDataDir: a server restarted with the same data directory
// and a store that keeps texts presents the same certificate and numbers
// on, so a client pinned to it resumes by number: no gap, nothing twice.
func TestRestartWithDataDir(t *testing.T) {
	dir, hist := t.TempDir(), garou.NewMemoryHistory(100)
	r := &restartable{t: t, addr: "127.0.0.1:0"}
	r.start(garou.WithDataDir(dir), garou.WithHistoryStore(hist))
	fp := r.srv.Fingerprint()
	states := make(chan garou.StateChange, 64)
	c, err := garou.Dial(ctxT(t), r.addr, "alice", garou.WithFingerprint(fp),
		garou.WithReconnectBackoff(time.Millisecond, 50*time.Millisecond),
		garou.WithStateHandler(func(sc garou.StateChange) { states <- sc }))
	require.NoError(t, err)
	defer c.Close()
	for _, text := range []string{"one", "two"} {
		require.NoError(t, c.Send(ctxT(t), text))
	}
	require.Equal(t, uint64(1), next(t, c, garou.TypeText).Seq)
	require.Equal(t, uint64(2), next(t, c, garou.TypeText).Seq)

	r.shutdown()
	r.start(garou.WithDataDir(dir), garou.WithHistoryStore(hist))
	require.Equal(t, fp, r.srv.Fingerprint(), "the same development certificate")
	for sc := range states {
		require.NotEqual(t, garou.StateClosed, sc.State, "%v", sc.Err)
		if sc.State == garou.StateResumed {
			break
		}
	}
	_, err = r.srv.Publish(ctxT(t), garou.DefaultRoom, "three")
	require.NoError(t, err)
	m := next(t, c, garou.TypeText, garou.TypeGap)
	require.Equal(t, garou.TypeText, m.Type, "resumed by number across the restart, no gap: %+v", m)
	require.Equal(t, "three", m.Text, "nothing twice")
	require.Equal(t, uint64(3), m.Seq, "numbering went on")
}
