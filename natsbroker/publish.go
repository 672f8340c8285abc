package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/garou-chat/garou"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var _ garou.PublishStarter = (*Broker)(nil)

// DefaultWindow is the most texts of one room a server has on their way
// to the stream at once.
const DefaultWindow = 128

// WithWindow sets the most texts of one room one server has on their way
// to the stream at once: published, their acknowledgement not yet back.
// 1 publishes each text once the previous is kept. Default DefaultWindow.
func WithWindow(n int) Option { return func(c *config) { c.window = n } }

// started is a text handed to StartPublish, waiting to be published.
type started struct {
	ctx      context.Context
	deadline time.Time
	p        outgoing
	done     chan struct{}
	kept     garou.ChatMessage
	err      error
	then     func(garou.ChatMessage, error) // if set, called once done: a forwarded text's answer
	gate     *gate                          // its sender's, on the server it was said on
}

func (s *started) finish(m garou.ChatMessage, err error) {
	s.kept, s.err = m, err
	close(s.done)
	if s.then != nil {
		s.then(m, err)
	}
	if s.gate != nil {
		s.gate.advance()
	}
}

// gate holds a sender's texts of one room, on the server they were said
// on, until the previous one is done: a sender's texts keep their order
// whatever fails, and whichever server publishes them.
type gate struct {
	b       *Broker
	key     string
	room    string
	waiting []*started
}

// advance hands over the next text waiting, if any.
func (g *gate) advance() {
	b := g.b
	b.gmu.Lock()
	if len(g.waiting) == 0 {
		delete(b.gates, g.key)
		b.gmu.Unlock()
		return
	}
	next := g.waiting[0]
	g.waiting[0] = nil
	g.waiting = g.waiting[1:]
	b.gmu.Unlock()
	b.dispatch(g.room, next)
}

// dispatch hands s to this broker's writer of room if it owns the room,
// or forwards it to the room's owner.
func (b *Broker) dispatch(room string, s *started) {
	if b.owns(room) {
		b.enqueue(room, s)
	} else {
		b.forward(room, s)
	}
}

// context is s's context bounded by its deadline.
func (s *started) context() (context.Context, context.CancelFunc) {
	return context.WithDeadline(s.ctx, s.deadline)
}

// StartPublish queues m as room's next text after those this broker was
// handed before, and returns at once. The texts of a room are published by
// one goroutine, in the order they were handed over, each to the slot of
// the number it takes, without waiting for the previous one to be kept
// (up to WithWindow at once). A text whose slot another server took
// meanwhile is numbered again, after the room's latest; one that fails
// for a while (NATS out of reach, a leader being elected) is published
// again to its slot, for up to the publish timeout (or ctx's deadline)
// from its StartPublish.
func (b *Broker) StartPublish(ctx context.Context, room string, m garou.ChatMessage, key string) func() (garou.ChatMessage, error) {
	p, err := b.prepare(m, room, key)
	if err != nil {
		return func() (garou.ChatMessage, error) { return garou.ChatMessage{}, err }
	}
	s := &started{ctx: ctx, deadline: time.Now().Add(b.cfg.publish), p: p, done: make(chan struct{})}
	if d, ok := ctx.Deadline(); ok {
		s.deadline = d
	}
	gk := room + "\x00" + sender(s)
	b.gmu.Lock()
	if g := b.gates[gk]; g != nil {
		s.gate = g
		g.waiting = append(g.waiting, s)
		b.gmu.Unlock()
	} else {
		s.gate = &gate{b: b, key: gk, room: room}
		b.gates[gk] = s.gate
		b.gmu.Unlock()
		b.dispatch(room, s)
	}
	return func() (garou.ChatMessage, error) {
		<-s.done
		return s.kept, s.err
	}
}

// enqueue queues s, to be published by this broker, after the texts of
// room queued before.
func (b *Broker) enqueue(room string, s *started) {
	b.pmu.Lock()
	if b.closing {
		b.pmu.Unlock()
		s.finish(garou.ChatMessage{}, unavailable(room, errors.New("the broker closed")))
		return
	}
	q := b.pubs[room]
	if q == nil {
		q = &pubQueue{more: make(chan struct{}, 1)}
		b.pubs[room] = q
		b.pwg.Add(1)
		go b.publishLoop(room, q)
	}
	q.texts = append(q.texts, s)
	select {
	case q.more <- struct{}{}:
	default:
	}
	b.pmu.Unlock()
}

// pubQueue is a room's texts handed to StartPublish and not yet published.
// Guarded by Broker.pmu.
type pubQueue struct {
	texts []*started
	more  chan struct{} // signalled when a text is queued, for a writer waiting for an answer
}

