package netem

import (
	"context"
	"net"
	"os"
	"os/exec"
	"regexp"
	"testing"
	"time"
)

// needNetem skips a test that needs the emulation where it cannot run:
// not root, or nft, iptables or ping missing. CI installs them and runs as
// root.
func needNetem(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err)
	}
}

// TestEmulation checks that the namespace's loopback delays a round trip
// by twice the one-way delay, that the loss rule drops about the share it
// is given, and that UDP is delayed like ICMP.
func TestEmulation(t *testing.T) {
	needNetem(t)
	ns, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	p, err := ns.Ping(ctx, 5, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if p.Received != 5 || p.Max > 5*time.Millisecond {
		t.Fatalf("without rules: %+v, want every reply well under 5 ms", p)
	}

	const oneWay = 10 * time.Millisecond
	if err := ns.Set(0, oneWay); err != nil {
		t.Fatal(err)
	}
	p, err = ns.Ping(ctx, 30, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("20 ms: ping %+v", p)
	if p.Received != 30 || p.Min < 2*oneWay || p.Avg > 2*oneWay+5*time.Millisecond {
		t.Errorf("ping with 2×%v of delay: %+v", oneWay, p)
	}

	// UDP, as QUIC uses it, through a socket opened in the namespace.
	var c *net.UDPConn
	if err := ns.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The fastest of five, so that a busy host's scheduling does not
	// count as network delay.
	fastest := time.Hour
	for range 5 {
		start := time.Now()
		if _, err := c.WriteTo([]byte("x"), c.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := c.ReadFrom(make([]byte, 8)); err != nil {
			t.Fatal(err)
		}
		fastest = min(fastest, time.Since(start))
	}
	if fastest < oneWay || fastest > oneWay+3*time.Millisecond {
		t.Errorf("a UDP datagram to itself took %v at best, want about %v", fastest, oneWay)
	}

	// 5% each way: about 9.75% of round trips fail.
	if err := ns.Set(5, oneWay); err != nil {
		t.Fatal(err)
	}
	p, err = ns.Ping(ctx, 400, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	dropped, passed, err := ns.Counters()
	if err != nil {
		t.Fatal(err)
	}
	share := float64(dropped) / float64(dropped+passed)
	t.Logf("5%%: ping %d of %d replies, rtt avg %v; the rule dropped %d of %d packets (%.1f%%)",
		p.Received, p.Sent, p.Avg, dropped, dropped+passed, 100*share)
	if share < 0.025 || share > 0.08 {
		t.Errorf("the rule dropped %.1f%% of packets, want about 5%%", 100*share)
	}
	if got := float64(p.Received) / float64(p.Sent); got < 0.8 || got > 0.97 {
		t.Errorf("%d of %d ping replies, want about 90%%", p.Received, p.Sent)
	}
	if err := ns.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}

// TestProcessInNamespace checks that a process started in the namespace
// sees its loopback (MTU 1500), not the host's.
func TestProcessInNamespace(t *testing.T) {
	needNetem(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip")
	}
	ns, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	cmd := exec.Command("ip", "-o", "link", "show")
	cmd.Stderr = os.Stderr
	var out []byte
	if err := ns.Do(func() error {
		var err error
		out, err = cmd.Output()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^1: lo: <LOOPBACK,UP,LOWER_UP> mtu 1500 `).MatchString(string(out)) || regexp.MustCompile(`\n2: `).MatchString(string(out)) {
		t.Errorf("links in the namespace:\n%s", out)
	}
}
