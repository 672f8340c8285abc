package main

import (
	"strings"
	"testing"
	"time"
)

// A tiny run of every configuration: the table has a row for each, and
// the bound.
func TestClusterSmoke(t *testing.T) {
	cfg := config{clients: 3, burstMsgs: 5, window: 2, pacedMsgs: 2, pacedEvery: 10 * time.Millisecond,
		servers: []int{0, 1, 2}, rawMsgs: 24, rounds: 1, replicas: 1, compare: true}
	var out strings.Builder
	if err := run(cfg, &out); err != nil {
		t.Fatal(err)
	}
	for _, row := range []string{"| 1, alone (no broker) |", "| 1 on NATS |", "| 2 on NATS |", "| 2 on NATS, one at a time |", "NATS alone, same stream settings"} {
		if !strings.Contains(out.String(), row) {
			t.Errorf("no %q in\n%s", row, out.String())
		}
	}
}
