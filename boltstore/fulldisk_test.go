//go:build linux

package boltstore_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/garou-chat/garou"
	"github.com/garou-chat/garou/boltstore"
	"github.com/stretchr/testify/require"
)

const fullFileEnv = "BOLTSTORE_FULL_FILE"

// TestWriteErrors runs a child process whose files may not grow past
// 512 KiB (RLIMIT_FSIZE: its writes fail with EFBIG, as they would with
// ENOSPC on a full disk). Its appends fail with an error once the file
// can grow no more; the store still reads; and every text it had
// acknowledged is in the file, opened again without the limit.
func TestWriteErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process")
	}
	path := t.TempDir() + "/h.db"
	cmd := exec.Command(os.Args[0], "-test.run=^TestWriteErrorsChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), fullFileEnv+"="+path)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	acked := map[string]uint64{}
	var errs, reads []string
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
		}
	}
	require.NoError(t, cmd.Wait(), stderr.String())
	require.Len(t, errs, 4, "each writer stopped on an error")
	t.Log(errs[0])
	require.Equal(t, []string{"read ok", "read ok", "read ok", "read ok"}, reads)

	s := openAt(t, path, boltstore.WithSize(1<<20))
	for room, last := range acked {
		msgs, _, err := s.After(ctxT(t), room, 0)
		require.NoError(t, err)
		require.Len(t, msgs, int(last), "room %s: every acknowledged text, and no other", room)
		for i, m := range msgs {
			require.Equal(t, bigText(room, uint64(i+1)), m)
		}
	}
}

// TestWriteErrorsChild is the process TestWriteErrors limits.
func TestWriteErrorsChild(t *testing.T) {
	path := os.Getenv(fullFileEnv)
	if path == "" {
		t.Skip("run by TestWriteErrors")
	}
	signal.Ignore(syscall.SIGXFSZ) // a write past the limit fails with EFBIG instead
	const limit = 512 << 10
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: limit}))
	s, err := boltstore.Open(path, boltstore.WithSize(1<<20))
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
			seq := uint64(1)
			for ; ; seq++ {
				if err := s.Append(t.Context(), room, bigText(room, seq)); err != nil {
					say("err %v", err)
					break
				}
				say("ack %s %d", room, seq)
			}
			msgs, _, err := s.After(t.Context(), room, 0)
			if err == nil && uint64(len(msgs)) == seq-1 {
				say("read ok")
			} else {
				say("read failed: %d texts, %v", len(msgs), err)
			}
		})
	}
	wg.Wait()
	require.NoError(t, s.Close())
}

func bigText(room string, seq uint64) garou.ChatMessage {
	m := text(room, seq)
	m.Text = strings.Repeat("x", 2000)
	return m
}
