// Package netem emulates a lossy, distant network on a loopback interface
// of a private network namespace: packets are dropped at random on input
// (an nftables rule) and held for a fixed time on output (an nftables
// queue rule and a reader of that queue in this process), so that TCP and
// UDP see the same delay and the same loss.
//
// The namespace is anonymous: a locked OS thread of this process moved
// into it with unshare(2), and processes started from that thread inherit
// it. It disappears with the last of them, however this process ends, so
// nothing is left behind in the host's own namespace, whose loopback is
// never touched. Everything here needs root (CAP_NET_ADMIN and
// CAP_SYS_ADMIN) and the nft command.
package netem

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Available reports why the emulation cannot run here, or nil if it can:
// it needs root with the right to create a network namespace (tried on a
// throwaway thread), and the nft, iptables and ping commands.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("netem: needs root")
	}
	for _, c := range []string{"nft", "iptables", "ping"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("netem: needs %s (Debian: apt-get install nftables iptables iputils-ping)", c)
		}
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		errc <- unix.Unshare(unix.CLONE_NEWNET)
	}()
	if err := <-errc; err != nil {
		return fmt.Errorf("netem: cannot create a network namespace: %w", err)
	}
	return nil
}

// NS is a private network namespace with its loopback up. Its work runs
// on the one OS thread that lives in the namespace, one request at a
// time. Do, Start, Run, Ping and Counters are safe for concurrent use;
// Set and Close are not (call them from one goroutine).
type NS struct {
	reqs   chan func()
	done   chan struct{}
	delay  *Delayer
	queued bool // the NFQUEUE rule is in place
	closed bool
}

// MTU is the loopback's MTU inside the namespace: an Ethernet path's, not
// the 64 KiB of a host's loopback.
const MTU = 1500

// New creates the namespace and brings its loopback up with MTU bytes per
// packet. Close ends it.
func New() (*NS, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	ns := &NS{reqs: make(chan func()), done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		defer close(ns.done)
		// Never unlocked: when this goroutine returns, the runtime ends
		// the thread instead of reusing it outside the namespace. The Go
		// runtime does not start new threads from a locked one.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("netem: unshare: %w", err)
			return
		}
		if err := loopbackUp(); err != nil {
			errc <- err
			return
		}
		errc <- nil
		for f := range ns.reqs {
			f()
		}
	}()
	if err := <-errc; err != nil {
		<-ns.done
		return nil, err
	}
	return ns, nil
}

// loopbackUp sets lo's MTU and brings it up, on the calling thread.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netem: socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	ifr.SetUint32(MTU)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFMTU, ifr); err != nil {
		return fmt.Errorf("netem: lo mtu: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("netem: lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("netem: lo up: %w", err)
	}
	return nil
}

// Do runs f on the namespace's thread: a socket f opens, or a process it
// starts, belongs to the namespace. f must not start goroutines that
// expect to be in it.
func (ns *NS) Do(f func() error) error {
	errc := make(chan error, 1)
	select {
	case ns.reqs <- func() { errc <- f() }:
	case <-ns.done:
		return errors.New("netem: namespace closed")
	}
	return <-errc
}

// Start starts cmd inside the namespace. A Pdeathsig the command sets is
// delivered when the namespace is closed.
func (ns *NS) Start(cmd *exec.Cmd) error { return ns.Do(cmd.Start) }

// Run runs cmd inside the namespace and waits for it.
func (ns *NS) Run(cmd *exec.Cmd) error {
	if err := ns.Start(cmd); err != nil {
		return err
	}
	return cmd.Wait()
}

// Queue is the netfilter queue number the delay rule uses.
const Queue = 7

