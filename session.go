package garou

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"time"
)

// sessionSigner makes and checks the session tokens of a server with a
// data directory: a token carries its session's ID, user, start and the
// time it was issued, authenticated with a key kept in the directory
// (session.key), so that a restarted server, or one that already dropped
// the session's connection, recognises it and restores the session: same
// user ID, same session. Each welcome issues the session a new token, so
// the issue time is that of the session's latest welcome; the server
// refuses a token older than its maximum age (WithSessionMaxAge).
//
// A token is base64url (unpadded) of: a version byte (2), the session ID
// (8 random bytes), JoinedAt and the issue time (each Unix nanoseconds, 8
// bytes big-endian), the user ID and the name (each a uvarint length and
// the bytes), then the first 16 bytes of HMAC-SHA256 over all that.
// Version 1, made before tokens expired, has no issue time: it is read
// as issued when its session began (JoinedAt), which is no later than
// when it was, so it expires no later than a version 2 token would have.
// Clients treat tokens as opaque.
type sessionSigner struct {
	key [32]byte
}

const (
	tokenV1      = 1
	tokenV2      = 2
	tokenMACLen  = 16
	sessionIDLen = 8
)

// sessionToken is what a token says.
type sessionToken struct {
	id     string    // the session's ID, hex: what its texts are kept with
	user   User      // ID, Name and JoinedAt
	issued time.Time // when the token was made
}

// issue returns a token for u issued at now, and its session's ID: the
// session sid's (hex, from an earlier token), or a new session's when sid
// is "".
func (s *sessionSigner) issue(u User, sid string, now time.Time) (token, id string) {
	var raw [sessionIDLen]byte
	if len(sid) != hex.EncodedLen(sessionIDLen) {
		_, _ = rand.Read(raw[:])
	} else if _, err := hex.Decode(raw[:], []byte(sid)); err != nil {
		_, _ = rand.Read(raw[:])
	}
	b := make([]byte, 0, 1+sessionIDLen+16+2*binary.MaxVarintLen16+len(u.ID)+len(u.Name)+tokenMACLen)
	b = append(b, tokenV2)
	b = append(b, raw[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(u.JoinedAt.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, uint64(now.UnixNano()))
	b = binary.AppendUvarint(b, uint64(len(u.ID)))
	b = append(b, u.ID...)
	b = binary.AppendUvarint(b, uint64(len(u.Name)))
	b = append(b, u.Name...)
	b = append(b, s.mac(b)...)
	return base64.RawURLEncoding.EncodeToString(b), hex.EncodeToString(raw[:])
}

// parse returns what token says, if this server's key authenticates it.
func (s *sessionSigner) parse(token string) (sessionToken, bool) {
	// Names and IDs are bounded (MaxNameLen characters, maxIdentityID
	// bytes): anything longer is no token of ours, and is not decoded.
	if len(token) > base64.RawURLEncoding.EncodedLen(1+sessionIDLen+16+4+maxIdentityID+4*MaxNameLen+tokenMACLen) {
		return sessionToken{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) < 1+sessionIDLen+8+2+tokenMACLen || (b[0] != tokenV1 && b[0] != tokenV2) {
		return sessionToken{}, false
	}
	body, mac := b[:len(b)-tokenMACLen], b[len(b)-tokenMACLen:]
	if !hmac.Equal(mac, s.mac(body)) {
		return sessionToken{}, false
	}
	r := body[1:]
	t := sessionToken{id: hex.EncodeToString(r[:sessionIDLen])}
	r = r[sessionIDLen:]
	t.user.JoinedAt = time.Unix(0, int64(binary.BigEndian.Uint64(r))).UTC()
	r = r[8:]
	t.issued = t.user.JoinedAt
	if body[0] == tokenV2 {
		if len(r) < 8+2 {
			return sessionToken{}, false
		}
		t.issued = time.Unix(0, int64(binary.BigEndian.Uint64(r))).UTC()
		r = r[8:]
	}
	for _, f := range []*string{&t.user.ID, &t.user.Name} {
		n, k := binary.Uvarint(r)
		if k <= 0 || n > uint64(len(r)-k) {
			return sessionToken{}, false
		}
		*f = string(r[k : k+int(n)])
		r = r[k+int(n):]
	}
	if len(r) != 0 || t.user.ID == "" || ValidateName(t.user.Name) != nil {
		return sessionToken{}, false
	}
	return t, true
}

// directID is the ID of the direct message that the session sid sends
// with idempotency key: the same each time the message is sent again, in
// this run or a later one with the same key, so that its recipient can
// drop a copy it already has; another session's, or another key's, is
// another. It is 32 lower-case hex digits, so it never equals an ID of
// newID, which holds a '-'.
func (s *sessionSigner) directID(sid, key string) string {
	h := hmac.New(sha256.New, s.key[:])
	// Token bodies start with their version byte: "direct" can be
	// mistaken for none of them.
	h.Write([]byte("direct\x00"))
	h.Write([]byte(sid))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// serviceDirectID is the ID of the direct message that the user whose
// name key is name sends with idempotency key on servers sharing a
// UserBroker: the same on every server of the service, each time it is
// sent again; another sender's, or another key's, is another. Names are
// held by one session at a time across the service, and a client's keys
// are its own, so no two messages share one. Like directID's, it is 32
// lower-case hex digits, never an ID of newID.
func serviceDirectID(name, key string) string {
	h := sha256.New()
	h.Write([]byte("direct\x00"))
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func (s *sessionSigner) mac(b []byte) []byte {
	h := hmac.New(sha256.New, s.key[:])
	h.Write(b)
	return h.Sum(nil)[:tokenMACLen]
}
