package pebblestore_test

import (
	"testing"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/pebblestore"
	"github.com/stretchr/testify/require"
)

// step is one call to a store: an append of seq to room, a forget of
// room, or (when want is set) an After(room, seq) that must return the
// texts want of room, oldest first, with oldest.
type step struct {
	op     string // "append", "forget", "after"
	room   string
	seq    uint64
	want   []uint64
	oldest uint64
}

func appendTo(room string, seqs ...uint64) []step {
	var out []step
	for _, s := range seqs {
		out = append(out, step{op: "append", room: room, seq: s})
	}
	return out
}

func after(room string, seq uint64, oldest uint64, want ...uint64) step {
	return step{op: "after", room: room, seq: seq, want: want, oldest: oldest}
}

func forget(room string) step { return step{op: "forget", room: room} }

func seqs(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func script(parts ...any) []step {
	var out []step
	for _, p := range parts {
		switch p := p.(type) {
		case step:
			out = append(out, p)
		case []step:
			out = append(out, p...)
		}
	}
	return out
}

var contract = []struct {
	name  string
	size  int
	steps []step
}{
	{"unknown room", 5, script(after("a", 0, 0))},
	{"after each point", 5, script(
		appendTo("a", 1, 2, 3),
		after("a", 0, 1, 1, 2, 3),
		after("a", 1, 1, 2, 3),
		after("a", 2, 1, 3),
		after("a", 3, 1),
		after("a", 1000, 1),
		after("a", ^uint64(0), 1),
	)},
	{"trimmed to size", 3, script(
		appendTo("a", seqs(1, 5)...),
		after("a", 0, 3, 3, 4, 5),
		after("a", 2, 3, 3, 4, 5),
		after("a", 3, 3, 4, 5),
		after("a", 5, 3),
	)},
	{"size one", 1, script(
		appendTo("a", 1, 2),
		after("a", 0, 2, 2),
		appendTo("a", 3),
		after("a", 2, 3, 3),
	)},
	{"size zero keeps nothing", 0, script(
		appendTo("a", 1, 2),
		after("a", 0, 0),
		forget("a"),
		after("a", 0, 0),
	)},
	{"rooms apart", 2, script(
		appendTo("a", 1, 2, 3),
		appendTo("b", 1),
		appendTo("a", 4),
		after("a", 0, 3, 3, 4),
		after("b", 0, 1, 1),
		forget("a"),
		after("a", 0, 0),
		after("b", 0, 1, 1),
	)},
	{"forget then a new numbering", 3, script(
		appendTo("a", seqs(1, 4)...),
		forget("a"),
		after("a", 0, 0),
		appendTo("a", 9, 10),
		after("a", 0, 9, 9, 10),
		after("a", 9, 9, 10),
	)},
	{"forget an unknown room", 3, script(
		forget("nobody"),
		after("nobody", 0, 0),
	)},
	{"a seq skipped", 5, script(
		appendTo("a", 1, 2, 4, 5),
		after("a", 2, 1, 4, 5),
		after("a", 3, 1, 4, 5),
	)},
	{"names of any bytes", 2, script(
		appendTo("é 🦊", 1),
		appendTo("rooms", 1),
		appendTo("garou", 1),
		appendTo("\x00", 1),
		after("é 🦊", 0, 1, 1),
		after("rooms", 0, 1, 1),
		after("garou", 0, 1, 1),
		after("\x00", 0, 1, 1),
	)},
	{"many", 100, script(
		appendTo("a", seqs(1, 250)...),
		after("a", 0, 151, seqs(151, 250)...),
		after("a", 200, 151, seqs(201, 250)...),
	)},
}

// TestContract runs one script against the memory history of the root
// package and against the Pebble store: both keep the same texts, so that
// a server behaves the same with either.
func TestContract(t *testing.T) {
	stores := map[string]func(t *testing.T, size int) garou.HistoryStore{
		"memory": func(_ *testing.T, size int) garou.HistoryStore { return garou.NewMemoryHistory(size) },
		"pebble": func(t *testing.T, size int) garou.HistoryStore {
			s, _ := open(t, pebblestore.WithSize(size))
			return s
		},
	}
	for _, tc := range contract {
		for kind, newStore := range stores {
			t.Run(tc.name+"/"+kind, func(t *testing.T) {
				t.Parallel()
				h := newStore(t, tc.size)
				for i, st := range tc.steps {
					switch st.op {
					case "append":
						require.NoError(t, h.Append(ctxT(t), st.room, text(st.room, st.seq)), "step %d", i)
					case "forget":
						require.NoError(t, h.Forget(ctxT(t), st.room), "step %d", i)
					case "after":
						msgs, oldest, err := h.After(ctxT(t), st.room, st.seq)
						require.NoError(t, err, "step %d", i)
						require.Equal(t, texts(st.room, st.want...), msgs, "step %d: After(%q, %d)", i, st.room, st.seq)
						require.Equal(t, st.oldest, oldest, "step %d: oldest", i)
					}
				}
			})
		}
	}
}
