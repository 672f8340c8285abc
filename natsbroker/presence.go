package natsbroker

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/garou-chat/garou"
	"github.com/nats-io/nats.go/jetstream"
)

var _ garou.PresenceBroker = (*Broker)(nil)

// wirePresence is a member's entry in the presence bucket; Left is set by
// the leave, with its reason (the entry then stays until the TTL removes
// it).
type wirePresence struct {
	ID       string          `json:"id"`
	Name     string          `json:"name"`
	JoinedAt time.Time       `json:"joined_at"`
	Data     json.RawMessage `json:"data,omitempty"`
	Left     bool            `json:"left,omitempty"`
	Reason   string          `json:"reason,omitempty"`
}

// An entered member: its key in the bucket and its value, renewed with
// the holds.
type enteredMember struct {
	key string
	val []byte

	mu   sync.Mutex // held across its writes, so none follows the leave's
	gone bool
	once sync.Once // dropEntry's
}

// presenceBucket is the KV bucket of the members of every room on every
// server: the stream's name with "_PRESENCE".
func (b *Broker) presenceBucket() string { return b.cfg.stream + "_PRESENCE" }

// ensurePresence creates the presence bucket, or updates its
// configuration. An entry not renewed for the TTL expires with a delete
// marker, which the other servers' watches see as a leave.
func (b *Broker) ensurePresence(ctx context.Context) error {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	kv, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         b.presenceBucket(),
		History:        1,
		TTL:            b.cfg.nameTTL,
		LimitMarkerTTL: max(b.cfg.nameTTL, time.Second), // NATS's least
		Storage:        b.cfg.storage,
		Replicas:       b.cfg.replicas,
	})
	if err != nil {
		return fmt.Errorf("natsbroker: bucket %s: %w", b.presenceBucket(), err)
	}
	b.smu.Lock()
	b.presence = kv
	b.smu.Unlock()
	return nil
}

func (b *Broker) presenceKV() jetstream.KeyValue {
	b.smu.Lock()
	defer b.smu.Unlock()
	return b.presence
}

// Enter puts u's entry "<room>.<server>.<user ID>" (each encoded as one
// token) in the presence bucket; the broker renews it with the names it
// holds.
func (b *Broker) Enter(ctx context.Context, room string, u garou.User) (func(string), error) {
	e, w, err := b.putEntry(ctx, token(room)+"."+b.id+"."+token(u.ID), u)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: enter %q: %w", room, err)
	}
	return func(reason string) {
		b.dropEntry(e, func(ctx context.Context, kv jetstream.KeyValue) {
			// Rewritten as left, not deleted: a delete right after
			// would replace it in the bucket (one value per key) before
			// a slow watch read it, which would then tell the leave as
			// "lost", under another number. The bucket's TTL removes
			// it, which the watches ignore.
			w.Left, w.Reason = true, reason
			if left, err := json.Marshal(w); err == nil {
				_, _ = kv.Put(ctx, e.key, left)
			}
		})
	}, nil
}

// putEntry puts u's entry under key in the presence bucket and has the
// broker renew it until dropEntry.
func (b *Broker) putEntry(ctx context.Context, key string, u garou.User) (*enteredMember, wirePresence, error) {
	w := wirePresence{ID: u.ID, Name: u.Name, JoinedAt: u.JoinedAt}
	if u.Data != nil {
		if data, err := json.Marshal(u.Data); err == nil {
			w.Data = data
		}
	}
	val, err := json.Marshal(w)
	if err != nil {
		return nil, w, err
	}
	e := &enteredMember{key: key, val: val}
	ctx, cancel := b.bound(ctx)
	defer cancel()
	if _, err := b.presenceKV().Put(ctx, e.key, val); err != nil {
		return nil, w, err
	}
	b.mu.Lock()
	b.entered[e] = struct{}{}
	b.mu.Unlock()
	return e, w, nil
}

// dropEntry stops renewing e and, once, if NATS is reachable, has last
// write its end (not to wait on NATS otherwise: the entry expires).
func (b *Broker) dropEntry(e *enteredMember, last func(context.Context, jetstream.KeyValue)) {
	e.once.Do(func() {
		b.mu.Lock()
		delete(b.entered, e)
		b.mu.Unlock()
		e.mu.Lock()
		defer e.mu.Unlock()
		e.gone = true
		if !b.nc.IsConnected() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), min(b.cfg.timeout, releaseTimeout))
		defer cancel()
		last(ctx, b.presenceKV())
	})
}

