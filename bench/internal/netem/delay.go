package netem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// nfnetlink_queue, from linux/netfilter/nfnetlink_queue.h. The netlink
// and attribute headers are in host order, nfnetlink's payloads in
// network order.
const (
	nfnlSubsysQueue = 3

	nfqnlMsgPacket       = 0
	nfqnlMsgVerdictBatch = 3
	nfqnlMsgConfig       = 2

	nfqaPacketHdr  = 1
	nfqaVerdictHdr = 2

	nfqaCfgCmd      = 1
	nfqaCfgParams   = 2
	nfqaCfgQueueMax = 3

	nfqnlCfgCmdBind = 1
	nfqnlCopyMeta   = 1

	nfAccept = 1

	queueMaxLen = 1 << 16
)

// Delayer holds every packet of a netfilter queue for a fixed time, then
// accepts it. Packets leave in the order they came, each after the delay
// (to the Go timer's resolution, well under a millisecond here). It is safe
// for concurrent use.
type Delayer struct {
	f     *os.File
	rc    syscall.RawConn
	queue uint16
	delay atomic.Int64

	held    chan held
	wg      sync.WaitGroup
	closing atomic.Bool
	mu      sync.Mutex
	err     error
}

type held struct {
	id  uint32
	due time.Time
}

// NewDelayer binds netfilter queue num and starts holding its packets for
// delay each. Its netlink socket belongs to the network namespace of the
// calling thread. Close stops it; packets queued after that are dropped
// by the kernel.
func NewDelayer(num uint16, delay time.Duration) (*Delayer, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("netem: netlink socket: %w", err)
	}
	// Room for bursts: a full buffer drops packets.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, 1)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netem: netlink bind: %w", err)
	}
	f := os.NewFile(uintptr(fd), "nfqueue")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	d := &Delayer{f: f, rc: rc, queue: num, held: make(chan held, queueMaxLen)}
	d.delay.Store(int64(delay))
	cmd := make([]byte, 4)
	cmd[0] = nfqnlCfgCmdBind
	params := make([]byte, 5)
	binary.BigEndian.PutUint32(params, 0xffff)
	params[4] = nfqnlCopyMeta
	maxLen := binary.BigEndian.AppendUint32(nil, queueMaxLen)
	for _, a := range []struct {
		typ  uint16
		data []byte
	}{{nfqaCfgCmd, cmd}, {nfqaCfgParams, params}, {nfqaCfgQueueMax, maxLen}} {
		if err := d.request(nfqnlMsgConfig, unix.NLM_F_ACK, attr(nil, a.typ, a.data)); err != nil {
			f.Close()
			return nil, fmt.Errorf("netem: configure queue %d: %w", num, err)
		}
	}
	d.wg.Add(2)
	go d.read()
	go d.release()
	return d, nil
}

// SetDelay changes the delay of packets queued from now on.
func (d *Delayer) SetDelay(delay time.Duration) { d.delay.Store(int64(delay)) }

func attr(b []byte, typ uint16, data []byte) []byte {
	n := 4 + len(data)
	b = binary.NativeEndian.AppendUint16(b, uint16(n))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for n%4 != 0 {
		b = append(b, 0)
		n++
	}
	return b
}

// message builds a netlink message of nfnetlink_queue type msg.
func (d *Delayer) message(msg uint16, flags uint16, attrs []byte) []byte {
	b := make([]byte, 0, 20+len(attrs))
	b = binary.NativeEndian.AppendUint32(b, uint32(20+len(attrs)))
	b = binary.NativeEndian.AppendUint16(b, nfnlSubsysQueue<<8|msg)
	b = binary.NativeEndian.AppendUint16(b, unix.NLM_F_REQUEST|flags)
	b = binary.NativeEndian.AppendUint32(b, 0) // seq
	b = binary.NativeEndian.AppendUint32(b, 0) // port: the kernel's
	b = append(b, unix.AF_UNSPEC, 0)           // nfgenmsg: family, version
	b = binary.BigEndian.AppendUint16(b, d.queue)
	return append(b, attrs...)
}

