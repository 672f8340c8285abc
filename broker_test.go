package garou_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/require"
)

// memBroker is a Broker in one process, for servers that share it: the
// simplest one that keeps the contract. With dropEvery > 0 it loses the
// live delivery of every text whose Seq is a multiple of dropEvery, as a
// real broker's at-most-once delivery may, so that the servers must read
// what they missed when the next text comes.
type memBroker struct {
	dropEvery int
	deaf      int // with deaf > 0, the deaf-th Open gets no live delivery
	failReads int // After fails this many times first
	voidEvery int // with voidEvery > 0, every number it divides holds no text (a void)

	mu    sync.Mutex
	opens int
	texts map[string][]garou.ChatMessage
	keys  map[string]garou.ChatMessage
	subs  map[string]map[*func(garou.ChatMessage)]struct{}
}

func newMemBroker() *memBroker {
	return &memBroker{
		texts: make(map[string][]garou.ChatMessage),
		keys:  make(map[string]garou.ChatMessage),
		subs:  make(map[string]map[*func(garou.ChatMessage)]struct{}),
	}
}

func (b *memBroker) Open(_ context.Context, room string, deliver func(garou.ChatMessage)) (uint64, func(), error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs[room] == nil {
		b.subs[room] = make(map[*func(garou.ChatMessage)]struct{})
	}
	d := &deliver
	if b.opens++; b.opens != b.deaf {
		b.subs[room][d] = struct{}{}
	}
	stop := func() {
		b.mu.Lock()
		delete(b.subs[room], d)
		b.mu.Unlock()
	}
	return uint64(len(b.texts[room])), stop, nil
}

// Publish delivers under the broker's lock: one goroutine at a time, in
// order, and never after stop.
func (b *memBroker) Publish(_ context.Context, room string, m garou.ChatMessage, key string) (garou.ChatMessage, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if k, ok := b.keys[key]; ok && key != "" {
		return k, nil
	}
	m.Seq = uint64(len(b.texts[room])) + 1
	if b.voidEvery > 0 && m.Seq%uint64(b.voidEvery) == 0 {
		// A number given up: kept as a void, skipped by After and
		// not delivered.
		b.texts[room] = append(b.texts[room], garou.ChatMessage{Seq: m.Seq})
		m.Seq++
	}
	b.texts[room] = append(b.texts[room], m)
	if key != "" {
		b.keys[key] = m
	}
	if b.dropEvery > 0 && m.Seq%uint64(b.dropEvery) == 0 {
		return m, nil
	}
	for d := range b.subs[room] {
		(*d)(m)
	}
	return m, nil
}

// After returns at most 3 texts, so that readers ask again.
func (b *memBroker) After(_ context.Context, room string, seq uint64) ([]garou.ChatMessage, uint64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failReads > 0 {
		b.failReads--
		return nil, 0, errors.New("the broker is away")
	}
	all := b.texts[room]
	if len(all) == 0 {
		return nil, 0, nil
	}
	out := all[min(seq, uint64(len(all))):]
	var msgs []garou.ChatMessage
	for _, m := range out[:min(3, len(out))] {
		if m.Type != "" { // not a void
			msgs = append(msgs, m)
		}
	}
	return msgs, 1, nil
}

func (b *memBroker) Epoch() string { return "mem" }

// kept returns the texts kept of room.
func (b *memBroker) kept(room string) []garou.ChatMessage {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]garou.ChatMessage(nil), b.texts[room]...)
}

// twoNodes starts two servers sharing b and a data directory (made by the
// first), so one certificate: a client pins one fingerprint for both.
func twoNodes(t *testing.T, b garou.Broker) (*garou.Server, *garou.Server) {
	t.Helper()
	opts := []garou.ServerOption{garou.WithBroker(b), garou.WithDataDir(t.TempDir()), garou.WithPresenceInterval(0)}
	s1 := startServer(t, opts...)
	return s1, startServer(t, opts...)
}

func TestBrokerOneOrderAcrossServers(t *testing.T) {
	for _, drop := range []int{0, 7} { // 60 texts: the last is delivered
		t.Run(fmt.Sprintf("drop%d", drop), func(t *testing.T) {
			b := newMemBroker()
			b.dropEvery = drop
			s1, s2 := twoNodes(t, b)
			cls := []*garou.Client{
				dial(t, s1, "ana", garou.WithRooms(garou.DefaultRoom)),
				dial(t, s2, "bo", garou.WithRooms(garou.DefaultRoom)),
				dial(t, s2, "cy", garou.WithRooms(garou.DefaultRoom)),
			}
			orders := chatAll(t, cls, 20)
			requireOneOrder(t, orders)
			// Dense numbering, the same on both servers.
			kept := b.kept(garou.DefaultRoom)
			require.Len(t, kept, 60)
			for i, m := range kept {
				require.Equal(t, uint64(i+1), m.Seq)
				require.Equal(t, m.Text, orders[0][i])
			}
			require.Equal(t, uint64(60), s1.Rooms()[0].LastSeq)
			require.Equal(t, uint64(60), s2.Rooms()[0].LastSeq)
		})
	}
}

