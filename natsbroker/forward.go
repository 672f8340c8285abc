package natsbroker

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/garou-chat/garou"
	"github.com/nats-io/nats.go"
)

// One writer per room: a server that publishes a room's texts (its owner)
// listens on "<prefix>.write.<room>" in the queue group "w"; the other
// servers forward their members' texts there, and the owner publishes them
// with its own, several at once. A forward answered by no one (no owner:
// the room's first text, or its owner stopped or lost NATS) makes the
// forwarding server the owner. Two owners at once (both found none) are
// safe, as every text claims its slot, but race for the numbers: the
// owner that finds a slot taken by a writer whose ID is lower than its own
// stops owning the room, so that one owner is left.

// Headers of a forwarded text and of its answer.
const (
	writerHeader      = "Garou-Writer" // on each text stored: the ID of the broker that published it
	msgIDHeader       = "Garou-Msg-Id" // a forwarded text's Nats-Msg-Id
	errorHeader       = "Garou-Error"  // an answer's error
	unavailableHeader = "Garou-Unavailable"
)

// forwarder is what a broker keeps of the texts it forwarded.
type forwarder struct {
	sub     *nats.Subscription // prefix.<inbox>.*: the owners' answers
	inbox   string
	mu      sync.Mutex
	next    uint64
	pending map[string]*forwarded
	closed  bool
}

// forwarded is a text forwarded to its room's owner, its answer awaited.
type forwarded struct {
	s     *started
	room  string
	timer *time.Timer
}

func (b *Broker) writeSubject(room string) string { return b.cfg.prefix + ".write." + token(room) }

// startForwarding listens for the answers to the texts this broker
// forwards.
func (b *Broker) startForwarding() error {
	f := &b.fwd
	f.inbox = b.nc.NewInbox()
	f.pending = make(map[string]*forwarded)
	sub, err := b.nc.Subscribe(f.inbox+".*", b.answered)
	if err != nil {
		return fmt.Errorf("natsbroker: %w", err)
	}
	f.sub = sub
	return nil
}

// stopForwarding stops owning rooms, and fails the texts still forwarded.
func (b *Broker) stopForwarding() {
	b.pmu.Lock()
	for room, sub := range b.owned {
		_ = sub.Unsubscribe()
		delete(b.owned, room)
	}
	b.pmu.Unlock()
	f := &b.fwd
	_ = f.sub.Unsubscribe()
	f.mu.Lock()
	f.closed = true
	pending := f.pending
	f.pending = nil
	f.mu.Unlock()
	for _, fw := range pending {
		fw.timer.Stop()
		fw.s.finish(garou.ChatMessage{}, unavailable(fw.room, errors.New("the broker closed")))
	}
}

// owns reports whether this broker is room's owner.
func (b *Broker) owns(room string) bool {
	b.pmu.Lock()
	defer b.pmu.Unlock()
	return b.owned[room] != nil
}

// own makes this broker room's owner, if it is not.
func (b *Broker) own(room string) {
	b.pmu.Lock()
	defer b.pmu.Unlock()
	if b.owned[room] != nil || b.closing {
		return
	}
	sub, err := b.nc.QueueSubscribe(b.writeSubject(room), "w", b.take)
	if err != nil {
		return // the text is published here all the same; the next may own
	}
	b.owned[room] = sub
}

// disown stops owning room: the texts forwarded to it and not yet taken are
// taken, then the other servers' forwards go to the other owner.
func (b *Broker) disown(room string) {
	b.pmu.Lock()
	defer b.pmu.Unlock()
	if sub := b.owned[room]; sub != nil {
		_ = sub.Drain()
		delete(b.owned, room)
	}
}

// contested follows a slot of room taken by another writer: if that
// writer's ID is lower than this broker's, it keeps the room and this one
// stops owning it.
func (b *Broker) contested(room string) {
	if !b.owns(room) {
		return
	}
	raw, err := b.lastFromLeader(b.ctx(), b.roomSubject(room))
	if err != nil {
		return
	}
	if w := raw.Header.Get(writerHeader); w != "" && w < b.id {
		b.disown(room)
	}
}

