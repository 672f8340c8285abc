package boltstore_test

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/boltstore"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open opens a store in a fresh directory of t, closed when t ends.
func open(t testing.TB, opts ...boltstore.Option) (*boltstore.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "history.db")
	return openAt(t, path, opts...), path
}

// openAt opens the store at path, closed when t ends.
func openAt(t testing.TB, path string, opts ...boltstore.Option) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(path, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// text is the text seq of room, with every field a text has.
func text(room string, seq uint64) garou.ChatMessage {
	m := garou.ChatMessage{
		Type: garou.TypeText,
		Room: room,
		Seq:  seq,
		ID:   "id-" + room + "-" + itoa(seq),
		Text: "text " + itoa(seq) + " of " + room,
		Time: time.Date(2026, 11, 28, 10, 0, 0, int(seq), time.UTC),
	}
	if seq%3 != 0 { // every third is from the server
		m.From = &garou.User{ID: "u" + itoa(seq%7), Name: "user" + itoa(seq%7)}
	}
	if seq%3 == 1 { // and every third has its sender's key
		m.SenderKey = "0123456789abcdef/k." + itoa(seq)
	}
	return m
}

func texts(room string, seqs ...uint64) []garou.ChatMessage {
	var out []garou.ChatMessage
	for _, s := range seqs {
		out = append(out, text(room, s))
	}
	return out
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
