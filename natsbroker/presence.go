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
	rev  uint64     // the revision of its latest write; 0 while none was made
	gone bool
	once sync.Once // dropEntry's
}

// An entry's end (a leave, or a user's entry deleted) written at the
// revision of the entry's latest write rev, so that it never undoes a
// later write of its key (the member entered again) nor makes anew an
// entry that expired.
type lastWrite func(ctx context.Context, kv jetstream.KeyValue, rev uint64) error

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
// holds. With NATS out of reach it does not wait: the entry is written
// (and so the join told) once NATS is back, and so is the leave.
func (b *Broker) Enter(ctx context.Context, room string, u garou.User) (func(string), error) {
	e, w, err := b.putEntry(ctx, token(room)+"."+b.id+"."+token(u.ID), u)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: enter %q: %w", room, err)
	}
	return func(reason string) {
		// Rewritten as left, not deleted: a delete right after would
		// replace it in the bucket (one value per key) before a slow
		// watch read it, which would then tell the leave as "lost",
		// under another number. The bucket's TTL removes it, which the
		// watches ignore.
		w.Left, w.Reason = true, reason
		left, err := json.Marshal(w)
		if err != nil {
			left = nil
		}
		b.dropEntry(e, func(ctx context.Context, kv jetstream.KeyValue, rev uint64) error {
			if left == nil {
				return nil
			}
			_, err := kv.Update(ctx, e.key, left, rev)
			return err
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
	// Renewed from now on: an entry NATS could not take now (out of
	// reach) is written by the first renewal once it is back, and then
	// told by every server's watch, this one's too.
	b.mu.Lock()
	b.entered[e] = struct{}{}
	b.mu.Unlock()
	if !b.nc.IsConnected() {
		return e, w, nil
	}
	ctx, cancel := b.bound(ctx)
	defer cancel()
	e.mu.Lock()
	defer e.mu.Unlock()
	rev, err := b.presenceKV().Put(ctx, e.key, val)
	switch {
	case err == nil:
		e.rev = rev
	case !outOfReach(err):
		b.mu.Lock()
		delete(b.entered, e)
		b.mu.Unlock()
		return nil, w, err
	}
	return e, w, nil
}

// dropEntry stops renewing e and, once, has last write its end. If NATS
// is out of reach, the end waits for it, and is written at the first
// renewal once it is back (unless the entry expired meanwhile: its
// expiry was its end), so that a member who left during an outage is
// told as having left, with its reason, not later as lost.
func (b *Broker) dropEntry(e *enteredMember, last lastWrite) {
	e.once.Do(func() {
		b.mu.Lock()
		delete(b.entered, e)
		b.mu.Unlock()
		e.mu.Lock()
		e.gone = true
		e.mu.Unlock()
		if !b.writeLast(e, last, releaseTimeout) {
			b.mu.Lock()
			b.ending[e] = last
			b.mu.Unlock()
		}
	})
}

// writeLast writes e's end with last, waiting for NATS at most wait. It
// reports whether e is done with: its end written, refused (a later
// write, an expiry), or never needed (e was never written).
func (b *Broker) writeLast(e *enteredMember, last lastWrite, wait time.Duration) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rev == 0 {
		return true
	}
	if !b.nc.IsConnected() {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(b.cfg.timeout, wait))
	defer cancel()
	return !outOfReach(last(ctx, b.presenceKV(), e.rev))
}

// writeEnds writes the ends that waited for NATS.
func (b *Broker) writeEnds() {
	b.mu.Lock()
	ends := make(map[*enteredMember]lastWrite, len(b.ending))
	for e, last := range b.ending {
		ends[e] = last
	}
	b.mu.Unlock()
	for e, last := range ends {
		if b.writeLast(e, last, b.cfg.timeout) {
			b.mu.Lock()
			delete(b.ending, e)
			b.mu.Unlock()
		}
	}
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
			rev, err := b.presenceKV().Put(ctx, e.key, e.val)
			cancel()
			switch {
			case err == nil:
				e.rev = rev
			case streamGone(err):
				b.remake(b.ensurePresence)
			}
		}
		e.mu.Unlock()
	}
}
