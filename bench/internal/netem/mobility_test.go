package netem_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/garou-chat/garou/bench/internal/mobility"
	"github.com/garou-chat/garou/bench/internal/netem"
)

// mobilityRTT is the round trip of the mobility measurements, without
// loss: what they measure is round trips.
const mobilityRTT = 20 * time.Millisecond

// migrateConfig: three moves in a 3 s burst of 500 texts/s.
var migrateConfig = mobility.MigrateConfig{Moves: 3, Duration: 3 * time.Second, Every: 4 * time.Millisecond}

func init() {
	children["migrate"] = func(w io.Writer) error {
		res, err := mobility.Migrate(context.Background(), migrateConfig)
		if err != nil {
			return err
		}
		return json.NewEncoder(w).Encode(res)
	}
}

// runChild runs the child measurement name inside a namespace with
// mobilityRTT of round trip and no loss, and decodes its result into v.
func runChild(t *testing.T, name string, timeout time.Duration, v any) {
	t.Helper()
	if err := netem.Available(); err != nil {
		t.Skip(err)
	}
	ns, err := netem.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := ns.Set(0, mobilityRTT/2); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+name, "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=true")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Start(cmd); err != nil {
		t.Fatal(err)
	}
	decErr := json.NewDecoder(bufio.NewReader(out)).Decode(v)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	if decErr != nil {
		t.Fatalf("child result: %v", decErr)
	}
	if err := ns.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestMigrationPause: at 20 ms RTT, a client that moves to a new socket
// three times in the middle of a burst receives exactly what a client
// that never moved receives, nobody is told of a leave or a join, it
// never reconnects, and no move pauses its deliveries for 2 RTTs (the
// issue's bound).
func TestMigrationPause(t *testing.T) {
	var res mobility.MigrateResult
	runChild(t, "migrate", time.Minute, &res)
	t.Logf("%d texts, %d moves at %v RTT: Migrate took %v", res.Texts, len(res.Moves), mobilityRTT, res.Moves)
	t.Logf("longest pause between deliveries: mover %v (%.2f RTT), still %v; around each move: mover %v, still %v",
		res.MoverPause, float64(res.MoverPause)/float64(mobilityRTT), res.StillPause, res.MovePauses, res.StillMovePauses)
	if res.MoverGot != res.Texts || res.StillGot != res.Texts || res.Lost+res.Duplicated+res.Misordered+res.Gaps != 0 {
		t.Errorf("mover %d and still %d of %d texts; lost %d, duplicated %d, misordered %d, gaps %d",
			res.MoverGot, res.StillGot, res.Texts, res.Lost, res.Duplicated, res.Misordered, res.Gaps)
	}
	if res.Presence != 0 || res.Reconnects != 0 {
		t.Errorf("%d presence changes told, %d reconnects", res.Presence, res.Reconnects)
	}
	if res.Sockets != migrateConfig.Moves+1 {
		t.Errorf("%d of the mover's sockets received packets, want %d", res.Sockets, migrateConfig.Moves+1)
	}
	if len(res.Moves) != migrateConfig.Moves {
		t.Errorf("%d moves of %d", len(res.Moves), migrateConfig.Moves)
	}
	// A pause the still client had too in the same interval is the
	// host's (other processes, the garbage collector) or the server's,
	// not the move's: on a busy host it can pass 2 RTT by itself.
	for i, p := range res.MovePauses {
		if still := res.StillMovePauses[i]; p >= 2*mobilityRTT && p > still+5*time.Millisecond {
			t.Errorf("move %d: the mover's deliveries paused %v, want under 2 RTT (%v); the still client's %v meanwhile", i+1, p, 2*mobilityRTT, still)
		}
	}
}
