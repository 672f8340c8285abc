package pebblestore

import (
	"errors"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/stretchr/testify/require"
)

// FuzzDecodeText: a record read back from a file, whatever its bytes, is
// a text or an error wrapping ErrCorrupt; a text's record decodes to it.
func FuzzDecodeText(f *testing.F) {
	at := time.Date(2026, 11, 28, 10, 0, 0, 123, time.UTC)
	for _, m := range []garou.ChatMessage{
		{Type: garou.TypeText, Seq: 1, ID: "x", From: &garou.User{ID: "u", Name: "alice"}, Text: "hi", Time: at},
		{Type: garou.TypeText, Seq: 2, Text: "from the server", Time: at.In(time.FixedZone("", 3600))},
		{},
	} {
		b, err := encodeText(&m)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeText("room", seqKey(7), b)
		if err != nil {
			require.True(t, errors.Is(err, ErrCorrupt), "%v", err)
			return
		}
		again, err := encodeText(&m)
		require.NoError(t, err)
		m2, err := decodeText("room", seqKey(7), again)
		require.NoError(t, err)
		require.True(t, m.Time.Equal(m2.Time)) // the same instant, however odd its encoding
		m.Time, m2.Time = time.Time{}, time.Time{}
		require.Equal(t, m, m2)
	})
}
