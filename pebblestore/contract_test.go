package pebblestore_test

import (
	"testing"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/historytest"
	"github.com/garou-chat/garou/pebblestore"
)

// TestContract runs the HistoryStore conformance suite against the Pebble
// store: it keeps the same texts as the memory history of the root
// package, so that a server behaves the same with either.
func TestContract(t *testing.T) {
	historytest.Run(t, func(t *testing.T, size int) garou.HistoryStore {
		s, _ := open(t, pebblestore.WithSize(size))
		return s
	})
}

// seqs is from, from+1, ..., to.
func seqs(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}
