package garou_test

import (
	"context"
	"errors"
	"fmt"
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

func TestMessagesStayInTheirRooms(t *testing.T) {
	srv := startServer(t)
	a := dial(t, srv, "a", garou.WithRooms("red"))
	b := dial(t, srv, "b", garou.WithRooms("blue"))
	c := dial(t, srv, "c", garou.WithRooms("red", "blue"))
	require.Equal(t, "c", next(t, a, garou.TypeJoin).User.Name)
	require.Equal(t, "c", next(t, b, garou.TypeJoin).User.Name)

	_, err := a.SendTo(ctxT(t), "red", "to red")
	require.NoError(t, err)
	_, err = b.SendTo(ctxT(t), "blue", "to blue")
	require.NoError(t, err)
	// a is not in blue.
	_, err = a.SendTo(ctxT(t), "blue", "sneak")
	e, ok := errors.AsType[*garou.Error](err)
	require.True(t, ok, "%v", err)
	require.Equal(t, garou.CodeNotInRoom, e.Code)

	ma := next(t, a, garou.TypeText)
	require.Equal(t, "red", ma.Room)
	require.Equal(t, "to red", ma.Text)
	mb := next(t, b, garou.TypeText)
	require.Equal(t, "blue", mb.Room)
	require.Equal(t, "to blue", mb.Text)
	got := map[string]string{}
	for range 2 {
		m := next(t, c, garou.TypeText)
		got[m.Room] = m.Text
	}
	require.Equal(t, map[string]string{"red": "to red", "blue": "to blue"}, got)

	// Members per room; the server lists rooms.
	members, err := c.Members(ctxT(t), "red", "")
	require.NoError(t, err)
	require.Equal(t, []string{"a", "c"}, names(members.Users))
	require.Equal(t, []garou.RoomInfo{{Name: "blue", Members: 2, LastSeq: mb.Seq}, {Name: "red", Members: 2, LastSeq: ma.Seq}}, srv.Rooms())

	// Leaving a room is told to that room only.
	require.NoError(t, c.Leave(ctxT(t), "red"))
	l := next(t, a, garou.TypeLeave)
	require.Equal(t, "red", l.Room)
	require.Equal(t, "left", l.Reason)
	require.Equal(t, []string{"blue"}, c.Rooms())
}

func TestRoomLimits(t *testing.T) {
	srv := startServer(t, garou.WithMaxRoomsPerClient(2), garou.WithMaxRoomMembers(2))
	a := dial(t, srv, "a")
	_, err := a.Join(ctxT(t), "two", 0)
	require.NoError(t, err)
	_, err = a.Join(ctxT(t), "three", 0)
	requireCode(t, err, garou.CodeRoomLimit)
	dial(t, srv, "b")
	require.Empty(t, dial(t, srv, "c").Rooms()) // welcomed; its lobby join is refused as full
	_, err = a.Join(ctxT(t), "bad\x00room", 0)
	require.ErrorIs(t, err, garou.ErrInvalidRoom)
}

func requireCode(t *testing.T, err error, code garou.ErrorCode) {
	t.Helper()
	e, ok := errors.AsType[*garou.Error](err)
	require.True(t, ok, "want %s, got %v", code, err)
	require.Equal(t, code, e.Code, "%v", err)
}

func TestDirectMessageReachesOnlyItsTarget(t *testing.T) {
	srv := startServer(t)
	a := dial(t, srv, "a")
	b := dial(t, srv, "b")
	c := dial(t, srv, "c")
	require.NoError(t, a.SendDirect(ctxT(t), "b", "psst"))
	m := next(t, b, garou.TypeDirect)
	require.Equal(t, "psst", m.Text)
	require.Equal(t, "a", m.From.Name)
	require.Equal(t, "b", m.To)
	requireCode(t, a.SendDirect(ctxT(t), "nobody", "hello?"), garou.CodeNoSuchUser)
	// c got nothing but presence: a text sent after the DM is c's next text,
	// and no direct message came before it.
	require.NoError(t, a.Send(ctxT(t), "public"))
	for {
		m := next0(t, c)
		require.NotEqual(t, garou.TypeDirect, m.Type)
		if m.Type == garou.TypeText {
			require.Equal(t, "public", m.Text)
			break
		}
	}
}

func TestAuthenticatorAcceptsRenamesRefuses(t *testing.T) {
	var seen atomic.Pointer[garou.Hello]
	srv := startServer(t, garou.WithAuthenticator(func(_ context.Context, h garou.Hello) (garou.Identity, error) {
		seen.Store(&h)
		switch h.Token {
		case "ok":
			return garou.Identity{}, nil
		case "vip":
			return garou.Identity{ID: "account-7", Name: "VIP " + h.Name, Data: 42}, nil
		case "boom":
			return garou.Identity{}, errors.New("database down")
		}
		return garou.Identity{}, garou.Refuse("bad token")
	}))
	a := dial(t, srv, "ann", garou.WithToken("ok"))
	require.Equal(t, "ann", a.User().Name)
	h := seen.Load()
	require.Equal(t, "ok", h.Token)
	require.NotNil(t, h.RemoteAddr.(*net.UDPAddr).IP.IsLoopback())

	v := dial(t, srv, "bo", garou.WithToken("vip"))
	require.Equal(t, "VIP bo", v.User().Name)
	require.Equal(t, "account-7", v.User().ID, "the authenticator's ID is the user's")
	require.Nil(t, v.User().Data, "application data stays on the server")
	for _, u := range srv.Users() {
		if u.ID == "account-7" {
			require.Equal(t, 42, u.Data)
		}
	}
	// One connection per ID: the same account from elsewhere is refused.
	_, err := dialErr(t, srv, "bo2", garou.WithToken("vip"))
	code, _ := garou.CloseCodeOf(err)
	require.Equal(t, garou.CloseNameTaken, code, "%v", err)

	_, err = dialErr(t, srv, "eve", garou.WithToken("forged"))
	code, _ = garou.CloseCodeOf(err)
	require.Equal(t, garou.CloseUnauthorized, code)
	require.Contains(t, err.Error(), "bad token")

	_, err = dialErr(t, srv, "eve", garou.WithToken("boom"))
	code, _ = garou.CloseCodeOf(err)
	require.Equal(t, garou.CloseUnauthorized, code)
	require.NotContains(t, err.Error(), "database", "internal errors must not leak")
	require.Equal(t, []string{"ann", "VIP bo"}, names(srv.Users()))
}

func TestMessageFilterPassesRewritesRejects(t *testing.T) {
	srv := startServer(t, garou.WithMessageFilter(func(_ context.Context, m garou.Incoming) (string, error) {
		switch {
		case strings.Contains(m.Text, "darn"):
			return strings.ReplaceAll(m.Text, "darn", "****"), nil
		case strings.Contains(m.Text, "spam"):
			return "", garou.Refuse("no spam")
		}
		return m.Text, nil
	}))
	a := dial(t, srv, "a")
	require.NoError(t, a.Send(ctxT(t), "hello"))
	require.NoError(t, a.Send(ctxT(t), "darn it"))
	err := a.Send(ctxT(t), "buy spam")
	requireCode(t, err, garou.CodeRejected)
	require.Contains(t, err.Error(), "no spam")
	require.NoError(t, a.SendDirect(ctxT(t), "a", "darn self"))
	// The texts come on the room's stream, the direct message on the
	// control stream: in either order with one another.
	var texts, directs []string
	for len(texts) < 2 || len(directs) < 1 {
		m := next(t, a, garou.TypeText, garou.TypeDirect)
		if m.Type == garou.TypeText {
			texts = append(texts, m.Text)
		} else {
			directs = append(directs, m.Text)
		}
	}
	require.Equal(t, []string{"hello", "**** it"}, texts)
	require.Equal(t, []string{"**** self"}, directs)
}

func TestJoinAndLeaveHooks(t *testing.T) {
	var mu sync.Mutex
	var left []string
	srv := startServer(t,
		garou.WithJoinHook(func(_ context.Context, u garou.User, room string) error {
			if room == "staff" && u.Name != "boss" {
				return garou.Refuse("staff only")
			}
			return nil
		}),
		garou.WithLeaveHook(func(u garou.User, room, reason string) {
			mu.Lock()
			left = append(left, fmt.Sprintf("%s/%s/%s", u.Name, room, reason))
			mu.Unlock()
		}))
	a := dial(t, srv, "a")
	boss := dial(t, srv, "boss")
	_, err := a.Join(ctxT(t), "staff", 0)
	requireCode(t, err, garou.CodeRejected)
	_, err = boss.Join(ctxT(t), "staff", 0)
	require.NoError(t, err)
	require.NoError(t, boss.Leave(ctxT(t), "staff"))
	require.NoError(t, a.Close())
	next(t, boss, garou.TypeLeave)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"boss/staff/left", "a/lobby/quit"}, left)
}

