package pebblestore

import (
	"encoding/binary"
	"fmt"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/internal/textrecord"
)

// A text is kept as the record internal/textrecord encodes, the format
// boltstore and pebblestore share, so one codec is fuzzed for both.

func encodeText(m *garou.ChatMessage) ([]byte, error) {
	b, err := textrecord.Encode(m)
	if err != nil {
		return nil, fmt.Errorf("pebblestore: text %d: %w", m.Seq, err)
	}
	return b, nil
}

func decodeText(room string, key, val []byte) (garou.ChatMessage, error) {
	return textrecord.Decode(room, key, val, ErrCorrupt)
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
