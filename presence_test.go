package garou_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/require"
)

// never is a presence interval no test outlives: presence frames then go
// out only when a joiner speaks, which makes their content deterministic.
const never = time.Hour

// TestPresenceJoinStormIsOneFrame: a crowd joining within one presence
// interval costs each member one presence frame, not one per newcomer, and
// a joiner's text comes after its join.
func TestPresenceJoinStormIsOneFrame(t *testing.T) {
	srv := startServer(t, garou.WithPresenceInterval(never), garou.WithMaxConnectionsPerAddr(100))
	watcher := rawDial(t, srv)
	watcher.hello("watcher")

	const n = 40
	crowd := make([]*garou.Client, n)
	var wg sync.WaitGroup
	for i := range crowd {
		wg.Go(func() { crowd[i] = dial(t, srv, fmt.Sprintf("joiner%02d", i)) })
	}
	wg.Wait()
	require.NoError(t, crowd[7].Send(ctxT(t), "first!"))

	f := watcher.expect("presence")
	changes, _ := f["changes"].([]any)
	// The watcher's own join, numbered 1, is in the frame too: its joined
	// reply said presence_seq 1, so a client skips it.
	require.Len(t, changes, n+1, "every join of the storm in one frame: %v", f)
	require.Equal(t, uint64(n+1), f.num("count"))
	require.Equal(t, uint64(n+1), f.num("presence_seq"))
	joined := map[string]bool{}
	for _, c := range changes[1:] {
		ch := c.(map[string]any)
		require.Equal(t, "join", ch["op"])
		joined[ch["user"].(map[string]any)["name"].(string)] = true
	}
	require.Len(t, joined, n)
	text := watcher.expect("text")
	require.Equal(t, "first!", text.str("text"), "the text comes after the presence frame")
}

// TestPresenceSkipsWhatTheJoinedReplyCounted: the joins gathered in one
// frame reach each member once: a client is not told of joins its joined
// reply already counted, nor of its own, and each join carries the
// room's count after it.
func TestPresenceSkipsWhatTheJoinedReplyCounted(t *testing.T) {
	srv := startServer(t, garou.WithPresenceInterval(never))
	alice := dial(t, srv, "alice")
	bob := dial(t, srv, "bob")
	carol := dial(t, srv, "carol")
	require.NoError(t, carol.Send(ctxT(t), "hi"))

	seen := func(c *garou.Client) []string {
		var got []string
		for {
			m := next(t, c, garou.TypeJoin, garou.TypeLeave, garou.TypeText, garou.TypePresence)
			if m.Type == garou.TypeText {
				return append(got, "text "+m.Text)
			}
			got = append(got, fmt.Sprintf("%s %s %d", m.Type, m.User.Name, m.Count))
		}
	}
	require.Equal(t, []string{"join bob 2", "join carol 3", "text hi"}, seen(alice))
	require.Equal(t, []string{"join carol 3", "text hi"}, seen(bob))
	require.Equal(t, []string{"text hi"}, seen(carol))
}

// TestPresenceIsToldWithinTheInterval: with the default interval, joins
// and leaves reach the members without anyone speaking.
func TestPresenceIsToldWithinTheInterval(t *testing.T) {
	srv := startServer(t, garou.WithPresenceInterval(20*time.Millisecond))
	alice := dial(t, srv, "alice")
	bob := dial(t, srv, "bob")
	m := next(t, alice, garou.TypeJoin)
	require.Equal(t, "bob", m.User.Name)
	require.Equal(t, 2, m.Count)
	require.NoError(t, bob.Close())
	m = next(t, alice, garou.TypeLeave)
	require.Equal(t, "bob", m.User.Name)
	require.Equal(t, "quit", m.Reason)
	require.Equal(t, 1, m.Count)
}

// TestPresenceInLargeRoomsIsACount: over the presence limit, members get
// the count alone (TypePresence), and page through the names.
func TestPresenceInLargeRoomsIsACount(t *testing.T) {
	srv := startServer(t, garou.WithPresenceLimit(2), garou.WithPresenceInterval(10*time.Millisecond))
	alice := dial(t, srv, "alice")
	dial(t, srv, "bob")
	dial(t, srv, "carol")
	for {
		m := next(t, alice, garou.TypeJoin, garou.TypeLeave, garou.TypePresence)
		if m.Type == garou.TypePresence {
			require.Nil(t, m.User)
			if m.Count == 3 {
				break
			}
			continue
		}
		require.Equal(t, garou.TypeJoin, m.Type)
		require.Equal(t, "bob", m.User.Name, "only bob's join comes by name: the room then had 2")
	}
	joined, err := alice.Join(ctxT(t), garou.DefaultRoom, 0)
	require.NoError(t, err)
	require.Empty(t, joined.Users, "no names in a large room's joined reply")
	require.Equal(t, 3, joined.Count)
	members, err := alice.Members(ctxT(t), "", "")
	require.NoError(t, err)
	require.Equal(t, []string{"alice", "bob", "carol"}, names(members.Users))
	require.Equal(t, 3, members.Count)
	require.Empty(t, members.Next)
}