// TestSlowHookDelaysOnlyItsUser: a message filter stuck on one user's text
// does not hold up anyone else's.
func TestSlowHookDelaysOnlyItsUser(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	srv := startServer(t, garou.WithMessageFilter(func(ctx context.Context, m garou.Incoming) (string, error) {
		if m.From.Name == "slow" {
			close(entered)
			<-release
		}
		return m.Text, nil
	}))
	slow := dial(t, srv, "slow")
	fast := dial(t, srv, "fast")
	errc := make(chan error, 1)
	go func() { errc <- slow.Send(context.Background(), "stuck") }()
	<-entered
	for i := range 20 {
		require.NoError(t, fast.Send(ctxT(t), fmt.Sprint(i)))
		require.Equal(t, fmt.Sprint(i), next(t, fast, garou.TypeText).Text)
	}
	close(release)
	require.NoError(t, <-errc)
	require.Equal(t, "stuck", next(t, fast, garou.TypeText).Text)
}

func TestServerPublishKickAndRooms(t *testing.T) {
	srv := startServer(t)
	a := dial(t, srv, "a")
	b := dial(t, srv, "b")
	msg, err := srv.Publish(ctxT(t), garou.DefaultRoom, "maintenance at noon")
	require.NoError(t, err)
	m := next(t, a, garou.TypeText)
	require.Nil(t, m.From, "server messages have no sender")
	require.Equal(t, msg.Seq, m.Seq)
	require.Equal(t, "maintenance at noon", m.Text)
	_, err = srv.Publish(ctxT(t), "nowhere", "x")
	require.ErrorIs(t, err, garou.ErrNoSuchRoom)

	require.NoError(t, srv.Kick("b", "behave"))
	require.ErrorIs(t, srv.Kick("nobody", ""), garou.ErrNoSuchUser)
	l := next(t, a, garou.TypeLeave)
	require.Equal(t, "b", l.User.Name)
	require.Equal(t, "kicked", l.Reason)
	for {
		_, err := b.Receive(ctxT(t))
		if err != nil {
			code, _ := garou.CloseCodeOf(err)
			require.Equal(t, garou.CloseKicked, code)
			require.Contains(t, err.Error(), "behave")
			break
		}
	}
	require.Equal(t, []string{"a"}, names(srv.Members(garou.DefaultRoom)))
}

