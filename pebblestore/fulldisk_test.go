//go:build linux

package pebblestore_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/pebblestore"
	"github.com/stretchr/testify/require"
)

const fullDirEnv = "PEBBLESTORE_FULL_DIR"

// TestWriteErrors runs a child process whose files may not grow past
// 512 KiB (RLIMIT_FSIZE: its writes fail with EFBIG, as they would with
// ENOSPC on a full disk). Pebble cannot go on once a write to its log
// fails: the child's appends fail with ErrFailed, and so do its reads,
// but it neither crashes nor exits, and it closes the store. Opened again
// without the limit, the database has every text the child had
// acknowledged, each room numbered without a hole.
func TestWriteErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process")
	}
	dir := t.TempDir() + "/h"
	cmd := exec.Command(os.Args[0], "-test.run=^TestWriteErrorsChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), fullDirEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	acked := map[string]uint64{}
	var errs, reads, closed []string
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		var room string
		var seq uint64
		line := lines.Text()
		switch {
		case strings.HasPrefix(line, "ack "):
			_, err := fmt.Sscanf(line, "ack %s %d", &room, &seq)
			require.NoError(t, err)
			acked[room] = seq
		case strings.HasPrefix(line, "err "):
			errs = append(errs, line)
		case strings.HasPrefix(line, "read "):
			reads = append(reads, line)
		case strings.HasPrefix(line, "closed"):
			closed = append(closed, line)
		}
	}
	require.NoError(t, cmd.Wait(), stderr.String())
	require.Len(t, errs, 4, "each writer stopped on an error")
	t.Log(errs[0])
	for _, e := range errs {
		require.Contains(t, e, "failed=true")
	}
	require.Equal(t, []string{"read failed", "read failed", "read failed", "read failed"}, reads)
	require.Len(t, closed, 1)
	t.Log(closed[0])
	require.Len(t, acked, 4)

	s := openAt(t, dir, pebblestore.WithSize(1<<20))
	for room, last := range acked {
		msgs, _, err := s.After(ctxT(t), room, 0)
		require.NoError(t, err)
		require.GreaterOrEqual(t, uint64(len(msgs)), last, "room %s: acknowledged texts lost", room)
		for i, m := range msgs {
			require.Equal(t, bigText(room, uint64(i+1)), m)
		}
	}
}

// TestWriteErrorsChild is the process TestWriteErrors limits.
func TestWriteErrorsChild(t *testing.T) {
	dir := os.Getenv(fullDirEnv)
	if dir == "" {
		t.Skip("run by TestWriteErrors")
	}
	signal.Ignore(syscall.SIGXFSZ) // a write past the limit fails with EFBIG instead
	const limit = 512 << 10
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: limit}))
	s, err := pebblestore.Open(dir, pebblestore.WithSize(1<<20))
	require.NoError(t, err)
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		fmt.Printf(format+"\n", args...)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			room := fmt.Sprintf("r%d", w)
			for seq := uint64(1); ; seq++ {
				if err := s.Append(t.Context(), room, bigText(room, seq)); err != nil {
					say("err failed=%v %v", errors.Is(err, pebblestore.ErrFailed), err)
					break
				}
				say("ack %s %d", room, seq)
			}
			if _, _, err := s.After(t.Context(), room, 0); errors.Is(err, pebblestore.ErrFailed) {
				say("read failed")
			} else {
				say("read: %v", err)
			}
		})
	}
	wg.Wait()
	say("closed: %v", s.Close())
}

func bigText(room string, seq uint64) garou.ChatMessage {
	m := text(room, seq)
	m.Text = strings.Repeat("x", 2000)
	return m
}
