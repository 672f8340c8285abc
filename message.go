package garou

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mtibben/confusables"
	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// Client frame types (PROTOCOL.md §5). "users" and "bye" are server frame
// types too.
const (
	frameHello   = "hello"
	frameJoin    = "join"
	frameLeave   = "leave"
	frameUsers   = "users"
	frameMembers = "members"
	frameText    = "text"
	frameDirect  = "direct"
	frameTyping  = "typing"
	frameBye     = "bye"
)

// frameHeaderLen is the length prefix: 4 bytes, big-endian.
const frameHeaderLen = 4

// Name and room limits, in characters.
const (
	MaxNameLen = 32
	MaxRoomLen = 64
)

// request is every frame a client sends. Decoding is strict: an unknown
// field (a client claiming "from", say) is a bad frame.
type request struct {
	Type string `json:"type"`
	Ref  uint64 `json:"ref,omitempty"`

	// hello
	Name    string      `json:"name,omitempty"`
	Token   string      `json:"token,omitempty"`
	Session string      `json:"session,omitempty"`
	Server  string      `json:"server,omitempty"`
	MaxSize int         `json:"max_size,omitempty"`
	Rooms   *[]joinSpec `json:"rooms,omitempty"`

	// join, leave, text, typing, members
	Room    string  `json:"room,omitempty"`
	Since   *uint64 `json:"since,omitempty"`
	History int     `json:"history,omitempty"`

	// users, members: the page after this cursor ("" for the first)
	Cursor string `json:"cursor,omitempty"`

	// text, direct
	To   string `json:"to,omitempty"`
	Text string `json:"text,omitempty"`
	Key  string `json:"key,omitempty"` // idempotency key
}

// joinSpec asks to join a room: with Since, resume after that sequence
// number; with History, replay the last History texts.
type joinSpec struct {
	Room    string  `json:"room"`
	Since   *uint64 `json:"since,omitempty"`
	History int     `json:"history,omitempty"`

	lostRun bool // Since counts in an earlier run of the server
}

var encBufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// encodeFrame encodes v as one frame: length prefix and JSON body, in a
// slice of its own that may be shared by many send queues.
func encodeFrame(v any) ([]byte, error) {
	b := encBufPool.Get().(*bytes.Buffer)
	defer encBufPool.Put(b)
	b.Reset()
	b.Write([]byte{0, 0, 0, 0})
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	body := b.Len() - frameHeaderLen - 1 // Encode appends a newline
	out := make([]byte, frameHeaderLen+body)
	copy(out, b.Bytes())
	binary.BigEndian.PutUint32(out, uint32(body))
	return out, nil
}

// encodeTextFrame is encodeFrame(textFrame(m)), byte for byte, written
// directly when every string is printable ASCII with nothing to escape and
// the time is in UTC: a text is encoded once per text said, on the path of
// every delivery. Anything else goes through encodeFrame.
// FuzzEncodeTextFrame checks that the two agree.
func encodeTextFrame(m *ChatMessage) ([]byte, error) {
	w := textFrame(m)
	if !jsonPlain(w.Type) || !jsonPlain(w.Room) || !jsonPlain(w.ID) || !jsonPlain(w.From.ID) ||
		!jsonPlain(w.From.Name) || !jsonPlain(w.To) || !jsonPlain(w.Text) || !w.From.JoinedAt.IsZero() ||
		w.Time.Location() != time.UTC || w.Time.Year() < 0 || w.Time.Year() > 9999 {
		return encodeFrame(w)
	}
	b := make([]byte, frameHeaderLen, frameHeaderLen+128+len(w.Type)+len(w.Room)+len(w.ID)+
		len(w.From.ID)+len(w.From.Name)+len(w.To)+len(w.Text))
	b = append(b, `{"type":"`...)
	b = append(b, w.Type...)
	b = append(b, '"')
	if w.Room != "" {
		b = append(append(append(b, `,"room":"`...), w.Room...), '"')
	}
	if w.Seq != 0 {
		b = strconv.AppendUint(append(b, `,"seq":`...), w.Seq, 10)
	}
	if w.ID != "" {
		b = append(append(append(b, `,"id":"`...), w.ID...), '"')
	}
	if w.From != (wireUser{}) {
		b = append(append(b, `,"from":{"id":"`...), w.From.ID...)
		b = append(append(append(b, `","name":"`...), w.From.Name...), `"}`...)
	}
	if w.To != "" {
		b = append(append(append(b, `,"to":"`...), w.To...), '"')
	}
	if w.Text != "" {
		b = append(append(append(b, `,"text":"`...), w.Text...), '"')
	}
	if !w.Time.IsZero() {
		b = w.Time.AppendFormat(append(b, `,"time":`...), `"`+time.RFC3339Nano+`"`)
	}
	b = append(b, '}')
	binary.BigEndian.PutUint32(b, uint32(len(b)-frameHeaderLen))
	return b, nil
}

