package garou

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/bits"
	"strings"
	"time"
	"unicode/utf8"
)

// decodeReply decodes a server frame body with a decoder of its own.
func decodeReply(body []byte) (reply, error) {
	var d replyDecoder
	var r reply
	err := d.decode(body, &r)
	return r, err
}

// replyDecoder decodes the frames of one connection. A client decodes one
// frame per delivery, so the common frames (texts, direct messages, acks,
// joins, leaves) take a fast path that reads their fields directly; any
// frame it does not expect in every detail (escaped strings, user lists,
// unknown fields, null, ...) goes through encoding/json instead, which
// gives the same result. FuzzDecodeReply checks that the two agree.
//
// The fast path allocates once for the strings of a frame that are new
// (a text's ID and text, say): a frame type is a constant, and the room
// and the senders seen last are remembered. So is the whole second of
// the last time parsed: the texts of a burst share it, and only their
// fractions are read.
type replyDecoder struct {
	buf     []byte // the new strings of a frame, before their allocation
	room    string
	senders *[senderSlots]knownSender // by a hash of the ID; made on first use
	sec     [len("2006-01-02T15:04:05")]byte
	secTime time.Time // sec, in UTC; zero until a time was parsed
}

// senderSlots is how many senders a replyDecoder remembers, at most.
const senderSlots = 64

type knownSender struct{ id, name string }

// decode decodes body into r, which it overwrites.
func (d *replyDecoder) decode(body []byte, r *reply) error {
	*r = reply{}
	if d.fast(body, r) {
		return nil
	}
	// Apart from r, so that r does not escape on the fast path.
	slow := new(reply)
	if err := json.Unmarshal(body, slow); err != nil {
		*r = reply{}
		return fmt.Errorf("garou: malformed frame from server: %w", err)
	}
	*r = *slow
	return nil
}

// scanner reads a flat JSON object of the shapes the server writes.
type scanner struct {
	b  []byte
	i  int
	ok bool
	// The strings to make once the scan succeeds: where they go, and
	// where they are in b. Past len(later), each string is made at once.
	later [8]later
	n     int
}

type later struct {
	dst        *string
	start, end int
}

func (d *replyDecoder) fast(body []byte, r *reply) bool {
	s := scanner{b: body, ok: true}
	s.ws()
	if !s.eat('{') {
		return false
	}
	s.ws()
	if s.eat('}') {
		return s.end()
	}
	var seenFrom, seenUser bool
	for s.ok {
		key := s.key()
		s.ws()
		if !s.eat(':') {
			return false
		}
		s.ws()
		switch string(key) {
		case "type":
			s.replyType(&r.Type)
		case "room":
			start, end := s.span()
			if string(body[start:end]) == d.room {
				r.Room = d.room
			} else {
				s.makeLater(&r.Room, start, end)
			}
		case "id":
			s.stringTo(&r.ID)
		case "to":
			s.stringTo(&r.To)
		case "text":
			s.stringTo(&r.Text)
		case "reason":
			s.stringTo(&r.Reason)
		case "code":
			s.stringTo(&r.Code)
		case "session":
			s.stringTo(&r.Session)
		case "server":
			s.stringTo(&r.Server)
		case "seq":
			r.Seq = s.uint()
		case "ref":
			r.Ref = s.uint()
		case "from_seq":
			r.GapFrom = s.uint()
		case "to_seq":
			r.GapTo = s.uint()
		case "last_seq":
			r.LastSeq = s.uint()
		case "close":
			r.Close = CloseCode(s.uint())
		case "time":
			if !d.time(s.rawString(), &r.Time) {
				return false
			}
		case "from":
			if seenFrom { // encoding/json would merge duplicates
				return false
			}
			seenFrom = true
			d.user(&s, &r.From)
		case "user":
			if seenUser {
				return false
			}
			seenUser = true
			d.user(&s, &r.User)
		default:
			return false
		}
		s.ws()
		if s.eat('}') {
			if !s.end() {
				return false
			}
			d.makeStrings(&s)
			// A copy: r.Room may share its allocation with a text.
			if r.Room != d.room && r.Room != "" {
				d.room = strings.Clone(r.Room)
			}
			return true
		}
		if !s.eat(',') {
			return false
		}
		s.ws()
	}
	return false
}

// stringTo reads a string into *dst once the scan succeeds.
func (s *scanner) stringTo(dst *string) {
	start, end := s.span()
	if start != end {
		s.makeLater(dst, start, end)
	}
}

func (s *scanner) makeLater(dst *string, start, end int) {
	if s.n == len(s.later) {
		*dst = string(s.b[start:end])
		return
	}
	s.later[s.n] = later{dst, start, end}
	s.n++
}

