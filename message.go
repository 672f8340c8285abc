package garou

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// Frame types that never reach Receive: the handshake, requests and their
// replies. The types a client receives are the MessageType constants.
const (
	frameHello   = "hello"
	frameWelcome = "welcome"
	frameJoin    = "join"
	frameJoined  = "joined"
	frameLeave   = "leave"
	frameUsers   = "users"
	frameMembers = "members"
	frameText    = "text"
	frameDirect  = "direct"
	frameAck     = "ack"
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

	// join, leave, text, members
	Room    string  `json:"room,omitempty"`
	Since   *uint64 `json:"since,omitempty"`
	History int     `json:"history,omitempty"`

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

// reply is every frame the server sends: a ChatMessage plus the fields of
// the handshake and of replies to requests.
type reply struct {
	ChatMessage
	Ref     uint64 `json:"ref,omitempty"`
	Session string `json:"session,omitempty"`
	// Server identifies the server's run, in "welcome": a client resuming
	// on another run (the server restarted) cannot resume by number.
	Server  string `json:"server,omitempty"`
	MaxSize int    `json:"max_size,omitempty"`
	// LastSeq is a room's latest sequence number, in "joined".
	LastSeq uint64 `json:"last_seq,omitempty"`
	// Close is the close code that follows a "bye".
	Close CloseCode `json:"close,omitempty"`
	// Truncated says a user list was cut to fit the client's size limit.
	Truncated bool `json:"truncated,omitempty"`
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

// frameTooLargeError is returned by frameReader for a length prefix over the
// limit; nothing of the body has been read.
type frameTooLargeError struct{ size, max uint64 }

func (e *frameTooLargeError) Error() string {
	return fmt.Sprintf("frame of %d bytes exceeds the limit of %d", e.size, e.max)
}

// errEmptyFrame is returned for a zero length prefix.
var errEmptyFrame = errors.New("empty frame")

// frameReader reads frames, reusing one buffer. The body it returns is
// valid until the next call.
type frameReader struct {
	r   io.Reader
	max int
	hdr [frameHeaderLen]byte
	buf []byte
}

// keepBuf is the largest buffer a frameReader keeps between frames, so a
// rare large frame does not pin memory on an idle connection.
const keepBuf = 64 << 10

func (fr *frameReader) next() ([]byte, error) {
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
// with CodeBadFrame or CodeUnknownType, ready to send back.
func decodeRequest(body []byte) (request, error) {
	var r request
	if !utf8.Valid(body) {
		return r, &Error{Code: CodeBadFrame, Text: "frame is not valid UTF-8"}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, &Error{Code: CodeBadFrame, Text: "malformed frame: " + trimJSONError(err)}
	}
	if _, err := dec.Token(); err != io.EOF {
		return r, &Error{Code: CodeBadFrame, Text: "malformed frame: data after the JSON object"}
	}
	switch r.Type {
	case frameHello, frameJoin, frameLeave, frameUsers, frameMembers, frameText, frameDirect, frameBye:
		return r, nil
	case "":
		return r, &Error{Code: CodeBadFrame, Text: `frame has no "type"`}
	default:
		return r, &Error{Code: CodeUnknownType, Text: fmt.Sprintf("unknown frame type %q", truncate(r.Type, 32))}
	}
}

func trimJSONError(err error) string {
	s := strings.TrimPrefix(err.Error(), "json: ")
	return truncate(s, 120)
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
// printable, without control, format (invisible) or separator characters
// other than a plain space, without leading or trailing space, and not
// mixing Latin letters with Greek or Cyrillic ones (look-alikes). The error
// wraps ErrInvalidName.
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
		if !unicode.IsPrint(r) || unicode.Is(unicode.Cf, r) || unicode.IsSpace(r) {
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

// nameKey is the key under which a name is unique. Names that look the
// same are the same name: the key is compatibility-normalised (NFKC: full
// width "ａ" is "a", "ſ" is "s", a letter and its combining accent are the
// accented letter), case-folded, and Greek and Cyrillic letters drawn like
// Latin ones are taken as those ("аре" in Cyrillic is "ape").
func nameKey(name string) string {
	folded := cases.Fold().String(norm.NFKC.String(name))
	return strings.Map(func(r rune) rune {
		if l, ok := latinLookalike[r]; ok {
			return l
		}
		return r
	}, folded)
}

// latinLookalike maps lower-case Greek and Cyrillic letters to the Latin
// letters they are drawn like in common fonts.
var latinLookalike = map[rune]rune{
	// Cyrillic
	'а': 'a', 'в': 'b', 'е': 'e', 'ё': 'e', 'һ': 'h', 'і': 'i', 'ї': 'i', 'ј': 'j', 'к': 'k',
	'м': 'm', 'н': 'h', 'о': 'o', 'р': 'p', 'с': 'c', 'т': 't', 'у': 'y', 'х': 'x', 'ѕ': 's',
	'ԁ': 'd', 'ԛ': 'q', 'ԝ': 'w', 'ӏ': 'l', 'ү': 'y',
	// Greek
	'α': 'a', 'β': 'b', 'ε': 'e', 'η': 'n', 'ι': 'i', 'κ': 'k', 'ν': 'v', 'ο': 'o', 'ρ': 'p',
	'τ': 't', 'υ': 'u', 'χ': 'x', 'γ': 'y', 'ω': 'w',
}
