package garou

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// decodeReply decodes a server frame body. A client decodes one frame per
// delivery, so the common frames (texts, direct messages, acks, joins,
// leaves) take a fast path that reads their fields directly; any frame it
// does not expect in every detail (escaped strings, user lists, unknown
// fields, null, ...) goes through encoding/json instead, which gives the
// same result. FuzzDecodeReply checks that the two agree.
func decodeReply(body []byte) (reply, error) {
	var r reply
	if fastDecodeReply(body, &r) {
		return r, nil
	}
	r = reply{}
	if err := json.Unmarshal(body, &r); err != nil {
		return reply{}, fmt.Errorf("garou: malformed frame from server: %w", err)
	}
	return r, nil
}

// scanner reads a flat JSON object of the shapes the server writes.
type scanner struct {
	b  []byte
	i  int
	ok bool
}

func fastDecodeReply(body []byte, r *reply) bool {
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
		key := s.rawString()
		s.ws()
		if !s.eat(':') {
			return false
		}
		s.ws()
		switch string(key) {
		case "type":
			r.Type = s.str()
		case "room":
			r.Room = s.str()
		case "id":
			r.ID = s.str()
		case "to":
			r.To = s.str()
		case "text":
			r.Text = s.str()
		case "reason":
			r.Reason = s.str()
		case "code":
			r.Code = s.str()
		case "session":
			r.Session = s.str()
		case "server":
			r.Server = s.str()
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
			if err := r.Time.UnmarshalText(s.rawString()); err != nil {
				return false
			}
		case "from":
			if seenFrom { // encoding/json would merge duplicates
				return false
			}
			seenFrom = true
			r.From = s.user()
		case "user":
			if seenUser {
				return false
			}
			seenUser = true
			r.User = s.user()
		default:
			return false
		}
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

func (s *scanner) ws() {
	for s.i < len(s.b) {
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

// rawString reads a string with no escapes and valid UTF-8, and returns
// its bytes; anything else fails the scan.
func (s *scanner) rawString() []byte {
	if !s.eat('"') {
		s.ok = false
		return nil
	}
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			v := s.b[start:s.i]
			s.i++
			if !utf8.Valid(v) {
				s.ok = false
			}
			return v
		case c == '\\' || c < 0x20:
			s.ok = false
			return nil
		}
		s.i++
	}
	s.ok = false
	return nil
}

func (s *scanner) str() string { return string(s.rawString()) }

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

// user reads {"id":..,"name":..[,"joined_at":..]}.
func (s *scanner) user() wireUser {
	var u wireUser
	if !s.eat('{') {
		s.ok = false
		return u
	}
	s.ws()
	if s.eat('}') {
		return u
	}
	for s.ok {
		key := s.rawString()
		s.ws()
		if !s.eat(':') {
			s.ok = false
			return u
		}
		s.ws()
		switch string(key) {
		case "id":
			u.ID = s.str()
		case "name":
			u.Name = s.str()
		case "joined_at":
			if err := u.JoinedAt.UnmarshalText(s.rawString()); err != nil {
				s.ok = false
			}
		default:
			s.ok = false
			return u
		}
		s.ws()
		if s.eat('}') {
			return u
		}
		if !s.eat(',') {
			s.ok = false
			return u
		}
		s.ws()
	}
	return u
}
