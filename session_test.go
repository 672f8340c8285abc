package garou_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"
)

// ackLoser is a history store that, once armed, keeps the next text and
// then holds its Append until the connection ends: the text is kept but
// never acknowledged, as with a server killed between its store's write
// and the acknowledgement.
type ackLoser struct {
	garou.SeqKeeper
	armed atomic.Bool
	kept  chan struct{}
}

func (a *ackLoser) Append(ctx context.Context, room string, m garou.ChatMessage) error {
	if err := a.SeqKeeper.Append(ctx, room, m); err != nil {
		return err
	}
	if a.armed.CompareAndSwap(true, false) {
		close(a.kept)
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// TestSendAckLostAcrossRestart: a text kept by a server that then stops
// before acknowledging it is sent again by its client (same idempotency
// key) to the server restarted with the same data directory and store;
// the session is restored from its token (same user ID), the retry gets
// the original acknowledgement, and the text is kept and delivered once.
// The other member never sees the restored user leave other than by the
// shutdown, nor come back under another ID.
func TestSendAckLostAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	store := &ackLoser{SeqKeeper: garou.NewMemoryHistory(100).(garou.SeqKeeper), kept: make(chan struct{})}
	opts := []garou.ServerOption{garou.WithDataDir(dir), garou.WithHistoryStore(store), garou.WithPresenceInterval(0)}
	r := &restartable{t: t, addr: "127.0.0.1:0"}
	r.start(opts...)
	clientOpts := []garou.ClientOption{garou.WithFingerprint(r.srv.Fingerprint()),
		garou.WithReconnectBackoff(time.Millisecond, 50*time.Millisecond)}
	alice, err := garou.Dial(ctxT(t), r.addr, "alice", clientOpts...)
	require.NoError(t, err)
	defer alice.Close()
	bob, err := garou.Dial(ctxT(t), r.addr, "bob", clientOpts...)
	require.NoError(t, err)
	defer bob.Close()
	aliceID, bobID := alice.User().ID, bob.User().ID
	seq, err := alice.SendTo(ctxT(t), garou.DefaultRoom, "before")
	require.NoError(t, err)
	require.Equal(t, uint64(1), seq)

	store.armed.Store(true)
	type result struct {
		seq uint64
		err error
	}
	sent := make(chan result, 1)
	go func() {
		seq, err := alice.SendTo(ctxT(t), garou.DefaultRoom, "lost")
		sent <- result{seq, err}
	}()
	<-store.kept
	require.NoError(t, r.srv.Close()) // the acknowledgement is never sent
	r.shutdown()
	r.start(opts...)

	res := <-sent
	require.NoError(t, res.err)
	require.Equal(t, uint64(2), res.seq, "the original acknowledgement")
	require.Equal(t, aliceID, alice.User().ID, "the session restored")
	require.Equal(t, bobID, bob.User().ID, "the session restored")
	_, err = r.srv.Publish(ctxT(t), garou.DefaultRoom, "after")
	require.NoError(t, err)

	kept, _, err := store.After(ctxT(t), garou.DefaultRoom, 0)
	require.NoError(t, err)
	var texts []string
	for _, m := range kept {
		texts = append(texts, m.Text)
	}
	require.Equal(t, []string{"before", "lost", "after"}, texts, "kept once")

	for _, c := range []*garou.Client{alice, bob} {
		var seqs []uint64
		texts = nil
		for len(texts) < 3 {
			m, err := c.Receive(ctxT(t))
			require.NoError(t, err)
			switch m.Type {
			case garou.TypeText:
				texts = append(texts, m.Text)
				seqs = append(seqs, m.Seq)
			case garou.TypeGap:
				t.Fatalf("%s: a gap: %+v", c.User().Name, m)
			case garou.TypeLeave:
				require.Equal(t, "shutdown", m.Reason, "%s: %s left", c.User().Name, m.User.Name)
			case garou.TypeJoin:
				require.Contains(t, []string{aliceID, bobID}, m.User.ID, "%s: %s came back as another user", c.User().Name, m.User.Name)
			}
		}
		require.Equal(t, []string{"before", "lost", "after"}, texts, c.User().Name)
		require.Equal(t, []uint64{1, 2, 3}, seqs, c.User().Name)
	}
}

// deafConn is a client's socket that, while deaf, drops every datagram it
// receives: the client's requests reach the server, their replies never
// reach the client.
type deafConn struct {
	net.PacketConn
	deaf atomic.Bool
}

func (d *deafConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := d.PacketConn.ReadFrom(p)
		if err != nil || !d.deaf.Load() {
			return n, addr, err
		}
	}
}

