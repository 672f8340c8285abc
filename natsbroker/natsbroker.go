// Package natsbroker is a [garou.Broker] on NATS JetStream: several Garou
// servers sharing one makes them one chat service, where a room has one
// order and one dense sequence whichever server its members are on, and a
// client resumes on any server with exactly what it missed.
//
// All rooms share one stream (default "GAROU"). Text n of a room is
// stored on its own subject, its slot, "garou.room.<room>.<n>" (the room's
// name encoded as one subject token), with n also in a Garou-Seq header,
// and is published with 0 as the expected last sequence of that subject:
// a compare-and-set that claims the slot, so two servers publishing to one
// room at once cannot both take a number, and a server needs no answer
// for text n before it publishes text n+1. A server publishes a room's
// texts in order on one connection, which JetStream stores in order, so
// the numbering stays dense; the rare slot left empty behind a text kept
// (a text that failed and could not be published again in time, or a
// retry found kept before) is filled with a void, which readers skip and
// clients are told as a gap. The text's idempotency key (or, without one,
// its ID) is its Nats-Msg-Id, so a text retried, on another server too, is
// stored once within the stream's duplicate window.
//
// A room has one writer: the server that publishes its texts listens on
// "garou.write.<room>", and the other servers forward their members'
// texts there instead of racing it for the numbers (forward.go).
//
// The stream republishes each text it stores to "garou.live.<room>.<n>",
// where each server listens for the rooms it has members in. That
// delivery is at most once: a server that misses a text notices the hole
// in the numbering and reads it with a batched Direct Get, as resumes and
// history joins do.
//
// What it does not cover yet is listed in the module's README.
package natsbroker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/garou-chat/garou"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of the options.
const (
	DefaultStream     = "GAROU"
	DefaultPrefix     = "garou"
	DefaultHistory    = 1000
	DefaultDuplicates = 2 * time.Minute
	// DefaultRequestTimeout bounds each request to NATS whose context has
	// no deadline of its own.
	DefaultRequestTimeout = 5 * time.Second
	// DefaultPublishTimeout is how long a publish keeps trying while NATS
	// is out of reach, when its context has no deadline.
	DefaultPublishTimeout = 5 * time.Second
	// DefaultCheckInterval is how often the broker checks whether it may
	// have lost live texts.
	DefaultCheckInterval = time.Second
)

// seqHeader carries a text's sequence number in its room.
const seqHeader = "Garou-Seq"

// voidHeader marks a void: a slot that holds no text.
const voidHeader = "Garou-Void"

// readBatch is the most texts one After returns.
const readBatch = 256

// An Option configures a Broker.
type Option func(*config)

type config struct {
	stream     string
	prefix     string
	storage    jetstream.StorageType
	replicas   int
	history    int64
	duplicates time.Duration
	timeout    time.Duration
	publish    time.Duration
	check      time.Duration
	nameTTL    time.Duration
	window     int
}

func defaultConfig() config {
	return config{
		stream:     DefaultStream,
		prefix:     DefaultPrefix,
		storage:    jetstream.FileStorage,
		replicas:   1,
		history:    DefaultHistory,
		duplicates: DefaultDuplicates,
		timeout:    DefaultRequestTimeout,
		publish:    DefaultPublishTimeout,
		check:      DefaultCheckInterval,
		nameTTL:    DefaultNameTTL,
		window:     DefaultWindow,
	}
}

func (c *config) validate() error {
	switch {
	case c.stream == "":
		return errors.New("natsbroker: the stream name must not be empty")
	case c.prefix == "":
		return errors.New("natsbroker: the subject prefix must not be empty")
	case c.replicas < 1:
		return fmt.Errorf("natsbroker: replicas must be at least 1, got %d", c.replicas)
	case c.history < 1:
		return fmt.Errorf("natsbroker: history must be at least 1 text per room, got %d", c.history)
	case c.duplicates <= 0:
		return fmt.Errorf("natsbroker: the duplicate window must be positive, got %v", c.duplicates)
	case c.timeout <= 0:
		return fmt.Errorf("natsbroker: the request timeout must be positive, got %v", c.timeout)
	case c.publish <= 0:
		return fmt.Errorf("natsbroker: the publish timeout must be positive, got %v", c.publish)
	case c.check <= 0:
		return fmt.Errorf("natsbroker: the check interval must be positive, got %v", c.check)
	case c.nameTTL < 100*time.Millisecond:
		return fmt.Errorf("natsbroker: the name TTL must be at least 100ms, got %v", c.nameTTL)
	case c.window < 1:
		return fmt.Errorf("natsbroker: the window must be at least 1 text, got %d", c.window)
	}
	return nil
}

// WithStream sets the JetStream stream's name. Default DefaultStream.
func WithStream(name string) Option { return func(c *config) { c.stream = name } }

// WithPrefix sets the first token of the subjects ("<prefix>.room.<room>",
// "<prefix>.live.<room>"): services sharing a NATS each need their own,
// with their own stream. Default DefaultPrefix.
func WithPrefix(p string) Option { return func(c *config) { c.prefix = p } }

// WithMemoryStorage keeps the stream in memory instead of files: faster,
// but a NATS restart loses every room's texts, and the numbering starts
// over (with a new epoch, once the servers restart). Default: files.
func WithMemoryStorage() Option { return func(c *config) { c.storage = jetstream.MemoryStorage } }

// WithReplicas sets the stream's replicas, in a NATS cluster. Default 1.
func WithReplicas(n int) Option { return func(c *config) { c.replicas = n } }

// WithHistory sets how many texts the stream keeps per room, for resumes
// and history joins. Default DefaultHistory.
func WithHistory(n int) Option { return func(c *config) { c.history = int64(n) } }

// WithDuplicateWindow sets how long the stream remembers the idempotency
// keys of texts, so that a retried text is stored once. Default
// DefaultDuplicates.
func WithDuplicateWindow(d time.Duration) Option { return func(c *config) { c.duplicates = d } }