// request sends a configuration message and waits for its acknowledgement.
// It runs before the reader starts.
func (d *Delayer) request(msg, flags uint16, attrs []byte) error {
	if err := d.send(d.message(msg, flags, attrs)); err != nil {
		return err
	}
	buf := make([]byte, 8192)
	for {
		n, err := d.recv(buf)
		if err != nil {
			return err
		}
		for m := buf[:n]; len(m) >= 16; {
			l := int(binary.NativeEndian.Uint32(m))
			if l < 16 || l > len(m) {
				break
			}
			if binary.NativeEndian.Uint16(m[4:]) == unix.NLMSG_ERROR && l >= 20 {
				if e := int32(binary.NativeEndian.Uint32(m[16:])); e != 0 {
					return syscall.Errno(-e)
				}
				return nil
			}
			m = m[min((l+3)&^3, len(m)):]
		}
	}
}

func (d *Delayer) send(b []byte) error {
	var serr error
	err := d.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return serr != unix.EAGAIN
	})
	return errors.Join(err, serr)
}

func (d *Delayer) recv(buf []byte) (int, error) {
	var n int
	var rerr error
	err := d.rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}

// read takes packets off the queue and notes when each is due.
func (d *Delayer) read() {
	defer d.wg.Done()
	defer close(d.held)
	buf := make([]byte, 1<<16)
	for {
		n, err := d.recv(buf)
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				continue // the kernel dropped what it could not queue to us
			}
			if !d.closing.Load() {
				d.fail(err)
			}
			return
		}
		now := time.Now()
		due := now.Add(time.Duration(d.delay.Load()))
		for m := buf[:n]; len(m) >= 20; {
			l := int(binary.NativeEndian.Uint32(m))
			if l < 20 || l > len(m) {
				break
			}
			if binary.NativeEndian.Uint16(m[4:]) == nfnlSubsysQueue<<8|nfqnlMsgPacket {
				if id, ok := packetID(m[20:l]); ok {
					d.held <- held{id, due}
				}
			}
			m = m[min((l+3)&^3, len(m)):]
		}
	}
}

// packetID finds the packet id in a queued packet's attributes.
func packetID(a []byte) (uint32, bool) {
	for len(a) >= 4 {
		l := int(binary.NativeEndian.Uint16(a))
		typ := binary.NativeEndian.Uint16(a[2:]) & 0x3fff
		if l < 4 || l > len(a) {
			return 0, false
		}
		if typ == nfqaPacketHdr && l >= 8 {
			return binary.BigEndian.Uint32(a[4:]), true
		}
		a = a[min((l+3)&^3, len(a)):]
	}
	return 0, false
}

// release accepts packets once due. Ids increase and every packet waits
// the same time, so when one is due every earlier one is too, and one
// batch verdict accepts all of them.
func (d *Delayer) release() {
	defer d.wg.Done()
	verdict := make([]byte, 8)
	binary.BigEndian.PutUint32(verdict, nfAccept)
	for h := range d.held {
		if w := time.Until(h.due); w > 0 {
			time.Sleep(w)
		}
		last := h.id
	more:
		for {
			select {
			case n, ok := <-d.held:
				if !ok {
					break more
				}
				if time.Until(n.due) > 0 {
					d.accept(verdict, last)
					if w := time.Until(n.due); w > 0 {
						time.Sleep(w)
					}
				}
				last = n.id
			default:
				break more
			}
		}
		d.accept(verdict, last)
	}
}

func (d *Delayer) accept(verdict []byte, id uint32) {
	binary.BigEndian.PutUint32(verdict[4:], id)
	if err := d.send(d.message(nfqnlMsgVerdictBatch, 0, attr(nil, nfqaVerdictHdr, verdict))); err != nil && !d.closing.Load() {
		d.fail(err)
	}
}

func (d *Delayer) fail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err == nil {
		d.err = fmt.Errorf("netem: queue %d: %w", d.queue, err)
	}
}

// Err returns the first error the delayer met, if any: the emulation is
// then broken and the measurements meaningless.
func (d *Delayer) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// Close stops reading the queue and waits for the delayer's goroutines.
// The kernel drops the packets still held, and those queued later. It is
// idempotent.
func (d *Delayer) Close() error {
	if d.closing.Swap(true) {
		d.wg.Wait()
		return d.Err()
	}
	d.f.Close() // ends read, which ends release
	d.wg.Wait()
	return d.Err()
}
