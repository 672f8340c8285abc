package garou_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// publishAll says texts of size bytes in every room, k from from to to,
// each round once keeper (in every room) has received the last: the
// server's publishing outruns any reader. It returns the Seq of each
// room's first text.
func publishAll(t *testing.T, srv *garou.Server, keeper *garou.Client, rooms []string, from, to, size int) map[string]uint64 {
	t.Helper()
	first := map[string]uint64{}
	for k := from; k < to; k++ {
		for _, r := range rooms {
			text := fmt.Sprintf("%d:", k)
			m, err := srv.Publish(ctxT(t), r, text+strings.Repeat("x", size-len(text)))
			require.NoError(t, err)
			if k == from {
				first[r] = m.Seq
			}
		}
		for range rooms {
			next(t, keeper, garou.TypeText)
		}
	}
	return first
}

func roomNames(n int) []string {
	rooms := make([]string, n)
	for i := range rooms {
		rooms[i] = fmt.Sprint("room", i)
	}
	return rooms
}

// TestResumeLargerThanTheSendQueue: a client resumes into rooms whose
// missed texts total more than the send queue's bound (both within the
// defaults), while the rooms go on talking. It gets its welcome first, then
// every text of every room exactly once, in sequence, replayed then live,
// and is never cut.
func TestResumeLargerThanTheSendQueue(t *testing.T) {
	for _, tc := range []struct{ rooms, texts, size int }{
		{1, 100, 50_000},
		{32, 100, 4_000},
	} {
		t.Run(fmt.Sprintf("%dx%dx%d", tc.rooms, tc.texts, tc.size), func(t *testing.T) {
			// Live texts held behind the replay count against the send
			// queue's bound with the replayed ones (at most half of it):
			// 32 rooms x 10 x 4 kB fits beside them whatever the pace of
			// the rooms and of the reader; 20 did not, once the rooms
			// could talk faster than this reader reads.
			const live = 10
			srv := startServer(t, garou.WithRateLimit(0, 0))
			rooms := roomNames(tc.rooms)
			keeper := dial(t, srv, "keeper", garou.WithReconnect(0), garou.WithRooms(rooms...))
			first := publishAll(t, srv, keeper, rooms, 0, tc.texts, tc.size)

			c := rawDial(t, srv)
			specs := make([]map[string]any, len(rooms))
			for i, r := range rooms {
				specs[i] = map[string]any{"room": r, "since": first[r] - 1}
			}
			c.sendJSON(map[string]any{"type": "hello", "name": "bob", "rooms": specs})
			c.welcome()

			// The rooms talk on during the replay.
			var wg sync.WaitGroup
			defer wg.Wait()
			wg.Go(func() { publishAll(t, srv, keeper, rooms, tc.texts, tc.texts+live, tc.size) })

			next := map[string]uint64{}
			for _, r := range rooms {
				next[r] = first[r]
			}
			for got := 0; got < tc.rooms*(tc.texts+live); {
				f, err := c.read()
				require.NoError(t, err, "after %d texts", got)
				switch f.typ() {
				case "joined", "presence":
				case "text":
					r := f.str("room")
					require.Equal(t, next[r], f.num("seq"), "room %s", r)
					k := int(next[r] - first[r])
					require.True(t, strings.HasPrefix(f.str("text"), fmt.Sprintf("%d:", k)))
					next[r]++
					got++
				default:
					require.Fail(t, "unexpected frame", "%v", f)
				}
			}
			require.Contains(t, names(srv.Users()), "bob")
		})
	}
}