// Watch watches "<room>.>" in the presence bucket: the entries of every
// server (this one's too) are members; a put with Left, a delete or an
// expiry, a leave (the latter two with reason "lost" when no Left was
// seen). Each change is numbered by the revision of its write in the
// bucket, which every server's watch sees in the same order: one order
// and one number for each change on every server.
// While NATS is unreachable, stop returns at once and the watch ends in
// the background (NATS's client asks the server to drop it, up to its
// own 5 s), not waited for by Close.
func (b *Broker) Watch(ctx context.Context, room string, change func(garou.PresenceChange)) (func(), error) {
	known := make(map[string]garou.User) // by key
	stop, err := b.watchEntries(ctx, token(room)+".>", false, func(e jetstream.KeyValueEntry) {
		if e.Operation() != jetstream.KeyValuePut {
			if u, ok := known[e.Key()]; ok {
				delete(known, e.Key())
				change(garou.PresenceChange{Leave: true, User: u, Reason: "lost", Seq: e.Revision()})
			}
			return
		}
		p, u, ok := decodePresence(e.Value())
		if !ok {
			return
		}
		_, ok = known[e.Key()]
		switch {
		case p.Left && ok:
			delete(known, e.Key())
			change(garou.PresenceChange{Leave: true, User: u, Reason: p.Reason, Seq: e.Revision()})
		case !p.Left && !ok:
			known[e.Key()] = u
			change(garou.PresenceChange{User: u, Seq: e.Revision()})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("natsbroker: watch %q: %w", room, err)
	}
	return stop, nil
}

// decodePresence reads an entry of the presence bucket.
func decodePresence(val []byte) (wirePresence, garou.User, bool) {
	var p wirePresence
	if json.Unmarshal(val, &p) != nil {
		return p, garou.User{}, false
	}
	u := garou.User{ID: p.ID, Name: p.Name, JoinedAt: p.JoinedAt}
	if len(p.Data) != 0 {
		var data any
		if json.Unmarshal(p.Data, &data) == nil {
			u.Data = data
		}
	}
	return p, u, true
}

// watchEntries watches the keys of the presence bucket under filter and
// calls apply with each entry (with others, only another server's:
// "<...>.<server>.<...>"), one call at a time, in the bucket's order:
// those there now before it returns, then each change, until stop is
// called.
// While NATS is unreachable, stop returns at once and the watch ends in
// the background (NATS's client asks the server to drop it, up to its
// own 5 s), not waited for by Close.
func (b *Broker) watchEntries(ctx context.Context, filter string, others bool, apply func(jetstream.KeyValueEntry)) (func(), error) {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	w, err := b.presenceKV().Watch(context.Background(), filter)
	if err != nil {
		return nil, err
	}
	own := "." + b.id + "."
	filtered := func(e jetstream.KeyValueEntry) {
		if !others || !strings.Contains(e.Key(), own) {
			apply(e)
		}
	}
	// The entries there now, before it returns: up to the nil that
	// ends them.
	for initial := true; initial; {
		select {
		case e := <-w.Updates():
			if e == nil {
				initial = false
				continue
			}
			filtered(e)
		case <-ctx.Done():
			_ = w.Stop()
			return nil, ctx.Err()
		}
	}
	// Once stopped, no change is told (mu and stopped); the updates
	// are read until the watch has ended (halted), so that NATS's side
	// of it never waits on a full channel.
	var mu sync.Mutex
	stopped := false
	halted := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case e := <-w.Updates():
				mu.Lock()
				if e != nil && !stopped {
					filtered(e)
				}
				mu.Unlock()
			case <-halted:
				return
			}
		}
	}()
	halt := func() {
		_ = w.Stop()
		close(halted)
		<-done
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			mu.Lock()
			stopped = true
			mu.Unlock()
			if b.nc.IsConnected() {
				halt()
				return
			}
			// Ending the watch asks NATS: not to wait for it, it ends
			// in the background, within the request timeout or when
			// the connection reconnects or closes.
			go halt()
		})
	}, nil
}

// renewEntries writes every entered member's entry again.
func (b *Broker) renewEntries() {
	b.mu.Lock()
	entries := make([]*enteredMember, 0, len(b.entered))
	for e := range b.entered {
		entries = append(entries, e)
	}
	b.mu.Unlock()
	for _, e := range entries {
		e.mu.Lock()
		if !e.gone && b.nc.IsConnected() {
			ctx, cancel := context.WithTimeout(context.Background(), b.cfg.timeout)
			_, err := b.presenceKV().Put(ctx, e.key, e.val)
			cancel()
			if streamGone(err) {
				b.remake(b.ensurePresence)
			}
		}
		e.mu.Unlock()
	}
}