// forward sends s to room's owner, or, when there is none, makes this
// broker the owner and queues s here.
func (b *Broker) forward(room string, s *started) {
	f := &b.fwd
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		s.finish(garou.ChatMessage{}, unavailable(room, errors.New("the broker closed")))
		return
	}
	f.next++
	tok := strconv.FormatUint(f.next, 36)
	fw := &forwarded{s: s, room: room}
	f.pending[tok] = fw
	// An owner that stopped after taking the text (a crash) never
	// answers: past an attempt's time, the text is forwarded again (its
	// Nats-Msg-Id recognises it if it was kept), until its deadline.
	fw.timer = time.AfterFunc(attemptTimeout, func() { b.forwardAgain(tok) })
	f.mu.Unlock()
	msg := nats.NewMsg(b.writeSubject(room))
	msg.Reply = f.inbox + "." + tok
	msg.Header.Set(msgIDHeader, s.p.id)
	msg.Data = s.p.data
	if err := b.nc.PublishMsg(msg); err != nil {
		b.forwardAgain(tok)
	}
}

// forwardAgain forwards the text of tok again, unless it was answered or
// is past its deadline.
func (b *Broker) forwardAgain(tok string) {
	fw := b.unpend(tok)
	if fw == nil {
		return
	}
	if !time.Now().Before(fw.s.deadline) || fw.s.ctx.Err() != nil {
		fw.s.finish(garou.ChatMessage{}, unavailable(fw.room, errors.New("no answer from the room's owner")))
		return
	}
	b.forward(fw.room, fw.s)
}

// unpend removes and returns the text forwarded as tok, if still awaited.
func (b *Broker) unpend(tok string) *forwarded {
	f := &b.fwd
	f.mu.Lock()
	defer f.mu.Unlock()
	fw := f.pending[tok]
	if fw != nil {
		delete(f.pending, tok)
		fw.timer.Stop()
	}
	return fw
}

// answered takes an owner's answer to a forwarded text.
func (b *Broker) answered(msg *nats.Msg) {
	fw := b.unpend(msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:])
	if fw == nil {
		return // answered before, or given up
	}
	if msg.Header.Get("Status") == "503" {
		// No owner: this broker is one now.
		b.own(fw.room)
		b.enqueue(fw.room, fw.s)
		return
	}
	if e := msg.Header.Get(errorHeader); e != "" {
		err := errors.New(e)
		if msg.Header.Get(unavailableHeader) != "" {
			err = fmt.Errorf("%w: %w", garou.ErrUnavailable, err)
		}
		fw.s.finish(garou.ChatMessage{}, err)
		return
	}
	seq, err := strconv.ParseUint(msg.Header.Get(seqHeader), 10, 64)
	if err != nil {
		fw.s.finish(garou.ChatMessage{}, fmt.Errorf("natsbroker: an owner's answer without its %s header", seqHeader))
		return
	}
	m, err := decodeWire(fw.room, seq, msg.Data)
	fw.s.finish(m, err)
}

// take is the owner's side: it queues a text forwarded by another server
// with its own, and answers once it is kept (or failed).
func (b *Broker) take(msg *nats.Msg) {
	raw, err := base64.RawURLEncoding.DecodeString(msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:])
	if err != nil || msg.Reply == "" {
		return
	}
	room := string(raw)
	m, err := decodeWire(room, 0, msg.Data)
	id := msg.Header.Get(msgIDHeader)
	if err != nil || id == "" {
		return // not a text of ours
	}
	reply := msg.Reply
	s := &started{ctx: b.ctx(), deadline: time.Now().Add(b.cfg.publish), p: outgoing{m: m, data: msg.Data, id: id},
		done: make(chan struct{})}
	s.then = func(kept garou.ChatMessage, err error) {
		out := nats.NewMsg(reply)
		if err != nil {
			out.Header.Set(errorHeader, err.Error())
			if errors.Is(err, garou.ErrUnavailable) {
				out.Header.Set(unavailableHeader, "1")
			}
		} else {
			out.Header.Set(seqHeader, strconv.FormatUint(kept.Seq, 10))
			out.Data, _ = encodeText(kept)
		}
		_ = b.nc.PublishMsg(out)
	}
	b.enqueue(room, s)
}

// decodeWire rebuilds text seq of room from its stored form.
func decodeWire(room string, seq uint64, data []byte) (garou.ChatMessage, error) {
	var w wireText
	if err := json.Unmarshal(data, &w); err != nil {
		return garou.ChatMessage{}, fmt.Errorf("natsbroker: a text of %q: %w", room, err)
	}
	m := garou.ChatMessage{Type: garou.TypeText, Room: room, Seq: seq, ID: w.ID, Text: w.Text, Time: w.Time.UTC()}
	if w.From != nil {
		m.From = &garou.User{ID: w.From.ID, Name: w.From.Name}
	}
	return m, nil
}
