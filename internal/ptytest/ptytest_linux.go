//go:build linux

package ptytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Window size given to new terminals.
const (
	Rows = 24
	Cols = 80
)

// Open allocates a pseudo-terminal pair: master is the controlling side,
// slave is the terminal device (/dev/pts/N) a program would use. The master
// is non-blocking and registered with the runtime poller, so closing it
// unblocks pending reads and writes. The terminal has a window size of
// Rows x Cols. The caller closes both files.
func Open() (master, slave *os.File, err error) {
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("ptytest: open /dev/ptmx: %w", err)
	}
	fail := func(what string, err error) (*os.File, *os.File, error) {
		unix.Close(mfd)
		return nil, nil, fmt.Errorf("ptytest: %s: %w", what, err)
	}
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		return fail("unlockpt", err)
	}
	n, err := unix.IoctlGetUint32(mfd, unix.TIOCGPTN)
	if err != nil {
		return fail("ptsname", err)
	}
	if err := unix.IoctlSetWinsize(mfd, unix.TIOCSWINSZ, &unix.Winsize{Row: Rows, Col: Cols}); err != nil {
		return fail("set window size", err)
	}
	if err := unix.SetNonblock(mfd, true); err != nil {
		return fail("set non-blocking", err)
	}
	name := "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
	sfd, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("open "+name, err)
	}
	return os.NewFile(uintptr(mfd), "/dev/ptmx"), os.NewFile(uintptr(sfd), name), nil
}

// PTY is a process running under a pseudo-terminal. A goroutine copies
// everything the process writes to the terminal into a buffer, which Expect,
// ExpectRegexp and Output inspect. Terminal echo is on, so what Write types
// shows up in the output too, and "\n" written by the process reads "\r\n".
type PTY struct {
	cmd    *exec.Cmd
	master *os.File

	exited  chan struct{} // closed when the process has been waited for
	waitErr error         // result of cmd.Wait, set before exited is closed
	drained chan struct{} // closed when the reader goroutine has returned

	closeOnce sync.Once

	mu      sync.Mutex
	out     []byte        // everything read from the terminal so far
	pos     int           // offset in out where the next Expect starts
	changed chan struct{} // closed and replaced whenever out grows
}

// Start starts cmd with its standard input, output and error connected to a
// new pseudo-terminal, which becomes its controlling terminal in a new
// session. cmd's Stdin, Stdout, Stderr and SysProcAttr must be unset. The
// caller must call Close.
func Start(cmd *exec.Cmd) (*PTY, error) {
	if cmd.Stdin != nil || cmd.Stdout != nil || cmd.Stderr != nil || cmd.SysProcAttr != nil {
		return nil, errors.New("ptytest: Start: Stdin, Stdout, Stderr and SysProcAttr must be unset")
	}
	master, slave, err := Open()
	if err != nil {
		return nil, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	err = cmd.Start()
	// The child has its own copy; the master sees end of file only once
	// every copy of the slave is closed.
	slave.Close()
	if err != nil {
		master.Close()
		return nil, fmt.Errorf("ptytest: start %s: %w", cmd.Path, err)
	}

	p := &PTY{
		cmd:     cmd,
		master:  master,
		exited:  make(chan struct{}),
		drained: make(chan struct{}),
		changed: make(chan struct{}),
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	go p.read()
	return p, nil
}

// read copies the terminal output into p.out until the master reports end
// of file (EIO once the process and its children have closed the terminal)
// or is closed.
func (p *PTY) read() {
	defer close(p.drained)
	buf := make([]byte, 4096)
	for {
		n, err := p.master.Read(buf)
		if n > 0 {
			p.mu.Lock()
			p.out = append(p.out, buf[:n]...)
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// Write types s into the terminal.
func (p *PTY) Write(s string) error {
	_, err := p.master.WriteString(s)
	return err
}

// Expect waits until the output contains substr after the end of the
// previous match (or from the start for the first call), then moves the
// match position past it. It fails when ctx is done or the output ends
// first; the error shows the output seen since the previous match.
func (p *PTY) Expect(ctx context.Context, substr string) error {
	_, err := p.expect(ctx, strconv.Quote(substr), func(b []byte) (int, []string) {
		i := bytes.Index(b, []byte(substr))
		if i < 0 {
			return -1, nil
		}
		return i + len(substr), []string{substr}
	})
	return err
}

// ExpectRegexp is like Expect for a regular expression. It returns the
// match followed by its submatches.
func (p *PTY) ExpectRegexp(ctx context.Context, re *regexp.Regexp) ([]string, error) {
	return p.expect(ctx, "/"+re.String()+"/", func(b []byte) (int, []string) {
		loc := re.FindSubmatchIndex(b)
		if loc == nil {
			return -1, nil
		}
		m := make([]string, len(loc)/2)
		for i := range m {
			if loc[2*i] >= 0 {
				m[i] = string(b[loc[2*i]:loc[2*i+1]])
			}
		}
		return loc[1], m
	})
}

// expect waits until match finds something in the unmatched output. match
// returns the end offset of the match in its argument, or -1.
func (p *PTY) expect(ctx context.Context, what string, match func([]byte) (int, []string)) ([]string, error) {
	for {
		p.mu.Lock()
		rest := p.out[p.pos:]
		if end, m := match(rest); end >= 0 {
			p.pos += end
			p.mu.Unlock()
			return m, nil
		}
		changed := p.changed
		p.mu.Unlock()

		select {
		case <-changed:
		case <-p.drained:
			// The output has ended; look one last time.
			p.mu.Lock()
			rest := p.out[p.pos:]
			end, m := match(rest)
			if end >= 0 {
				p.pos += end
			}
			p.mu.Unlock()
			if end >= 0 {
				return m, nil
			}
			return nil, fmt.Errorf("ptytest: output ended before %s appeared; output since last match:\n%q", what, rest)
		case <-ctx.Done():
			p.mu.Lock()
			rest := string(p.out[p.pos:])
			p.mu.Unlock()
			return nil, fmt.Errorf("ptytest: waiting for %s: %w; output since last match:\n%q", what, ctx.Err(), rest)
		}
	}
}

// Output returns everything the process has written to the terminal so far.
func (p *PTY) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return string(p.out)
}

// Wait waits for the process to exit and for its output to be read to the
// end, then returns the error from exec.Cmd.Wait. If the process leaves a
// child behind that keeps the terminal open, Wait blocks until that child
// exits too; Close does not wait for it.
func (p *PTY) Wait() error {
	<-p.exited
	<-p.drained
	return p.waitErr
}

// Close kills the process and its process group if still running, waits
// for it, closes the terminal and waits for the reader goroutine to return.
// It is safe to call more than once and after Wait.
func (p *PTY) Close() {
	p.closeOnce.Do(func() {
		select {
		case <-p.exited:
		default:
			// The process leads its own session and process group.
			_ = unix.Kill(-p.cmd.Process.Pid, unix.SIGKILL)
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		p.master.Close()
		<-p.drained
	})
}
