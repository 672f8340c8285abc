package natsbroker

import (
	"context"
	"fmt"
	"sync"

	"github.com/garou-chat/garou"
	"github.com/nats-io/nats.go/jetstream"
)

var _ garou.UserLister = (*Broker)(nil)

// onlinePrefix is the first token of the users' entries in the presence
// bucket: "=" is not in base64url, so no room's token is it.
const onlinePrefix = "=online"

// userList is what the broker has heard of the users listed by the other
// servers, from its watch of their entries.
type userList struct {
	mu    sync.Mutex // held while the watch starts, so it starts once
	stop  func()     // nil until started
	users map[string]garou.User
}

// Online puts u's entry "=online.<server>.<user ID>" (the ID encoded as
// one token) in the presence bucket, renewed with the names and the
// members; offline deletes it.
func (b *Broker) Online(ctx context.Context, u garou.User) (func(), error) {
	e, _, err := b.putEntry(ctx, onlinePrefix+"."+b.id+"."+token(u.ID), u)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: list %q: %w", u.Name, err)
	}
	return func() {
		b.dropEntry(e, func(ctx context.Context, kv jetstream.KeyValue, rev uint64) error {
			return kv.Delete(ctx, e.key, jetstream.LastRevision(rev))
		})
	}, nil
}

// Users returns the users the other servers list, as the broker's watch
// of their entries has heard of them. The first call starts the watch,
// reading the entries there now; the broker keeps it until Close.
func (b *Broker) Users(ctx context.Context) ([]garou.User, error) {
	l := &b.listed
	l.mu.Lock()
	if l.stop == nil {
		if err := b.watchUsers(ctx); err != nil {
			l.mu.Unlock()
			return nil, fmt.Errorf("natsbroker: users: %w", err)
		}
	}
	l.mu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]garou.User, 0, len(l.users))
	for _, u := range l.users {
		out = append(out, u)
	}
	return out, nil
}

// watchUsers starts the watch of the users' entries of the other servers,
// unless the broker is closed. b.listed.mu is held.
func (b *Broker) watchUsers(ctx context.Context) error {
	select {
	case <-b.stop:
		return garou.ErrClosed
	default:
	}
	l := &b.listed
	stop, err := b.watchEntries(ctx, onlinePrefix+".>", true, func(e jetstream.KeyValueEntry) {
		b.mu.Lock()
		defer b.mu.Unlock()
		if l.users == nil {
			l.users = make(map[string]garou.User)
		}
		if e.Operation() != jetstream.KeyValuePut {
			delete(l.users, e.Key())
			return
		}
		if _, u, ok := decodePresence(e.Value()); ok {
			l.users[e.Key()] = u
		}
	})
	if err != nil {
		return err
	}
	l.stop = stop
	return nil
}

// stopUsers ends the watch of the users' entries, if started, for good.
func (b *Broker) stopUsers() {
	l := &b.listed
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stop != nil {
		l.stop()
	}
	l.stop = func() {} // never started again
}
