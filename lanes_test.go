package garou_test

// The streams of rooms (PROTOCOL.md §1): what a client that mishandles one
// of them costs it, and what it must not cost anyone else.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// helloRooms says hello as name in rooms, and returns once the welcome and
// every room's joined are read.
func (r *rawClient) helloRooms(name string, rooms ...string) rawMsg {
	r.t.Helper()
	specs := make([]map[string]any, len(rooms))
	for i, room := range rooms {
		specs[i] = map[string]any{"room": room}
	}
	r.sendJSON(map[string]any{"type": "hello", "name": name, "rooms": specs})
	w := r.welcome()
	for range rooms {
		r.expect("joined")
	}
	return w
}

// countTexts receives on cli, in the background, until want texts of room
// came, and sends on got as each comes.
func countTexts(t *testing.T, cli *garou.Client, room string, want int) (got chan struct{}) {
	t.Helper()
	got = make(chan struct{}, want)
	go func() {
		for n := 0; n < want; {
			m, err := cli.Receive(ctxT(t))
			if err != nil {
				return
			}
			if m.Type == garou.TypeText && m.Room == room {
				n++
				got <- struct{}{}
			}
		}
	}()
	return got
}

// TestRoomStreamNotReadIsCutAndStallsNoOne: a client that stops reading
// one room's stream, and reads its control stream and its other room's,
// still gets that other room's texts while the budget lasts, is cut as a
// slow consumer once its queues pass their bound, and never holds up the
// room's other members meanwhile.
func TestRoomStreamNotReadIsCutAndStallsNoOne(t *testing.T) {
	srv := startServer(t, garou.WithRateLimit(0, 0), garou.WithMaxMessageSize(64<<10), garou.WithSendQueueBytes(256<<10))
	alice := bystander(t, srv, garou.WithRooms("side"))
	bob := dial(t, srv, "bob", garou.WithReconnect(0))
	m := rawDial(t, srv)
	m.roomStream = func(f rawMsg, _ *quic.ReceiveStream) bool { return f.str("room") != garou.DefaultRoom }
	m.helloRooms("mallory", garou.DefaultRoom, "side")
	awaitJoin(t, alice, "mallory")

	const most = 2000 // 2 MB: far past the bound and mallory's windows
	text := strings.Repeat("x", 1000)
	bobGot := countTexts(t, bob, garou.DefaultRoom, most)
	// Texts go out as fast as bob reads them, a few dozen ahead: bob's
	// queue, bounded as mallory's is, never fills.
	received := 0
	say := func(k int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for ; k-received > 32; received++ {
			select {
			case <-bobGot:
			case <-ctx.Done():
				t.Fatalf("bob held up at %d texts", received)
			}
		}
		_, err := srv.Publish(ctx, garou.DefaultRoom, fmt.Sprintf("%d %s", k, text))
		require.NoError(t, err, "the lobby held up by mallory")
	}
	sent := 0
	for ; sent < 100; sent++ {
		say(sent)
	}
	// The lobby's stream is unread, not the others.
	_, err := alice.SendTo(ctxT(t), "side", "on the side")
	require.NoError(t, err)
	f := m.expect("text")
	require.Equal(t, "side", f.str("room"), "%v", f)
	require.Equal(t, "on the side", f.str("text"))

	for ; sent < most && m.qc.Context().Err() == nil; sent++ {
		say(sent)
	}
	require.Less(t, sent, most, "mallory was never cut")
	require.Equal(t, garou.CloseSlowConsumer, connClosed(t, m.qc))
	require.Equal(t, "slow", awaitLeave(t, alice, "mallory", rawWait).Reason)
	requireGone(t, srv, "mallory")
	// Every text reached bob, who reads: nothing was held up or lost.
	for ; sent < most; sent++ {
		say(sent)
	}
	for ; received < most; received++ {
		select {
		case <-bobGot:
		case <-time.After(rawWait):
			t.Fatalf("bob got %d texts of %d", received, most)
		}
	}
	requireServed(t, bob)
}

