package garou_test

// More hostile clients: replies that would quote long input, invisible
// and look-alike names, refusals slipped between bad frames, an
// out-of-range "since", and streams that end or are reset before the
// hello.

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/garou-chat/garou"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"
)

// TestHostileRepliesNeverQuoteInputAtLength: every reply that names what
// the client sent (a room, a user) fits the client's max_size, however
// long the string it was sent.
func TestHostileRepliesNeverQuoteInputAtLength(t *testing.T) {
	srv := startServer(t, garou.WithRateLimit(0, 0))
	alice := bystander(t, srv)
	long := strings.Repeat("r", 20000)
	for _, maxSize := range []int{4096, 0} { // 0: the default, 1 MiB
		m := rawDial(t, srv)
		name := fmt.Sprintf("mallory%d", maxSize)
		hello := map[string]any{"type": "hello", "name": name}
		if maxSize != 0 {
			hello["max_size"] = maxSize
		}
		m.sendJSON(hello)
		m.expect("welcome")
		m.expect("joined")
		awaitJoin(t, alice, name)
		arg := long
		if maxSize == 0 {
			// A request of exactly the server's limit, almost all of it the
			// quoted string.
			arg = strings.Repeat("r", garou.DefaultMaxMessageSize-64)
		}
		for i, req := range []map[string]any{
			{"type": "text", "room": arg, "text": "hi"},
			{"type": "members", "room": arg},
			{"type": "leave", "room": arg},
			{"type": "direct", "to": arg, "text": "hi"},
			{"type": "join", "room": arg},
		} {
			req["ref"] = i + 1
			m.sendJSON(req)
			f := m.expect("error") // read refuses a frame over 1 MiB
			require.Equal(t, float64(i+1), f["ref"], "%v", f)
			limit := maxSize
			if limit == 0 {
				limit = garou.DefaultMaxMessageSize
			}
			require.Less(t, len(f.str("text")), min(limit, 1024), "%s: %.80s", req["type"], f.str("text"))
		}
	}
	requireServed(t, alice)
}

// TestHostileInvisibleAndLookAlikeNames: names that display as an online
// user's are refused: with an invisible character added (bad_name), or
// drawn alike (name_taken, by Unicode's confusables).
func TestHostileInvisibleAndLookAlikeNames(t *testing.T) {
	srv := startServer(t)
	alice := bystander(t, srv) // "alice"
	dial(t, srv, "strasse")
	for _, tc := range []struct {
		name string
		code garou.CloseCode
	}{
		{"alice\u3164", garou.CloseBadName}, // Hangul filler
		{"alice\u115f", garou.CloseBadName}, // Hangul choseong filler
		{"alice\u034f", garou.CloseBadName}, // combining grapheme joiner
		{"alice\ufe0f", garou.CloseBadName}, // variation selector
		{"alice\u2800", garou.CloseBadName}, // braille blank
		{"al\u200dice", garou.CloseBadName}, // zero width joiner
		{"a1ice", garou.CloseNameTaken},     // digit one for l
		{"\u0430lice", garou.CloseBadName},  // Cyrillic a mixed with Latin
		{"STRASSE", garou.CloseNameTaken},   // case
		{"straße", garou.CloseNameTaken},    // full case folding
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := rawDial(t, srv)
			m.sendJSON(map[string]any{"type": "hello", "name": tc.name})
			code, bye := m.closed()
			requireBye(t, code, bye, tc.code)
		})
	}
	requireServed(t, alice)
}

// TestHostileRefusalsCountTowardFlooding: a well-formed request that is
// refused counts as a refusal, like a bad frame; slipping one between bad
// frames does not reset the count, with or without a rate limit.
func TestHostileRefusalsCountTowardFlooding(t *testing.T) {
	for _, tc := range []struct {
		what  string
		rate  float64
		burst int
	}{
		{"rate limit on", 1000, 3},
		{"rate limit off", 0, 0},
	} {
		t.Run(tc.what, func(t *testing.T) {
			threshold := max(tc.burst, 10)
			srv, alice, m := malloryJoined(t, garou.WithRateLimit(tc.rate, tc.burst))
			var b []byte
			for i := 1; i <= threshold+1; i++ {
				if i%3 == 0 { // well-formed, refused
					b = append(b, rawFrame(fmt.Sprintf(`{"type":"text","ref":%d,"room":"elsewhere","text":"x"}`, i))...)
				} else {
					b = append(b, rawFrame(fmt.Sprintf(`{"type":"nope","ref":%d}`, i))...)
				}
			}
			m.write(b)
			for i := 1; i <= threshold; i++ {
				code := garou.CodeUnknownType
				if i%3 == 0 {
					code = garou.CodeNotInRoom
				}
				m.expectError(code, uint64(i))
			}
			requireEjected(t, srv, alice, m, garou.CloseFlooding, "flooding")
		})
	}
}

