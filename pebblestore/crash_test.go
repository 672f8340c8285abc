package pebblestore_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/garou-chat/garou/pebblestore"
	"github.com/stretchr/testify/require"
)

// crashFileEnv names the directory TestCrashChild appends to; the test runs
// only as the child of TestCrash.
const crashFileEnv = "PEBBLESTORE_CRASH_FILE"

const crashWriters = 16

// TestCrash runs a child process that appends from many writers and
// prints each text it has had acknowledged, kills it (SIGKILL) in the
// middle of its appends, and checks that every acknowledged text is in the
// database, each room numbered without a hole.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process")
	}
	path := t.TempDir() + "/h"
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashFileEnv+"="+path)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())

	acked := make(map[string]uint64) // room → highest Seq acknowledged
	lines := bufio.NewScanner(out)
	n := 0
	killed := false
	for lines.Scan() {
		var room string
		var seq uint64
		if _, err := fmt.Sscanf(lines.Text(), "ack %s %d", &room, &seq); err != nil {
			continue
		}
		require.Greater(t, seq, acked[room], "acknowledged in order")
		acked[room] = seq
		if n++; n == 3000 && !killed {
			require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
			killed = true // and read what it acknowledged before it died
		}
	}
	err = cmd.Wait()
	require.True(t, killed, "the child ended by itself: %v\n%s", err, stderr.String())
	require.Error(t, err)
	require.Len(t, acked, crashWriters)

	s := openAt(t, path, pebblestore.WithSize(1<<20))
	for room, last := range acked {
		msgs, oldest, err := s.After(ctxT(t), room, 0)
		require.NoError(t, err)
		require.Equal(t, uint64(1), oldest)
		require.GreaterOrEqual(t, uint64(len(msgs)), last, "room %s: acknowledged texts lost", room)
		for i, m := range msgs {
			require.Equal(t, text(room, uint64(i+1)), m) // no hole, nothing half written
		}
	}
	t.Logf("%d texts acknowledged before the kill, all kept", n)
}

// TestCrashChild is the process TestCrash kills.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashFileEnv)
	if path == "" {
		t.Skip("run by TestCrash")
	}
	s, err := pebblestore.Open(path, pebblestore.WithSize(1<<20))
	require.NoError(t, err)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range crashWriters {
		wg.Go(func() {
			room := fmt.Sprintf("r%d", w)
			for seq := uint64(1); ; seq++ {
				if err := s.Append(t.Context(), room, text(room, seq)); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Printf("ack %s %d\n", room, seq)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}