// TestRoomStreamStoppedIsAProtocolError: a client that stops one room's
// stream (STOP_SENDING) breaks the protocol: it is closed at once with
// 0x203, its rooms are told it left for an error, and the room goes on.
func TestRoomStreamStoppedIsAProtocolError(t *testing.T) {
	srv := startServer(t, garou.WithRateLimit(0, 0))
	alice := bystander(t, srv)
	m := rawDial(t, srv)
	m.roomStream = func(f rawMsg, str *quic.ReceiveStream) bool {
		if f.str("room") == garou.DefaultRoom {
			str.CancelRead(7)
			return false
		}
		return true
	}
	m.helloRooms("mallory", garou.DefaultRoom, "side")
	awaitJoin(t, alice, "mallory")

	// The server learns of the STOP_SENDING when it next writes.
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	wg.Go(func() {
		for k := 0; ctx.Err() == nil; k++ {
			if !assert.NoError(t, alice.Send(ctxT(t), fmt.Sprint("text ", k))) {
				return
			}
			if m.qc.Context().Err() != nil {
				return
			}
		}
	})
	code := connClosed(t, m.qc)
	cancel()
	wg.Wait()
	require.Equal(t, garou.CloseProtocol, code)
	require.Equal(t, "error", awaitLeave(t, alice, "mallory", rawWait).Reason)
	requireGone(t, srv, "mallory")
	requireServed(t, alice)
}

// TestQuitWhileARoomStreamIsBlockedIsAQuit: a client that closes its
// connection (code 0) while the server is blocked writing one of its room
// streams quits: its rooms are told "quit", not an error of its stream.
func TestQuitWhileARoomStreamIsBlockedIsAQuit(t *testing.T) {
	srv := startServer(t, garou.WithRateLimit(0, 0))
	alice := bystander(t, srv, garou.WithRooms("side"))
	for i := range 5 {
		m := rawDial(t, srv)
		m.roomStream = func(f rawMsg, _ *quic.ReceiveStream) bool { return f.str("room") != garou.DefaultRoom }
		name := fmt.Sprint("mallory", i)
		m.helloRooms(name, garou.DefaultRoom, "side")
		awaitJoin(t, alice, name)
		// More than the stream's window (quic-go's 512 KiB), less than
		// the budget: the lobby's writer waits for flow control.
		text := strings.Repeat("x", 1000)
		for range 700 {
			_, err := srv.Publish(ctxT(t), garou.DefaultRoom, text)
			require.NoError(t, err)
		}
		require.NoError(t, m.qc.CloseWithError(0, "bye"))
		require.Equal(t, "quit", awaitLeave(t, alice, name, rawWait).Reason)
	}
}

// TestLeftRoomStreamsAreBounded: a client that joins and leaves room after
// room without reading the streams, nor giving credit for new ones, holds
// up its own requests once a few of its left rooms' streams wait to be
// written: it costs the server a bounded number of goroutines. Once it
// reads, every join and leave is answered, each on its room's stream.
func TestLeftRoomStreamsAreBounded(t *testing.T) {
	const rooms, n = 8, 600
	srv := startServer(t, garou.WithRateLimit(0, 0), garou.WithMaxRoomsPerClient(rooms))
	// quic-go's default credit: 100 unidirectional streams.
	m := rawDial(t, srv)
	m.sendJSON(map[string]any{"type": "hello", "name": "mallory", "rooms": []any{}})
	var frames []byte
	for i := range n {
		room := fmt.Sprint("r", i)
		frames = append(frames, rawFrame(fmt.Sprintf(`{"type":"join","ref":%d,"room":%q}`, 2*i+1, room))...)
		frames = append(frames, rawFrame(fmt.Sprintf(`{"type":"leave","ref":%d,"room":%q}`, 2*i+2, room))...)
	}
	// Written in the background: the server stops reading them.
	wrote := make(chan error, 1)
	go func() { _, err := m.st.Write(frames); wrote <- err }()
	// The client reads nothing: its requests wait, and the writers waiting
	// for its streams stay few.
	ctx := ctxT(t)
	for garou.GoroutinesIn("garou.(*conn).awaitLeftLanes") == 0 {
		_, writers := garou.ConnGoroutines()
		require.LessOrEqual(t, writers, rooms+2, "writers waiting for mallory's streams")
		require.NoError(t, ctx.Err(), "mallory's requests never waited")
		runtime.Gosched()
	}
	_, writers := garou.ConnGoroutines()
	require.LessOrEqual(t, writers, rooms+2, "writers waiting for mallory's streams")

	// Reading, it gets every reply, each room's on its own stream.
	joined, left := map[uint64]bool{}, map[uint64]bool{}
	for len(left) < n {
		rr := m.next()
		require.NoError(t, rr.err)
		switch rr.f.typ() {
		case "joined":
			require.True(t, rr.room)
			joined[rr.f.num("ref")] = true
		case "welcome":
			require.False(t, rr.room)
		case "presence": // of its own join, which joined included
			require.True(t, rr.room)
		case "ack":
			require.True(t, rr.room)
			require.True(t, joined[rr.f.num("ref")-1], "left before joined: %v", rr.f)
			left[rr.f.num("ref")] = true
		default:
			t.Fatalf("unexpected %v", rr.f)
		}
	}
	require.Len(t, joined, n)
	require.NoError(t, <-wrote)
	requireServedRaw(t, m)
	waitConnGoroutines(t, 1)
}