// WithRequestTimeout bounds each request to NATS whose context has no
// deadline. Default DefaultRequestTimeout.
func WithRequestTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithPublishTimeout bounds how long a publish whose context has no
// deadline keeps trying while NATS is out of reach (reconnecting, electing
// the stream's leader): past it, Publish returns an error wrapping
// garou.ErrUnavailable, and the server tells the client "unavailable",
// which the Go client sends again by itself. The room's texts wait behind
// it meanwhile. Default DefaultPublishTimeout.
func WithPublishTimeout(d time.Duration) Option { return func(c *config) { c.publish = d } }

// WithCheckInterval sets how often the broker checks whether it may have
// lost live texts (its connection to NATS was cut, or NATS dropped texts
// for a slow subscriber); if so it delivers each open room's latest text
// again, and the servers read what they missed. Default
// DefaultCheckInterval.
func WithCheckInterval(d time.Duration) Option { return func(c *config) { c.check = d } }

// Broker is a garou.Broker on a NATS JetStream stream. Build it with New,
// give it to every server of the service with garou.WithBroker, and Close
// it once the server is closed. All its methods are safe for concurrent
// use. It does not own the NATS connection: close that after the broker.
type Broker struct {
	cfg config
	nc  *nats.Conn
	js  jetstream.JetStream

	smu        sync.Mutex
	stream     jetstream.Stream // the latest handle: the stream may be made anew
	epoch      string           // of the stream the broker last saw
	recheck    chan struct{}    // the stream may have been made anew: read its epoch again
	advisories *nats.Subscription

	mu        sync.Mutex
	rooms     map[string]*roomState
	listeners map[*listener]struct{}
	opens     map[string]int // listeners per room
	users     map[string]*attached
	holds     map[string]*hold // names held, by name key

	names    jetstream.KeyValue // the names held (names.go); guarded by smu
	presence jetstream.KeyValue // the members of rooms (presence.go); guarded by smu
	id       string             // this broker's, in its presence entries
	entered  map[*enteredMember]struct{}
	ending   map[*enteredMember]lastWrite // ends waiting for NATS (presence.go)
	listed   userList                     // the other servers' users (users.go); its map guarded by mu
	wg       sync.WaitGroup               // renewLoop

	pmu     sync.Mutex
	pubs    map[string]*pubQueue          // texts started, by room (publish.go)
	owned   map[string]*nats.Subscription // the rooms this broker writes (forward.go)
	closing bool
	pwg     sync.WaitGroup // publishLoop
	fwd     forwarder
	gmu     sync.Mutex
	gates   map[string]*gate // by room and sender (publish.go)

	runCtx    context.Context // ends with Close
	cancelRun context.CancelFunc

	stop chan struct{}
	once sync.Once
	done chan struct{}
}

// roomState is what the broker knows of a room's latest text: the number
// its next text takes.
type roomState struct {
	mu     sync.Mutex
	known  bool
	stream uint64        // the stream sequence of the room's latest text
	seq    uint64        // its Garou sequence
	moved  chan struct{} // closed when stream moves on, if waited for
}

// New creates the stream if it does not exist (or updates its
// configuration), and returns a broker on it.
func New(ctx context.Context, nc *nats.Conn, opts ...Option) (*Broker, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// An answer to a text published without waiting is awaited for as
	// long as one to a text published alone.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(attemptTimeout))
	if err != nil {
		return nil, fmt.Errorf("natsbroker: %w", err)
	}
	b := &Broker{cfg: cfg, nc: nc, js: js, rooms: make(map[string]*roomState), listeners: make(map[*listener]struct{}),
		opens: make(map[string]int), users: make(map[string]*attached), holds: make(map[string]*hold),
		entered: make(map[*enteredMember]struct{}), ending: make(map[*enteredMember]lastWrite), recheck: make(chan struct{}, 1),
		pubs: make(map[string]*pubQueue), owned: make(map[string]*nats.Subscription), gates: make(map[string]*gate)}
	b.runCtx, b.cancelRun = context.WithCancel(context.Background())
	// JetStream's advisories tell of the stream made anew by anyone (a
	// server of the service, an operator): its epoch is read again.
	adv, err := nc.Subscribe("$JS.EVENT.ADVISORY.STREAM.*."+cfg.stream, func(*nats.Msg) { b.mayBeAnew() })
	if err != nil {
		return nil, fmt.Errorf("natsbroker: %w", err)
	}
	b.advisories = adv
	if err := b.ensureStream(ctx); err != nil {
		_ = adv.Unsubscribe()
		return nil, err
	}
	if err := b.ensureNames(ctx); err != nil {
		_ = adv.Unsubscribe()
		return nil, err
	}
	if err := b.ensurePresence(ctx); err != nil {
		_ = adv.Unsubscribe()
		return nil, err
	}
	var id [12]byte
	_, _ = rand.Read(id[:])
	b.id = hex.EncodeToString(id[:])
	if err := b.startForwarding(); err != nil {
		_ = adv.Unsubscribe()
		return nil, err
	}
	b.stop, b.done = make(chan struct{}), make(chan struct{})
	go b.checkLoop()
	b.wg.Add(1)
	go b.renewLoop()
	return b, nil
}

// ensureStream creates the stream, or updates its configuration, and
// keeps its handle.
func (b *Broker) ensureStream(ctx context.Context) error {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	st, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        b.cfg.stream,
		Subjects:    []string{b.cfg.prefix + ".room.>"},
		Storage:     b.cfg.storage,
		Replicas:    b.cfg.replicas,
		Duplicates:  b.cfg.duplicates,
		AllowDirect: true,
		RePublish:   &jetstream.RePublish{Source: b.cfg.prefix + ".room.>", Destination: b.cfg.prefix + ".live.>"},
	})
	if err != nil {
		return fmt.Errorf("natsbroker: stream %s: %w", b.cfg.stream, err)
	}
	// Texts stored by natsbroker before slots ("garou.room.<room>") would
	// be read as no texts at all, and the rooms numbered again from 1
	// under the same epoch: refused.
	if _, err := b.lastFromLeader(ctx, b.cfg.prefix+".room.*"); err == nil {
		return fmt.Errorf("natsbroker: stream %s holds texts stored by an earlier natsbroker, one per room subject; use another stream and prefix (WithStream, WithPrefix), or delete it", b.cfg.stream)
	} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("natsbroker: stream %s: %w", b.cfg.stream, err)
	}
	b.smu.Lock()
	b.stream = st
	b.epoch = epochOf(b.cfg.stream, st.CachedInfo())
	b.smu.Unlock()
	return nil
}