// makeStrings makes the strings the scan put off, in one allocation.
func (d *replyDecoder) makeStrings(s *scanner) {
	if s.n == 0 {
		return
	}
	d.buf = d.buf[:0]
	for _, l := range s.later[:s.n] {
		d.buf = append(d.buf, s.b[l.start:l.end]...)
	}
	all, at := string(d.buf), 0
	for _, l := range s.later[:s.n] {
		n := l.end - l.start
		*l.dst, at = all[at:at+n], at+n
	}
	if cap(d.buf) > keepBuf {
		d.buf = nil
	}
}

// replyType reads a frame type into *dst: a constant for the known ones.
func (s *scanner) replyType(dst *string) {
	start, end := s.span()
	switch t := s.b[start:end]; string(t) {
	case string(TypeText):
		*dst = string(TypeText)
	case string(TypeDirect):
		*dst = string(TypeDirect)
	case frameAck:
		*dst = frameAck
	case string(TypeJoin):
		*dst = string(TypeJoin)
	case string(TypeLeave):
		*dst = string(TypeLeave)
	case string(TypeGap):
		*dst = string(TypeGap)
	case string(TypeError):
		*dst = string(TypeError)
	case frameJoined:
		*dst = frameJoined
	default:
		if start != end {
			s.makeLater(dst, start, end)
		}
	}
}

// user reads {"id":..,"name":..[,"joined_at":..]} into *u. A user in the
// decoder's table of senders costs no allocation, a new one one.
func (d *replyDecoder) user(s *scanner, u *wireUser) {
	if !s.eat('{') {
		s.ok = false
		return
	}
	s.ws()
	if s.eat('}') {
		return
	}
	var id, name [2]int
	var seenID, seenName bool
	for s.ok {
		key := s.key()
		s.ws()
		if !s.eat(':') {
			s.ok = false
			return
		}
		s.ws()
		switch string(key) {
		case "id":
			seenID = true
			id[0], id[1] = s.span()
		case "name":
			seenName = true
			name[0], name[1] = s.span()
		case "joined_at":
			if err := u.JoinedAt.UnmarshalText(s.rawString()); err != nil {
				s.ok = false
			}
		default:
			s.ok = false
			return
		}
		s.ws()
		if s.eat('}') {
			break
		}
		if !s.eat(',') {
			s.ok = false
			return
		}
		s.ws()
	}
	if !s.ok {
		return
	}
	if seenID && seenName && id[0] != id[1] && name[0] != name[1] {
		idb, nameb := s.b[id[0]:id[1]], s.b[name[0]:name[1]]
		if d.senders == nil {
			d.senders = new([senderSlots]knownSender)
		}
		slot := &d.senders[senderHash(idb)%senderSlots]
		if slot.id != string(idb) || slot.name != string(nameb) {
			// A sender new to the table, in an allocation of its own
			// that the table can keep.
			d.buf = append(append(d.buf[:0], idb...), nameb...)
			both := string(d.buf)
			*slot = knownSender{both[:len(idb)], both[len(idb):]}
		}
		u.ID, u.Name = slot.id, slot.name
		return
	}
	if id[0] != id[1] {
		s.makeLater(&u.ID, id[0], id[1])
	}
	if name[0] != name[1] {
		s.makeLater(&u.Name, name[0], name[1])
	}
}

// senderHash is FNV-1a.
func senderHash(id []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range id {
		h = (h ^ uint32(c)) * 16777619
	}
	return h
}

// fastDecodeRequest decodes a client frame of the common shapes (a flat
// object of known keys with plain strings and numbers, each once) as
// decodeRequest's encoding/json path would, and reports whether it could;
// anything else (escapes, null, negative numbers, "rooms", "since", an
// unknown or repeated key, ...) is left to that path. Each string is a copy
// of its own: the server keeps texts and keys, not frames.
// FuzzDecodeRequest checks that the two agree.
func fastDecodeRequest(body []byte, r *request) bool {
	s := scanner{b: body, ok: true}
	s.ws()
	if !s.eat('{') {
		return false
	}
	s.ws()
	if s.eat('}') {
		return s.end()
	}
	var seen uint16
	for s.ok {
		key := s.key()
		s.ws()
		if !s.eat(':') {
			return false
		}
		s.ws()
		var bit uint16
		switch string(key) {
		case "type":
			bit, r.Type = 1<<0, s.requestType()
		case "ref":
			bit, r.Ref = 1<<1, s.uint()
		case "name":
			bit, r.Name = 1<<2, s.string()
		case "token":
			bit, r.Token = 1<<3, s.string()
		case "session":
			bit, r.Session = 1<<4, s.string()
		case "server":
			bit, r.Server = 1<<5, s.string()
		case "max_size":
			bit, r.MaxSize = 1<<6, int(s.uint())
		case "room":
			bit, r.Room = 1<<7, s.string()
		case "history":
			bit, r.History = 1<<8, int(s.uint())
		case "to":
			bit, r.To = 1<<9, s.string()
		case "text":
			bit, r.Text = 1<<10, s.string()
		case "key":
			bit, r.Key = 1<<11, s.string()
		default:
			return false
		}
		if seen&bit != 0 {
			return false // encoding/json keeps the last: leave it to it
		}
		seen |= bit
		s.ws()
		if s.eat('}') {
			return s.end()
		}
		if !s.eat(',') {
			return false
		}
		s.ws()
	}
	return false
}

