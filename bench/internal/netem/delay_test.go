package netem

import (
	"encoding/binary"
	"testing"
)

// TestPacketID checks the parsing of a queued packet's attributes: the
// packet header is found after other attributes, with their padding.
func TestPacketID(t *testing.T) {
	var a []byte
	a = attr(a, 9, []byte{1, 2, 3}) // 7 bytes, padded to 8
	hdr := binary.BigEndian.AppendUint32(nil, 0xdeadbeef)
	hdr = append(hdr, 0x08, 0x00, 3) // hw protocol, hook
	a = attr(a, nfqaPacketHdr|0x8000, hdr)
	if len(a)%4 != 0 {
		t.Fatalf("attributes of %d bytes are not padded", len(a))
	}
	if id, ok := packetID(a); !ok || id != 0xdeadbeef {
		t.Errorf("packetID = %#x, %v", id, ok)
	}
	if _, ok := packetID(attr(nil, 9, []byte{1})); ok {
		t.Error("found an id where there is no packet header")
	}
	if _, ok := packetID(attr(nil, 9, []byte{1})[:5]); ok { // unpadded at the end
		t.Error("found an id in a lone attribute")
	}
	if _, ok := packetID([]byte{200, 0, 1, 0}); ok {
		t.Error("accepted an attribute longer than the message")
	}
}
