package garou_test

// The streams of rooms (PROTOCOL.md §1): what a client that mishandles one
// of them costs it, and what it must not cost anyone else.

import (
	"context"
	"fmt"
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