// epochOf is the epoch of the stream whose info is info: a stream made
// anew (deleted, or lost from memory) has another creation time, and its
// numbering is another.
func epochOf(name string, info *jetstream.StreamInfo) string {
	return name + "-" + strconv.FormatInt(info.Created.UnixNano(), 36)
}

// mayBeAnew asks the check loop to read the stream's epoch again: the
// stream may have been made anew. It does not block.
func (b *Broker) mayBeAnew() {
	select {
	case b.recheck <- struct{}{}:
	default:
	}
}

// readEpoch reads the stream's creation time again, and its epoch with
// it. A stream not there (deleted, not yet made anew) keeps the epoch it
// had: the next publish makes it anew, with its epoch. A failure is left
// to the next reason to read it.
func (b *Broker) readEpoch() {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.timeout)
	defer cancel()
	st, err := b.js.Stream(ctx, b.cfg.stream)
	if err != nil {
		return
	}
	b.smu.Lock()
	b.stream = st
	b.epoch = epochOf(b.cfg.stream, st.CachedInfo())
	b.smu.Unlock()
}

func (b *Broker) str() jetstream.Stream {
	b.smu.Lock()
	defer b.smu.Unlock()
	return b.stream
}

// streamGone reports whether err says the stream does not exist (NATS
// lost it: a memory stream after a restart, or it was deleted).
func streamGone(err error) bool {
	return errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrNoResponders)
}

// Close stops the broker's checks, the renewal of the names it holds and
// its watch of the other servers' users, and waits for them to end, and
// for the texts handed to StartPublish to be published or to fail. It is
// idempotent. The rooms still open stop
// hearing their texts; the names still held are freed by the bucket's TTL
// (the server releases its users' names as their connections end, before
// its Close returns).
func (b *Broker) Close() error {
	b.once.Do(func() {
		_ = b.advisories.Unsubscribe()
		close(b.stop)
		b.pmu.Lock()
		b.closing = true
		b.pmu.Unlock()
		b.stopForwarding()
	})
	<-b.done
	b.wg.Wait()
	b.stopUsers()
	b.pwg.Wait()
	b.cancelRun()
	return nil
}

// checkLoop delivers the latest text of each open room again whenever
// live texts may have been lost since the last check: the connection to
// NATS was re-established, or a room's subscription dropped texts.
func (b *Broker) checkLoop() {
	defer close(b.done)
	t := time.NewTicker(b.cfg.check)
	defer t.Stop()
	reconnects := b.nc.Stats().Reconnects
	for {
		anew := false
		select {
		case <-b.stop:
			return
		case <-t.C:
		case <-b.recheck:
			anew = true
		}
		r := b.nc.Stats().Reconnects
		cut := r != reconnects
		reconnects = r
		if anew || cut {
			// NATS may have restarted without the stream, or someone
			// made it anew; advisories sent meanwhile were lost.
			b.readEpoch()
		}
		if anew && !cut {
			continue
		}
		b.mu.Lock()
		var lost []*listener
		for l := range b.listeners {
			if l.lost() || cut {
				lost = append(lost, l)
			}
		}
		b.mu.Unlock()
		for _, l := range lost {
			b.redeliver(l)
		}
	}
}

// redeliver delivers l's room's latest text again. A failure is left to
// the next check (or the next text) to mend.
func (b *Broker) redeliver(l *listener) {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.timeout)
	defer cancel()
	raw, err := b.str().GetLastMsgForSubject(ctx, b.roomSubject(l.room))
	if err != nil {
		l.mu.Lock()
		l.dropped = -1 // check again next time
		l.mu.Unlock()
		return
	}
	raw.Header.Set(jetstream.SequenceHeader, strconv.FormatUint(raw.Sequence, 10))
	m, stream, err := decodeText(l.room, raw.Header, raw.Data)
	if err != nil {
		return
	}
	b.state(l.room).note(m.Seq, stream)
	l.deliver(m)
}

// Epoch identifies the stream: its name and creation time. It changes
// when the broker learns that the stream was made anew: by itself (after
// NATS lost it), or by anyone, from JetStream's advisories, from the
// stream found empty where a room had texts, and after each reconnect.
func (b *Broker) Epoch() string {
	b.smu.Lock()
	defer b.smu.Unlock()
	return b.epoch
}

// ctx is the broker's own context, which ends with Close.
func (b *Broker) ctx() context.Context { return b.runCtx }

// bound gives ctx the request timeout if it has no deadline.
func (b *Broker) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, b.cfg.timeout)
}

// token encodes a room's name as one subject token.
func token(room string) string { return base64.RawURLEncoding.EncodeToString([]byte(room)) }

// roomSubject is the filter of all room's slots.
func (b *Broker) roomSubject(room string) string { return b.cfg.prefix + ".room." + token(room) + ".*" }

// slotSubject is the subject of room's text n.
func (b *Broker) slotSubject(room string, n uint64) string {
	return b.cfg.prefix + ".room." + token(room) + "." + strconv.FormatUint(n, 10)
}

func (b *Broker) liveSubject(room string) string { return b.cfg.prefix + ".live." + token(room) + ".*" }

func (b *Broker) state(room string) *roomState {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.rooms[room]
	if st == nil {
		st = &roomState{}
		b.rooms[room] = st
	}
	return st
}