func TestJoinWithHistory(t *testing.T) {
	srv := startServer(t, garou.WithHistorySize(3))
	a := dial(t, srv, "a")
	for i := range 5 {
		require.NoError(t, a.Send(ctxT(t), fmt.Sprint(i)))
	}
	b := dial(t, srv, "b", garou.WithRooms())
	_, err := b.Join(ctxT(t), garou.DefaultRoom, 10)
	require.NoError(t, err)
	var got []string
	for range 3 {
		got = append(got, next(t, b, garou.TypeText).Text)
	}
	require.Equal(t, []string{"2", "3", "4"}, got)
}

// cuttable hands out client sockets and can cut the current one, as a
// network failure would, and hold back the next until allowed.
type cuttable struct {
	mu   sync.Mutex
	cur  net.PacketConn
	gate chan struct{} // when non-nil, the next socket waits for it
	n    int           // sockets handed out
}

func (c *cuttable) listen(ctx context.Context) (net.PacketConn, error) {
	c.mu.Lock()
	gate := c.gate
	c.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.cur = pc
	c.n++
	c.mu.Unlock()
	return pc, nil
}

func (c *cuttable) cut(hold bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if hold {
		c.gate = make(chan struct{})
	}
	c.cur.Close()
}

func (c *cuttable) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.gate)
	c.gate = nil
}

// TestResumeAfterCutMidBurst: a client whose socket is closed under it in
// the middle of a burst reconnects by itself and ends with every text of
// its room exactly once, in order: the same sequence as a client that
// never dropped.
func TestResumeAfterCutMidBurst(t *testing.T) {
	const total = 300
	srv := startServer(t, garou.WithRateLimit(0, 0))
	var sock cuttable
	dropper := dial(t, srv, "dropper", garou.WithPacketConn(sock.listen), garou.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond))
	steady := dial(t, srv, "steady")
	sender := dial(t, srv, "sender")

	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range total {
			if !assert.NoError(t, sender.Send(ctxT(t), fmt.Sprint(i))) {
				return
			}
		}
	})
	collect := func(c *garou.Client, cutAt int) []uint64 {
		var seqs []uint64
		for len(seqs) < total {
			m := next(t, c, garou.TypeText, garou.TypeGap)
			require.Equal(t, garou.TypeText, m.Type, "no gap expected: %+v", m)
			seqs = append(seqs, m.Seq)
			if len(seqs) == cutAt {
				sock.cut(false)
			}
		}
		return seqs
	}
	var got, want []uint64
	wg.Go(func() { got = collect(dropper, total/3) })
	wg.Go(func() { want = collect(steady, -1) })
	wg.Wait()
	require.Equal(t, want, got)
	require.Equal(t, 2, sock.n, "the client reconnected once")
	// The room never saw the dropper leave: it took its own place again.
	require.ElementsMatch(t, []string{"dropper", "steady", "sender"}, names(srv.Users()))
}