// jsonPlain reports whether encoding/json writes s as it is: printable
// ASCII, no quote, no backslash.
func jsonPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			return false
		}
	}
	return true
}

// frameTooLargeError is returned by frameReader for a length prefix over the
// limit; nothing of the body has been read.
type frameTooLargeError struct{ size, max uint64 }

func (e *frameTooLargeError) Error() string {
	return fmt.Sprintf("frame of %d bytes exceeds the limit of %d", e.size, e.max)
}

// errEmptyFrame is returned for a zero length prefix.
var errEmptyFrame = errors.New("empty frame")

// frameReader reads frames, reusing one buffer. The body it returns is
// valid until the next call. Over a *bufio.Reader, a frame that is wholly
// in the reader's buffer is returned from there, without a copy.
type frameReader struct {
	r   io.Reader
	max int
	hdr [frameHeaderLen]byte
	buf []byte
}

// buffered returns the next frame if the whole of it is in the buffer of
// r, a *bufio.Reader, already; otherwise it reads nothing and returns nil.
func (fr *frameReader) buffered() []byte {
	n := fr.bufferedLen()
	if n == 0 {
		return nil
	}
	br := fr.r.(*bufio.Reader)
	b, _ := br.Peek(n)
	_, _ = br.Discard(n)
	return b[frameHeaderLen:]
}

// hasFrame reports whether the next frame can be read without waiting for
// the stream: it is wholly in the buffer.
func (fr *frameReader) hasFrame() bool { return fr.bufferedLen() > 0 }

// bufferedLen is the length, prefix included, of the next frame if it is
// valid and wholly in the buffer; 0 otherwise.
func (fr *frameReader) bufferedLen() int {
	br, ok := fr.r.(*bufio.Reader)
	if !ok || br.Buffered() < frameHeaderLen {
		return 0
	}
	hdr, _ := br.Peek(frameHeaderLen)
	n := int64(binary.BigEndian.Uint32(hdr))
	if n == 0 || n > int64(fr.max) || int64(br.Buffered()) < frameHeaderLen+n {
		return 0
	}
	return frameHeaderLen + int(n)
}

// keepBuf is the largest buffer a frameReader keeps between frames, so a
// rare large frame does not pin memory on an idle connection.
const keepBuf = 64 << 10