func TestBrokerJoinReplaysFromAnyServer(t *testing.T) {
	b := newMemBroker()
	s1, s2 := twoNodes(t, b)
	ana := dial(t, s1, "ana", garou.WithRooms(garou.DefaultRoom))
	for i := range 7 {
		require.NoError(t, ana.Send(ctxT(t), fmt.Sprint(i)))
	}
	bo := dial(t, s2, "bo", garou.WithRooms())
	_, err := bo.Join(ctxT(t), garou.DefaultRoom, 5)
	require.NoError(t, err)
	for i := 2; i < 7; i++ {
		m := next(t, bo, garou.TypeText)
		require.Equal(t, fmt.Sprint(i), m.Text)
		require.Equal(t, uint64(i+1), m.Seq)
	}
	// Live from the other server, numbered on.
	require.NoError(t, ana.Send(ctxT(t), "live"))
	m := next(t, bo, garou.TypeText)
	require.Equal(t, "live", m.Text)
	require.Equal(t, uint64(8), m.Seq)
}

// Numbers that hold no text (a broker's voids) are told as empty gaps, live
// and in a resume's replay, in their place; the Go client moves past them
// without a message, its texts' Seq going up by two.
func TestBrokerEmptyNumbers(t *testing.T) {
	b := newMemBroker()
	b.voidEvery = 3
	s1, s2 := twoNodes(t, b)
	ana := dial(t, s1, "ana")
	r := rawDial(t, s2)
	r.hello("bo")
	for i := range 4 {
		require.NoError(t, ana.Send(ctxT(t), fmt.Sprint(i)))
	}
	// Live, on the other server: 1, 2, empty 3, 4, 5, (6 void at the next).
	for _, want := range []struct {
		typ  string
		seq  uint64
		from uint64
	}{{"text", 1, 0}, {"text", 2, 0}, {"gap", 0, 3}, {"text", 4, 0}, {"text", 5, 0}} {
		f := r.expect(want.typ)
		if want.typ == "gap" {
			require.Equal(t, want.from, f.num("from_seq"))
			require.Equal(t, want.from, f.num("to_seq"))
			require.Equal(t, true, f["empty"])
			continue
		}
		require.Equal(t, want.seq, f.num("seq"))
	}
	var seqs []uint64
	for range 4 {
		m := next(t, ana, garou.TypeText, garou.TypeGap)
		require.Equal(t, garou.TypeText, m.Type, "an empty gap told to the application")
		seqs = append(seqs, m.Seq)
	}
	require.Equal(t, []uint64{1, 2, 4, 5}, seqs)

	// In a resume's replay from 1: the empty gap in its place.
	r2 := rawDial(t, s2)
	r2.sendJSON(map[string]any{"type": "hello", "name": "cy", "rooms": []map[string]any{{"room": garou.DefaultRoom, "since": 1}}})
	var got []string
	for len(got) == 0 || got[len(got)-1] != "text 5" {
		rr := r2.next()
		require.NoError(t, rr.err)
		switch rr.f.typ() {
		case "text":
			got = append(got, fmt.Sprint("text ", rr.f.num("seq")))
		case "gap":
			got = append(got, fmt.Sprint("gap ", rr.f.num("from_seq"), "-", rr.f.num("to_seq"), " ", rr.f["empty"]))
		}
	}
	require.Equal(t, []string{"text 2", "gap 3-3 true", "text 4", "text 5"}, got)
}

// A client given the addresses of two servers of one service moves to the
// other when its server goes, and resumes its room there with exactly the
// texts it missed.
func TestBrokerClientFailsOverAndResumes(t *testing.T) {
	b := newMemBroker()
	s1, s2 := twoNodes(t, b)
	ana := dial(t, s2, "ana")
	bo := dial(t, s1, "bo", garou.WithServers(addrOf(s2)), garou.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond))
	for i := range 3 {
		require.NoError(t, ana.Send(ctxT(t), fmt.Sprint("before", i)))
		require.Equal(t, fmt.Sprint("before", i), next(t, bo, garou.TypeText).Text)
	}
	require.NoError(t, s1.Close())
	for i := range 5 {
		require.NoError(t, ana.Send(ctxT(t), fmt.Sprint("after", i)))
	}
	for i := range 5 {
		m := next(t, bo, garou.TypeText, garou.TypeGap)
		require.Equal(t, garou.TypeText, m.Type)
		require.Equal(t, fmt.Sprint("after", i), m.Text)
		require.Equal(t, uint64(4+i), m.Seq)
	}
	require.NoError(t, bo.Send(ctxT(t), "back"))
	for m := next(t, ana, garou.TypeText); m.Text != "back"; m = next(t, ana, garou.TypeText) {
	}
}

