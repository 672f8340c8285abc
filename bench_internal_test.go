package garou

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// benchRoom builds a room with n members whose send queues are drained by
// hand, with no network, to measure the fan-out path alone.
func benchRoom(tb testing.TB, n int) (*room, []*conn) {
	tb.Helper()
	s, err := NewServer(WithHistorySize(100))
	if err != nil {
		tb.Fatal(err)
	}
	r := newRoom(s, DefaultRoom, 0)
	members := make([]*conn, n)
	for i := range members {
		c := &conn{s: s, budget: &budget{limit: s.cfg.sendQueueBytes}, maxSize: DefaultMaxMessageSize,
			rooms: map[string]*room{}, lanes: map[string]*lane{}}
		c.user = User{ID: fmt.Sprint(i), Name: fmt.Sprint("user", i), JoinedAt: time.Now()}
		l := &lane{c: c, room: r.name, q: newRoomQueue(c.budget, true)} // no writer: drained by hand
		c.lanes[r.name] = l
		r.addLocked(c, l)
		members[i] = c
	}
	return r, members
}

func drain(r *room) {
	for _, l := range r.mlanes {
		l.q.frames = l.q.frames[:0]
		l.q.bytes = 0
		l.q.b.n.Store(0)
	}
}

// BenchmarkBroadcast sequences one text and puts it on every member's
// queue. Allocations per op do not grow with the number of recipients: the
// frame is encoded once and shared.
func BenchmarkBroadcast(b *testing.B) {
	text := strings.Repeat("x", 100)
	for _, n := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("recipients=%d", n), func(b *testing.B) {
			r, members := benchRoom(b, n)
			from := &members[0].user
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.publish(context.Background(), nil, from, text, "", ""); err != nil {
					b.Fatal(err)
				}
				drain(r)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
	}
}

// TestBroadcastAllocationsPerRecipientAreZero checks what BenchmarkBroadcast
// shows: a broadcast to 1000 members allocates no more than one to 10.
func TestBroadcastAllocationsPerRecipientAreZero(t *testing.T) {
	text := strings.Repeat("x", 100)
	allocs := func(n int) float64 {
		r, members := benchRoom(t, n)
		from := &members[0].user
		// Warm the queues so that append has capacity, as in steady state.
		_, _ = r.publish(context.Background(), nil, from, text, "", "")
		drain(r)
		return testing.AllocsPerRun(200, func() {
			_, _ = r.publish(context.Background(), nil, from, text, "", "")
			drain(r)
		})
	}
	few, many := allocs(10), allocs(1000)
	// One allocation of slack for pools (the race detector empties them at
	// random): an allocation per recipient would add 990.
	if many > few+1 {
		t.Fatalf("a broadcast to 1000 allocates %.1f times, to 10 %.1f: something allocates per recipient", many, few)
	}
	t.Logf("allocations per broadcast: %.1f (10 recipients), %.1f (1000 recipients)", few, many)
}