// requireServedRaw checks that the raw client r is served: its request for
// the users online is answered.
func requireServedRaw(t *testing.T, r *rawClient) {
	t.Helper()
	r.sendJSON(map[string]any{"type": "users", "ref": 1 << 40})
	f := r.expect("users")
	require.Equal(t, uint64(1<<40), f.num("ref"))
}

// TestGracefulEndDeliversEveryRoomsTexts: every text queued for a client
// before the server ends its connection gracefully (kicked, or a
// shutdown) reaches Receive, from each of its rooms' streams, before the
// end, in each room's order.
func TestGracefulEndDeliversEveryRoomsTexts(t *testing.T) {
	rooms := []string{garou.DefaultRoom, "a", "b", "c"}
	const n = 300
	for _, end := range []string{"kick", "shutdown"} {
		t.Run(end, func(t *testing.T) {
			srv := startServer(t, garou.WithRateLimit(0, 0))
			bob := dial(t, srv, "bob", garou.WithRooms(rooms...), garou.WithReconnect(0))
			text := strings.Repeat("y", 200)
			for k := range n {
				for _, room := range rooms {
					_, err := srv.Publish(ctxT(t), room, fmt.Sprintf("%d %s", k, text))
					require.NoError(t, err)
				}
			}
			want := garou.CloseKicked
			if end == "kick" {
				require.NoError(t, srv.Kick("bob", "out"))
			} else {
				want = garou.CloseServerShutdown
				go func() { _ = srv.Shutdown(context.Background()) }()
			}
			got := map[string]int{}
			for {
				m, err := bob.Receive(ctxT(t))
				if err != nil {
					code, ok := garou.CloseCodeOf(err)
					require.True(t, ok, "%v", err)
					require.Equal(t, want, code)
					break
				}
				if m.Type != garou.TypeText {
					continue
				}
				var k int
				_, err = fmt.Sscan(m.Text, &k)
				require.NoError(t, err)
				require.Equal(t, got[m.Room], k, "room %s out of order", m.Room)
				got[m.Room]++
			}
			for _, room := range rooms {
				require.Equal(t, n, got[room], "texts of %s", room)
			}
		})
	}
}