// requestType is string for a frame type, without a copy for the known
// ones.
func (s *scanner) requestType() string {
	start, end := s.span()
	switch t := s.b[start:end]; string(t) {
	case frameText:
		return frameText
	case frameDirect:
		return frameDirect
	case frameJoin:
		return frameJoin
	case frameLeave:
		return frameLeave
	default:
		return string(t)
	}
}

// time parses an RFC 3339 time into t. A UTC time in the same second as
// the last one parsed ("2006-01-02T15:04:05", 1 to 9 digits of fraction,
// "Z": what the server writes) costs the fraction only; any other goes
// through time.Time's own parser.
func (d *replyDecoder) time(b []byte, t *time.Time) bool {
	n := len(d.sec)
	if !d.secTime.IsZero() && len(b) >= n+3 && len(b) <= n+11 && string(b[:n]) == string(d.sec[:]) &&
		b[n] == '.' && b[len(b)-1] == 'Z' {
		var ns, scale int64 = 0, 1e9
		for _, c := range b[n+1 : len(b)-1] {
			if c < '0' || c > '9' {
				ns = -1
				break
			}
			scale /= 10
			ns += int64(c-'0') * scale
		}
		if ns >= 0 {
			*t = d.secTime.Add(time.Duration(ns))
			return true
		}
	}
	if err := t.UnmarshalText(b); err != nil {
		return false
	}
	if len(b) > n && b[len(b)-1] == 'Z' && t.Location() == time.UTC && !t.IsZero() {
		copy(d.sec[:], b)
		d.secTime = t.Add(-time.Duration(t.Nanosecond()))
	}
	return true
}

func (s *scanner) ws() {
	for s.i < len(s.b) && s.b[s.i] <= ' ' { // the server writes none
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) eat(c byte) bool {
	if s.ok && s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) end() bool {
	s.ws()
	return s.ok && s.i == len(s.b)
}

// SWAR constants: a byte's worth of ones, and of high bits.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// span reads a string with no escapes and valid UTF-8, and returns where
// its contents are in s.b; anything else fails the scan.
func (s *scanner) span() (start, end int) {
	if !s.eat('"') {
		s.ok = false
		return 0, 0
	}
	b := s.b
	start = s.i
	i := start
	// Eight bytes at a time while they are printable ASCII other than a
	// quote or a backslash: the bulk of a text. The lowest byte the mask
	// flags is the first such byte (the flags above it may be false).
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		q, bs := x^(ones*'"'), x^(ones*'\\')
		if m := (x | (x-ones*0x20)&^x | (q-ones)&^q | (bs-ones)&^bs) & highs; m != 0 {
			i += bits.TrailingZeros64(m) / 8
			if b[i] == '"' {
				s.i = i + 1
				return start, i
			}
			break
		}
	}
	ascii := true
	for ; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			if !ascii && !utf8.Valid(b[start:i]) {
				s.ok = false
				return 0, 0
			}
			s.i = i + 1
			return start, i
		case c == '\\' || c < 0x20:
			s.ok = false
			return 0, 0
		case c >= 0x80:
			ascii = false
		}
	}
	s.ok = false
	return 0, 0
}

// key reads an object's key, up to its closing quote. It need not check
// the key's bytes: only the keys of the server's frames (lower case
// letters and underscores) are accepted by the caller.
func (s *scanner) key() []byte {
	if !s.eat('"') {
		s.ok = false
		return nil
	}
	b, start := s.b, s.i
	if start+8 <= len(b) {
		q := binary.LittleEndian.Uint64(b[start:]) ^ (ones * '"')
		if m := (q - ones) &^ q & highs; m != 0 {
			end := start + bits.TrailingZeros64(m)/8
			s.i = end + 1
			return b[start:end]
		}
	}
	n := bytes.IndexByte(b[start:], '"')
	if n < 0 {
		s.ok = false
		return nil
	}
	s.i = start + n + 1
	return b[start : start+n]
}

// rawString is span's bytes.
func (s *scanner) rawString() []byte {
	start, end := s.span()
	return s.b[start:end]
}

// string is span's string, a copy of its own.
func (s *scanner) string() string {
	start, end := s.span()
	if start == end {
		return ""
	}
	return string(s.b[start:end])
}

// uint reads a plain non-negative integer that fits 53 bits (what every
// JSON reader represents exactly).
func (s *scanner) uint() uint64 {
	start := s.i
	var v uint64
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		v = v*10 + uint64(s.b[s.i]-'0')
		s.i++
	}
	n := s.i - start
	if n == 0 || n > 15 || (n > 1 && s.b[start] == '0') {
		s.ok = false
	}
	if s.i < len(s.b) && (s.b[s.i] == '.' || s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.ok = false
	}
	return v
}