// Set replaces the namespace's rules: each packet is dropped on input
// with probability lossPct/100 (to 0.1%), and, if oneWay is positive,
// held oneWay on output, so a round trip over the loopback takes 2·oneWay
// more. The first call with a delay starts the queue reader; after it,
// packets go through the queue even with no delay.
func (ns *NS) Set(lossPct float64, oneWay time.Duration) error {
	permille := int(lossPct*10 + 0.5)
	if permille < 0 || permille > 1000 {
		return fmt.Errorf("netem: loss %v%% out of range", lossPct)
	}
	if oneWay > 0 && ns.delay == nil {
		var d *Delayer
		err := ns.Do(func() error {
			var err error
			d, err = NewDelayer(Queue, oneWay)
			return err
		})
		if err != nil {
			return err
		}
		ns.delay = d
	}
	if ns.delay != nil {
		ns.delay.SetDelay(oneWay)
	}
	var rules bytes.Buffer
	// The table may not exist yet: add it, then delete it (with its
	// chain), then write it afresh, in one transaction.
	rules.WriteString("table inet garoubench {}\ndelete table inet garoubench\ntable inet garoubench {\n")
	rules.WriteString("\tchain in {\n\t\ttype filter hook input priority 0; policy accept;\n")
	if permille > 0 {
		fmt.Fprintf(&rules, "\t\tnumgen random mod 1000 < %d counter drop\n", permille)
	}
	rules.WriteString("\t\tcounter\n\t}\n}\n")
	if err := ns.run(&rules, "nft", "-f", "-"); err != nil {
		return err
	}
	if oneWay > 0 && !ns.queued {
		// nft's own queue statement needs CONFIG_NFT_QUEUE, which not
		// every kernel has (this machine's lacks it); iptables' NFQUEUE
		// target (through nft_compat) is there.
		if err := ns.run(nil, "iptables", "-w", "-A", "OUTPUT", "-j", "NFQUEUE", "--queue-num", strconv.Itoa(Queue)); err != nil {
			return err
		}
		ns.queued = true
	}
	return nil
}

// run runs a command in the namespace, with stdin if not nil.
func (ns *NS) run(stdin io.Reader, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Stdin = stdin
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := ns.Run(cmd); err != nil {
		return fmt.Errorf("netem: %s: %v: %s", name, err, out.String())
	}
	return nil
}

// Counters returns how many packets the input rule dropped and how many
// it let through since the last Set.
func (ns *NS) Counters() (dropped, passed int64, err error) {
	cmd := exec.Command("nft", "list", "chain", "inet", "garoubench", "in")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := ns.Run(cmd); err != nil {
		return 0, 0, fmt.Errorf("netem: nft: %v: %s", err, out.String())
	}
	re := regexp.MustCompile(`counter packets (\d+) bytes \d+( drop)?`)
	for _, m := range re.FindAllStringSubmatch(out.String(), -1) {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		if m[2] != "" {
			dropped = n
		} else {
			passed = n
		}
	}
	return dropped, passed, nil
}

// Ping is what ping measured over the namespace's loopback.
type Ping struct {
	Sent, Received int
	// Min, Avg and Max round-trip times of the replies.
	Min, Avg, Max time.Duration
}

var (
	pingCounts = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
	pingRTT    = regexp.MustCompile(`= ([\d.]+)/([\d.]+)/([\d.]+)/`)
)

// Ping sends count echo requests to 127.0.0.1, every interval, inside the
// namespace.
func (ns *NS) Ping(ctx context.Context, count int, interval time.Duration) (Ping, error) {
	var p Ping
	wait := 2 * time.Second
	cmd := exec.CommandContext(ctx, "ping", "-n", "-q", "-c", strconv.Itoa(count),
		"-i", strconv.FormatFloat(interval.Seconds(), 'f', 3, 64), "-W", strconv.Itoa(int(wait.Seconds())), "127.0.0.1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := ns.Run(cmd)
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if m := pingCounts.FindStringSubmatch(sc.Text()); m != nil {
			p.Sent, _ = strconv.Atoi(m[1])
			p.Received, _ = strconv.Atoi(m[2])
		}
		if m := pingRTT.FindStringSubmatch(sc.Text()); m != nil {
			ms := func(s string) time.Duration {
				f, _ := strconv.ParseFloat(s, 64)
				return time.Duration(f * float64(time.Millisecond))
			}
			p.Min, p.Avg, p.Max = ms(m[1]), ms(m[2]), ms(m[3])
		}
	}
	if p.Sent == 0 {
		return p, fmt.Errorf("netem: ping: %v: %s", err, out.String())
	}
	return p, nil // ping exits 1 when a reply was lost: that is the point
}

// Err returns the first error of the queue reader, if any: the emulation
// is then broken, and what was measured meanwhile is meaningless.
func (ns *NS) Err() error {
	if ns.delay == nil {
		return nil
	}
	return ns.delay.Err()
}

// Close stops the queue reader and leaves the namespace; it is gone once
// the processes started in it have exited. Processes started with a
// Pdeathsig get it now. Close is idempotent.
func (ns *NS) Close() error {
	if ns.closed {
		return nil
	}
	ns.closed = true
	var err error
	if ns.delay != nil {
		err = ns.delay.Close()
	}
	close(ns.reqs)
	<-ns.done
	return err
}
