package garou

import (
	"context"
	"strings"
	"sync"
)

// MaxKeyLen is the longest idempotency key a client may give a text or a
// direct message, in bytes.
const MaxKeyLen = 64

// validKey reports whether k is an allowed idempotency key: 1 to MaxKeyLen
// ASCII letters, digits, '-', '_', '.' or ':'.
func validKey(k string) bool {
	if k == "" || len(k) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		switch b := k[i]; {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9',
			b == '-', b == '_', b == '.', b == ':':
		default:
			return false
		}
	}
	return true
}

// sentKeys remembers the idempotency keys of one user session's texts and
// direct messages, the last n of them, each with the acknowledgement it
// got. It is shared by the connections that resume the session. Its lock
// is held from looking a key up to recording it, so that two connections
// of the session (the one being replaced and its successor) never both
// sequence the same key; hooks run under it, but it is never taken while a
// room's lock or the server's is held.
type sentKeys struct {
	mu   sync.Mutex
	acks map[string]sentAck // nil until the first key: most sessions never send
	ring []string           // keys in the order recorded, oldest at next
	next int

	// sid is the session's ID when its token outlives its connections (a
	// server with a data directory): its texts are kept with it
	// (ChatMessage.SenderKey). Set once, before the session's first text.
	sid string
	// restored: the session came back from its token, and the keys it had
	// sequenced before are not all here. recalled lists the rooms whose
	// kept texts have been read for them since.
	restored bool
	recalled map[string]bool
}

// sentAck is what a remembered acknowledgement needs to be sent again; a
// whole reply is ten times its size.
type sentAck struct {
	room, id, to string
	seq          uint64
}

func (a sentAck) reply() reply {
	return reply{Type: frameAck, Room: a.room, Seq: a.seq, ID: a.id, To: a.to}
}

func newSentKeys(n int, sid string, restored bool) *sentKeys {
	if n == 0 {
		return nil
	}
	return &sentKeys{sid: sid, restored: restored}
}

// senderKey is what a text of this session said with key is kept with, or
// "" when the session does not outlive its connections.
func (k *sentKeys) senderKey(key string) string {
	if k.sid == "" {
		return ""
	}
	return k.sid + "/" + key
}

// recall remembers the keys of the texts the session said in room before
// it was restored, read from the room's kept texts, once per room. It
// reports false when the store could not be read (then it is tried again
// at the next text). k.mu is held, and is what keeps the session's texts
// from being sequenced meanwhile.
func (k *sentKeys) recall(ctx context.Context, h HistoryStore, room string, n int) bool {
	if !k.restored || k.recalled[room] {
		return true
	}
	msgs, _, err := h.After(ctx, room, 0)
	if err != nil {
		return false
	}
	pfx := k.sid + "/"
	for _, m := range msgs {
		if key, ok := strings.CutPrefix(m.SenderKey, pfx); ok {
			k.record(key, ackText(0, room, m.Seq, m.ID), n)
		}
	}
	if k.recalled == nil {
		k.recalled = make(map[string]bool)
	}
	k.recalled[room] = true
	return true
}

// lookup returns the acknowledgement key got, if it is remembered. k.mu is
// held.
func (k *sentKeys) lookup(key string) (reply, bool) {
	a, ok := k.acks[key]
	return a.reply(), ok
}

// record remembers ack under key, forgetting the oldest key when the window
// of n keys is full. k.mu is held.
func (k *sentKeys) record(key string, ack reply, n int) {
	if k.acks == nil {
		k.acks = make(map[string]sentAck)
	}
	if len(k.ring) < n {
		k.ring = append(k.ring, key)
	} else {
		delete(k.acks, k.ring[k.next])
		k.ring[k.next] = key
		k.next = (k.next + 1) % n
	}
	k.acks[key] = sentAck{room: ack.Room, id: ack.ID, to: ack.To, seq: ack.Seq}
}

// directWindow is how many direct message IDs a Client remembers, to drop
// a direct message it already received (see Client.dispatch).
const directWindow = 1024

// recentIDs is a window of the latest n IDs seen; the zero value is empty.
type recentIDs struct {
	set  map[string]struct{}
	ring []string // in the order seen, oldest at next
	next int
}

// seen reports whether id is among the latest n seen, and remembers it if
// not, forgetting the oldest when the window is full.
func (w *recentIDs) seen(id string, n int) bool {
	if _, ok := w.set[id]; ok {
		return true
	}
	if w.set == nil {
		w.set = make(map[string]struct{})
	}
	if len(w.ring) < n {
		w.ring = append(w.ring, id)
	} else {
		delete(w.set, w.ring[w.next])
		w.ring[w.next] = id
		w.next = (w.next + 1) % n
	}
	w.set[id] = struct{}{}
	return false
}