// note records that the room's text seq is at stream sequence stream.
func (st *roomState) note(seq, stream uint64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if stream > st.stream {
		st.known, st.stream, st.seq = true, stream, seq
		if st.moved != nil {
			close(st.moved)
			st.moved = nil
		}
	}
}

// await waits until the broker knows the room's text at stream sequence
// stream, or a later one, for at most d, and reports whether it does.
func (st *roomState) await(ctx context.Context, stream uint64, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		st.mu.Lock()
		if st.known && st.stream >= stream {
			st.mu.Unlock()
			return true
		}
		if st.moved == nil {
			st.moved = make(chan struct{})
		}
		moved := st.moved
		st.mu.Unlock()
		select {
		case <-moved:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// wireText is a text as the stream keeps it; its room is its subject's,
// its sequence number in the Garou-Seq header.
type wireText struct {
	ID   string    `json:"id"`
	From *wireUser `json:"from,omitempty"`
	Text string    `json:"text"`
	Time time.Time `json:"time"`
}

type wireUser struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

func encodeText(m garou.ChatMessage) ([]byte, error) {
	w := wireText{ID: m.ID, Text: m.Text, Time: m.Time}
	if m.From != nil {
		w.From = &wireUser{ID: m.From.ID, Name: m.From.Name}
	}
	return json.Marshal(w)
}

// errVoid is decodeText's answer to a void.
var errVoid = errors.New("natsbroker: a void")

// decodeText rebuilds a text of room from a stored or republished message;
// for a void, it returns its Seq alone with errVoid.
func decodeText(room string, h nats.Header, data []byte) (garou.ChatMessage, uint64, error) {
	seq, err := strconv.ParseUint(h.Get(seqHeader), 10, 64)
	if err != nil {
		return garou.ChatMessage{}, 0, fmt.Errorf("natsbroker: a text without its %s header", seqHeader)
	}
	stream, err := strconv.ParseUint(h.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return garou.ChatMessage{}, 0, fmt.Errorf("natsbroker: a text without its %s header", jetstream.SequenceHeader)
	}
	if h.Get(voidHeader) != "" {
		return garou.ChatMessage{Room: room, Seq: seq}, stream, errVoid
	}
	m, err := decodeWire(room, seq, data)
	return m, stream, err
}

// Open listens for room's texts on its live subject, then reads its latest
// text: a text stored in between is delivered and read both, never missed.
func (b *Broker) Open(ctx context.Context, room string, deliver func(garou.ChatMessage)) (uint64, func(), error) {
	st := b.state(room)
	l := &listener{room: room, fn: deliver}
	sub, err := b.nc.Subscribe(b.liveSubject(room), func(msg *nats.Msg) {
		m, stream, err := decodeText(room, msg.Header, msg.Data)
		if err != nil {
			return // not a text of ours: nothing to deliver
		}
		st.note(m.Seq, stream)
		l.deliver(m)
	})
	if err != nil {
		return 0, nil, fmt.Errorf("natsbroker: listen to %q: %w", room, err)
	}
	l.sub = sub
	b.mu.Lock()
	b.listeners[l] = struct{}{}
	b.opens[room]++
	b.mu.Unlock()
	var once sync.Once
	stop := func() { once.Do(func() { b.stopListener(l) }) }
	rctx, cancel := b.bound(ctx)
	defer cancel()
	if err := b.nc.FlushWithContext(rctx); err != nil {
		stop()
		return 0, nil, fmt.Errorf("natsbroker: listen to %q: %w", room, err)
	}
	last, err := b.loadLast(rctx, room, st)
	if err != nil {
		stop()
		return 0, nil, err
	}
	return last, stop, nil
}

// stopListener ends l's deliveries: none once it returns.
func (b *Broker) stopListener(l *listener) {
	b.mu.Lock()
	delete(b.listeners, l)
	if b.opens[l.room]--; b.opens[l.room] == 0 {
		// What the broker knew of the room goes with its last listener;
		// a later publish or read learns it again.
		delete(b.opens, l.room)
		delete(b.rooms, l.room)
	}
	b.mu.Unlock()
	_ = l.sub.Unsubscribe()
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
}

// listener is one Open of a room: it delivers one text at a time, and
// none after its stop.
type listener struct {
	room string
	fn   func(garou.ChatMessage)
	sub  *nats.Subscription

	mu      sync.Mutex
	stopped bool
	dropped int // the subscription's dropped texts at the last check
}

func (l *listener) deliver(m garou.ChatMessage) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.fn(m)
	}
}

// lost reports whether the subscription dropped texts since the last
// check.
func (l *listener) lost() bool {
	n, err := l.sub.Dropped()
	if err != nil {
		return false // unsubscribed
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if n == l.dropped {
		return false
	}
	l.dropped = n
	return true
}

// loadLast reads room's latest text into st and returns its sequence
// number (0: none).
func (b *Broker) loadLast(ctx context.Context, room string, st *roomState) (uint64, error) {
	raw, err := b.lastFromLeader(ctx, b.roomSubject(room))
	if streamGone(err) {
		// Made anew, empty: the numbering goes on from what this broker
		// last saw, never back, and the texts lost are told as a gap.
		if err := b.ensureStream(ctx); err != nil {
			return 0, err
		}
		raw, err = b.lastFromLeader(ctx, b.roomSubject(room))
	}
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		// No text: a new room, or one whose stream was made anew, whose
		// next text has no predecessor in the stream (stream sequence
		// 0) but is numbered after the last this broker saw.
		st.mu.Lock()
		defer st.mu.Unlock()
		if st.known && st.stream != 0 {
			b.mayBeAnew() // it had texts: the stream is another
		}
		st.known, st.stream = true, 0
		return st.seq, nil
	}
	if err != nil {
		return 0, fmt.Errorf("natsbroker: the last text of %q: %w", room, err)
	}
	seq, err := strconv.ParseUint(raw.Header.Get(seqHeader), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("natsbroker: the last text of %q has no %s header", room, seqHeader)
	}
	st.note(seq, raw.Sequence)
	return seq, nil
}

