//go:build !race

package netem_test

// Built without the race detector, as the root module's zerortt_test.go:
// quic-go v0.65 has a data race between opening a stream during 0-RTT and
// the handshake's transport parameters (quic-go issue #4303). .ci/run
// runs it on its own without -race.

import (
	"context"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/garou-chat/garou/bench/internal/mobility"
)

// reconnectConfig: each client is cut and comes back 15 times, missing 3
// texts each time.
var reconnectConfig = mobility.ReconnectConfig{Reps: 15, Missed: 3}

func init() {
	children["reconnect"] = func(w io.Writer) error {
		res, err := mobility.Reconnect(context.Background(), reconnectConfig)
		if err != nil {
			return err
		}
		return json.NewEncoder(w).Encode(res)
	}
}

// earlyHello says whether the server sends a 0-RTT resume what it missed
// as soon as it has read the hello, half a round trip after the client
// dialed, rather than once the handshake completes, a round trip later
// (the early replay: read-only, so safe against a replayed hello). The
// test then requires the first missed text at least one RTT sooner with
// 0-RTT.
const earlyHello = true

// TestZeroRTTReconnect measures, at 20 ms RTT, the time from the network
// coming back to the first missed text at a reconnecting client, with
// and without 0-RTT.
func TestZeroRTTReconnect(t *testing.T) {
	var res mobility.ReconnectResult
	runChild(t, "reconnect", time.Minute, &res)
	plain, early := mobility.Quantile(res.Plain), mobility.Quantile(res.Early)
	rtt := float64(mobilityRTT)
	t.Logf("first missed text after the network came back, at %v RTT:", mobilityRTT)
	t.Logf("  without 0-RTT: %s; p50 %.2f RTT", plain, float64(plain.P50)/rtt)
	t.Logf("  with 0-RTT:    %s; p50 %.2f RTT (%d of %d hellos taken in 0-RTT)", early, float64(early.P50)/rtt, res.EarlyHellos, early.N)
	t.Logf("  gain: p50 %.2f RTT, p90 %.2f RTT", float64(plain.P50-early.P50)/rtt, float64(plain.P90-early.P90)/rtt)
	if plain.N != reconnectConfig.Reps || early.N != reconnectConfig.Reps || res.Lost+res.Duplicated != 0 {
		t.Errorf("%d and %d of %d reconnects timed; %d missed texts lost, %d duplicated", plain.N, early.N, reconnectConfig.Reps, res.Lost, res.Duplicated)
	}
	if gain := plain.P50 - early.P50; earlyHello && gain < mobilityRTT {
		t.Errorf("0-RTT brought the first missed text %v sooner (p50), want at least one RTT (%v)", gain, mobilityRTT)
	} else if !earlyHello {
		t.Logf("the server acts on a 0-RTT hello only once the handshake completes, as on a 1-RTT one: 0-RTT saves no round trip")
		if -gain > mobilityRTT/4 {
			t.Errorf("0-RTT made the first missed text %v later (p50)", -gain)
		}
	}
	if res.EarlyHellos != reconnectConfig.Reps || res.PlainEarly != 0 {
		t.Errorf("hellos in 0-RTT: %d of the 0-RTT client's %d reconnects, %d of the other's", res.EarlyHellos, reconnectConfig.Reps, res.PlainEarly)
	}
}
