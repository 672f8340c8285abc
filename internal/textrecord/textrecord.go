// Package textrecord is the record boltstore and pebblestore keep a text
// as: one format, so that either store's files decode the same way, and
// one decoder to fuzz.
package textrecord

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/garou-chat/garou"
)

// A text is kept as a record: a version byte, then Type, ID, whether it
// has a sender, the sender's ID and Name, Text (each a uvarint length and
// the bytes) and Time (time.Time's binary form, after its length). Its
// room and Seq are the store's key, so neither is repeated. User.Data is the host's own data and is never kept; nor is
// JoinedAt, zero in the From of a text.
//
// A text with a SenderKey is kept as a version 2 record: version 1's
// fields, then SenderKey (a uvarint length and the bytes). Texts without
// one stay version 1 records, so a file written by this version holds
// version 2 records only where an older one would have lost the key.
const (
	recordV1 = 1
	recordV2 = 2
)

// Encode returns the record of m.
func Encode(m *garou.ChatMessage) ([]byte, error) {
	n := 1 + 7*binary.MaxVarintLen32 + 1 + len(m.Type) + len(m.ID) + len(m.Text) + maxTimeLen + len(m.SenderKey)
	if m.From != nil {
		n += len(m.From.ID) + len(m.From.Name)
	}
	b := make([]byte, 0, n)
	v := byte(recordV1)
	if m.SenderKey != "" {
		v = recordV2
	}
	b = append(b, v)
	b = appendString(b, string(m.Type))
	b = appendString(b, m.ID)
	if m.From != nil {
		b = append(b, 1)
		b = appendString(b, m.From.ID)
		b = appendString(b, m.From.Name)
	} else {
		b = append(b, 0)
	}
	b = appendString(b, m.Text)
	// Time's binary form is written in place after its length, one byte
	// (the form has at most maxTimeLen bytes): the record is the only
	// allocation.
	at := len(b)
	b, err := m.Time.AppendBinary(append(b, 0))
	if err != nil {
		return nil, err
	}
	b[at] = byte(len(b) - at - 1)
	if v == recordV2 {
		b = appendString(b, m.SenderKey)
	}
	return b, nil
}

// maxTimeLen bounds the length of time.Time's binary form (16 bytes in its
// version 2), so that its length is one byte of uvarint.
const maxTimeLen = 16

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

var errRecord = errors.New("malformed record")

// recordReader reads the fields of a record in turn; the first error
// sticks.
type recordReader struct {
	b   []byte
	err error
}

func (r *recordReader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errRecord
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *recordReader) bytes() []byte {
	if r.err != nil {
		return nil
	}
	n, k := binary.Uvarint(r.b)
	if k <= 0 || n > uint64(len(r.b)-k) {
		r.err = errRecord
		return nil
	}
	s := r.b[k : k+int(n)]
	r.b = r.b[k+int(n):]
	return s
}

func (r *recordReader) string() string { return string(r.bytes()) }

// Decode returns the text of room whose key (its Seq, 8 bytes
// big-endian) and record are given. A key or record that does not decode
// is an error wrapping corrupt, the store's own sentinel.
func Decode(room string, key, val []byte, corrupt error) (garou.ChatMessage, error) {
	if len(key) != 8 {
		return garou.ChatMessage{}, fmt.Errorf("%w: room %q has a key of %d bytes", corrupt, room, len(key))
	}
	m := garou.ChatMessage{Room: room, Seq: binary.BigEndian.Uint64(key)}
	r := recordReader{b: val}
	v := r.byte()
	if v != recordV1 && v != recordV2 && r.err == nil {
		return garou.ChatMessage{}, fmt.Errorf("%w: room %q, text %d: record version %d", corrupt, room, m.Seq, v)
	}
	m.Type = garou.MessageType(r.string())
	m.ID = r.string()
	if r.byte() == 1 {
		m.From = &garou.User{ID: r.string(), Name: r.string()}
	}
	m.Text = r.string()
	tm := r.bytes()
	if v == recordV2 {
		if m.SenderKey = r.string(); r.err == nil && m.SenderKey == "" {
			r.err = errRecord // written as version 1
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = errRecord
	}
	if r.err == nil {
		r.err = m.Time.UnmarshalBinary(tm)
	}
	if r.err != nil {
		return garou.ChatMessage{}, fmt.Errorf("%w: room %q, text %d: %w", corrupt, room, m.Seq, r.err)
	}
	return m, nil
}