// TestLeaveAndRejoinPipelined: a leave and a join of the same room sent
// together, while the room talks: the leave's ack is the last frame of
// the room's first stream, the join's joined the first of a new one, and
// every text received is received once, the first stream's before the
// second's.
func TestLeaveAndRejoinPipelined(t *testing.T) {
	srv := startServer(t, garou.WithRateLimit(0, 0))
	// bob keeps the room alive.
	bob := dial(t, srv, "bob", garou.WithRooms("x"), garou.WithReconnect(0))
	go func() {
		for {
			if _, err := bob.Receive(context.Background()); err != nil {
				return
			}
		}
	}()
	m := rawDial(t, srv)
	m.helloRooms("mallory", "x")
	first := quic.StreamID(-1) // the room's first stream: the first text's

	stop := make(chan struct{})
	published := make(chan uint64, 1)
	go func() {
		var last uint64
		defer func() { published <- last }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			msg, err := srv.Publish(ctxT(t), "x", "tick")
			if !assert.NoError(t, err) {
				return
			}
			last = msg.Seq
		}
	}()

	seen := map[uint64]quic.StreamID{}
	var order []rawRead
	texts, rejoined := 0, 0
	var last uint64
	for {
		rr := m.next()
		require.NoError(t, rr.err)
		order = append(order, rr)
		switch f := rr.f; f.typ() {
		case "text":
			_, dup := seen[f.num("seq")]
			require.False(t, dup, "text %d received twice", f.num("seq"))
			seen[f.num("seq")] = rr.sid
			if first < 0 {
				first = rr.sid
			}
			texts++
			if texts == 50 {
				m.write(append(rawFrame(`{"type":"leave","ref":1,"room":"x"}`), rawFrame(`{"type":"join","ref":2,"room":"x"}`)...))
			}
			if rejoined > 0 {
				if rejoined++; rejoined == 50 {
					close(stop)
					last = <-published
				}
			}
		case "ack":
			require.Equal(t, uint64(1), f.num("ref"), "%v", f)
			require.Equal(t, first, rr.sid, "the leave's ack on another stream than the room's first")
		case "joined":
			require.Equal(t, uint64(2), f.num("ref"), "%v", f)
			require.NotEqual(t, first, rr.sid, "the rejoin's joined on the room's first stream")
			rejoined = 1
		}
		if last != 0 && seqOf(rr) == last {
			break
		}
	}
	// The first stream ends with the ack; its texts come before the
	// second's.
	var ackAt int
	var maxFirst, minSecond uint64 = 0, 1 << 62
	for i, rr := range order {
		switch {
		case rr.f.typ() == "ack":
			ackAt = i
		case rr.sid == first:
			require.Zero(t, ackAt, "a frame after the leave's ack on its stream: %v", rr.f)
			if rr.f.typ() == "text" {
				maxFirst = max(maxFirst, rr.f.num("seq"))
			}
		case rr.f.typ() == "text":
			minSecond = min(minSecond, rr.f.num("seq"))
		}
	}
	require.Less(t, maxFirst, minSecond)
}

// seqOf is the seq of a text, 0 for any other frame.
func seqOf(rr rawRead) uint64 {
	if rr.f.typ() != "text" {
		return 0
	}
	return rr.f.num("seq")
}

// TestLeaveAndRejoinWhileTheRoomTalks: a client leaving and joining a
// room again and again, while the room talks, receives each text of it
// at most once, in order.
func TestLeaveAndRejoinWhileTheRoomTalks(t *testing.T) {
	srv := startServer(t, garou.WithRateLimit(0, 0))
	// bob keeps the room alive, and paces it: a text is said once bob has
	// the one before.
	bob := dial(t, srv, "bob", garou.WithRooms("x"), garou.WithReconnect(0))
	heard := make(chan struct{}, 1)
	go func() {
		for {
			m, err := bob.Receive(context.Background())
			if err != nil {
				return
			}
			if m.Type == garou.TypeText {
				heard <- struct{}{}
			}
		}
	}()
	alice := bystander(t, srv, garou.WithRooms("x"))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() {
		for ctx.Err() == nil {
			_, err := srv.Publish(ctx, "x", "tick")
			if ctx.Err() != nil || !assert.NoError(t, err) {
				return
			}
			select {
			case <-heard:
			case <-ctx.Done():
			}
		}
	})
	// alice receives all along; each text of x once, in order.
	texts := make(chan int, 1)
	go func() {
		var last uint64
		n := 0
		defer func() { texts <- n }()
		for {
			m, err := alice.Receive(context.Background())
			if err != nil {
				return
			}
			if m.Type == garou.TypeText {
				assert.Greater(t, m.Seq, last, "text %d after %d", m.Seq, last)
				last = m.Seq
				n++
			}
		}
	}()
	for range 20 {
		require.NoError(t, alice.Leave(ctxT(t), "x"))
		_, err := alice.Join(ctxT(t), "x", 0)
		require.NoError(t, err)
	}
	require.NoError(t, alice.Close())
	require.NotZero(t, <-texts)
}

