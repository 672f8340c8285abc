package garou

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

func frameOf(body string) []byte {
	b := make([]byte, frameHeaderLen+len(body))
	binary.BigEndian.PutUint32(b, uint32(len(body)))
	copy(b[frameHeaderLen:], body)
	return b
}

// FuzzFrameReader feeds arbitrary streams to the frame reader: it must
// never panic, never return a body over the limit, and never allocate for
// a length prefix over the limit.
func FuzzFrameReader(f *testing.F) {
	f.Add(frameOf(`{"type":"hello","name":"a"}`))
	f.Add(append(frameOf(`{"type":"text","text":"x"}`), frameOf(`{"type":"bye"}`)...))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 100, '{'})
	f.Add([]byte{0, 0})
	const limit = 4096
	f.Fuzz(func(t *testing.T, stream []byte) {
		fr := frameReader{r: bytes.NewReader(stream), max: limit}
		for range 1000 {
			body, err := fr.next()
			if err != nil {
				var tl *frameTooLargeError
				switch {
				case errors.As(err, &tl):
					if tl.size <= limit {
						t.Fatalf("too large reported for %d", tl.size)
					}
					if cap(fr.buf) > limit {
						t.Fatalf("buffer grew to %d for a refused frame", cap(fr.buf))
					}
				case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, errEmptyFrame):
				default:
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(body) == 0 || len(body) > limit {
				t.Fatalf("body of %d bytes", len(body))
			}
		}
	})
}

// FuzzFrameReaderBuffered checks that a frame reader over a bufio.Reader,
// which returns the frames wholly in its buffer from there, reads the same
// frames and stops with the same error as one over the bare stream.
func FuzzFrameReaderBuffered(f *testing.F) {
	f.Add(append(frameOf(`{"type":"text","text":"x"}`), frameOf(`{"type":"bye"}`)...), uint8(16))
	f.Add(append(frameOf(strings.Repeat("y", 40)), 0, 0, 0, 0), uint8(0))
	f.Add([]byte{0, 0, 0, 3, 'a', 'b', 'c', 0xff, 0xff, 0xff, 0xff}, uint8(5))
	const limit = 64
	f.Fuzz(func(t *testing.T, stream []byte, size uint8) {
		bare := frameReader{r: bytes.NewReader(stream), max: limit}
		buf := frameReader{r: bufio.NewReaderSize(bytes.NewReader(stream), int(size)), max: limit}
		for range 1000 {
			want, werr := bare.next()
			got, gerr := buf.next()
			if !bytes.Equal(got, want) || (werr == nil) != (gerr == nil) || werr != nil && werr.Error() != gerr.Error() {
				t.Fatalf("buffered reader read %q, %v; bare %q, %v", got, gerr, want, werr)
			}
			if werr != nil {
				return
			}
		}
	})
}

