package boltstore

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/garou-chat/garou"
)

// record is how a text is kept: its room is the name of its bucket and its
// Seq the key, so neither is repeated. User.Data is the host's own data
// and is never kept; JoinedAt is zero in the From of a text.
type record struct {
	Type garou.MessageType `json:"y,omitempty"`
	ID   string            `json:"i,omitempty"`
	From *sender           `json:"f,omitempty"`
	Text string            `json:"x,omitempty"`
	Time time.Time         `json:"w,omitzero"`
}

type sender struct {
	ID   string `json:"i,omitempty"`
	Name string `json:"n,omitempty"`
}

func encodeText(m *garou.ChatMessage) ([]byte, error) {
	r := record{Type: m.Type, ID: m.ID, Text: m.Text, Time: m.Time}
	if m.From != nil {
		r.From = &sender{ID: m.From.ID, Name: m.From.Name}
	}
	b, err := json.Marshal(&r)
	if err != nil {
		return nil, fmt.Errorf("boltstore: encode text %d: %w", m.Seq, err)
	}
	return b, nil
}

func decodeText(room string, key, val []byte) (garou.ChatMessage, error) {
	if len(key) != 8 {
		return garou.ChatMessage{}, fmt.Errorf("%w: room %q has a key of %d bytes", ErrCorrupt, room, len(key))
	}
	seq := binary.BigEndian.Uint64(key)
	var r record
	if err := json.Unmarshal(val, &r); err != nil {
		return garou.ChatMessage{}, fmt.Errorf("%w: room %q, text %d: %w", ErrCorrupt, room, seq, err)
	}
	m := garou.ChatMessage{Type: r.Type, Room: room, Seq: seq, ID: r.ID, Text: r.Text, Time: r.Time}
	if r.From != nil {
		m.From = &garou.User{ID: r.From.ID, Name: r.From.Name}
	}
	return m, nil
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}
