package boltstore

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
		return nil, fmt.Errorf("boltstore: text %d: %w", m.Seq, err)
	}
	return b, nil
}

func decodeText(room string, key, val []byte) (garou.ChatMessage, error) {
	return textrecord.Decode(room, key, val, ErrCorrupt)
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}
