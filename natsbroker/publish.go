package natsbroker

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/garou-chat/garou"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var _ garou.PublishStarter = (*Broker)(nil)

// The headers of JetStream's atomic batch publish (nats-server 2.12+).
const (
	batchIDHeader     = "Nats-Batch-Id"
	batchSeqHeader    = "Nats-Batch-Sequence"
	batchCommitHeader = "Nats-Batch-Commit"
)

// DefaultMaxBatch is the most texts of one room one atomic batch carries,
// on a stream with memory storage or several replicas.
const DefaultMaxBatch = 64

// WithMaxBatch sets the most texts of one room a server publishes in one
// JetStream atomic batch; 1 publishes each text on its own. Default (0):
// by the stream, 1 on
// a stream with file storage and one replica, where NATS writes each
// batch to a file of its own and syncs it before committing it (which
// costs milliseconds, more than the round trips it saves), and
// DefaultMaxBatch on a stream in memory or with several replicas, which
// stage a batch in memory.
func WithMaxBatch(n int) Option { return func(c *config) { c.maxBatch = n } }

// started is a text handed to StartPublish, waiting to be published.
type started struct {
	ctx      context.Context
	deadline time.Time
	p        outgoing
	done     chan struct{}
	kept     garou.ChatMessage
	err      error
}

func (s *started) finish(m garou.ChatMessage, err error) {
	s.kept, s.err = m, err
	close(s.done)
}

// StartPublish queues m as room's next text after those this broker was
// handed before, and returns at once. The texts of a room are published by
// one goroutine, in the order they were handed over: each time, those
// queued meanwhile together (up to WithMaxBatch) in one atomic batch, whose
// first text expects the room's last as Publish does, so the batch is
// kept whole, numbered densely after the room's last text, or not at
// all. A batch that holds a text kept before (a retry) is published again
// one text at a time, which answers that text with the one kept first.
// A batch is retried as Publish is, for up to the request timeout (or
// ctx's deadline) from the StartPublish of its first text.
func (b *Broker) StartPublish(ctx context.Context, room string, m garou.ChatMessage, key string) func() (garou.ChatMessage, error) {
	p, err := b.prepare(m, room, key)
	if err != nil {
		return func() (garou.ChatMessage, error) { return garou.ChatMessage{}, err }
	}
	s := &started{ctx: ctx, deadline: time.Now().Add(b.cfg.publish), p: p, done: make(chan struct{})}
	if d, ok := ctx.Deadline(); ok {
		s.deadline = d
	}
	b.pmu.Lock()
	q := b.pubs[room]
	if q == nil {
		q = &pubQueue{}
		b.pubs[room] = q
		b.pwg.Add(1)
		go b.publishLoop(room, q)
	}
	q.texts = append(q.texts, s)
	b.pmu.Unlock()
	return func() (garou.ChatMessage, error) {
		<-s.done
		return s.kept, s.err
	}
}

// pubQueue is a room's texts handed to StartPublish and not yet published.
// Guarded by Broker.pmu.
type pubQueue struct{ texts []*started }

// publishLoop publishes room's queued texts, batch after batch, and ends
// once none is left.
func (b *Broker) publishLoop(room string, q *pubQueue) {
	defer b.pwg.Done()
	for {
		b.pmu.Lock()
		n := min(len(q.texts), b.cfg.maxBatch)
		if n == 0 {
			delete(b.pubs, room)
			b.pmu.Unlock()
			return
		}
		batch := make([]*started, n)
		copy(batch, q.texts)
		q.texts = append(q.texts[:0], q.texts[n:]...)
		b.pmu.Unlock()
		b.publishBatch(room, q, batch)
	}
}