func (fr *frameReader) next() ([]byte, error) {
	if b := fr.buffered(); b != nil {
		return b, nil
	}
	if cap(fr.buf) > keepBuf {
		fr.buf = nil
	}
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(fr.hdr[:])
	if uint64(n) > uint64(fr.max) {
		return nil, &frameTooLargeError{size: uint64(n), max: uint64(fr.max)}
	}
	if n == 0 {
		return nil, errEmptyFrame
	}
	// Grow the buffer as the body arrives, not to the declared length at
	// once: a peer that declares a large frame and sends little of it
	// does not pin that much memory.
	fr.buf = fr.buf[:0]
	for len(fr.buf) < int(n) {
		chunk := min(int(n)-len(fr.buf), max(len(fr.buf), 4096))
		fr.buf = slices.Grow(fr.buf, chunk)
		start := len(fr.buf)
		fr.buf = fr.buf[:start+chunk]
		if _, err := io.ReadFull(fr.r, fr.buf[start:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return fr.buf, nil
}

// decodeRequest decodes a client frame body. Its errors are *Error values
// with CodeBadFrame or CodeUnknownType, ready to send back. The frames of
// the common shapes take a fast path (fastDecodeRequest).
func decodeRequest(body []byte) (request, error) {
	var r request
	if !utf8.Valid(body) {
		return r, &Error{Code: CodeBadFrame, Text: "frame is not valid UTF-8"}
	}
	if !fastDecodeRequest(body, &r) {
		// Apart from r, so that r does not escape on the fast path.
		slow := new(request)
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		err := dec.Decode(slow)
		r = *slow
		if err != nil {
			return r, &Error{Code: CodeBadFrame, Text: "malformed frame: " + jsonProblem(err)}
		}
		if _, err := dec.Token(); err != io.EOF {
			return r, &Error{Code: CodeBadFrame, Text: "malformed frame: data after the JSON object"}
		}
	}
	switch r.Type {
	case frameHello, frameJoin, frameLeave, frameUsers, frameMembers, frameText, frameDirect, frameTyping, frameBye:
		return r, nil
	case "":
		return r, &Error{Code: CodeBadFrame, Text: `frame has no "type"`}
	default:
		return r, &Error{Code: CodeUnknownType, Text: fmt.Sprintf("unknown frame type %q", truncate(r.Type, 32))}
	}
}

// jsonProblem says what is wrong with a frame in the protocol's terms,
// not the decoder's (no Go type names).
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("not valid JSON (at byte %d)", syn.Offset)
	case errors.As(err, &typ) && typ.Field == "":
		return "the frame must be a JSON object, not " + jsonKind(typ.Value)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q cannot be %s", truncate(typ.Field, 32), jsonKind(typ.Value))
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "the JSON object is incomplete"
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return "unknown field " + truncate(f, 40)
	}
	return "not a valid frame"
}

// jsonKind names a JSON value kind as encoding/json reports it, with its
// article: "an array", "a number".
func jsonKind(v string) string {
	switch {
	case v == "":
		return "that value"
	case v == "array" || v == "object":
		return "an " + v
	case v == "number":
		return "a number"
	case strings.HasPrefix(v, "number "):
		return "the number " + truncate(v[len("number "):], 24)
	default:
		return "a " + v
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// ValidateName reports whether name is allowed: 1 to MaxNameLen characters,
// printable, without control or separator characters other than a plain
// space, without invisible ones (Unicode's Default_Ignorable_Code_Point,
// which takes in format characters, variation selectors, the combining
// grapheme joiner and the Hangul fillers, and the blank braille pattern),
// without leading or trailing space, and not mixing Latin letters with
// Greek or Cyrillic ones. The error wraps ErrInvalidName.
func ValidateName(name string) error {
	if err := validLabel(name, MaxNameLen); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidName, err)
	}
	if mixedScript(name) {
		return fmt.Errorf("%w: mixes Latin with Greek or Cyrillic letters", ErrInvalidName)
	}
	return nil
}

// ValidateRoom reports whether room is an allowed room name: 1 to
// MaxRoomLen characters under the same character rules as names. The
// error wraps ErrInvalidRoom.
func ValidateRoom(room string) error {
	if err := validLabel(room, MaxRoomLen); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidRoom, err)
	}
	return nil
}

func validLabel(s string, maxLen int) error {
	if s == "" {
		return errors.New("empty")
	}
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	if n := utf8.RuneCountInString(s); n > maxLen {
		return fmt.Errorf("%d characters, at most %d allowed", n, maxLen)
	}
	if s[0] == ' ' || s[len(s)-1] == ' ' {
		return errors.New("leading or trailing space")
	}
	for _, r := range s {
		if r == ' ' {
			continue
		}
		if !unicode.IsPrint(r) || unicode.IsSpace(r) || invisible(r) {
			return fmt.Errorf("forbidden character %U", r)
		}
	}
	return nil
}

func mixedScript(s string) bool {
	var latin, other bool
	for _, r := range s {
		switch {
		case unicode.Is(unicode.Latin, r):
			latin = true
		case unicode.Is(unicode.Greek, r), unicode.Is(unicode.Cyrillic, r):
			other = true
		}
	}
	return latin && other
}

// invisible reports whether r is drawn as nothing: a
// Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties: format
// characters, variation selectors and Other_Default_Ignorable_Code_Point,
// the Hangul fillers among them) or the blank braille pattern U+2800.
func invisible(r rune) bool {
	return r == '\u2800' || unicode.In(r, unicode.Cf, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point)
}

// nameKey is the key under which a name is unique: two names with the same
// key look the same. It is, in this order, the NFKC normal form (full width
// "ａ" is "a", "ſ" is "s"), full case folding (Unicode CaseFolding.txt
// statuses C and F: "ß" is "ss", "ẞ" too), and the skeleton of Unicode
// TR39 (UTS #39 §4: NFD, each character replaced by the prototype it is
// confusable with, NFD again), so that Cyrillic "аре" is "ape" and "a1ice"
// is "alice".
func nameKey(name string) string {
	return confusables.Skeleton(cases.Fold().String(norm.NFKC.String(name)))
}
