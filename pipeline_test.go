package garou_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/require"
)

// pipeStore is the memory history as an AppendStarter whose texts wait,
// queued in the order handed over, until the test commits them, as a
// durable store's group commit would. As the contract asks, a text queued
// after one that was not kept, with a greater Seq, is not kept either,
// until one whose Seq goes back.
type pipeStore struct {
	garou.HistoryStore
	queued chan *pipeOp
	auto   string // a room whose texts are kept at once

	mu         sync.Mutex
	pending    int
	lost       map[string]uint64
	forgotBusy bool // Forget came with a text of the room still pending
}

type pipeOp struct {
	room string
	m    garou.ChatMessage
	done chan error
}

var (
	errDiskFull = errors.New("no space left on device")
	errEarlier  = errors.New("an earlier text was not kept")
)

func newPipeStore() *pipeStore {
	return &pipeStore{HistoryStore: garou.NewMemoryHistory(garou.DefaultHistorySize),
		queued: make(chan *pipeOp, 64), lost: make(map[string]uint64)}
}

func (p *pipeStore) StartAppend(_ context.Context, room string, m garou.ChatMessage) func() error {
	o := &pipeOp{room: room, m: m, done: make(chan error, 1)}
	p.mu.Lock()
	p.pending++
	p.mu.Unlock()
	if room == p.auto {
		p.commit(o, nil)
	} else {
		p.queued <- o
	}
	return func() error { return <-o.done }
}

// commit ends o: kept, or failed with err.
func (p *pipeStore) commit(o *pipeOp, err error) {
	p.mu.Lock()
	last, held := p.lost[o.room]
	switch {
	case held && o.m.Seq > last:
		err = errEarlier
	case err != nil:
		p.lost[o.room] = o.m.Seq
	default:
		delete(p.lost, o.room)
		err = p.HistoryStore.Append(context.Background(), o.room, o.m)
	}
	p.pending--
	p.mu.Unlock()
	o.done <- err
}

func (p *pipeStore) Forget(ctx context.Context, room string) error {
	p.mu.Lock()
	p.forgotBusy = p.forgotBusy || p.pending > 0
	delete(p.lost, room)
	p.mu.Unlock()
	return p.HistoryStore.Forget(ctx, room)
}

var _ garou.AppendStarter = (*pipeStore)(nil)

// TestPipelinedHistoryOrder: with an AppendStarter, texts said at once in
// a room are all handed to the store before any is on disk, numbered in
// the order handed over; none is acknowledged or delivered before it is
// kept, and every member gets them in sequence.
func TestPipelinedHistoryOrder(t *testing.T) {
	h := newPipeStore()
	srv := startServer(t, garou.WithHistoryStore(h), garou.WithRateLimit(0, 0))
	const n = 6 // a connection's texts are taken one at a time: one each
	clients := make([]*garou.Client, n)
	for i := range clients {
		clients[i] = dial(t, srv, fmt.Sprint("u", i), garou.WithRooms("den"))
	}
	sent := make(chan error, n)
	for i, c := range clients {
		go func() {
			_, err := c.SendTo(ctxT(t), "den", fmt.Sprint("t", i))
			sent <- err
		}()
	}
	var ops []*pipeOp
	for i := range n { // all handed over, none kept yet
		o := <-h.queued
		require.Equal(t, uint64(i+1), o.m.Seq)
		ops = append(ops, o)
	}
	require.Empty(t, sent, "acknowledged before kept")
	for _, o := range ops[:3] { // one commit, then another
		h.commit(o, nil)
	}
	for _, o := range ops[3:] {
		h.commit(o, nil)
	}
	for range n {
		require.NoError(t, <-sent)
	}
	for _, c := range clients {
		for i := range n {
			m := next(t, c, garou.TypeText)
			require.Equal(t, uint64(i+1), m.Seq)
			require.Equal(t, ops[i].m.Text, m.Text)
		}
	}
	st := srv.Stats()
	require.Equal(t, uint64(n), st.HistoryAppends)
	require.Zero(t, st.HistoryErrors)
}

