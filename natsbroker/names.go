package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/garou-chat/garou"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultNameTTL is how long a name stays held for a server that stops
// renewing it (a crash).
const DefaultNameTTL = 15 * time.Second

// WithNameTTL sets how long a name stays held for a server that stops
// renewing it (it crashed, or lost NATS): the names of the users of a
// crashed server are free again that long after, except to the same
// sessions, which take theirs along at once. The broker renews each name
// it holds every third of it. Default DefaultNameTTL.
func WithNameTTL(d time.Duration) Option { return func(c *config) { c.nameTTL = d } }

var _ garou.NameHolder = (*Broker)(nil)

// releaseTimeout bounds the writes that release a name or a member's
// entry: they are a courtesy (the TTL frees both), and a server closing
// while NATS goes away must not wait the whole request timeout for each.
const releaseTimeout = time.Second

// hold is a name this server holds: its key in the bucket, the session it
// is held for, and the revision of the hold's last write.
type hold struct {
	key     string
	session string
	rev     uint64 // guarded by Broker.mu
}

// namesBucket is the KV bucket of the names held: the stream's name with
// "_NAMES".
func (b *Broker) namesBucket() string { return b.cfg.stream + "_NAMES" }

// ensureNames creates the names' bucket, or updates its configuration.
func (b *Broker) ensureNames(ctx context.Context) error {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	kv, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:   b.namesBucket(),
		History:  1,
		TTL:      b.cfg.nameTTL,
		Storage:  b.cfg.storage,
		Replicas: b.cfg.replicas,
	})
	if err != nil {
		return fmt.Errorf("natsbroker: bucket %s: %w", b.namesBucket(), err)
	}
	b.smu.Lock()
	b.names = kv
	b.smu.Unlock()
	return nil
}

func (b *Broker) namesKV() jetstream.KeyValue {
	b.smu.Lock()
	defer b.smu.Unlock()
	return b.names
}

// remake makes a bucket anew with ensure, after NATS lost it (a memory
// bucket after a restart, one deleted); a failure is left to the next
// renewal.
func (b *Broker) remake(ensure func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.timeout)
	defer cancel()
	_ = ensure(ctx)
}

// conflict reports whether err is a compare-and-set on the bucket that
// lost: the key exists, or is at another revision.
func conflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

// Hold holds name in the bucket "<stream>_NAMES" for session, by a
// create (a compare-and-set: of two servers creating one key at once, one
// wins): the key's value is the session's digest. A key held for session
// or resumed is taken over by an update at its revision. The broker
// renews each hold every third of WithNameTTL, and the bucket forgets a
// hold not renewed for that long.
func (b *Broker) Hold(ctx context.Context, name, session, resumed string) (func(), error) {
	ctx, cancel := b.bound(ctx)
	defer cancel()
	h := &hold{key: token(name), session: session}
	val := []byte(session)
	for {
		rev, err := b.namesKV().Create(ctx, h.key, val)
		if err == nil {
			return b.held(name, h, rev), nil
		}
		if !conflict(err) {
			return nil, fmt.Errorf("natsbroker: hold %q: %w", name, err)
		}
		e, err := b.namesKV().Get(ctx, h.key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("natsbroker: hold %q: %w", name, err)
		}
		if v := string(e.Value()); v != session && (resumed == "" || v != resumed) {
			return nil, garou.ErrNameTaken
		}
		rev, err = b.namesKV().Update(ctx, h.key, val, e.Revision())
		if err == nil {
			return b.held(name, h, rev), nil
		}
		if !conflict(err) {
			return nil, fmt.Errorf("natsbroker: hold %q: %w", name, err)
		}
	}
}

// held records h, written at rev, as this server's hold of name, in
// place of any earlier one, and returns its release.
func (b *Broker) held(name string, h *hold, rev uint64) func() {
	b.mu.Lock()
	h.rev = rev
	b.holds[name] = h
	b.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			if b.holds[name] != h {
				b.mu.Unlock()
				return // taken over by a later hold
			}
			delete(b.holds, name)
			rev := h.rev
			b.mu.Unlock()
			if !b.nc.IsConnected() {
				return // not to wait on NATS: the hold expires
			}
			ctx, cancel := context.WithTimeout(context.Background(), min(b.cfg.timeout, releaseTimeout))
			defer cancel()
			// At its revision only: a hold taken over since is not ours.
			_ = b.namesKV().Delete(ctx, h.key, jetstream.LastRevision(rev))
		})
	}
}