func BenchmarkEncodeFrame(b *testing.B) {
	u := &User{ID: "abcd-1", Name: "alice", JoinedAt: time.Now()}
	msg := textFrame(&ChatMessage{Type: TypeText, Room: DefaultRoom, Seq: 42, ID: "abcd-2", From: u,
		Text: strings.Repeat("x", 100), Time: time.Now()})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodeFrame(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeTextFrame is a text's encoding, once per text said.
func BenchmarkEncodeTextFrame(b *testing.B) {
	m := &ChatMessage{Type: TypeText, Room: DefaultRoom, Seq: 42, ID: "abcd-2", From: &User{ID: "abcd-1", Name: "alice"},
		Text: strings.Repeat("x", 100), Time: time.Now().UTC()}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodeTextFrame(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadFrame(b *testing.B) {
	frame := frameOf(`{"type":"text","ref":7,"room":"lobby","text":"` + strings.Repeat("x", 100) + `"}`)
	stream := bytes.Repeat(frame, 1000)
	rd := bytes.NewReader(stream)
	fr := frameReader{r: rd, max: DefaultMaxMessageSize}
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if rd.Len() == 0 {
			rd.Reset(stream)
		}
		if _, err := fr.next(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeRequest(b *testing.B) {
	body := []byte(`{"type":"text","ref":7,"room":"lobby","text":"` + strings.Repeat("x", 100) + `"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeRequest(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeReply is the client's cost per delivered text.
func BenchmarkDecodeReply(b *testing.B) {
	frame := mustEncode(textFrame(&ChatMessage{Type: TypeText, Room: DefaultRoom, Seq: 12345, ID: "d0745814-1a2b",
		From: &User{ID: "d0745814-3", Name: "bench-client-12"}, Text: strings.Repeat("x", 100), Time: time.Now().UTC()}))
	body := frame[frameHeaderLen:]
	var d replyDecoder // one per connection, as the client has
	var r reply
	b.ReportAllocs()
	for b.Loop() {
		if err := d.decode(body, &r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClientReceive is the client's receive path per delivered text,
// without the network: the read loop reads frames from a buffered stream,
// decodes them and hands them over, and Receive returns them.
func BenchmarkClientReceive(b *testing.B) {
	const n = 1000
	var stream []byte
	for i := range n {
		stream = append(stream, mustEncode(textFrame(&ChatMessage{Type: TypeText, Room: DefaultRoom, Seq: uint64(i + 1),
			ID: fmt.Sprintf("d0745814-%d", 2*i), From: &User{ID: "d0745814-3", Name: "bench-client-12"},
			Text: strings.Repeat("x", 100), Time: time.Now().UTC()}))...)
	}
	c := &Client{cfg: defaultClientConfig(), readAhead: DefaultReadAhead, avail: make(chan struct{}, 1),
		space: make(chan struct{}, 1), rooms: map[string]*roomState{DefaultRoom: {}}, pending: map[uint64]chan reply{}}
	c.ep.Store(&endpoint{addr: "bench"}) // named in the error at the stream's end
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		cc := &clientConn{stop: make(chan struct{}),
			ctl: streamReader{fr: frameReader{r: bufio.NewReaderSize(bytes.NewReader(stream), 32<<10), max: DefaultMaxMessageSize}}}
		done := make(chan error, 1)
		go func() { done <- c.read(cc, &cc.ctl, true) }()
		for range n {
			if _, err := c.Receive(ctx); err != nil {
				b.Fatal(err)
			}
		}
		<-done
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
}

// groupStore is the memory history as an AppendStarter with group commit,
// without a disk: a committer keeps every text queued while it worked at
// once, then returns their waits in order, as boltstore and pebblestore do.
type groupStore struct {
	HistoryStore
	ops  chan groupOp
	done chan struct{}
}

type groupOp struct {
	room string
	m    ChatMessage
	done chan error
}

func newGroupStore() *groupStore {
	g := &groupStore{HistoryStore: NewMemoryHistory(DefaultHistorySize), ops: make(chan groupOp, 1024), done: make(chan struct{})}
	go g.run()
	return g
}

func (g *groupStore) StartAppend(_ context.Context, room string, m ChatMessage) func() error {
	o := groupOp{room: room, m: m, done: make(chan error, 1)}
	g.ops <- o
	return func() error { return <-o.done }
}

func (g *groupStore) run() {
	defer close(g.done)
	var batch []groupOp
	for o := range g.ops {
		batch = append(batch[:0], o)
	drain:
		for {
			select {
			case o, ok := <-g.ops:
				if !ok {
					break drain
				}
				batch = append(batch, o)
			default:
				break drain
			}
		}
		for _, o := range batch {
			o.done <- g.Append(context.Background(), o.room, o.m)
		}
	}
}

func (g *groupStore) close() {
	close(g.ops)
	<-g.done
}

// countStream is a room stream that counts the writes made to it.
type countStream struct{ writes *atomic.Int64 }

func (s countStream) Write(p []byte) (int, error) {
	s.writes.Add(1)
	return len(p), nil
}
func (countStream) Close() error                     { return nil }
func (countStream) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkPipelinedDelivery is burst's server side without the network:
// texts said at once in a room of 50 by many senders, kept by a store with
// group commit and delivered through each member's lane writer. writes/text
// is the stream writes per member and text: the texts a commit releases go
// to a member in one write when they are delivered together.
func BenchmarkPipelinedDelivery(b *testing.B) {
	const n = 50
	st := newGroupStore()
	defer st.close()
	s, err := NewServer(WithHistoryStore(st))
	if err != nil {
		b.Fatal(err)
	}
	r := newRoom(s, DefaultRoom, 0)
	var writes atomic.Int64
	for i := range n {
		c := &conn{s: s, budget: &budget{limit: 1 << 40}, maxSize: DefaultMaxMessageSize,
			rooms: map[string]*room{}, lanes: map[string]*lane{}}
		c.user = User{ID: fmt.Sprint(i), Name: fmt.Sprint("user", i), JoinedAt: time.Now()}
		l := newLane(c, r.name, newRoomQueue(c.budget, true))
		l.str = countStream{&writes}
		c.lanes[r.name] = l
		r.addLocked(c, l)
	}
	from := &User{ID: "0", Name: "user0"}
	text := strings.Repeat("x", 100)
	b.SetParallelism(32) // many senders, each waiting for its text
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.publish(context.Background(), nil, from, text, "", ""); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	s.wg.Wait() // the lane writers
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
	b.ReportMetric(float64(writes.Load())/float64(b.N*n), "writes/text")
}
