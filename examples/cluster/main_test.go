package main

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Every client, on whichever server, receives the same texts in the same
// order, numbered on without a hole, before and after the first server
// stops.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rounds, err := run(ctx, io.Discard)
	require.NoError(t, err)
	require.Len(t, rounds, 2)
	seq := 1
	for r, seen := range rounds {
		for i := 1; i < len(seen); i++ {
			require.Equal(t, seen[0], seen[i], "round %d: client %d saw another order", r, i)
		}
		for _, s := range seen[0] {
			var n int
			_, err := fmt.Sscanf(s, "%d ", &n)
			require.NoError(t, err)
			require.Equal(t, seq, n)
			seq++
		}
	}
}
