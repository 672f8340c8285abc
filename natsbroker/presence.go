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
// the leave, just before the entry is deleted, to carry its reason.
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
	w := wirePresence{ID: u.ID, Name: u.Name, JoinedAt: u.JoinedAt}
	if u.Data != nil {
		data, err := json.Marshal(u.Data)
		if err == nil {
			w.Data = data
		}
	}
	val, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: enter %q: %w", room, err)
	}
	e := &enteredMember{key: token(room) + "." + b.id + "." + token(u.ID), val: val}
	ctx, cancel := b.bound(ctx)
	defer cancel()
	if _, err := b.presenceKV().Put(ctx, e.key, val); err != nil {
		return nil, fmt.Errorf("natsbroker: enter %q: %w", room, err)
	}
	b.mu.Lock()
	b.entered[e] = struct{}{}
	b.mu.Unlock()
	var once sync.Once
	return func(reason string) {
		once.Do(func() {
			b.mu.Lock()
			delete(b.entered, e)
			b.mu.Unlock()
			e.mu.Lock()
			defer e.mu.Unlock()
			e.gone = true
			if !b.nc.IsConnected() {
				return // not to wait on NATS: the entry expires
			}
			ctx, cancel := context.WithTimeout(context.Background(), min(b.cfg.timeout, releaseTimeout))
			defer cancel()
			w.Left, w.Reason = true, reason
			if left, err := json.Marshal(w); err == nil {
				_, _ = b.presenceKV().Put(ctx, e.key, left)
			}
			_ = b.presenceKV().Delete(ctx, e.key)
		})
	}, nil
}

// Watch watches "<room>.>" in the presence bucket: the entries of other
// servers are members; a put with Left, a delete or an expiry, a leave
// (the latter two with reason "lost" when no Left was seen).
// While NATS is unreachable, stop returns at once and the watch ends in
// the background (NATS's client asks the server to drop it, up to its
// own 5 s), not waited for by Close.
func (b *Broker) Watch(ctx context.Context, room string, change func(garou.PresenceChange)) (func(), error) {
	known := make(map[string]garou.User) // by key
	stop, err := b.watchOthers(ctx, token(room)+".>", func(e jetstream.KeyValueEntry) {
		if e.Operation() != jetstream.KeyValuePut {
			if u, ok := known[e.Key()]; ok {
				delete(known, e.Key())
				change(garou.PresenceChange{Leave: true, User: u, Reason: "lost"})
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
			change(garou.PresenceChange{Leave: true, User: u, Reason: p.Reason})
		case !p.Left && !ok:
			known[e.Key()] = u
			change(garou.PresenceChange{User: u})
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

// watchOthers watches the keys of the presence bucket under filter and
// calls apply with each entry of another server's ("<...>.<server>.<...>"),
// one call at a time: those there now before it returns, then each
// change, until stop is called.
// While NATS is unreachable, stop returns at once and the watch ends in
// the background (NATS's client asks the server to drop it, up to its
// own 5 s), not waited for by Close.
func (b *Broker) watchOthers(ctx context.Context, filter string, apply func(jetstream.KeyValueEntry)) (func(), error) {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	w, err := b.presenceKV().Watch(context.Background(), filter)
	if err != nil {
		return nil, err
	}
	own := "." + b.id + "."
	others := func(e jetstream.KeyValueEntry) {
		if !strings.Contains(e.Key(), own) {
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
			others(e)
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
					others(e)
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