// TestDirectAckLostAcrossRestart: a direct message delivered by a server
// that then crashes before its acknowledgement reaches the sender is sent
// again by the sender's client (same idempotency key) to the server
// restarted with the same data directory, which remembers nothing of it
// and delivers it again, with the ID it had the first time: the
// recipient's client drops the copy, and its user receives the message
// once.
func TestDirectAckLostAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	opts := []garou.ServerOption{garou.WithDataDir(dir), garou.WithPresenceInterval(0)}
	r := &restartable{t: t, addr: "127.0.0.1:0"}
	r.start(opts...)
	clientOpts := []garou.ClientOption{garou.WithFingerprint(r.srv.Fingerprint()),
		garou.WithReconnectBackoff(time.Millisecond, 50*time.Millisecond)}
	var sock atomic.Pointer[deafConn] // alice's latest
	alice, err := garou.Dial(ctxT(t), r.addr, "alice", append(clientOpts, garou.WithPacketConn(func(context.Context) (net.PacketConn, error) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		d := &deafConn{PacketConn: pc}
		sock.Store(d)
		return d, nil
	}))...)
	require.NoError(t, err)
	defer alice.Close()
	bobStates := make(chan garou.StateChange, 64)
	// Bob sends nothing: a short keep-alive has him notice the crash soon.
	bob, err := garou.Dial(ctxT(t), r.addr, "bob", append(clientOpts, garou.WithKeepAlive(100*time.Millisecond),
		garou.WithStateHandler(func(sc garou.StateChange) { bobStates <- sc }))...)
	require.NoError(t, err)
	defer bob.Close()
	first := sock.Load()

	first.deaf.Store(true)
	sent := make(chan error, 1)
	go func() { sent <- alice.SendDirect(ctxT(t), "bob", "psst") }()
	m := next(t, bob, garou.TypeDirect)
	require.Equal(t, "psst", m.Text)
	r.crash() // alice never hears the acknowledgement
	r.start(opts...)
	for sc := range bobStates {
		require.NotEqual(t, garou.StateClosed, sc.State, "%v", sc.Err)
		if sc.State == garou.StateResumed {
			break
		}
	}
	first.deaf.Store(false) // alice hears the restarted server's reset

	require.NoError(t, <-sent)
	require.NotSame(t, first, sock.Load(), "alice reconnected")
	require.Equal(t, uint64(1), r.srv.Stats().Directs, "delivered again by the restarted server")
	require.NoError(t, alice.SendDirect(ctxT(t), "bob", "after"))
	var texts []string
	for len(texts) == 0 || texts[len(texts)-1] != "after" {
		d := next(t, bob, garou.TypeDirect)
		require.Equal(t, "alice", d.From.Name)
		texts = append(texts, d.Text)
	}
	require.Equal(t, []string{"after"}, texts, "the copy dropped")
}

// amyRig has raw clients say hello as amy, one connection at a time, to
// a server where bea, a Go client in the same room, tells when amy's
// connection is gone (the server then no longer holds her session).
type amyRig struct {
	t    *testing.T
	srv  *garou.Server
	bea  *garou.Client
	said []string // what bea heard amy say
}

func newAmyRig(t *testing.T, opts ...garou.ServerOption) *amyRig {
	srv := startServer(t, append([]garou.ServerOption{garou.WithPresenceInterval(0)}, opts...)...)
	return &amyRig{t: t, srv: srv, bea: dial(t, srv, "bea", garou.WithReconnect(0), garou.WithToken("bea"))}
}

// hello connects with hello's fields (name amy unless given) and returns
// the welcome, once amy's room is joined.
func (r *amyRig) hello(hello map[string]any) (*rawClient, rawMsg) {
	r.t.Helper()
	c := rawDial(r.t, r.srv)
	hello["type"] = "hello"
	if hello["name"] == nil {
		hello["name"] = "amy"
	}
	c.sendJSON(hello)
	w := c.expect("welcome", "bye")
	require.Equal(r.t, "welcome", w.typ(), "%v", w)
	c.expect("joined")
	return c, w
}

// quit says bye on c and waits until bea sees amy leave.
func (r *amyRig) quit(c *rawClient) {
	r.t.Helper()
	c.sendJSON(map[string]any{"type": "bye"})
	c.closed()
	for {
		m := next(r.t, r.bea, garou.TypeText, garou.TypeLeave)
		if m.Type == garou.TypeLeave && m.User.Name == "amy" {
			return
		}
		if m.Type == garou.TypeText {
			r.said = append(r.said, m.Text)
		}
	}
}