// TestTakeoverEndsTheOldConnectionsRoomStreams: a session resumed on a new
// connection while its old one is in rooms. The old connection's room
// streams end (FIN, not reset), its bye says replaced, and the new one
// gets, in each room, every text after the one the old last had, once.
func TestTakeoverEndsTheOldConnectionsRoomStreams(t *testing.T) {
	srv := startServer(t, garou.WithRateLimit(0, 0))
	rooms := []string{"x", "y"}
	// bob paces the rooms: a text is said once bob has the one before.
	bob := dial(t, srv, "bob", garou.WithRooms(rooms...), garou.WithReconnect(0))
	heard := make(chan struct{}, 1)
	go func() {
		for {
			m, err := bob.Receive(context.Background())
			if err != nil {
				return
			}
			if m.Type == garou.TypeText {
				heard <- struct{}{}
			}
		}
	}()
	old := rawDial(t, srv)
	old.roomEnds = true
	w := old.helloRooms("carol", rooms...)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() {
		for k := 0; ctx.Err() == nil; k++ {
			_, err := srv.Publish(ctx, rooms[k%2], "tick")
			if ctx.Err() != nil || !assert.NoError(t, err) {
				return
			}
			select {
			case <-heard:
			case <-ctx.Done():
			}
		}
	})

	// The old connection hears 20 texts of each room, then the session
	// moves, resuming after the last it heard.
	last := map[string]uint64{}
	streams := map[quic.StreamID]bool{}
	for last["x"] < 20 || last["y"] < 20 {
		rr := old.next()
		require.NoError(t, rr.err)
		if rr.f.typ() == "text" {
			room := rr.f.str("room")
			if last[room] != 0 {
				require.Equal(t, last[room]+1, rr.f.num("seq"), "%v", rr.f)
			}
			last[room] = rr.f.num("seq")
			streams[rr.sid] = true
		}
	}
	require.Len(t, streams, 2)
	since := maps.Clone(last)
	next := rawDial(t, srv)
	next.sendJSON(map[string]any{"type": "hello", "name": "carol", "session": w.str("session"),
		"rooms": []any{map[string]any{"room": "x", "since": last["x"]}, map[string]any{"room": "y", "since": last["y"]}}})

	// The old connection: the rest of its rooms' texts, in order, both
	// streams' ends, and the bye.
	var bye rawMsg
	for bye == nil || len(streams) > 0 {
		rr := old.next()
		switch {
		case rr.room && rr.err != nil:
			require.ErrorIs(t, rr.err, io.EOF, "a room stream of the old connection was not ended")
			require.True(t, streams[rr.sid])
			delete(streams, rr.sid)
		case rr.err != nil:
			require.ErrorIs(t, rr.err, io.EOF)
			require.NotNil(t, bye)
		case rr.f.typ() == "bye":
			bye = rr.f
		case rr.f.typ() == "text":
			room := rr.f.str("room")
			require.Equal(t, last[room]+1, rr.f.num("seq"), "%v", rr.f)
			last[room] = rr.f.num("seq")
		}
	}
	require.Equal(t, uint64(garou.CloseReplaced), bye.num("close"), "%v", bye)
	_ = old.qc.CloseWithError(0, "bye")

	// The new one: each room's stream starts with its joined, then every
	// text after the hello's since, once, in order.
	next.welcome()
	opened := map[quic.StreamID]bool{}
	got := map[string]int{}
	for got["x"] < 20 || got["y"] < 20 {
		rr := next.next()
		require.NoError(t, rr.err)
		if !rr.room {
			continue
		}
		room := rr.f.str("room")
		switch rr.f.typ() {
		case "joined":
			require.False(t, opened[rr.sid], "a second joined on a stream")
			opened[rr.sid] = true
		case "text":
			require.True(t, opened[rr.sid], "a text before the room's joined")
			require.Equal(t, since[room]+1, rr.f.num("seq"), "%v", rr.f)
			since[room]++
			got[room]++
		}
	}
}