// renewLoop writes each hold, and each member's entry, again every third
// of the TTL, until Close. A hold whose revision moved (NATS was out of
// reach longer than the TTL, and the hold expired) is held again if still
// free; one another session took meanwhile is lost, and its user told
// (see reclaim); one lost with its bucket is held again, the bucket made
// anew; one whose renewal failed otherwise is tried again at the next
// turn.
func (b *Broker) renewLoop() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.nameTTL / 3)
	defer t.Stop()
	// Back from an outage, at once: what waited for NATS (entries, ends)
	// is told without waiting for the next turn.
	back := b.nc.StatusChanged(nats.CONNECTED)
	defer b.nc.RemoveStatusListener(back)
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		case _, ok := <-back:
			if !ok {
				back = nil
			}
		}
		b.mu.Lock()
		holds := make(map[string]*hold, len(b.holds))
		for name, h := range b.holds {
			holds[name] = h
		}
		b.mu.Unlock()
		if !b.nc.IsConnected() {
			continue // the next turn, once connected
		}
		for name, h := range holds {
			b.renew(name, h)
		}
		b.writeEnds()
		b.renewEntries()
	}
}

// renew writes h again, at its revision.
func (b *Broker) renew(name string, h *hold) {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.timeout)
	defer cancel()
	b.mu.Lock()
	rev := h.rev
	b.mu.Unlock()
	rev, err := b.namesKV().Update(ctx, h.key, []byte(h.session), rev)
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case err == nil:
		h.rev = rev
	case conflict(err) && b.holds[name] == h:
		b.mu.Unlock()
		b.reclaim(ctx, name, h)
		b.mu.Lock()
	case streamGone(err) && b.holds[name] == h:
		b.mu.Unlock()
		b.remake(b.ensureNames)
		b.mu.Lock()
		h.rev = 0 // held again at the next renewal, if still free
	}
}

// reclaim holds name again for h's session after its renewal found the
// key at another revision: expired (NATS was out of reach longer than the
// TTL) and free, it is created again; held for h's session still, it is
// taken at its revision; held for another session (another server
// welcomed the name meanwhile, the other servers taking this one's user
// for gone), the hold is dropped and the user told, through its
// attachment, that its name was taken (garou.UserMessage.Taken), which
// ends its connection. A failure to read or write is left to the next
// turn.
func (b *Broker) reclaim(ctx context.Context, name string, h *hold) {
	var rev uint64
	e, err := b.namesKV().Get(ctx, h.key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err = b.namesKV().Create(ctx, h.key, []byte(h.session))
	case err == nil && string(e.Value()) == h.session:
		rev, err = b.namesKV().Update(ctx, h.key, []byte(h.session), e.Revision())
	case err == nil:
		err = garou.ErrNameTaken
	}
	b.mu.Lock()
	if b.holds[name] != h {
		b.mu.Unlock()
		return // released, or taken over by a later hold, meanwhile
	}
	switch {
	case err == nil:
		h.rev = rev
		b.mu.Unlock()
		return
	case !errors.Is(err, garou.ErrNameTaken) && !conflict(err):
		b.mu.Unlock()
		return // the next turn tries again
	}
	delete(b.holds, name)
	var handle func(garou.UserMessage) error
	if a := b.users[name]; a != nil && a.n > 0 {
		handle = a.handle
	}
	b.mu.Unlock()
	if handle != nil {
		_ = handle(garou.UserMessage{Taken: true})
	}
}

// nameHeld reports whether name may be held: its hold is in the bucket,
// or the bucket could not be read.
func (b *Broker) nameHeld(ctx context.Context, name string) bool {
	_, err := b.namesKV().Get(ctx, token(name))
	return !errors.Is(err, jetstream.ErrKeyNotFound)
}