// TestResumeAfterHistoryIsGoneGetsGap: a client away for longer than the
// history holds is told exactly which texts it missed.
func TestResumeAfterHistoryIsGoneGetsGap(t *testing.T) {
	srv := startServer(t, garou.WithHistorySize(5))
	var sock cuttable
	away := dial(t, srv, "away", garou.WithPacketConn(sock.listen), garou.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond))
	talker := dial(t, srv, "talker")
	require.NoError(t, talker.Send(ctxT(t), "seen"))
	seen := next(t, away, garou.TypeText)
	sock.cut(true)
	for i := range 12 {
		require.NoError(t, talker.Send(ctxT(t), fmt.Sprint(i)))
	}
	sock.release()
	gap := next(t, away, garou.TypeText, garou.TypeGap)
	require.Equal(t, garou.TypeGap, gap.Type)
	require.Equal(t, seen.Seq+1, gap.GapFrom)
	require.Equal(t, seen.Seq+7, gap.GapTo) // 12 missed, the last 5 kept
	var rest []string
	for range 5 {
		rest = append(rest, next(t, away, garou.TypeText).Text)
	}
	require.Equal(t, []string{"7", "8", "9", "10", "11"}, rest)
}

// TestUserListsFitTheClientLimit: the server never sends a frame over the
// client's size limit, not even a page of a long user list: it cuts the
// page, and the next page goes on after the last user it kept.
func TestUserListsFitTheClientLimit(t *testing.T) {
	srv := startServer(t, garou.WithMaxConnectionsPerAddr(100))
	var want []string
	for i := range 60 {
		name := fmt.Sprintf("%s%02d", strings.Repeat("n", 28), i)
		dial(t, srv, name)
		want = append(want, name)
	}
	small := dial(t, srv, "small", garou.WithMaxMessageSize(garou.MinMessageSize))
	want = append(want, "small")
	first, err := small.Users(ctxT(t), "")
	require.NoError(t, err)
	require.NotEmpty(t, first.Users)
	require.Less(t, len(first.Users), 61, "the page was cut to fit 4 KiB")
	require.NotEmpty(t, first.Next)

	users := allPages(t, func(cursor string) (garou.Page, error) { return small.Users(ctxT(t), cursor) })
	require.ElementsMatch(t, want, names(users))
	members := allPages(t, func(cursor string) (garou.Page, error) {
		return small.Members(ctxT(t), garou.DefaultRoom, cursor)
	})
	require.ElementsMatch(t, want, names(members))
}

// TestSessionTokenSurvivesAResumeNeverWelcomed: a client whose resumed
// connection is cut before it reads the welcome resumes again with the
// token it holds (it used to be replaced at every resume, which left such
// a client with a dead token and its name taken).
func TestSessionTokenSurvivesAResumeNeverWelcomed(t *testing.T) {
	srv := startServer(t)
	first := rawDial(t, srv)
	w := first.hello("ghost")
	token := w.str("session")
	require.NotEmpty(t, token)
	// A resume whose welcome is never read: the hello arrives, the
	// connection is then abandoned.
	second := rawDial(t, srv)
	second.sendJSON(map[string]any{"type": "hello", "name": "ghost", "session": token})
	second.expect("welcome")
	// The next resume still works with the same token, and keeps the user.
	third := rawDial(t, srv)
	third.sendJSON(map[string]any{"type": "hello", "name": "ghost", "session": token})
	w3 := third.expect("welcome")
	require.Equal(t, token, w3.str("session"))
	require.Equal(t, []string{"ghost"}, names(srv.Users()))
}

// TestResumeOnAnotherServerRunGetsGap: a client resuming with the numbers
// of an earlier run of the server (it restarted) is told that what came
// after them is unknown, and follows the new numbering.
func TestResumeOnAnotherServerRunGetsGap(t *testing.T) {
	srv := startServer(t)
	talker := dial(t, srv, "talker")
	for i := range 3 {
		require.NoError(t, talker.Send(ctxT(t), fmt.Sprint(i)))
	}
	raw := rawDial(t, srv)
	raw.sendJSON(map[string]any{"type": "hello", "name": "back", "server": "an-earlier-run",
		"rooms": []map[string]any{{"room": garou.DefaultRoom, "since": 1}}})
	raw.expect("welcome")
	j := raw.expect("joined")
	require.Equal(t, uint64(3), j.num("last_seq"))
	g := raw.expect("gap")
	require.Equal(t, uint64(2), g.num("from_seq"))
	require.Zero(t, g.num("to_seq"), "unknown end")
}
