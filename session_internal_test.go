package garou

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// FuzzSessionToken: whatever a hello's "session" holds, checking it never
// panics, and only a token the server made with its key restores anything:
// made with the key, it says what it was made for.
func FuzzSessionToken(f *testing.F) {
	s := &sessionSigner{key: [32]byte{1, 2, 3}}
	u := User{ID: "3bf8daca-1", Name: "alice", JoinedAt: time.Date(2026, 11, 28, 10, 0, 0, 123, time.UTC)}
	issued := u.JoinedAt.Add(time.Hour)
	tok, sid := s.issue(u, "", issued)
	f.Add(tok)
	f.Add(tok[:len(tok)-1])
	f.Add("a10510043cc7e8c3a8c7f5c0792a7614") // a token without a data directory
	f.Add("")
	other := &sessionSigner{key: [32]byte{4}}
	long, _ := other.issue(User{ID: string(make([]byte, maxIdentityID)), Name: "ＡＬＩＣＥ"}, "", issued)
	f.Add(long)

	got, ok := s.parse(tok)
	require.True(f, ok)
	require.Equal(f, sessionToken{id: sid, user: u, issued: issued}, got)
	_, ok = other.parse(tok)
	require.False(f, ok, "another key")
	_, ok = s.parse(long)
	require.False(f, ok, "another key")

	f.Fuzz(func(t *testing.T, token string) {
		got, ok := s.parse(token)
		if !ok {
			return
		}
		// Only what the key made: the same session, ID and name.
		again, sid := s.issue(got.user, "", got.issued)
		require.NotEqual(t, got.id, sid)
		back, ok := s.parse(again)
		require.True(t, ok)
		require.Equal(t, got.user, back.user)
		require.True(t, got.issued.Equal(back.issued))
	})
}

// TestDirectID: a direct message's ID depends on the key, the session and
// the server's session key, on nothing else, and never looks like newID's.
func TestDirectID(t *testing.T) {
	s := &sessionSigner{key: [32]byte{1}}
	id := s.directID("0123456789abcdef", "k1")
	require.Len(t, id, 32)
	require.NotContains(t, id, "-")
	require.Equal(t, id, s.directID("0123456789abcdef", "k1"), "the same every time")
	require.Equal(t, id, (&sessionSigner{key: [32]byte{1}}).directID("0123456789abcdef", "k1"), "after a restart")
	require.NotEqual(t, id, s.directID("0123456789abcdef", "k2"), "another key")
	require.NotEqual(t, id, s.directID("0123456789abcdee", "k1"), "another session")
	require.NotEqual(t, id, (&sessionSigner{key: [32]byte{2}}).directID("0123456789abcdef", "k1"), "another server")
}

// TestServiceDirectID: on servers sharing a broker, a direct message's ID
// depends on its sender's name key and its key, on nothing else.
func TestServiceDirectID(t *testing.T) {
	id := serviceDirectID("ana", "k1")
	require.Len(t, id, 32)
	require.NotContains(t, id, "-")
	require.Equal(t, id, serviceDirectID("ana", "k1"), "the same on every server")
	require.NotEqual(t, id, serviceDirectID("ana", "k2"), "another key")
	require.NotEqual(t, id, serviceDirectID("bo", "k1"), "another sender")
}

// TestRecentIDs: the window holds the latest n IDs.
func TestRecentIDs(t *testing.T) {
	var w recentIDs
	for _, id := range []string{"a", "b", "c"} {
		require.False(t, w.seen(id, 3))
	}
	require.True(t, w.seen("a", 3))
	require.False(t, w.seen("d", 3), "forgets a")
	require.False(t, w.seen("a", 3), "a forgotten, forgets b")
	require.True(t, w.seen("c", 3))
	require.True(t, w.seen("d", 3))
	require.False(t, w.seen("b", 3))
	require.Len(t, w.set, 3)
}

// TestSessionTokenRenewed: a token issued again for a session keeps its
// ID and user, with the new issue time.
func TestSessionTokenRenewed(t *testing.T) {
	s := &sessionSigner{key: [32]byte{1}}
	u := User{ID: "u1", Name: "alice", JoinedAt: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)}
	first, sid := s.issue(u, "", u.JoinedAt)
	later := u.JoinedAt.Add(48 * time.Hour)
	second, sid2 := s.issue(u, sid, later)
	require.Equal(t, sid, sid2)
	require.NotEqual(t, first, second)
	got, ok := s.parse(second)
	require.True(t, ok)
	require.Equal(t, sessionToken{id: sid, user: u, issued: later}, got)
}

// TestSessionTokenV1: a token of version 1 (no issue time) is read as
// issued when its session began.
func TestSessionTokenV1(t *testing.T) {
	s := &sessionSigner{key: [32]byte{1}}
	u := User{ID: "u1", Name: "alice", JoinedAt: time.Date(2026, 11, 28, 10, 0, 0, 5, time.UTC)}
	sid := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	b := append([]byte{tokenV1}, sid...)
	b = binary.BigEndian.AppendUint64(b, uint64(u.JoinedAt.UnixNano()))
	b = binary.AppendUvarint(b, uint64(len(u.ID)))
	b = append(b, u.ID...)
	b = binary.AppendUvarint(b, uint64(len(u.Name)))
	b = append(b, u.Name...)
	b = append(b, s.mac(b)...)
	got, ok := s.parse(base64.RawURLEncoding.EncodeToString(b))
	require.True(t, ok)
	require.Equal(t, sessionToken{id: hex.EncodeToString(sid), user: u, issued: u.JoinedAt}, got)
}
