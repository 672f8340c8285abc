package proto

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func serverFrame(t testing.TB, m Server) []byte {
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var parseSeeds = []string{
	`{}`,
	`{"type":"welcome"}`,
	`{"type":"text","from":"c1","id":7,"text":"hello","time":"2026-01-02T03:04:05.123456789Z"}`,
	`{"type":"text","from":"c1","text":"a \"quoted\" <b>"}`,
	`{"type":"text", "from":"c1"}`,
	`{"type":"text","from":"c1",}`,
	`{"type":"text","id":-1}`,
	`{"type":"text","text":"caf\u00e9"}`,
	"{\"type\":\"text\",\"text\":\"\xff\"}",
	`{"type":"text","text":null}`,
	`{"type"}`,
	`{"tYpe":"text","TEXT":"x"}`,
	`[1]`,
	``,
}

// FuzzParseServer checks that the direct reading of server messages agrees
// with encoding/json wherever encoding/json accepts the input.
func FuzzParseServer(f *testing.F) {
	for _, s := range parseSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var want struct{ Type, From, Text string }
		werr := json.Unmarshal(body, &want)
		typ, from, text, err := ParseServer(body)
		if werr != nil {
			if err == nil {
				if _, _, _, ok := scanServer(body); !ok {
					t.Fatalf("%q: encoding/json fails (%v), ParseServer does not", body, werr)
				}
			}
			return
		}
		if err != nil {
			t.Fatalf("%q: %v", body, err)
		}
		if string(typ) != want.Type || string(from) != want.From || string(text) != want.Text {
			t.Fatalf("%q: got %q %q %q, want %q %q %q", body, typ, from, text, want.Type, want.From, want.Text)
		}
	})
}

var garouSeeds = []string{
	`{}`,
	`{"type":"welcome","session":"abc","rooms":[{"room":"lobby"}]}`,
	`{"type":"text","room":"lobby","seq":1,"id":"20eef434-3","from":{"id":"20eef434-1","name":"alice"},"text":"hi bob","time":"2026-11-25T22:44:40.258749944Z"}`,
	`{"type":"text","room":"dev","seq":2,"id":"6930c21c-3","text":"announcement","time":"2026-11-25T22:57:19.01381534Z"}`,
	`{"type":"text","from":{"name":"a}b"},"text":"x"}`,
	`{"type":"text","from":{"x":"}","name":"bob"},"text":"x"}`,
	`{"type":"text","from":{"NAME":"bob"}}`,
	`{"type":"text","from":{"name":1}}`,
	`{"type":"text","from":"alice"}`,
	`{"type":"ack","ref":3}`,
	`{"type":7}`,
	`{"type":"text","from":{}}`,
	`{"type":"text","from":{"name":"a"},}`,
}

// FuzzParseGarou checks ParseGarou against encoding/json, as
// FuzzParseServer checks ParseServer.
func FuzzParseGarou(f *testing.F) {
	for _, s := range append(garouSeeds, parseSeeds...) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var want struct {
			Type string
			From struct{ Name string }
			Text string
		}
		werr := json.Unmarshal(body, &want)
		typ, name, text, err := ParseGarou(body)
		if werr != nil {
			if err == nil {
				if _, _, _, ok := scanGarou(body); !ok {
					t.Fatalf("%q: encoding/json fails (%v), ParseGarou does not", body, werr)
				}
			}
			return
		}
		if err != nil {
			t.Fatalf("%q: %v", body, err)
		}
		if string(typ) != want.Type || string(name) != want.From.Name || string(text) != want.Text {
			t.Fatalf("%q: got %q %q %q, want %q %q %q", body, typ, name, text, want.Type, want.From.Name, want.Text)
		}
	})
}

func TestParseGarouText(t *testing.T) {
	body := []byte(garouSeeds[2])
	if _, _, _, ok := scanGarou(body); !ok {
		t.Fatalf("the direct path does not read %s", body)
	}
	typ, name, text, err := ParseGarou(body)
	if err != nil || string(typ) != TypeText || string(name) != "alice" || string(text) != "hi bob" {
		t.Fatalf("ParseGarou = %q %q %q %v", typ, name, text, err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _, _, _ = ParseGarou(body) }); n != 0 {
		t.Errorf("ParseGarou allocates %v times per text", n)
	}
}

func TestParseServerText(t *testing.T) {
	body := serverFrame(t, Server{Type: TypeText, From: "c12", ID: 99, Text: "1234 5 6 xxxx", Time: time.Now().UTC()})
	if _, _, _, ok := scanServer(body); !ok {
		t.Fatalf("the direct path does not read %s", body)
	}
	typ, from, text, err := ParseServer(body)
	if err != nil || string(typ) != TypeText || string(from) != "c12" || string(text) != "1234 5 6 xxxx" {
		t.Fatalf("ParseServer = %q %q %q %v", typ, from, text, err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _, _, _ = ParseServer(body) }); n != 0 {
		t.Errorf("ParseServer allocates %v times per text", n)
	}
}

func TestFrameReader(t *testing.T) {
	var wire []byte
	// Frames wholly in the 16-byte buffer come from there, the long one
	// through the copy.
	frames := []string{"a", "", "hello", "longer than the buffer holds", "b"}
	for _, s := range frames {
		wire = AppendFrame(wire, []byte(s))
	}
	fr := NewFrameReader(bytes.NewReader(wire), 16)
	for _, want := range frames {
		got, err := fr.Next()
		if err != nil || string(got) != want {
			t.Fatalf("Next = %q, %v; want %q", got, err, want)
		}
	}
	if _, err := fr.Next(); err == nil {
		t.Fatal("Next after the last frame: no error")
	}
}

// BenchmarkReceive is the baselines' client receive path per delivered
// text, without the network: frames read from a buffered stream and
// decoded, the sender and text returned as strings.
func BenchmarkReceive(b *testing.B) {
	const n = 1000
	var stream []byte
	for i := range n {
		stream = AppendFrame(stream, serverFrame(b, Server{Type: TypeText, From: "bench-client-12", ID: uint64(i + 1),
			Text: strings.Repeat("x", 100), Time: time.Now().UTC()}))
	}
	b.ReportAllocs()
	for b.Loop() {
		fr := NewFrameReader(bytes.NewReader(stream), 32<<10)
		for range n {
			body, err := fr.Next()
			if err != nil {
				b.Fatal(err)
			}
			_, from, text, err := ParseServer(body)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = string(from), string(text)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
}