// TestPresenceImmediateWithZeroInterval: interval 0 tells each join and
// leave at once, in a frame of its own, never to the joiner itself.
func TestPresenceImmediateWithZeroInterval(t *testing.T) {
	srv := startServer(t, garou.WithPresenceInterval(0))
	watcher := rawDial(t, srv)
	watcher.hello("watcher")
	bob := dial(t, srv, "bob")
	f := watcher.expect("presence")
	require.Len(t, f["changes"], 1)
	require.Equal(t, uint64(2), f.num("count"))
	require.NoError(t, bob.Leave(ctxT(t), ""))
	f = watcher.expect("presence")
	require.Len(t, f["changes"], 1)
	require.Equal(t, uint64(1), f.num("count"))
}

// TestMembersPages: a room of more than PageSize members is listed a page
// at a time; the joined reply carries the first page and the count.
func TestMembersPages(t *testing.T) {
	if testing.Short() {
		t.Skip("dials 101 clients")
	}
	n := garou.PageSize + 1
	srv := startServer(t, garou.WithMaxConnectionsPerAddr(2*n), garou.WithMaxConnections(2*n),
		garou.WithPresenceLimit(2*n))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n - 1 {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			dial(t, srv, fmt.Sprintf("m%03d", i))
		})
	}
	wg.Wait()
	last := dial(t, srv, "last", garou.WithRooms())
	first, err := last.Join(ctxT(t), garou.DefaultRoom, 0)
	require.NoError(t, err)
	require.Len(t, first.Users, garou.PageSize)
	require.Equal(t, n, first.Count)
	require.NotEmpty(t, first.Next)

	all := allPages(t, func(cursor string) (garou.Page, error) {
		return last.Members(ctxT(t), "", cursor)
	})
	require.Len(t, all, n)
	require.Contains(t, names(all), "last")
	users := allPages(t, func(cursor string) (garou.Page, error) { return last.Users(ctxT(t), cursor) })
	require.Len(t, users, n)
}

// TestHostileCursor: a cursor no server gives is refused; any other string
// is a place in the order of IDs, never an error.
func TestHostileCursor(t *testing.T) {
	srv := startServer(t)
	m := rawDial(t, srv)
	m.hello("mallory")
	m.sendJSON(map[string]any{"type": "users", "ref": 1, "cursor": strings.Repeat("z", 129)})
	m.expectError(garou.CodeBadFrame, 1)
	m.sendJSON(map[string]any{"type": "members", "ref": 2, "cursor": strings.Repeat("\u00ff", 60)})
	f := m.expect("users")
	require.Equal(t, uint64(2), f.num("ref"))
	require.Empty(t, f["users"], "nothing sorts after it")
	require.Equal(t, uint64(1), f.num("count"))
}

// TestPresenceWhileLeaving: the joins and leaves told while a Leave is
// under way still reach Receive (the client is a member until the server
// answers), and when the server refuses the Leave the room is the
// client's again.
func TestPresenceWhileLeaving(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	srv := startServer(t, garou.WithPresenceInterval(0), garou.WithRateLimit(0.01, 1),
		garou.WithMessageFilter(func(ctx context.Context, m garou.Incoming) (string, error) {
			if m.Text == "hold" {
				close(entered)
				<-release // bob's requests wait behind this one
			}
			return m.Text, nil
		}))
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // before the server's: a failing test must not hang in the hook
	bob := dial(t, srv, "bob")
	sent := make(chan error, 1)
	go func() { sent <- bob.Send(ctxT(t), "hold") }() // takes bob's one token
	<-entered
	left := make(chan error, 1)
	go func() { left <- bob.Leave(ctxT(t), "") }()
	require.Eventually(t, func() bool { return !slices.Contains(bob.Rooms(), garou.DefaultRoom) },
		10*time.Second, time.Millisecond, "the Leave has begun")
	dial(t, srv, "carol")
	m := next(t, bob, garou.TypeJoin)
	require.Equal(t, "carol", m.User.Name, "told while leaving")
	free()
	require.NoError(t, <-sent)
	var e *garou.Error
	require.ErrorAs(t, <-left, &e)
	require.Equal(t, garou.CodeRateLimited, e.Code)
	require.Equal(t, []string{garou.DefaultRoom}, bob.Rooms(), "refused: the room is bob's again")
}
