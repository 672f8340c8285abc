package natsbroker

import (
	"context"
	"encoding/json"
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
	w := wirePresence{ID: u.ID, Name: u.Name, JoinedAt: u.JoinedAt}
	if u.Data != nil {
		if data, err := json.Marshal(u.Data); err == nil {
			w.Data = data
		}
	}
	val, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: list %q: %w", u.Name, err)
	}
	e := &enteredMember{key: onlinePrefix + "." + b.id + "." + token(u.ID), val: val}
	ctx, cancel := b.bound(ctx)
	defer cancel()
	if _, err := b.presenceKV().Put(ctx, e.key, val); err != nil {
		return nil, fmt.Errorf("natsbroker: list %q: %w", u.Name, err)
	}
	b.mu.Lock()
	b.entered[e] = struct{}{}
	b.mu.Unlock()
	var once sync.Once
	return func() {
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
			_ = b.presenceKV().Delete(ctx, e.key)
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