// TestHostileAcceptedRequestResetsTheCount: what resets the count is a
// request the server carried out.
func TestHostileAcceptedRequestResetsTheCount(t *testing.T) {
	_, alice, m := malloryJoined(t, garou.WithRateLimit(0, 0))
	for round := range 3 {
		var b []byte
		for i := 1; i <= 10; i++ { // the most in a row that is not flooding
			b = append(b, rawFrame(fmt.Sprintf(`{"type":"nope","ref":%d}`, i))...)
		}
		b = append(b, rawFrame(`{"type":"users","ref":99}`)...)
		m.write(b)
		for i := 1; i <= 10; i++ {
			m.expectError(garou.CodeUnknownType, uint64(i))
		}
		require.Equal(t, uint64(99), m.expect("users").num("ref"), "round %d", round)
	}
	requireServed(t, alice)
}

// TestHostileSinceOutOfRange: a "since" past 2^53 (2^64-1 would make the
// first missed number overflow) is a bad frame in a join and a protocol
// violation in a hello.
func TestHostileSinceOutOfRange(t *testing.T) {
	srv, alice, m := malloryJoined(t)
	m.send(`{"type":"join","ref":7,"room":"lobby","since":18446744073709551615}`)
	m.expectError(garou.CodeBadFrame, 7)
	m.send(`{"type":"users","ref":8}`)
	require.Equal(t, uint64(8), m.expect("users").num("ref"), "the connection goes on")

	h := rawDial(t, srv)
	h.send(`{"type":"hello","name":"eve","rooms":[{"room":"lobby","since":18446744073709551615}]}`)
	code, bye := h.closed()
	requireBye(t, code, bye, garou.CloseProtocol)
	require.Contains(t, bye.str("text"), "since")
	requireServed(t, alice)
}

// TestHostileStreamEndsBeforeHello: a stream ended (FIN) or reset before
// a complete hello is a protocol violation, with its close code.
func TestHostileStreamEndsBeforeHello(t *testing.T) {
	srv := startServer(t)
	alice := bystander(t, srv)

	fin := rawDial(t, srv)
	fin.write([]byte{0, 0}) // half a length prefix, then FIN
	require.NoError(t, fin.st.Close())
	code, bye := fin.closed()
	requireBye(t, code, bye, garou.CloseProtocol)

	empty := rawDial(t, srv)
	empty.write(nil)
	require.NoError(t, empty.st.Close()) // FIN with nothing at all
	code, bye = empty.closed()
	requireBye(t, code, bye, garou.CloseProtocol)

	reset := rawDial(t, srv)
	reset.write([]byte{0})
	reset.st.CancelWrite(quic.StreamErrorCode(1))
	code, bye = reset.closed()
	requireBye(t, code, bye, garou.CloseProtocol)
	requireServed(t, alice)
}

// TestHostileFloodDoesNotFloodTheLogs: a client sending bad frames as fast
// as it can gets an error for each, but the server logs only the first
// few of them.
func TestHostileFloodDoesNotFloodTheLogs(t *testing.T) {
	lines := make(lineWriter, 1000)
	srv := startServer(t, garou.WithLogger(slog.New(slog.NewTextHandler(lines, nil))))
	m := rawDial(t, srv)
	m.hello("mallory")
	const n = 60
	for i := range n {
		m.send(fmt.Sprintf(`{"type":"nonsense","ref":%d}`, i+1))
	}
	for i := range n {
		m.expectError(garou.CodeUnknownType, uint64(i+1))
	}
	bad := 0
	for len(lines) > 0 {
		if strings.Contains(<-lines, "garou: bad frame") {
			bad++
		}
	}
	require.Positive(t, bad)
	require.Less(t, bad, n/2, "the logs were not limited")
}
