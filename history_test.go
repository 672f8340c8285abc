package garou_test

import (
	"context"
	"errors"
	"testing"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/require"
)

// testStore is the memory history with a room whose Append waits until
// released, and rooms whose Append or After fail.
type testStore struct {
	garou.HistoryStore
	slowRoom    string
	entered     chan struct{} // a slow Append has started
	release     chan struct{}
	badAppend   string
	badAfter    string
	errInjected error
}

func newTestStore() *testStore {
	return &testStore{
		HistoryStore: garou.NewMemoryHistory(garou.DefaultHistorySize),
		slowRoom:     "slow", badAppend: "bad", badAfter: "old",
		entered: make(chan struct{}, 1), release: make(chan struct{}),
		errInjected: errors.New("disk on fire"),
	}
}

func (h *testStore) Append(ctx context.Context, room string, m garou.ChatMessage) error {
	switch room {
	case h.slowRoom:
		h.entered <- struct{}{}
		select {
		case <-h.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	case h.badAppend:
		return h.errInjected
	}
	return h.HistoryStore.Append(ctx, room, m)
}

func (h *testStore) After(ctx context.Context, room string, seq uint64) ([]garou.ChatMessage, uint64, error) {
	if room == h.badAfter {
		return nil, 0, h.errInjected
	}
	return h.HistoryStore.After(ctx, room, seq)
}

// TestSlowHistoryHoldsUpOnlyItsRoomsTexts: while the store is stuck on a
// text of one room, the other rooms talk, members join and leave and are
// listed, even in that room; the stuck text is acknowledged and delivered,
// in order, once the store returns.
func TestSlowHistoryHoldsUpOnlyItsRoomsTexts(t *testing.T) {
	h := newTestStore()
	srv := startServer(t, garou.WithHistoryStore(h), garou.WithRateLimit(0, 0))
	alice := dial(t, srv, "alice", garou.WithRooms("slow", "fast"))
	bob := dial(t, srv, "bob", garou.WithRooms("slow", "fast"))

	sent := make(chan error, 1)
	go func() {
		_, err := alice.SendTo(ctxT(t), "slow", "stuck")
		sent <- err
	}()
	<-h.entered

	_, err := bob.SendTo(ctxT(t), "fast", "hello")
	require.NoError(t, err)
	require.Equal(t, "hello", next(t, alice, garou.TypeText).Text)
	_, err = srv.Publish(ctxT(t), "fast", "from the server")
	require.NoError(t, err)
	require.Equal(t, "from the server", next(t, alice, garou.TypeText).Text)
	carol := dial(t, srv, "carol", garou.WithRooms("slow"))
	users, err := bob.Members(ctxT(t), "slow", "")
	require.NoError(t, err)
	require.Equal(t, []string{"alice", "bob", "carol"}, names(users.Users))
	require.NoError(t, carol.Leave(ctxT(t), "slow"))
	select {
	case err := <-sent:
		t.Fatalf("the text was acknowledged before it was kept: %v", err)
	default:
	}

	close(h.release)
	require.NoError(t, <-sent)
	m := next(t, bob, garou.TypeText)
	for m.Room != "slow" {
		m = next(t, bob, garou.TypeText)
	}
	require.Equal(t, "stuck", m.Text)
}

// TestHistoryErrorsAreReported: a text the store cannot keep is refused
// with "internal" and delivered to no one; a replay the store cannot read
// is answered with "internal".
func TestHistoryErrorsAreReported(t *testing.T) {
	h := newTestStore()
	srv := startServer(t, garou.WithHistoryStore(h), garou.WithRateLimit(0, 0))
	alice := dial(t, srv, "alice", garou.WithRooms("bad", "old"))
	bob := dial(t, srv, "bob", garou.WithRooms("bad"))

	_, err := alice.SendTo(ctxT(t), "bad", "lost")
	var e *garou.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, garou.CodeInternal, e.Code)
	_, err = alice.SendTo(ctxT(t), "old", "kept")
	require.NoError(t, err)
	_, err = srv.Publish(ctxT(t), "bad", "lost too")
	require.ErrorAs(t, err, &e)
	require.Equal(t, garou.CodeInternal, e.Code)

	r := rawDial(t, srv)
	r.hello("carol")
	r.sendJSON(map[string]any{"type": "join", "ref": 7, "room": "old", "history": 5})
	require.Equal(t, uint64(7), r.expect("joined").num("ref"), "one reply to the join")
	e7 := r.expectError(garou.CodeInternal, 0)
	require.Equal(t, "old", e7.str("room"))

	// Nothing of "bad" reached bob: alice's leave comes first.
	require.NoError(t, alice.Leave(ctxT(t), "bad"))
	require.Equal(t, garou.TypeLeave, next(t, bob, garou.TypeText, garou.TypeLeave).Type)
}