// FuzzDecodeRequest feeds arbitrary frame bodies to the server's decoder:
// it must never panic, and must either accept a known type or return an
// *Error with a documented code.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"type":"hello","name":"alice","max_size":65536,"rooms":[{"room":"lobby","since":3}]}`,
		`{"type":"text","ref":1,"room":"lobby","text":"hi"}`,
		`{"type":"direct","ref":2,"to":"bob","text":"psst"}`,
		`{"type":"join","ref":3,"room":"x","history":10}`,
		`{"type":"leave","ref":4,"room":"x"}`,
		`{"type":"users","ref":5}`,
		`{"type":"members","ref":6,"room":"x"}`,
		`{"type":"bye"}`,
		`{"type":"text","text":5}`,
		`{"type":"join","since":-1}`,
		`{"type":"hello","rooms":{"room":"x"}}`,
		`{"type":"hello","rooms":[{"room":"x","since":1.5}]}`,
		`{"type":"text","from":{"id":"1","name":"bob"},"text":"spoof"}`,
		`{"type":"nope"}`,
		"{\"type\":\"text\",\"text\":\"\xff\"}",
		`{"type":"text"}{"type":"text"}`,
		`{"type":"text","ref":7,"room":"lobby","text":"héllo","key":"AbC.1"}`,
		`{"type":"text","text":"a","text":"b"}`,
		` { "type" : "join" , "ref" : 3 , "room" : "x" , "history" : 0 } `,
		`{"Type":"text","ref":01}`,
		`[1,2,3]`,
		`null`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		// The fast path must agree with encoding/json whenever it answers.
		var fast request
		if fastDecodeRequest(body, &fast) {
			var slow request
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&slow); err != nil {
				t.Fatalf("fast path accepted what encoding/json refuses (%v): %q", err, body)
			}
			if _, err := dec.Token(); err != io.EOF {
				t.Fatalf("fast path accepted data after the object: %q", body)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("fast %+v\nslow %+v\nbody %q", fast, slow, body)
			}
		}
		req, err := decodeRequest(body)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("not an *Error: %v", err)
			}
			if e.Code != CodeBadFrame && e.Code != CodeUnknownType {
				t.Fatalf("code %q", e.Code)
			}
			// The text speaks of the protocol, not of the Go decoder.
			for _, leak := range []string{"Go ", "garou.", "json:", "struct", "uint", "int64", "[]"} {
				if strings.Contains(e.Text, leak) {
					t.Fatalf("error text leaks %q: %s", leak, e.Text)
				}
			}
			return
		}
		switch req.Type {
		case frameHello, frameJoin, frameLeave, frameUsers, frameMembers, frameText, frameDirect, frameBye:
		default:
			t.Fatalf("accepted type %q", req.Type)
		}
	})
}