// TestJoinWithHistoryLargerThanTheSendQueue: Join asking for the last 100
// texts of a room of large texts gets all of them, in order.
func TestJoinWithHistoryLargerThanTheSendQueue(t *testing.T) {
	srv := startServer(t, garou.WithRateLimit(0, 0))
	keeper := dial(t, srv, "keeper", garou.WithReconnect(0), garou.WithRooms("big"))
	first := publishAll(t, srv, keeper, []string{"big"}, 0, 100, 50_000)
	cli := dial(t, srv, "bob", garou.WithReconnect(0))
	_, err := cli.Join(ctxT(t), "big", 100)
	require.NoError(t, err)
	for k := range 100 {
		m := next(t, cli, garou.TypeText)
		require.Equal(t, first["big"]+uint64(k), m.Seq)
		require.True(t, strings.HasPrefix(m.Text, fmt.Sprintf("%d:", k)))
	}
	require.NoError(t, cli.Err())
}

// TestReplayToAClientThatStopsReadingIsCut: a client that resumes into a
// large replay and reads nothing is cut as a slow consumer once the room's
// live texts held behind its replay pass the bound; the others are told.
func TestReplayToAClientThatStopsReadingIsCut(t *testing.T) {
	srv := startServer(t, garou.WithRateLimit(0, 0))
	alice := dial(t, srv, "alice", garou.WithReconnect(0), garou.WithRooms("big"))
	first := publishAll(t, srv, alice, []string{"big"}, 0, 100, 50_000)

	mute := rawDial(t, srv)
	mute.sendJSON(map[string]any{"type": "hello", "name": "mute", "rooms": []map[string]any{{"room": "big", "since": first["big"] - 1}}})
	awaitJoin(t, alice, "mute")

	// The room talks on, one text at a time as alice reads it, until mute
	// is cut.
	got := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for k := 100; ; k++ {
			if _, err := srv.Publish(ctx, "big", fmt.Sprintf("%d:%s", k, strings.Repeat("x", 50_000))); err != nil {
				assert.ErrorIs(t, err, context.Canceled)
				return
			}
			select {
			case <-got:
			case <-ctx.Done():
				return
			}
		}
	})
	var m garou.ChatMessage
	for m.Type != garou.TypeLeave {
		m = next(t, alice, garou.TypeText, garou.TypeLeave)
		if m.Type == garou.TypeText {
			got <- struct{}{}
		}
	}
	cancel()
	wg.Wait()
	require.Equal(t, "mute", m.User.Name)
	require.Equal(t, "slow", m.Reason)
	require.Equal(t, garou.CloseSlowConsumer, connClosed(t, mute.qc))
}

// TestLeaveDuringAReplayEndsIt: nothing of a replay follows the leave's
// ack, and joining again resumes exactly where the client stopped.
func TestLeaveDuringAReplayEndsIt(t *testing.T) {
	srv := startServer(t, garou.WithRateLimit(0, 0))
	keeper := dial(t, srv, "keeper", garou.WithReconnect(0), garou.WithRooms("big"))
	first := publishAll(t, srv, keeper, []string{"big"}, 0, 100, 50_000)
	last := first["big"] + 99

	c := rawDial(t, srv)
	c.sendJSON(map[string]any{"type": "hello", "name": "bob", "rooms": []any{}})
	c.expect("welcome")
	c.sendJSON(map[string]any{"type": "join", "ref": 1, "room": "big", "since": first["big"] - 1})
	c.expect("joined")
	seen := first["big"] - 1
	readText := func() {
		f := c.expect("text")
		require.Equal(t, seen+1, f.num("seq"))
		seen++
	}
	for range 5 {
		readText()
	}
	c.sendJSON(map[string]any{"type": "leave", "ref": 2, "room": "big"})
	for {
		f, err := c.read()
		require.NoError(t, err)
		if f.typ() == "ack" {
			require.Equal(t, uint64(2), f.num("ref"))
			break
		}
		require.Equal(t, "text", f.typ(), "%v", f)
		require.Equal(t, seen+1, f.num("seq"))
		seen++
	}
	require.Less(t, seen, last, "the replay ended before the leave")
	c.sendJSON(map[string]any{"type": "join", "ref": 3, "room": "big", "since": seen})
	j, err := c.read()
	require.NoError(t, err)
	require.Equal(t, "joined", j.typ(), "a frame of the left room after its ack: %v", j)
	for seen < last {
		readText()
	}
}