// publishLoop publishes room's queued texts, and ends once none is left.
func (b *Broker) publishLoop(room string, q *pubQueue) {
	defer b.pwg.Done()
	w := &writer{b: b, room: room, q: q, st: b.state(room)}
	w.run()
}

// writer publishes one room's texts for StartPublish, several at once:
// each to the slot of its number, claimed with an expected last sequence
// of 0 on the slot's subject, so that a slot holds one text (or one
// void) whoever publishes to it. The stream stores a connection's
// messages in the order sent, so a writer's texts are kept in its order;
// a text that failed while later ones were kept is published again to its
// slot (a retry of a text stored after all is recognised by its
// Nats-Msg-Id), or, if that cannot be done before its deadline, its slot
// is voided.
type writer struct {
	b    *Broker
	room string
	q    *pubQueue
	st   *roomState

	next     uint64     // the number of the next slot; 0 until known
	reload   bool       // the room's latest must be read again before numbering
	sent     []*flight  // published, answers awaited, in the order sent
	draining bool       // a text failed: publish nothing new until every answer is in
	again    []*flight  // to publish again to their slot
	anew     []*started // to number again: their slot was taken
	free     []uint64   // empty slots behind kept ones, for the next texts
	attempt  int        // failed rounds in a row
}

// flight is a text published to its slot, its answer awaited.
type flight struct {
	s    *started
	slot uint64
	fut  jetstream.PubAckFuture
	err  error // the publish failed before it was sent
}

func (w *writer) run() {
	b := w.b
	for {
		if !w.draining {
			w.fill()
		}
		if len(w.sent) == 0 {
			if w.draining {
				w.retry()
				continue
			}
			if len(w.free) > 0 {
				// No text came for the slots left empty: voided.
				for _, n := range w.free {
					b.void(w.room, n)
				}
				w.free = nil
				continue
			}
			b.pmu.Lock()
			if len(w.q.texts) == 0 {
				delete(b.pubs, w.room)
				b.pmu.Unlock()
				return
			}
			b.pmu.Unlock()
			continue
		}
		f := w.sent[0]
		w.sent = w.sent[1:]
		w.settle(f)
	}
}

// take returns the next text to number: those to number again first, in
// their order, then the queue's; nil when there is none. The queue holds
// one text of each sender at most (gate).
func (w *writer) take() *started {
	if len(w.anew) > 0 {
		s := w.anew[0]
		w.anew = w.anew[1:]
		return s
	}
	w.b.pmu.Lock()
	defer w.b.pmu.Unlock()
	if len(w.q.texts) == 0 {
		return nil
	}
	s := w.q.texts[0]
	w.q.texts[0] = nil
	w.q.texts = w.q.texts[1:]
	return s
}

// sender names the sender of s's text.
func sender(s *started) string {
	if s.p.m.From == nil {
		return ""
	}
	return s.p.m.From.ID
}

// fill publishes texts until the window is full or none is waiting.
func (w *writer) fill() {
	for len(w.sent) < w.b.cfg.window {
		s := w.take()
		if s == nil {
			return
		}
		if len(w.free) > 0 {
			w.send(&flight{s: s, slot: w.free[0]})
			w.free = w.free[1:]
			continue
		}
		if w.next == 0 && !w.learn(s) {
			continue
		}
		w.send(&flight{s: s, slot: w.next})
		w.next++
	}
}

// learn learns the number of the room's next slot, within s's deadline;
// if it cannot, it fails s and returns false.
func (w *writer) learn(s *started) bool {
	ctx, cancel := s.context()
	defer cancel()
	for attempt := 0; ; attempt++ {
		if known, _, seq := w.st.last(); known && !w.reload {
			w.next = seq + 1
			return true
		}
		actx, acancel := context.WithTimeout(ctx, attemptTimeout)
		_, err := w.b.loadLast(actx, w.room, w.st)
		acancel()
		switch {
		case err == nil:
			w.reload = false
			continue
		case !transient(err):
			s.finish(garou.ChatMessage{}, err)
			return false
		}
		if err := pause(ctx, attempt, err); err != nil {
			s.finish(garou.ChatMessage{}, unavailable(w.room, err))
			return false
		}
	}
}