// A client resuming on a server that has not yet received the texts it
// saw elsewhere gets no false gap: the server catches up first.
func TestBrokerResumeOnServerBehind(t *testing.T) {
	b := newMemBroker()
	b.deaf = 2 // the room on s2 hears nothing live
	s1, s2 := twoNodes(t, b)
	ana := dial(t, s1, "ana")
	resumed := make(chan struct{}, 1)
	bo := dial(t, s1, "bo", garou.WithServers(addrOf(s2)), garou.WithReconnectBackoff(time.Millisecond, 10*time.Millisecond),
		garou.WithStateHandler(func(sc garou.StateChange) {
			if sc.State == garou.StateResumed {
				resumed <- struct{}{}
			}
		}))
	cy := dial(t, s2, "cy")
	for i := range 3 {
		require.NoError(t, ana.Send(ctxT(t), fmt.Sprint(i)))
		require.Equal(t, fmt.Sprint(i), next(t, bo, garou.TypeText).Text)
	}
	require.NoError(t, s1.Close())
	<-resumed // on s2, which had none of the texts when bo came
	seq, err := cy.SendTo(ctxT(t), garou.DefaultRoom, "x")
	require.NoError(t, err)
	require.Equal(t, uint64(4), seq)
	m := next(t, bo, garou.TypeText, garou.TypeGap)
	require.Equal(t, garou.TypeText, m.Type, "%+v", m)
	require.Equal(t, uint64(4), m.Seq)
}

// A server whose read of a hole fails tries again until it succeeds: the
// hole is filled with no later text to show it again.
func TestBrokerFillRetries(t *testing.T) {
	b := newMemBroker()
	b.dropEvery = 2 // text 2 is not delivered live
	b.failReads = 3
	s1, s2 := twoNodes(t, b)
	ana := dial(t, s1, "ana")
	bo := dial(t, s2, "bo")
	for i := range 3 {
		require.NoError(t, ana.Send(ctxT(t), fmt.Sprint(i)))
	}
	for i := range 3 {
		m := next(t, bo, garou.TypeText, garou.TypeGap)
		require.Equal(t, garou.TypeText, m.Type, "%+v", m)
		require.Equal(t, fmt.Sprint(i), m.Text)
	}
}

// startingBroker is a memBroker that is a PublishStarter: it sequences the
// texts in the order they were started, each once the gate is open and
// the text started before it is kept. A text "fail" is not kept.
type startingBroker struct {
	*memBroker
	gate    chan struct{}
	started chan string

	smu  sync.Mutex
	last chan struct{}
}

func (b *startingBroker) StartPublish(ctx context.Context, room string, m garou.ChatMessage, key string) func() (garou.ChatMessage, error) {
	b.smu.Lock()
	prev, done := b.last, make(chan struct{})
	b.last = done
	b.smu.Unlock()
	b.started <- m.Text
	return func() (garou.ChatMessage, error) {
		defer close(done)
		<-b.gate
		if prev != nil {
			<-prev
		}
		if m.Text == "fail" {
			return garou.ChatMessage{}, errors.New("the broker is away")
		}
		return b.Publish(ctx, room, m, key)
	}
}

// A server hands a PublishStarter a room's texts without waiting for the
// previous to be kept, delivers them in order once kept, and acknowledges
// each after its text; a text that is not kept fails alone, and leaves no
// hole.
func TestBrokerStartPublish(t *testing.T) {
	b := &startingBroker{memBroker: newMemBroker(), gate: make(chan struct{}), started: make(chan string, 16)}
	srv := startServer(t, garou.WithBroker(b), garou.WithDataDir(t.TempDir()), garou.WithPresenceInterval(0))
	texts := []string{"one", "fail", "two", "three"}
	cls := make([]*garou.Client, len(texts))
	for i := range texts {
		cls[i] = dial(t, srv, fmt.Sprint("c", i), garou.WithRooms(garou.DefaultRoom))
	}
	errs := make([]chan error, len(texts))
	for i, text := range texts {
		errs[i] = make(chan error, 1)
		go func() { errs[i] <- cls[i].Send(ctxT(t), text) }()
	}
	// All four handed over while none is kept.
	var handed []string
	for range texts {
		select {
		case text := <-b.started:
			handed = append(handed, text)
		case <-ctxT(t).Done():
			t.Fatalf("only %v were handed over before the first was kept", handed)
		}
	}
	close(b.gate)
	for i, text := range texts {
		if text == "fail" {
			require.Error(t, <-errs[i])
		} else {
			require.NoError(t, <-errs[i])
		}
	}
	var want []string
	for _, text := range handed {
		if text != "fail" {
			want = append(want, text)
		}
	}
	for _, c := range cls {
		for k, text := range want {
			m := next(t, c, garou.TypeText)
			require.Equal(t, uint64(k+1), m.Seq)
			require.Equal(t, text, m.Text)
		}
	}
	require.Len(t, b.kept(garou.DefaultRoom), 3)
}

