package garou

import "sync"

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
	acks map[string]reply
	ring []string // keys in the order recorded, oldest at next
	next int
}

func newSentKeys(n int) *sentKeys {
	if n == 0 {
		return nil
	}
	return &sentKeys{acks: make(map[string]reply, min(n, 64)), ring: make([]string, 0, min(n, 64))}
}

// record remembers ack under key, forgetting the oldest key when the window
// of n keys is full. k.mu is held.
func (k *sentKeys) record(key string, ack reply, n int) {
	if len(k.ring) < n {
		k.ring = append(k.ring, key)
	} else {
		delete(k.acks, k.ring[k.next])
		k.ring[k.next] = key
		k.next = (k.next + 1) % n
	}
	k.acks[key] = ack
}