// publishBatch publishes batch, texts of room in the order handed over,
// and finishes each. A batch that loses the race for the number, or
// fails for a while, takes the texts queued meanwhile along (up to
// WithMaxBatch) when it tries again.
func (b *Broker) publishBatch(room string, q *pubQueue, batch []*started) {
	// The first was handed over first: its deadline is the batch's.
	ctx, cancel := context.WithDeadline(batch[0].ctx, batch[0].deadline)
	defer cancel()
	st := b.state(room)
	subj := b.roomSubject(room)
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			batch = b.grow(q, batch)
		}
		known, lastStream, lastSeq := st.last()
		err := errNotKnown
		var stream uint64
		switch {
		case !known:
		case len(batch) == 1:
			var ack *jetstream.PubAck
			if ack, err = b.publishAttempt(ctx, subj, batch[0].p, lastStream, lastSeq); err == nil && ack.Duplicate {
				// Stored before (a retry): the text kept first is the one.
				batch[0].finish(b.kept(ctx, room, ack.Sequence))
				return
			} else if err == nil {
				stream = ack.Sequence
			}
		default:
			actx, acancel := context.WithTimeout(ctx, attemptTimeout)
			stream, err = b.sendBatch(actx, room, batch, lastStream, lastSeq)
			acancel()
		}
		switch {
		case err == nil:
			n := uint64(len(batch))
			// The batch's texts are in the stream in order; only the
			// last one's stream sequence is known for sure.
			st.note(lastSeq+n, stream)
			for i, s := range batch {
				m := s.p.m
				m.Seq = lastSeq + 1 + uint64(i)
				s.finish(m, nil)
			}
			return
		case err == errNotKnown || isWrongLastSeq(err):
			if err = b.reload(ctx, room, st, err, lastStream, attempt); err == nil {
				continue
			}
		case transient(err):
			if err = b.recover(ctx, room, st, err, attempt); err == nil {
				continue
			}
		case len(batch) > 1:
			// A text kept before (a retry) in the batch, or the stream
			// refusing batches (too large, too many at once, atomic
			// publishing turned off): one at a time, as Publish.
			for _, s := range batch {
				s.finish(b.publishOne(ctx, room, s.p))
			}
			return
		default:
			err = fmt.Errorf("natsbroker: publish to %q: %w", room, err)
		}
		for _, s := range batch {
			s.finish(garou.ChatMessage{}, err)
		}
		return
	}
}

// grow adds to batch the texts queued in q since, up to WithMaxBatch.
func (b *Broker) grow(q *pubQueue, batch []*started) []*started {
	b.pmu.Lock()
	defer b.pmu.Unlock()
	n := min(len(q.texts), b.cfg.maxBatch-len(batch))
	if n <= 0 {
		return batch
	}
	batch = append(batch, q.texts[:n]...)
	q.texts = append(q.texts[:0], q.texts[n:]...)
	return batch
}

// sendBatch publishes batch to room as one atomic batch numbered after the
// room's text lastSeq, at stream sequence lastStream, and returns the
// stream sequence of its last text once the batch is kept.
func (b *Broker) sendBatch(ctx context.Context, room string, batch []*started, lastStream, lastSeq uint64) (uint64, error) {
	var raw [12]byte
	_, _ = rand.Read(raw[:])
	id := base64.RawURLEncoding.EncodeToString(raw[:])
	subj := b.roomSubject(room)
	var reply *nats.Msg
	for i, s := range batch {
		msg := nats.NewMsg(subj)
		msg.Header.Set(batchIDHeader, id)
		msg.Header.Set(batchSeqHeader, strconv.Itoa(i+1))
		msg.Header.Set(seqHeader, strconv.FormatUint(lastSeq+1+uint64(i), 10))
		msg.Header.Set(jetstream.MsgIDHeader, s.p.id)
		if i == 0 {
			// The batch is kept whole or not at all: its first text's
			// expectation is the whole batch's.
			msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(lastStream, 10))
		}
		msg.Data = s.p.data
		if i < len(batch)-1 {
			// Fire and forget: a text lost on the way fails the commit.
			if err := b.nc.PublishMsg(msg); err != nil {
				return 0, err
			}
			continue
		}
		msg.Header.Set(batchCommitHeader, "1")
		var err error
		if reply, err = b.nc.RequestMsgWithContext(ctx, msg); err != nil {
			return 0, err
		}
	}
	var ack struct {
		Error *jetstream.APIError `json:"error"`
		Seq   uint64              `json:"seq"`
		Count int                 `json:"count"`
	}
	if err := json.Unmarshal(reply.Data, &ack); err != nil {
		return 0, fmt.Errorf("natsbroker: an answer it could not read: %w", err)
	}
	switch {
	case ack.Error != nil:
		return 0, ack.Error
	case ack.Count != len(batch) || ack.Seq < uint64(len(batch)):
		return 0, errors.New("natsbroker: a batch acknowledged with another count")
	}
	return ack.Seq, nil
}