// awayBroker is a memBroker out of reach until back is closed: each
// Publish meanwhile is told on tries and refused as unavailable. With
// keep, each is kept all the same, as a text whose answer was lost.
type awayBroker struct {
	*memBroker
	back  chan struct{}
	tries chan string
	keep  bool
}

func (b *awayBroker) Publish(ctx context.Context, room string, m garou.ChatMessage, key string) (garou.ChatMessage, error) {
	select {
	case <-b.back:
		return b.memBroker.Publish(ctx, room, m, key)
	default:
	}
	if b.keep {
		if _, err := b.memBroker.Publish(ctx, room, m, key); err != nil {
			return garou.ChatMessage{}, err
		}
	}
	select {
	case b.tries <- m.Text:
	default:
	}
	return garou.ChatMessage{}, fmt.Errorf("away: %w", garou.ErrUnavailable)
}

// A text the broker cannot keep for now is refused as unavailable and
// sent again by the client, with its key, until it is kept, once; a
// client closed meanwhile ends the Send with ErrClosed.
func TestSendWhileBrokerAway(t *testing.T) {
	b := &awayBroker{memBroker: newMemBroker(), back: make(chan struct{}), tries: make(chan string, 16)}
	srv := startServer(t, garou.WithBroker(b), garou.WithPresenceInterval(0))
	c := dial(t, srv, "alice", garou.WithRooms(garou.DefaultRoom))
	sent := make(chan error, 1)
	go func() { sent <- c.Send(ctxT(t), "hello") }()
	for range 2 { // refused, then tried again
		select {
		case <-b.tries:
		case <-ctxT(t).Done():
			t.Fatal("the text was not tried twice")
		}
	}
	close(b.back)
	require.NoError(t, <-sent)
	require.Len(t, b.kept(garou.DefaultRoom), 1)

	b2 := &awayBroker{memBroker: newMemBroker(), back: make(chan struct{}), tries: make(chan string, 16)}
	srv2 := startServer(t, garou.WithBroker(b2), garou.WithPresenceInterval(0))
	c2 := dial(t, srv2, "bob", garou.WithRooms(garou.DefaultRoom))
	go func() { sent <- c2.Send(ctxT(t), "hello") }()
	<-b2.tries
	require.NoError(t, c2.Close())
	require.ErrorIs(t, <-sent, garou.ErrClosed)
}

// Server.Publish through a broker out of reach tries again, with one key,
// until the text is kept: once, even when the tries refused as
// unavailable kept it. In a room with members here or not, a ctx that
// ends first ends it with an unavailable *Error wrapping ctx's error.
func TestServerPublishWhileBrokerAway(t *testing.T) {
	for _, members := range []bool{true, false} {
		t.Run(map[bool]string{true: "members here", false: "no member here"}[members], func(t *testing.T) {
			b := &awayBroker{memBroker: newMemBroker(), back: make(chan struct{}), tries: make(chan string, 16), keep: true}
			srv := startServer(t, garou.WithBroker(b), garou.WithPresenceInterval(0))
			if members {
				dial(t, srv, "alice", garou.WithRooms("news"))
			}
			type result struct {
				msg garou.ChatMessage
				err error
			}
			got := make(chan result, 1)
			go func() {
				msg, err := srv.Publish(ctxT(t), "news", "extra")
				got <- result{msg, err}
			}()
			for range 2 {
				<-b.tries
			}
			close(b.back)
			r := <-got
			require.NoError(t, r.err)
			require.Equal(t, uint64(1), r.msg.Seq)
			require.Len(t, b.kept("news"), 1, "kept once")

			b2 := &awayBroker{memBroker: newMemBroker(), back: make(chan struct{}), tries: make(chan string, 16)}
			srv2 := startServer(t, garou.WithBroker(b2), garou.WithPresenceInterval(0))
			if members {
				dial(t, srv2, "bob", garou.WithRooms("news"))
			}
			ctx, cancel := context.WithCancel(ctxT(t))
			go func() {
				_, err := srv2.Publish(ctx, "news", "extra")
				got <- result{err: err}
			}()
			<-b2.tries
			cancel()
			err := (<-got).err
			require.ErrorIs(t, err, context.Canceled)
			var e *garou.Error
			require.ErrorAs(t, err, &e)
			require.Equal(t, garou.CodeUnavailable, e.Code)
		})
	}
}
