package pebblestore

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/garou-chat/garou"
)

// A text is kept as a record: a version byte, then Type, ID, whether it
// has a sender, the sender's ID and Name, Text (each a uvarint length and
// the bytes) and Time (time.Time's binary form, after its length). Its
// room and Seq are its key (textKey), so neither is repeated. User.Data is the host's own data and is never kept; nor is
// JoinedAt, zero in the From of a text.
//
// A text with a SenderKey is kept as a version 2 record: version 1's
// fields, then SenderKey (a uvarint length and the bytes), so that a
// restored session's retry is recognised after a restart. Texts without
// one stay version 1 records.
const (
	recordV1 = 1
	recordV2 = 2
)

func encodeText(m *garou.ChatMessage) ([]byte, error) {
	tm, err := m.Time.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("pebblestore: text %d: %w", m.Seq, err)
	}
	n := 1 + 7*binary.MaxVarintLen32 + 1 + len(m.Type) + len(m.ID) + len(m.Text) + len(tm) + len(m.SenderKey)
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
	b = appendString(b, string(tm))
	if v == recordV2 {
		b = appendString(b, m.SenderKey)
	}
	return b, nil
}

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

func decodeText(room string, key, val []byte) (garou.ChatMessage, error) {
	if len(key) != 8 {
		return garou.ChatMessage{}, fmt.Errorf("%w: room %q has a key of %d bytes", ErrCorrupt, room, len(key))
	}
	m := garou.ChatMessage{Room: room, Seq: binary.BigEndian.Uint64(key)}
	r := recordReader{b: val}
	v := r.byte()
	if v != recordV1 && v != recordV2 && r.err == nil {
		return garou.ChatMessage{}, fmt.Errorf("%w: room %q, text %d: record version %d", ErrCorrupt, room, m.Seq, v)
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
		return garou.ChatMessage{}, fmt.Errorf("%w: room %q, text %d: %w", ErrCorrupt, room, m.Seq, r.err)
	}
	return m, nil
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

// The database's keys: 'm' and a name for what the database is (metaKey);
// 'r', the room's name after its length (a uvarint, so that no room's
// prefix is the start of another's) and Seq (8 bytes, big-endian) for a
// text. A room's texts are therefore contiguous and in order of Seq.
const (
	metaTag = 'm'
	roomTag = 'r'
)

func metaKey(name string) []byte { return append([]byte{metaTag}, name...) }

// roomPrefix is what every key of room's texts starts with.
func roomPrefix(room string) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen32+len(room)+9)
	b = append(b, roomTag)
	b = binary.AppendUvarint(b, uint64(len(room)))
	return append(b, room...)
}

// textKey is the key of the text seq of room, whose prefix is p.
func textKey(p []byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(p[:len(p):len(p)], seq)
}

// roomEnd is a key after every text of the room whose prefix is p, and
// before any other room's.
func roomEnd(p []byte) []byte {
	return append(textKey(p, ^uint64(0)), 0)
}

// parseKey splits a text's key into its room and the 8 bytes of its Seq.
func parseKey(k []byte) (room string, seq []byte, ok bool) {
	if len(k) == 0 || k[0] != roomTag {
		return "", nil, false
	}
	n, w := binary.Uvarint(k[1:])
	if w <= 0 || n > uint64(len(k)-1-w) || uint64(len(k)-1-w)-n != 8 {
		return "", nil, false
	}
	return string(k[1+w : 1+w+int(n)]), k[1+w+int(n):], true
}