// send publishes f's text to its slot.
func (w *writer) send(f *flight) {
	msg := nats.NewMsg(w.b.slotSubject(w.room, f.slot))
	msg.Header.Set(seqHeader, strconv.FormatUint(f.slot, 10))
	msg.Header.Set(writerHeader, w.b.id)
	msg.Data = f.s.p.data
	f.fut, f.err = w.b.js.PublishMsgAsync(msg, jetstream.WithMsgID(f.s.p.id), jetstream.WithExpectLastSequencePerSubject(0))
	w.sent = append(w.sent, f)
}

// settle takes f's answer.
func (w *writer) settle(f *flight) {
	var ack *jetstream.PubAck
	err := f.err
	for wait := err == nil; wait; {
		select {
		case ack = <-f.fut.Ok():
			wait = false
		case err = <-f.fut.Err():
			wait = false
		case <-w.q.more:
			// Texts queued meanwhile go now, not after this answer.
			if !w.draining {
				w.fill()
			}
		}
	}
	switch {
	case err == nil && !ack.Duplicate:
		w.attempt = 0
		w.st.note(f.slot, ack.Sequence)
		m := f.s.p.m
		m.Seq = f.slot
		f.s.finish(m, nil)
		w.b.trim(w.room, f.slot)
	case err == nil:
		// Kept before (a retry): the text kept first is the one, and
		// this slot, left empty, is voided unless that text is in it.
		ctx, cancel := f.s.context()
		m, err := w.b.kept(ctx, w.room, ack.Sequence)
		cancel()
		switch {
		case err == nil && m.Seq == f.slot:
		case len(w.sent) == 0 && w.next == f.slot+1 && !w.draining:
			w.next = f.slot // nothing sent after it: the next text takes the slot
		default:
			// The next text takes it, if one comes before this writer
			// is idle (another sender's, which may be numbered before
			// the texts on their way).
			w.free = append(w.free, f.slot)
		}
		f.s.finish(m, err)
	case isWrongLastSeq(err) && !inProcess(err):
		// Another server took the slot: number the text again once every
		// answer is in, after the room's latest.
		w.anew = append(w.anew, f.s)
		w.draining, w.reload = true, true
	case transient(err) || !isAPIError(err) || inProcess(err):
		// Not answered, or not sent (NATS out of reach), or the slot
		// being written (by this text's earlier attempt, perhaps): only
		// JetStream's own refusals are final.
		w.again = append(w.again, f)
		w.draining = true
	default:
		f.s.finish(garou.ChatMessage{}, fmt.Errorf("natsbroker: publish to %q: %w", w.room, err))
		w.b.void(w.room, f.slot)
	}
}

// retry follows a round in which texts failed, once every answer is in:
// after a pause, those that failed for a while are published again to
// their slot, unless past their deadline (then their slot is voided);
// those whose slot was taken are numbered after the room's latest.
func (w *writer) retry() {
	w.draining = false
	if len(w.anew) > 0 {
		w.b.contested(w.room)
	}
	again := w.again
	w.again = nil
	if len(again) == 0 {
		return
	}
	ctx, cancel := again[0].s.context()
	err := pause(ctx, w.attempt, errors.New("natsbroker: publish timed out"))
	cancel()
	w.attempt++
	if err == nil && w.attempt%4 == 0 {
		// The stream may be gone (NATS lost a memory stream): reading the
		// room's latest makes it anew.
		actx, acancel := context.WithTimeout(context.Background(), attemptTimeout)
		_, _ = w.b.loadLast(actx, w.room, w.st)
		acancel()
	}
	past := func(f *flight) bool { return !time.Now().Before(f.s.deadline) || f.s.ctx.Err() != nil }
	if uint64(len(again)) == w.next-again[0].slot && len(w.anew) == 0 && !slices.ContainsFunc(again, func(f *flight) bool { return !past(f) }) {
		// The last texts sent all failed (NATS out of reach): nothing
		// was kept after them, so their slots are numbered again, not
		// voided. One stored after all takes its slot first, and its
		// retry is answered with it.
		for _, f := range again {
			f.s.finish(garou.ChatMessage{}, unavailable(w.room, errors.New("no answer from the stream")))
		}
		w.next = again[0].slot
		return
	}
	for _, f := range again {
		if past(f) {
			f.s.finish(garou.ChatMessage{}, unavailable(w.room, errors.New("no answer from the stream")))
			w.b.void(w.room, f.slot)
			continue
		}
		w.send(&flight{s: f.s, slot: f.slot})
	}
}

// isAPIError reports whether err is JetStream's answer, not a failure to
// get one.
func isAPIError(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr)
}

// inProcess reports whether err says that the slot is being written, in a
// NATS cluster: by another server, or by an earlier attempt of the same
// text, which an attempt after it finds as the first.
func inProcess(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}
