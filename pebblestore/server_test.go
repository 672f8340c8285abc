package pebblestore_test

import (
	"testing"

	"github.com/garou-chat/garou/historytest"
	"github.com/garou-chat/garou/pebblestore"
)

// TestServer runs a garou.Server over QUIC on the store (see
// historytest.RunServer): texts kept and replayed from it, a restart that
// numbers on from it, the floor a forgotten room leaves, and the texts of
// one room said at once sharing commits, delivered in order.
func TestServer(t *testing.T) {
	var _ historytest.Committer = (*pebblestore.Store)(nil)
	historytest.RunServer(t, func(t *testing.T, path string) historytest.Durable { return openAt(t, path) })
}
