package boltstore

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
		{Type: garou.TypeText, Seq: 3, ID: "y", From: &garou.User{ID: "u", Name: "alice"}, Text: "again", Time: at, SenderKey: "0123456789abcdef/k.1"},
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

// TestRecordVersions: a text without a SenderKey is still written as a
// version 1 record, byte for byte as before version 2 existed, so files of
// either version read alike; one with a SenderKey is a version 2 record
// that keeps it.
func TestRecordVersions(t *testing.T) {
	at := time.Date(2026, 11, 28, 10, 0, 0, 123, time.UTC)
	m := garou.ChatMessage{Type: garou.TypeText, Room: "room", Seq: 7, ID: "x", From: &garou.User{ID: "u", Name: "al"}, Text: "hi", Time: at}
	// Written by the version 1 encoder.
	v1 := []byte("\x01\x04text\x01x\x01\x01u\x02al\x02hi\x0f\x01\x00\x00\x00\x0e\xe2\x9c\x9d\x20\x00\x00\x00{\xff\xff")
	got, err := decodeText("room", seqKey(7), v1)
	require.NoError(t, err)
	require.Equal(t, m, got)
	b, err := encodeText(&m)
	require.NoError(t, err)
	require.Equal(t, v1, b)

	m.SenderKey = "0123456789abcdef/k.1"
	b, err = encodeText(&m)
	require.NoError(t, err)
	require.Equal(t, byte(2), b[0])
	got, err = decodeText("room", seqKey(7), b)
	require.NoError(t, err)
	require.Equal(t, m, got)
}