// TestKickedDuringTheHellosJoins: a user kicked while its hello's rooms
// are being joined gets the bye instead of a welcome, and leaves nothing
// behind: no room, no member, no goroutine.
func TestKickedDuringTheHellosJoins(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	srv := startServer(t, garou.WithJoinHook(func(_ context.Context, _ garou.User, room string) error {
		if room == "b" {
			close(entered)
			<-release
		}
		return nil
	}))
	go func() {
		<-entered
		assert.NoError(t, srv.Kick("carol", "not now"))
		close(release)
	}()
	_, err := dialErr(t, srv, "carol", garou.WithRooms("a", "b", "c"), garou.WithReconnect(0))
	code, ok := garou.CloseCodeOf(err)
	require.True(t, ok, "%v", err)
	require.Equal(t, garou.CloseKicked, code)
	require.Eventually(t, func() bool {
		return len(srv.Users()) == 0 && len(srv.Rooms()) == 0
	}, rawWait, time.Millisecond)
	waitConnGoroutines(t, 0)
}

// TestManyRoomsJoinedAndLeft: a client that joins and leaves room after
// room keeps no reader of a room it left, and the server no writer nor
// room.
func TestManyRoomsJoinedAndLeft(t *testing.T) {
	srv := startServer(t, garou.WithRateLimit(0, 0))
	c := dial(t, srv, "carol", garou.WithReconnect(0))
	for i := range 500 {
		room := fmt.Sprint("r", i)
		_, err := c.Join(ctxT(t), room, 0)
		require.NoError(t, err)
		require.NoError(t, c.Leave(ctxT(t), room))
	}
	require.Equal(t, []string{garou.DefaultRoom}, c.Rooms())
	require.Len(t, srv.Rooms(), 1)
	// One reader for the control stream, one for the lobby's.
	ctx := ctxT(t)
	for garou.GoroutinesIn("garou.(*Client).read(") != 2 {
		require.NoError(t, ctx.Err(), "%d client readers", garou.GoroutinesIn("garou.(*Client).read("))
		runtime.Gosched()
	}
	waitConnGoroutines(t, 1)
}

// TestNoStreamCreditIsASlowConsumer: a client that allows the server no
// unidirectional stream is welcomed, and served on its control stream,
// but its rooms' frames wait, counted against its bound, until it is cut
// as a slow consumer.
func TestNoStreamCreditIsASlowConsumer(t *testing.T) {
	srv := startServer(t, garou.WithRateLimit(0, 0), garou.WithMaxMessageSize(64<<10), garou.WithSendQueueBytes(64<<10))
	alice := bystander(t, srv, garou.WithRooms("side"))
	m := rawDialConf(t, srv, &quic.Config{MaxIncomingUniStreams: -1})
	m.sendJSON(map[string]any{"type": "hello", "name": "mallory", "rooms": []any{map[string]any{"room": garou.DefaultRoom}, map[string]any{"room": "side"}}})
	m.welcome()
	awaitJoin(t, alice, "mallory")
	requireServedRaw(t, m)
	text := strings.Repeat("x", 1000)
	for k := 0; m.qc.Context().Err() == nil; k++ {
		require.Less(t, k, 1000, "mallory was never cut")
		_, err := srv.Publish(ctxT(t), garou.DefaultRoom, text)
		if errors.Is(err, garou.ErrNoSuchRoom) {
			break // mallory, the lobby's one member, is gone
		}
		require.NoError(t, err)
	}
	require.Equal(t, garou.CloseSlowConsumer, connClosed(t, m.qc))
	require.Equal(t, "slow", awaitLeave(t, alice, "mallory", rawWait).Reason)
	waitConnGoroutines(t, 1)
}

// TestControlStreamStoppedIsAProtocolError: a client that stops the
// control stream (STOP_SENDING) is closed, at the server's next reply,
// with 0x203, as for a room stream.
func TestControlStreamStoppedIsAProtocolError(t *testing.T) {
	srv, alice, m := malloryJoined(t)
	m.st.CancelRead(5)
	m.sendJSON(map[string]any{"type": "users", "ref": 1})
	require.Equal(t, garou.CloseProtocol, connClosed(t, m.qc))
	require.Equal(t, "error", awaitLeave(t, alice, "mallory", rawWait).Reason)
	requireGone(t, srv, "mallory")
	requireServed(t, alice)
}