func welcomeUser(w rawMsg) (id, joinedAt string) {
	u := w["user"].(map[string]any)
	return u["id"].(string), u["joined_at"].(string)
}

// TestSessionTokenRestored: with a data directory, the token of a session
// whose connection the server already dropped restores it: same user ID
// and joined_at, a renewed token, and a text sent again with a key the
// session had sequenced gets its original acknowledgement. A token
// altered by one character, or presented under an authenticator that
// names another user, starts a new session instead.
func TestSessionTokenRestored(t *testing.T) {
	r := newAmyRig(t, garou.WithDataDir(t.TempDir()),
		garou.WithAuthenticator(func(_ context.Context, h garou.Hello) (garou.Identity, error) {
			return garou.Identity{Name: h.Name, ID: h.Token}, nil
		}))

	a, w := r.hello(map[string]any{"token": "u-amy"})
	token := w.str("session")
	id, since := welcomeUser(w)
	require.Equal(t, "u-amy", id)
	a.sendJSON(map[string]any{"type": "text", "ref": 1, "text": "once", "key": "k1"})
	ack := a.expect("ack")
	r.quit(a)

	b, w := r.hello(map[string]any{"token": "u-amy", "session": token})
	require.Equal(t, "u-amy", w["user"].(map[string]any)["id"])
	_, joinedAt := welcomeUser(w)
	require.Equal(t, since, joinedAt, "the same session")
	require.NotEqual(t, token, w.str("session"), "its token renewed")
	b.sendJSON(map[string]any{"type": "text", "ref": 2, "text": "once", "key": "k1"})
	again := b.expect("ack")
	require.Equal(t, ack.num("seq"), again.num("seq"), "acknowledged as it was")
	require.Equal(t, ack.str("id"), again.str("id"))
	b.sendJSON(map[string]any{"type": "text", "ref": 3, "text": "new", "key": "k2"})
	require.Equal(t, ack.num("seq")+1, b.expect("ack").num("seq"))
	r.quit(b)

	// Altered: one character of the token.
	forged := []byte(token)
	forged[len(forged)/2] ^= 1
	c, w := r.hello(map[string]any{"token": "u-amy", "session": string(forged)})
	require.NotEqual(t, token, w.str("session"), "a new session")
	c.sendJSON(map[string]any{"type": "text", "ref": 1, "text": "new again", "key": "k2"})
	require.Equal(t, ack.num("seq")+2, c.expect("ack").num("seq"), "its keys are its own")
	r.quit(c)

	// Another user by the authenticator's word.
	d, w := r.hello(map[string]any{"token": "u-other", "session": token})
	id, _ = welcomeUser(w)
	require.Equal(t, "u-other", id)
	require.NotEqual(t, token, w.str("session"), "a new session")
	r.quit(d)
	require.Equal(t, []string{"once", "new", "new again"}, r.said, "each text once")
}

// TestSessionTokenExpires, on a clock the test moves: a token restores
// its session for WithSessionMaxAge after it was issued, and not from
// then on, when its hello starts a new session as one with a token the
// server does not know; each welcome renews the token, so a session used
// within every max age lives on. A token too old still resumes the
// session from the connection it was given to (a client connected for
// longer than the max age), and no other connection of the session.
func TestSessionTokenExpires(t *testing.T) {
	_, err := garou.NewServer(garou.WithSessionMaxAge(0))
	require.ErrorIs(t, err, garou.ErrInvalidOption, "a max age must be positive")
	const maxAge = 24 * time.Hour
	base := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	var elapsed atomic.Int64
	advance := func(d time.Duration) { elapsed.Add(int64(d)) }
	r := newAmyRig(t, garou.WithDataDir(t.TempDir()), garou.WithSessionMaxAge(maxAge),
		garou.WithClock(func() time.Time { return base.Add(time.Duration(elapsed.Load())) }))

	a, w := r.hello(map[string]any{})
	first := w.str("session")
	amy, since := welcomeUser(w)
	r.quit(a)

	advance(maxAge - time.Nanosecond) // the last instant first is good
	b, w := r.hello(map[string]any{"session": first})
	id, joinedAt := welcomeUser(w)
	require.Equal(t, amy, id, "restored")
	require.Equal(t, since, joinedAt, "restored")
	second := w.str("session")
	require.NotEqual(t, first, second, "renewed")
	r.quit(b)

	advance(time.Nanosecond) // first is maxAge old, second a day less a nanosecond
	c, w := r.hello(map[string]any{"session": first})
	id, _ = welcomeUser(w)
	require.NotEqual(t, amy, id, "a new session")
	require.NotEqual(t, second, w.str("session"))
	r.quit(c)
	d, w := r.hello(map[string]any{"session": second})
	id, _ = welcomeUser(w)
	require.Equal(t, amy, id, "restored by the renewed token")
	third := w.str("session")

	// d holds the session for longer than the max age: its own token
	// still resumes it, an older one of the session does not.
	advance(2 * maxAge)
	_, w = r.hello(map[string]any{"session": third})
	id, _ = welcomeUser(w)
	require.Equal(t, amy, id, "resumed from d")
	require.Equal(t, "replaced", d.expect("bye").str("code"))
	e := rawDial(t, r.srv)
	e.sendJSON(map[string]any{"type": "hello", "name": "amy", "session": second})
	bye := e.expect("bye")
	require.Equal(t, "name_taken", bye.str("code"), "%v", bye)
}

