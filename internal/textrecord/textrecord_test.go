package textrecord_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/internal/textrecord"
)

var errCorrupt = errors.New("corrupt")

// TestEncodeDecode: a text's record decodes to it, its time to the same
// instant in the same zone, in both record versions.
func TestEncodeDecode(t *testing.T) {
	at := time.Date(2026, 11, 28, 10, 0, 0, 123, time.UTC)
	for _, m := range []garou.ChatMessage{
		{Type: garou.TypeText, Room: "r", Seq: 7, ID: "x", From: &garou.User{ID: "u", Name: "alice"}, Text: "hi", Time: at},
		{Type: garou.TypeText, Room: "r", Seq: 7, Text: "from the server", Time: at.In(time.FixedZone("", 3600))},
		{Type: garou.TypeText, Room: "r", Seq: 7, Text: "odd zone", Time: at.In(time.FixedZone("", 3601))},
		{Type: garou.TypeText, Room: "r", Seq: 7, ID: "y", Text: "keyed", Time: at, SenderKey: "0123456789abcdef/k.1"},
	} {
		b, err := textrecord.Encode(&m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := textrecord.Decode("r", []byte{0, 0, 0, 0, 0, 0, 0, 7}, b, errCorrupt)
		if err != nil {
			t.Fatal(err)
		}
		_, off := got.Time.Zone()
		_, want := m.Time.Zone()
		if !got.Time.Equal(m.Time) || off != want {
			t.Fatalf("time %v decoded as %v", m.Time, got.Time)
		}
		got.Time, m.Time = time.Time{}, time.Time{}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("%+v decoded as %+v", m, got)
		}
	}
}

// BenchmarkEncode is the record of a text, made by the committer's
// callers for every append: one allocation.
func BenchmarkEncode(b *testing.B) {
	m := &garou.ChatMessage{Type: garou.TypeText, Room: "room", Seq: 42, ID: "d0745814-2", From: &garou.User{ID: "d0745814-3", Name: "bench-client-12"},
		Text: string(make([]byte, 100)), Time: time.Now().UTC()}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := textrecord.Encode(m); err != nil {
			b.Fatal(err)
		}
	}
}
