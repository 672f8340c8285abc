// Package historytest is a conformance suite for authors of
// garou.HistoryStore implementations: Run plays one table of appends,
// forgets and reads against a store and checks that it keeps the same
// texts as the memory history (garou.NewMemoryHistory), so that a server
// behaves the same with any store. RunServer runs a real server over QUIC
// on 127.0.0.1 on a durable store (a garou.SeqKeeper): texts kept and
// replayed, a restart that numbers on, a forgotten room's floor, and the
// pipelined appends of an AppendStarter.
//
// It uses only the standard library, so that importing it pulls in no test
// dependencies.
package historytest

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/garou-chat/garou"
)

// An Option changes what Run expects of a store.
type Option func(*config)

type config struct {
	senderKey bool
}

// WithoutSenderKey is for stores that do not keep ChatMessage.SenderKey
// (see garou.HistoryStore): the texts appended carry none. By default some
// texts carry a SenderKey, and the store must return it.
func WithoutSenderKey() Option { return func(c *config) { c.senderKey = false } }

// Run runs the suite against the stores made by open, one per case, in
// parallel subtests of t. open returns an empty store keeping the last
// size texts of each room (none for a size of 0); it fails t if it cannot,
// and arranges with t.Cleanup for the store to be closed.
func Run(t *testing.T, open func(t *testing.T, size int) garou.HistoryStore, opts ...Option) {
	t.Helper()
	c := config{senderKey: true}
	for _, o := range opts {
		o(&c)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			h := open(t, tc.size)
			for i, st := range tc.steps {
				switch st.op {
				case opAppend:
					if err := h.Append(ctx, st.room, c.text(st.room, st.seq)); err != nil {
						t.Fatalf("step %d: Append(%q, seq %d): %v", i, st.room, st.seq, err)
					}
				case opForget:
					if err := h.Forget(ctx, st.room); err != nil {
						t.Fatalf("step %d: Forget(%q): %v", i, st.room, err)
					}
				case opAfter:
					msgs, oldest, err := h.After(ctx, st.room, st.seq)
					if err != nil {
						t.Fatalf("step %d: After(%q, %d): %v", i, st.room, st.seq, err)
					}
					if want := c.texts(st.room, st.want...); !reflect.DeepEqual(msgs, want) {
						t.Fatalf("step %d: After(%q, %d) returned\n%s\nwant\n%s", i, st.room, st.seq, show(msgs), show(want))
					}
					if oldest != st.oldest {
						t.Fatalf("step %d: After(%q, %d): oldest %d, want %d", i, st.room, st.seq, oldest, st.oldest)
					}
				}
			}
		})
	}
}

// text is the text seq of room, with every field a text has.
func (c config) text(room string, seq uint64) garou.ChatMessage {
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
	if c.senderKey && seq%3 == 1 { // and every third has its sender's key
		m.SenderKey = "0123456789abcdef/k." + itoa(seq)
	}
	return m
}

func (c config) texts(room string, seqs ...uint64) []garou.ChatMessage {
	var out []garou.ChatMessage
	for _, s := range seqs {
		out = append(out, c.text(room, s))
	}
	return out
}

func show(msgs []garou.ChatMessage) string {
	if len(msgs) == 0 {
		return "  (none)"
	}
	var s string
	for _, m := range msgs {
		from := "<nil>"
		if m.From != nil {
			from = fmt.Sprintf("%+v", *m.From)
		}
		s += fmt.Sprintf("  %+v from %s\n", m, from)
	}
	return s[:len(s)-1]
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

type op int

const (
	opAppend op = iota
	opForget
	opAfter
)

// step is one call to a store: an append of seq to room, a forget of
// room, or an After(room, seq) that must return the texts want of room,
// oldest first, with oldest.
type step struct {
	op     op
	room   string
	seq    uint64
	want   []uint64
	oldest uint64
}

func appendTo(room string, seqs ...uint64) []step {
	var out []step
	for _, s := range seqs {
		out = append(out, step{op: opAppend, room: room, seq: s})
	}
	return out
}

func after(room string, seq uint64, oldest uint64, want ...uint64) step {
	return step{op: opAfter, room: room, seq: seq, want: want, oldest: oldest}
}

func forget(room string) step { return step{op: opForget, room: room} }

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

var cases = []struct {
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
	{"a seq skipped, then trimmed", 2, script(
		appendTo("a", 1, 3, 4, 5, 6, 7, 8),
		after("a", 0, 7, 7, 8),
		appendTo("a", 9, 10, 11),
		after("a", 0, 10, 10, 11),
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