// TestStatelessResetAfterCrash: a server that dies without closing its
// connections (its socket closed under it) while a client waits for the
// acknowledgement of a text it received, started again on the same
// address with the same data directory, answers the client's next packet
// with a stateless reset: the client, which probes a server silent while
// a reply is due, learns that its connection is gone far sooner than its
// idle timeout, resumes, and has its text acknowledged once; a client
// that sends nothing learns it after its probe interval of silence, its
// keep-alive period being longer.
func TestStatelessResetAfterCrash(t *testing.T) {
	dir := t.TempDir()
	store := &ackLoser{SeqKeeper: garou.NewMemoryHistory(100).(garou.SeqKeeper), kept: make(chan struct{})}
	r := &restartable{t: t, addr: "127.0.0.1:0"}
	r.start(garou.WithDataDir(dir), garou.WithHistoryStore(store))
	type change struct {
		garou.StateChange
		at time.Time
	}
	states := make(chan change, 64)
	const idle = time.Minute
	c, err := garou.Dial(ctxT(t), r.addr, "alice", garou.WithFingerprint(r.srv.Fingerprint()),
		garou.WithIdleTimeout(idle), garou.WithReconnectBackoff(time.Millisecond, 50*time.Millisecond),
		garou.WithStateHandler(func(sc garou.StateChange) { states <- change{sc, time.Now()} }))
	require.NoError(t, err)
	defer c.Close()
	for sc := range states {
		if sc.State == garou.StateConnected {
			break
		}
	}
	// A client that sends nothing learns it as soon as its probe interval
	// of silence has passed.
	lurkerStates := make(chan change, 64)
	lurker, err := garou.Dial(ctxT(t), r.addr, "lurker", garou.WithFingerprint(r.srv.Fingerprint()),
		garou.WithProbeInterval(200*time.Millisecond), garou.WithIdleTimeout(idle),
		garou.WithReconnectBackoff(time.Millisecond, 50*time.Millisecond),
		garou.WithStateHandler(func(sc garou.StateChange) { lurkerStates <- change{sc, time.Now()} }))
	require.NoError(t, err)
	defer lurker.Close()
	for sc := range lurkerStates {
		if sc.State == garou.StateConnected {
			break
		}
	}

	store.armed.Store(true)
	sent := make(chan error, 1)
	go func() { sent <- c.Send(ctxT(t), "held") }()
	<-store.kept // received, kept, never acknowledged
	r.crash()
	crashed := time.Now()
	r.start(garou.WithDataDir(dir), garou.WithHistoryStore(store))
	restarted := time.Now()
	sc := <-states
	require.True(t, sc.at.After(crashed), "the client heard of the crash from the dead run")
	noticed := sc.at.Sub(restarted)
	require.Equal(t, garou.StateReconnecting, sc.State, "%v", sc.Err)
	var reset *quic.StatelessResetError
	require.True(t, errors.As(sc.Err, &reset), "lost by a stateless reset: %v", sc.Err)
	require.Less(t, noticed, idle/10)
	t.Logf("the client noticed the crash %v after the restart (idle timeout %v)", noticed.Round(time.Millisecond), idle)
	sc = <-lurkerStates
	require.True(t, sc.at.After(crashed), "the lurker heard of the crash from the dead run")
	require.Equal(t, garou.StateReconnecting, sc.State, "%v", sc.Err)
	require.True(t, errors.As(sc.Err, &reset), "lost by a stateless reset: %v", sc.Err)
	require.Less(t, sc.at.Sub(restarted), idle/10)
	t.Logf("the client that sends nothing noticed it %v after the restart (probe interval 200ms)", sc.at.Sub(restarted).Round(time.Millisecond))
	require.NoError(t, <-sent)
	kept, _, err := store.After(ctxT(t), garou.DefaultRoom, 0)
	require.NoError(t, err)
	require.Len(t, kept, 1, "kept once")
}