// lastFromLeader reads the last message on subj from the stream's leader:
// a Direct Get may be answered by a replica behind it, whose last message
// would make every compare-and-set fail until it caught up.
func (b *Broker) lastFromLeader(ctx context.Context, subj string) (*jetstream.RawStreamMsg, error) {
	return b.getFromLeader(ctx, subj, 0)
}

// getFromLeader reads, from the stream's leader, the message at stream
// sequence seq, or with seq 0 the last on subj.
func (b *Broker) getFromLeader(ctx context.Context, subj string, seq uint64) (*jetstream.RawStreamMsg, error) {
	r := struct {
		Seq    uint64 `json:"seq,omitempty"`
		LastBy string `json:"last_by_subj,omitempty"`
	}{Seq: seq}
	if seq == 0 {
		r.LastBy = subj
	}
	req, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	ctx, cancel := b.bound(ctx)
	defer cancel()
	msg, err := b.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+b.cfg.stream, req)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Seq  uint64 `json:"seq"`
			Hdrs []byte `json:"hdrs"`
			Data []byte `json:"data"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("natsbroker: an answer it could not read: %w", err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return nil, jetstream.ErrMsgNotFound
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeStreamNotFound:
		return nil, jetstream.ErrStreamNotFound
	case resp.Error != nil:
		return nil, resp.Error
	case resp.Message == nil:
		return nil, errors.New("natsbroker: an answer with no message")
	}
	raw := &jetstream.RawStreamMsg{Subject: subj, Sequence: resp.Message.Seq, Data: resp.Message.Data}
	if len(resp.Message.Hdrs) > 0 {
		if raw.Header, err = nats.DecodeHeadersMsg(resp.Message.Hdrs); err != nil {
			return nil, fmt.Errorf("natsbroker: %w", err)
		}
	}
	return raw, nil
}

// Publish stores m as room's next text, retrying while other servers win
// the race for the number or NATS is out of reach, until ctx ends (or,
// without a deadline, WithPublishTimeout passes): an error wrapping
// garou.ErrUnavailable when NATS was out of reach.
func (b *Broker) Publish(ctx context.Context, room string, m garou.ChatMessage, key string) (garou.ChatMessage, error) {
	p, err := b.prepare(m, room, key)
	if err != nil {
		return garou.ChatMessage{}, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.cfg.publish)
		defer cancel()
	}
	return b.publishOne(ctx, room, p)
}

// outgoing is a text ready to publish: its stored form and its
// Nats-Msg-Id.
type outgoing struct {
	m    garou.ChatMessage
	data []byte
	id   string
}

// prepare encodes m, a text of room with the idempotency key key.
func (b *Broker) prepare(m garou.ChatMessage, room, key string) (outgoing, error) {
	data, err := encodeText(m)
	if err != nil {
		return outgoing{}, fmt.Errorf("natsbroker: %w", err)
	}
	id := m.ID
	if key != "" {
		sum := sha256.Sum256([]byte(room + "\x00" + key))
		id = hex.EncodeToString(sum[:16])
	}
	return outgoing{m: m, data: data, id: id}, nil
}

// publishOne publishes p alone, retrying while other servers win the race
// for the number, until ctx ends.
func (b *Broker) publishOne(ctx context.Context, room string, p outgoing) (garou.ChatMessage, error) {
	st := b.state(room)
	for attempt := 0; ; attempt++ {
		known, lastStream, lastSeq := st.last()
		var ack *jetstream.PubAck
		err := errNotKnown
		if known {
			ack, err = b.publishAttempt(ctx, room, p, lastSeq+1)
		}
		switch {
		case err == nil:
		case err == errNotKnown || isWrongLastSeq(err):
			if err := b.reload(ctx, room, st, err, lastStream, attempt); err != nil {
				return garou.ChatMessage{}, err
			}
			continue
		case transient(err):
			if err := b.recover(ctx, room, st, err, attempt); err != nil {
				return garou.ChatMessage{}, err
			}
			continue
		default:
			return garou.ChatMessage{}, fmt.Errorf("natsbroker: publish to %q: %w", room, err)
		}
		if ack.Duplicate {
			// Stored before (a retry): the text kept first is the one.
			return b.kept(ctx, room, ack.Sequence)
		}
		st.note(lastSeq+1, ack.Sequence)
		b.trim(room, lastSeq+1)
		m := p.m
		m.Seq = lastSeq + 1
		return m, nil
	}
}

// unavailable is the error of a publish that gave up on NATS with err.
func unavailable(room string, err error) error {
	return fmt.Errorf("natsbroker: publish to %q: %w: %w", room, garou.ErrUnavailable, err)
}

// publishAttempt publishes p once, to room's slot n.
func (b *Broker) publishAttempt(ctx context.Context, room string, p outgoing, n uint64) (*jetstream.PubAck, error) {
	msg := nats.NewMsg(b.slotSubject(room, n))
	msg.Header.Set(seqHeader, strconv.FormatUint(n, 10))
	msg.Header.Set(writerHeader, b.id)
	msg.Data = p.data
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	return b.js.PublishMsg(ctx, msg, jetstream.WithMsgID(p.id), jetstream.WithExpectLastSequencePerSubject(0),
		jetstream.WithRetryAttempts(0))
}

// void fills room's slot n, left empty behind a text kept, with a void,
// unless a text (or a void) is in it already. A failure is left to the
// readers, who void a slot left empty for longer than a publish can take.
func (b *Broker) void(room string, n uint64) {
	msg := nats.NewMsg(b.slotSubject(room, n))
	msg.Header.Set(seqHeader, strconv.FormatUint(n, 10))
	msg.Header.Set(voidHeader, "1")
	ctx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
	defer cancel()
	_, _ = b.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(0), jetstream.WithRetryAttempts(0))
}

// trim removes room's oldest texts once text n is kept, every half
// WithHistory texts, keeping WithHistory of them. It does not wait for the
// answer: a trim that fails is done by the next.
func (b *Broker) trim(room string, n uint64) {
	every := max(uint64(b.cfg.history)/2, 1)
	if n <= uint64(b.cfg.history) || n%every != 0 {
		return
	}
	req, err := json.Marshal(struct {
		Filter string `json:"filter"`
		Keep   uint64 `json:"keep"`
	}{b.roomSubject(room), uint64(b.cfg.history)})
	if err != nil {
		return
	}
	_ = b.nc.PublishRequest("$JS.API.STREAM.PURGE."+b.cfg.stream, b.nc.NewRespInbox(), req)
}

// last returns what the broker knows of the room's latest text.
func (st *roomState) last() (known bool, stream, seq uint64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.known, st.stream, st.seq
}

// reload learns room's latest text after a publish expecting the one at
// stream sequence expected lost the race for the number with err (or the
// latest was not known): another server numbered a text meanwhile (or
// this is the room's first here). When the room is open here, the live
// copy of the text that won is on its way (or here already): it is waited
// for, up to liveWait, instead of read. That is the text err names, or,
// in a NATS cluster, where err may only say that another text of the room
// is being stored, any later than expected.
func (b *Broker) reload(ctx context.Context, room string, st *roomState, err error, expected uint64, attempt int) error {
	if err != errNotKnown {
		target := expected + 1
		if actual, ok := wrongLast(err); ok {
			target = actual
		}
		if target > expected && b.isOpen(room) && st.await(ctx, target, liveWait) {
			return nil
		}
	}
	actx, acancel := context.WithTimeout(ctx, attemptTimeout)
	_, err = b.loadLast(actx, room, st)
	acancel()
	switch {
	case err == nil:
		return nil
	case !transient(err):
		return err
	}
	if err := pause(ctx, attempt, err); err != nil {
		return unavailable(room, err)
	}
	return nil
}

// recover waits after a transient failure: NATS is electing the stream's
// leader, reconnecting, or lost the stream (which it then makes anew). The
// same text is published again, which the stream recognises by its ID if
// it was stored after all.
func (b *Broker) recover(ctx context.Context, room string, st *roomState, err error, attempt int) error {
	if err := pause(ctx, attempt, err); err != nil {
		return unavailable(room, err)
	}
	if streamGone(err) {
		actx, acancel := context.WithTimeout(ctx, attemptTimeout)
		_, _ = b.loadLast(actx, room, st) // makes the stream anew if lost
		acancel()
	}
	return nil
}

// liveWait bounds the wait for the live copy of the text that won a
// compare-and-set; past it, the text is read.
const liveWait = 10 * time.Millisecond

// isOpen reports whether room is open here: its texts come live.
func (b *Broker) isOpen(room string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opens[room] > 0
}

// attemptTimeout bounds one attempt to publish: past it, the text is
// published again (and recognised by its ID if the first was stored).
const attemptTimeout = time.Second

// errNotKnown stands for a room whose latest text the broker has not read.
var errNotKnown = errors.New("natsbroker: the room's latest text is not known")

// transient reports whether err may pass: an attempt timed out, NATS had
// no stream to answer (a leader being elected, a reconnect, the stream
// lost), or JetStream said it is unavailable for now or is storing a text
// of the same ID.
func transient(err error) bool {
	var apiErr *jetstream.APIError
	return streamGone(err) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		(errors.As(err, &apiErr) && (apiErr.Code == 503 || apiErr.ErrorCode == errCodeDuplicateInProcess))
}

// outOfReach reports whether err says that NATS did not answer for now
// (a lost connection, a timeout), rather than refused.
func outOfReach(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrReconnectBufExceeded) || errors.Is(err, nats.ErrDisconnected)
}

// errCodeDuplicateInProcess is JetStream's answer to a text whose ID is
// that of one being stored (a retry overtaking the first attempt): the
// next attempt is answered as a duplicate.
const errCodeDuplicateInProcess jetstream.ErrorCode = 10158

// pause waits before the next attempt, 5 ms doubling up to 250 ms, or
// returns err once ctx ends.
func pause(ctx context.Context, attempt int, err error) error {
	t := time.NewTimer(min(5*time.Millisecond<<min(attempt, 6), 250*time.Millisecond))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return err
	case <-t.C:
		return nil
	}
}

// kept reads room's text at stream sequence seq from the stream's leader,
// waiting while one is elected.
func (b *Broker) kept(ctx context.Context, room string, seq uint64) (garou.ChatMessage, error) {
	for attempt := 0; ; attempt++ {
		actx, acancel := context.WithTimeout(ctx, attemptTimeout)
		raw, err := b.getFromLeader(actx, b.roomSubject(room), seq)
		acancel()
		if err == nil {
			raw.Header.Set(jetstream.SequenceHeader, strconv.FormatUint(raw.Sequence, 10))
			m, _, err := decodeText(room, raw.Header, raw.Data)
			return m, err
		}
		if !transient(err) || pause(ctx, attempt, err) != nil {
			return garou.ChatMessage{}, fmt.Errorf("natsbroker: the text kept before in %q: %w", room, err)
		}
	}
}

func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// wrongLast returns the stream sequence of the subject's last message that
// a failed compare-and-set names ("wrong last sequence: 42").
func wrongLast(err error) (uint64, bool) {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
		return 0, false
	}
	_, n, ok := strings.Cut(apiErr.Description, ": ")
	if !ok {
		return 0, false
	}
	seq, err := strconv.ParseUint(n, 10, 64)
	return seq, err == nil
}

// After reads room's slots seq+1 on, up to readBatch of them, with one
// batched Direct Get, and returns their texts up to the first slot that
// is empty while a later one is kept. Voids are skipped (the server tells
// the numbers it does not get as a gap). The slots before the room's
// oldest are trimmed: when seq+1 is one, the texts from the oldest on are
// returned, with it. An empty slot right after seq behind a kept one (a
// text being published again, or whose server stopped) is waited for
// until it is filled, or voided once it has been empty for longer than a
// publish can take.
func (b *Broker) After(ctx context.Context, room string, seq uint64) ([]garou.ChatMessage, uint64, error) {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	for attempt := 0; ; attempt++ {
		es, err := b.slots(ctx, room, seq+1, readBatch)
		if err != nil {
			return nil, 0, err
		}
		var out []garou.ChatMessage
		i := 0
		for ; i < len(es) && es[i].m.Seq == seq+1+uint64(i); i++ {
			if !es[i].void {
				out = append(out, es[i].m)
			}
		}
		if (i == len(es) && i > 0) || len(out) > 0 {
			return out, seq + 1, nil
		}
		// Slot seq+1 is empty, or void with the next empty: whether
		// trimmed or a hole depends on the room's oldest and latest.
		hole := seq + 1 + uint64(i)
		var stored time.Time
		if i < len(es) {
			stored = es[i].stored
		}
		if i == 0 {
			first, err := b.batchGet(ctx, room, 1, 1)
			if err != nil {
				return nil, 0, err
			}
			if len(first) == 0 {
				return nil, 0, nil // no text kept
			}
			if oldest := first[0].m.Seq; oldest > seq+1 {
				if len(es) == 0 {
					// Nothing in the window: maybe nothing after seq.
					last, err := b.loadLast(ctx, room, b.state(room))
					if err != nil || last <= seq {
						return nil, oldest, err
					}
				}
				out, _, err := b.After(ctx, room, oldest-1)
				return out, oldest, err
			}
			if len(es) == 0 {
				return nil, first[0].m.Seq, nil // nothing after seq
			}
		}
		if err := b.settleHole(ctx, room, hole, stored, attempt); err != nil {
			return nil, 0, err
		}
	}
}

// settleHole waits until room's slot n, empty while a later one (stored
// at stored) is kept, holds a text or a void: its server is publishing it
// again. Once the slot has been empty for longer than that server could
// have tried (the publish timeout from the later slot's storing; twice
// that, for clocks that differ), it is voided. The server publishing it,
// if still at it, then numbers its text again.
func (b *Broker) settleHole(ctx context.Context, room string, n uint64, stored time.Time, attempt int) error {
	if _, err := b.lastFromLeader(ctx, b.slotSubject(room, n)); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrMsgNotFound) && !transient(err) {
		return fmt.Errorf("natsbroker: read %q: %w", room, err)
	}
	if time.Since(stored) > 2*b.cfg.publish {
		b.void(room, n)
		return nil
	}
	t := time.NewTimer(min(10*time.Millisecond<<min(attempt, 4), 100*time.Millisecond))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("natsbroker: read %q: text %d is not there yet: %w", room, n, ctx.Err())
	}
}

// entry is a slot read: a text, or a void, stored at stored.
type entry struct {
	m      garou.ChatMessage
	void   bool
	stored time.Time
}

// batchGet reads up to n slots of room from stream sequence start on, in
// the order stored.
func (b *Broker) batchGet(ctx context.Context, room string, start uint64, n int) ([]entry, error) {
	return b.directGet(ctx, room, struct {
		Seq    uint64 `json:"seq"`
		NextBy string `json:"next_by_subj"`
		Batch  int    `json:"batch"`
	}{start, b.roomSubject(room), n}, n)
}

// slots reads room's slots from to from+n-1, and returns those kept (texts
// or voids), in the order of their numbers.
func (b *Broker) slots(ctx context.Context, room string, from uint64, n int) ([]entry, error) {
	subjects := make([]string, n)
	for i := range subjects {
		subjects[i] = b.slotSubject(room, from+uint64(i))
	}
	es, err := b.directGet(ctx, room, struct {
		Multi []string `json:"multi_last"`
		Batch int      `json:"batch"`
	}{subjects, n}, n)
	slices.SortFunc(es, func(x, y entry) int { return cmpU(x.m.Seq, y.m.Seq) })
	return es, err
}

// directGet sends req, a Direct Get of up to n messages of room's, and
// returns them as read.
func (b *Broker) directGet(ctx context.Context, room string, req any, n int) ([]entry, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	// A subscription with a callback: a synchronous one's NextMsg costs
	// ten times the round trip here. The batch and its end-of-batch
	// status fit the channel, so the callback never blocks.
	inbox := b.nc.NewRespInbox()
	replies := make(chan *nats.Msg, n+2)
	sub, err := b.nc.Subscribe(inbox, func(m *nats.Msg) {
		select {
		case replies <- m:
		default: // more than asked for: not ours to read
		}
	})
	if err != nil {
		return nil, fmt.Errorf("natsbroker: read %q: %w", room, err)
	}
	defer sub.Unsubscribe()
	if err := b.nc.PublishRequest("$JS.API.DIRECT.GET."+b.cfg.stream, inbox, data); err != nil {
		return nil, fmt.Errorf("natsbroker: read %q: %w", room, err)
	}
	st := b.state(room)
	var out []entry
	for {
		var msg *nats.Msg
		select {
		case msg = <-replies:
		case <-ctx.Done():
			return nil, fmt.Errorf("natsbroker: read %q: %w", room, ctx.Err())
		}
		if len(msg.Data) == 0 && msg.Header.Get(voidHeader) == "" {
			switch status := msg.Header.Get("Status"); status {
			case "204", "404": // the end of the batch; no text at all
				return out, nil
			case "":
			default:
				return nil, fmt.Errorf("natsbroker: read %q: status %s %s", room, status, msg.Header.Get("Description"))
			}
		}
		m, stream, err := decodeText(room, msg.Header, msg.Data)
		void := err == errVoid
		if err != nil && !void {
			return nil, err
		}
		stored, _ := time.Parse(time.RFC3339Nano, msg.Header.Get(jetstream.TimeStampHeaer))
		st.note(m.Seq, stream)
		out = append(out, entry{m: m, void: void, stored: stored})
		if len(out) == n {
			// The end-of-batch status follows; no need to wait for it.
			return out, nil
		}
	}
}

var _ garou.UserBroker = (*Broker)(nil)

func (b *Broker) userSubject(name string) string { return b.cfg.prefix + ".user." + token(name) }

// attached is a user attached on this server: one subscription, however
// many connections of the user (a resumed session) attached it.
type attached struct {
	sub    *nats.Subscription
	n      int // attachments not detached; guarded by Broker.mu
	handle func(garou.UserMessage) error
}

// wireUserMessage is a UserMessage as it travels; wireReply the answer.
type wireUserMessage struct {
	Direct  *wireDirect `json:"direct,omitempty"`
	Kick    bool        `json:"kick,omitempty"`
	Reason  string      `json:"reason,omitempty"`
	Take    bool        `json:"take,omitempty"`
	Session string      `json:"session,omitempty"`
}

type wireDirect struct {
	wireText
	To string `json:"to"`
}

type wireReply struct {
	Code string `json:"code,omitempty"`
	Text string `json:"text,omitempty"`
}

// Attach listens on "<prefix>.user.<name>" for what other servers ask of
// the user: requests a server answers, so that "no responders" means the
// user is on no server.
func (b *Broker) Attach(ctx context.Context, name string, handle func(garou.UserMessage) error) (func(), error) {
	b.mu.Lock()
	a := b.users[name]
	if a != nil {
		a.n++
		a.handle = handle
		b.mu.Unlock()
		return b.detacher(name, a), nil
	}
	a = &attached{n: 1, handle: handle}
	sub, err := b.nc.Subscribe(b.userSubject(name), func(msg *nats.Msg) {
		b.mu.Lock()
		h := a.handle
		live := a.n > 0
		b.mu.Unlock()
		if live {
			_ = msg.Respond(answer(h, msg.Data))
		}
	})
	if err != nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("natsbroker: attach %q: %w", name, err)
	}
	a.sub = sub
	b.users[name] = a
	b.mu.Unlock()
	detach := b.detacher(name, a)
	// Once the subscription is known to NATS, requests reach the user.
	ctx, cancel := b.bound(ctx)
	defer cancel()
	if err := b.nc.FlushWithContext(ctx); err != nil {
		detach()
		return nil, fmt.Errorf("natsbroker: attach %q: %w", name, err)
	}
	return detach, nil
}

func (b *Broker) detacher(name string, a *attached) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if a.n--; a.n == 0 {
				delete(b.users, name)
				_ = a.sub.Unsubscribe()
			}
		})
	}
}

// answer runs handle on a request and encodes its answer.
func answer(handle func(garou.UserMessage) error, data []byte) []byte {
	var w wireUserMessage
	if err := json.Unmarshal(data, &w); err != nil {
		out, _ := json.Marshal(wireReply{Code: string(garou.CodeBadFrame), Text: "a request the server could not read"})
		return out
	}
	m := garou.UserMessage{Kick: w.Kick, Reason: w.Reason, Take: w.Take, Session: w.Session}
	if d := w.Direct; d != nil {
		m.Direct = &garou.ChatMessage{Type: garou.TypeDirect, ID: d.ID, To: d.To, Text: d.Text, Time: d.Time.UTC()}
		if d.From != nil {
			m.Direct.From = &garou.User{ID: d.From.ID, Name: d.From.Name}
		}
	}
	var r wireReply
	err := handle(m)
	var ge *garou.Error
	switch {
	case err == nil:
	case errors.Is(err, garou.ErrNoSuchUser):
		r.Code = string(garou.CodeNoSuchUser)
	case errors.As(err, &ge):
		r.Code, r.Text = string(ge.Code), ge.Text
	default:
		r.Code, r.Text = string(garou.CodeInternal), "the server could not do it"
	}
	out, _ := json.Marshal(r)
	return out
}

// SendUser asks the server where the user is attached to carry m out.
// A user no server answers for is not online (ErrNoSuchUser), unless its
// name is still held: its server lost NATS, or crashed and its clients
// have not yet moved to another (at most WithNameTTL). A direct message
// or a Kick then fails, as one while NATS is out of reach or that waits
// for an answer longer than the request timeout does, with an error
// wrapping garou.ErrUnavailable, and the sender's client tries again.
func (b *Broker) SendUser(ctx context.Context, name string, m garou.UserMessage) error {
	w := wireUserMessage{Kick: m.Kick, Reason: m.Reason, Take: m.Take, Session: m.Session}
	if d := m.Direct; d != nil {
		w.Direct = &wireDirect{wireText: wireText{ID: d.ID, Text: d.Text, Time: d.Time}, To: d.To}
		if d.From != nil {
			w.Direct.From = &wireUser{ID: d.From.ID, Name: d.From.Name}
		}
	}
	data, err := json.Marshal(w)
	if err != nil {
		return fmt.Errorf("natsbroker: %w", err)
	}
	if !b.nc.IsConnected() {
		return fmt.Errorf("natsbroker: to user %q: NATS out of reach: %w", name, garou.ErrUnavailable)
	}
	ctx, cancel := b.bound(ctx)
	defer cancel()
	msg, err := b.nc.RequestWithContext(ctx, b.userSubject(name), data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		if !m.Take && b.nameHeld(ctx, name) {
			return fmt.Errorf("natsbroker: to user %q: its server does not answer: %w", name, garou.ErrUnavailable)
		}
		return garou.ErrNoSuchUser
	case outOfReach(err):
		return fmt.Errorf("natsbroker: to user %q: %w: %w", name, garou.ErrUnavailable, err)
	case err != nil:
		return fmt.Errorf("natsbroker: to user %q: %w", name, err)
	}
	var r wireReply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		return fmt.Errorf("natsbroker: to user %q: an answer it could not read: %w", name, err)
	}
	switch r.Code {
	case "":
		return nil
	case string(garou.CodeNoSuchUser):
		return garou.ErrNoSuchUser
	}
	return &garou.Error{Code: garou.ErrorCode(r.Code), Text: r.Text}
}
