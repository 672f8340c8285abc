package garou_test

import (
	"testing"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/historytest"
)

// TestMemoryHistoryContract runs the HistoryStore conformance suite
// against the memory history, the reference the other stores are held to.
func TestMemoryHistoryContract(t *testing.T) {
	historytest.Run(t, func(_ *testing.T, size int) garou.HistoryStore {
		return garou.NewMemoryHistory(size)
	})
}