// FuzzDecodeReply feeds arbitrary frame bodies to the client's decoder.
func FuzzDecodeReply(f *testing.F) {
	for _, s := range []string{
		`{"type":"welcome","user":{"id":"1","name":"a","joined_at":"2026-01-01T00:00:00Z"},"session":"s","max_size":1048576}`,
		`{"type":"text","room":"lobby","seq":1,"id":"x","from":{"id":"1","name":"a"},"text":"hi","time":"2026-01-01T00:00:00Z"}`,
		`{"type":"gap","room":"lobby","from_seq":3,"to_seq":9}`,
		`{"type":"bye","code":"kicked","text":"bye","close":8}`,
		`{"type":"text","time":"not a time"}`,
		`{"type":"users","users":[{}]}`,
		`{"type":"text","room":"lobby","seq":12,"id":"ab-3","from":{"id":"ab-1","name":"zoë"},"text":"héllo <b>","time":"2026-11-25T23:30:02.945716717Z","ref":0}`,
		`{"type":"text","time":"2026-11-25T23:30:02.9Z"}`,
		`{"type":"text","room":"lobby","from":{"id":"1","name":"a"},"text":"x"}`,
		`{"type":"text","room":"lobby","from":{"id":"1","name":"b"},"text":"x"}`,
		`{"type":"text","from":{"id":"1","name":"a","id":"2"}}`,
		`{"type":"text","time":"2026-11-25T23:30:02.9+00:00"}`,
		`{"type":"join","room":"r","user":{"id":"1","name":"a","joined_at":"2026-01-01T00:00:00+01:00"},"time":"2026-01-01T00:00:00Z"}`,
		`{"type":"text","text":"a\"b\n"}`,
		`{"type":"text","from":{"id":"1"},"from":{"name":"b"}}`,
		`{"type":"ack","ref":9007199254740993,"seq":01}`,
		` {"type" : "leave" , "reason":"quit"} `,
		`{"type":"presence","room":"dev","time":"2026-11-28T09:36:41.066814396Z","count":1,"presence_seq":3,"changes":[{"op":"join","user":{"id":"7f","name":"alice"}},{"op":"leave","user":{"id":"7f","name":"alice"},"reason":"left"}]}`,
		`{"type":"joined","room":"lobby","users":[{"id":"a","name":"b"}],"next":"a","count":200,"presence_seq":9,"last_seq":3}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		// The fast path must agree with encoding/json whenever it answers.
		var fast reply
		if !fastDecodeReply(body, &fast) {
			_, _ = decodeReply(body)
			return
		}
		var slow reply
		if err := json.Unmarshal(body, &slow); err != nil {
			t.Fatalf("fast path accepted what encoding/json refuses (%v): %q", err, body)
		}
		if !fast.Time.Equal(slow.Time) {
			t.Fatalf("time %v != %v", fast.Time, slow.Time)
		}
		want := slow.Time
		fast.Time, slow.Time = time.Time{}, time.Time{}
		for _, u := range []*wireUser{&fast.From, &fast.User, &slow.From, &slow.User} {
			u.JoinedAt = u.JoinedAt.UTC()
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("fast %+v\nslow %+v\nbody %q", fast, slow, body)
		}
		// A decoder that has seen a room, a sender and a time before
		// takes them from what it remembers: the answer must not change.
		for _, prime := range [][]byte{body, []byte(`{"type":"text","room":"lobby","from":{"id":"1","name":"a"},"time":"2026-11-25T23:30:02.1Z"}`)} {
			var d replyDecoder
			var first, again reply
			if !d.fast(prime, &first) || !d.fast(body, &again) {
				t.Fatalf("a decoder that saw %q refuses %q", prime, body)
			}
			// The same instant in the same zone: by name and offset, as
			// each parse of an offset makes a *time.Location of its own.
			name, off := again.Time.Zone()
			wantName, wantOff := want.Zone()
			if !again.Time.Equal(want) || name != wantName || off != wantOff {
				t.Fatalf("time after a cached second %v != %v", again.Time, want)
			}
			again.Time = time.Time{}
			for _, u := range []*wireUser{&again.From, &again.User} {
				u.JoinedAt = u.JoinedAt.UTC()
			}
			if !reflect.DeepEqual(again, slow) {
				t.Fatalf("after %q:\nfast %+v\nslow %+v\nbody %q", prime, again, slow, body)
			}
		}
	})
}

// FuzzEncodeTextFrame checks that a text frame written directly is what
// encoding/json writes, byte for byte.
func FuzzEncodeTextFrame(f *testing.F) {
	f.Add("text", "lobby", uint64(42), "ab-2", "ab-1", "alice", "", "hello", int64(1764372000123456789), true)
	f.Add("direct", "", uint64(0), "ab-3", "ab-1", "alice", "bob", "psst <&>", int64(1764372000000000000), true)
	f.Add("text", "r", uint64(1), "x", "", "", "", "héllo \"q\"\n", int64(-62135596800000000000/1e9), false)
	f.Add("text", "r", uint64(9007199254740993), "", "1", "", "", "\u2028", int64(0), true)
	f.Fuzz(func(t *testing.T, typ, room string, seq uint64, id, fromID, fromName, to, text string, unixNano int64, utc bool) {
		m := &ChatMessage{Type: MessageType(typ), Room: room, Seq: seq, ID: id, To: to, Text: text, Time: time.Unix(0, unixNano)}
		if utc {
			m.Time = m.Time.UTC()
		}
		if fromID != "" || fromName != "" {
			m.From = &User{ID: fromID, Name: fromName}
		}
		want, werr := encodeFrame(textFrame(m))
		got, gerr := encodeTextFrame(m)
		if (werr == nil) != (gerr == nil) || !bytes.Equal(got, want) {
			t.Fatalf("direct %q, %v\njson   %q, %v", got, gerr, want, werr)
		}
	})
}

// fastDecodeReply decodes body on the fast path only, with a decoder of
// its own, and reports whether it could.
func fastDecodeReply(body []byte, r *reply) bool {
	var d replyDecoder
	return d.fast(body, r)
}