// TestPipelinedHistoryFailure: the disk fills with three texts handed
// over. The first fails, so the store keeps none of the three; their
// senders get "internal", no member gets any of them, and the room's next
// text takes the first's number: members see the numbering with no hole,
// and never a number twice.
func TestPipelinedHistoryFailure(t *testing.T) {
	h := newPipeStore()
	srv := startServer(t, garou.WithHistoryStore(h), garou.WithRateLimit(0, 0))
	alice := dial(t, srv, "alice", garou.WithRooms("den"))
	bob := dial(t, srv, "bob", garou.WithRooms("den"))
	dave := dial(t, srv, "dave", garou.WithRooms("den"))

	send := func(c *garou.Client, text string, sent chan<- error) {
		go func() {
			_, err := c.SendTo(ctxT(t), "den", text)
			sent <- err
		}()
	}
	sent := make(chan error, 3)
	send(alice, "first", sent)
	h.commit(<-h.queued, nil)
	require.NoError(t, <-sent)

	send(alice, "a", sent)
	send(bob, "b", sent)
	send(dave, "c", sent)
	ops := []*pipeOp{<-h.queued, <-h.queued, <-h.queued}
	for i, o := range ops {
		require.Equal(t, uint64(i+2), o.m.Seq)
	}
	h.commit(ops[0], errDiskFull)
	h.commit(ops[1], nil) // not kept: the one before it was not
	h.commit(ops[2], nil)
	for range 3 {
		var e *garou.Error
		require.ErrorAs(t, <-sent, &e)
		require.Equal(t, garou.CodeInternal, e.Code)
	}

	send(bob, "after", sent)
	o := <-h.queued
	require.Equal(t, uint64(2), o.m.Seq, "the number of the text that failed, which no member saw")
	h.commit(o, nil)
	require.NoError(t, <-sent)
	for _, c := range []*garou.Client{alice, bob, dave} {
		for i, want := range []string{"first", "after"} {
			m := next(t, c, garou.TypeText)
			require.Equal(t, uint64(i+1), m.Seq)
			require.Equal(t, want, m.Text)
		}
	}

	// A joiner asking for history gets what was delivered, nothing else.
	r := rawDial(t, srv)
	r.hello("carol")
	r.sendJSON(map[string]any{"type": "join", "ref": 1, "room": "den", "history": 10})
	r.expect("joined")
	for i, want := range []string{"first", "after"} {
		m := r.expect("text")
		require.Equal(t, uint64(i+1), m.num("seq"))
		require.Equal(t, want, m.str("text"))
	}
	require.Equal(t, uint64(3), srv.Stats().HistoryErrors)
}

// TestPipelinedHistoryForgetWaits: the last member of a room leaves while
// a text published by the server is handed over and not yet kept; the
// room's history is forgotten only once it is.
func TestPipelinedHistoryForgetWaits(t *testing.T) {
	h := newPipeStore()
	srv := startServer(t, garou.WithHistoryStore(h), garou.WithRateLimit(0, 0))
	alice := dial(t, srv, "alice", garou.WithRooms("solo"))
	sent := make(chan error, 1)
	go func() {
		_, err := srv.Publish(ctxT(t), "solo", "text")
		sent <- err
	}()
	o := <-h.queued
	require.NoError(t, alice.Close())
	for gone := false; !gone; runtime.Gosched() { // the room's last member has left
		gone = true
		for _, r := range srv.Rooms() {
			gone = gone && (r.Name != "solo" || r.Members == 0)
		}
	}
	h.commit(o, nil)
	require.NoError(t, <-sent)
	for inRooms := true; inRooms; runtime.Gosched() { // removed once forgotten
		inRooms = false
		for _, r := range srv.Rooms() {
			inRooms = inRooms || r.Name == "solo"
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	require.False(t, h.forgotBusy, "forgotten with a text not yet kept")
	msgs, _, err := h.HistoryStore.After(ctxT(t), "solo", 0)
	require.NoError(t, err)
	require.Empty(t, msgs)
}

// TestPipelinedHistoryShutdown: a graceful shutdown that begins while a
// text is handed over and not yet kept delivers it before it tells the
// members the server is shutting down.
func TestPipelinedHistoryShutdown(t *testing.T) {
	h := newPipeStore()
	h.auto = "probe"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, served := serveCtx(t, ctx, garou.WithHistoryStore(h), garou.WithRateLimit(0, 0))
	alice := dial(t, srv, "alice", garou.WithReconnect(0), garou.WithRooms("den", "probe"))
	sent := make(chan error, 1)
	go func() {
		_, err := alice.SendTo(ctxT(t), "den", "held")
		sent <- err
	}()
	o := <-h.queued
	cancel()
	for { // until the shutdown refuses texts: it waits for "held" now
		_, err := srv.Publish(ctxT(t), "probe", "probe")
		var e *garou.Error
		if errors.As(err, &e) && e.Code == garou.CodeShutdown {
			break
		}
		require.NoError(t, err)
	}
	h.commit(o, nil)
	require.NoError(t, <-sent)
	texts := textsUntilShutdown(t, alice)
	require.Contains(t, texts, "held")
	require.NoError(t, served())
}
