package garou

import (
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
	tok, sid := s.issue(u)
	f.Add(tok)
	f.Add(tok[:len(tok)-1])
	f.Add("a10510043cc7e8c3a8c7f5c0792a7614") // a token without a data directory
	f.Add("")
	other := &sessionSigner{key: [32]byte{4}}
	long, _ := other.issue(User{ID: string(make([]byte, maxIdentityID)), Name: "ＡＬＩＣＥ"})
	f.Add(long)

	got, ok := s.parse(tok)
	require.True(f, ok)
	require.Equal(f, sessionToken{id: sid, user: u}, got)
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
		again, sid := s.issue(got.user)
		require.NotEqual(t, got.id, sid)
		back, ok := s.parse(again)
		require.True(t, ok)
		require.Equal(t, got.user, back.user)
	})
}
