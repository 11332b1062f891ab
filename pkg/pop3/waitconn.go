package pop3

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// waitConn is the connection of a process that serves one session (pop3d
// started by inetd, or a session process after the handoff): its reads
// wait for input in ppoll(2), inside the system call, not in Go's poller.
//
// Parked in the poller, the session's goroutine left every processor idle
// between two commands, so each command of a client that waits for each
// reply (RETR after RETR, as mail clients do) cost a thread's wake-up from
// epoll_pwait, the scheduler's search for other work, and a wake-up of the
// runtime's sysmon thread from its deep sleep, after which it polled every
// 20 µs while the command ran: a quarter of pop3d's CPU in a download of
// 10,000 messages (bench/NOTES-perf.md). Blocked in a system call, the
// goroutine keeps its processor and sysmon backs off to 10 ms sleeps.
//
// A thread blocked per waiting session is nothing for a process with one
// session; a daemon with many would keep a thread per idle client, so its
// sessions keep the poller (newSession decides).
//
// The read deadline (idle timeout, shutdown's interrupt) is the ppoll's
// timeout; a deadline moved earlier during a wait, or Close, wakes the
// wait through an eventfd.
type waitConn struct {
	net.Conn
	rc  syscall.RawConn // the read side's descriptor
	fds [2]unix.PollFd  // the connection's, the eventfd's
	ts  unix.Timespec   // ppoll's timeout

	// Read's buffer and results, for readFn (made once: a closure per
	// Read was an allocation per command).
	p      []byte
	n      int
	err    error
	readFn func(fd uintptr) bool

	mu       sync.Mutex
	deadline time.Time
	waiting  bool // a read is in ppoll
	closed   bool
	wake     int // eventfd; -1 once closed
}

// readSyscallConn is what a connection made of two descriptors (pkg/listen's
// stdin/stdout pipes) offers for its read side.
type readSyscallConn interface {
	ReadSyscallConn() (syscall.RawConn, error)
}

// newWaitConn returns c reading through ppoll, or c itself when its
// descriptor can't be had (a test's net.Pipe) or no eventfd can be made.
// A wrapper that gives what it wraps (NetConn, as pkg/listen's one-session
// listener does) is looked through for the descriptor; writes, Close and
// the addresses stay the wrapper's.
func newWaitConn(c net.Conn) net.Conn {
	rc, err := readRawConn(c)
	if err != nil || rc == nil {
		return c
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return c
	}
	wc := &waitConn{Conn: c, rc: rc, wake: wake}
	wc.readFn = wc.readFD
	return wc
}

// readRawConn finds the descriptor c reads from, looking through wrappers;
// nil when there is none.
func readRawConn(c net.Conn) (syscall.RawConn, error) {
	for {
		switch cc := c.(type) {
		case readSyscallConn:
			return cc.ReadSyscallConn()
		case syscall.Conn:
			return cc.SyscallConn()
		case interface{ NetConn() net.Conn }:
			c = cc.NetConn()
		default:
			return nil, nil
		}
	}
}

func (c *waitConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.p = p
	err := c.rc.Read(c.readFn)
	n, rerr := c.n, c.err
	c.p, c.n, c.err = nil, 0, nil
	if err != nil {
		return 0, err
	}
	return n, rerr
}

func (c *waitConn) readFD(fd uintptr) bool {
	c.n, c.err = c.read(int(fd), c.p)
	return true
}

// read waits until fd is readable, then reads it once. Waiting first saves
// the read that would fail with EAGAIN: a client that waits for each reply
// has not sent its next command when the session asks for it.
func (c *waitConn) read(fd int, p []byte) (int, error) {
	for {
		if err := c.wait(fd); err != nil {
			return 0, err
		}
		n, err := unix.Read(fd, p)
		switch {
		case err == nil && n == 0:
			return 0, io.EOF
		case err == nil:
			return n, nil
		case err == unix.EINTR || err == unix.EAGAIN:
			continue
		default:
			return 0, &net.OpError{Op: "read", Net: "pop3", Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", err)}
		}
	}
}

// wait blocks in ppoll until fd is readable (or hung up), the read
// deadline passes, or the connection is closed.
func (c *waitConn) wait(fd int) error {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return net.ErrClosed
		}
		dl := c.deadline
		var ts *unix.Timespec
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				c.mu.Unlock()
				return os.ErrDeadlineExceeded
			}
			c.ts = unix.NsecToTimespec(int64(d))
			ts = &c.ts
		}
		c.waiting = true
		c.fds = [2]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(c.wake), Events: unix.POLLIN}}
		c.mu.Unlock()

		_, err := unix.Ppoll(c.fds[:], ts, nil)

		c.mu.Lock()
		c.waiting = false
		if c.closed {
			c.closeWake()
			c.mu.Unlock()
			return net.ErrClosed
		}
		if c.fds[1].Revents != 0 {
			var b [8]byte
			unix.Read(c.wake, b[:]) // reset the counter: the loop rereads the deadline
		}
		ready := c.fds[0].Revents != 0
		c.mu.Unlock()
		if err != nil && err != unix.EINTR {
			return &net.OpError{Op: "read", Net: "pop3", Addr: c.RemoteAddr(), Err: os.NewSyscallError("ppoll", err)}
		}
		if ready {
			return nil
		}
	}
}

// poke wakes a read in ppoll; c.mu held.
func (c *waitConn) poke() {
	if c.waiting && c.wake >= 0 {
		one := [8]byte{1}
		unix.Write(c.wake, one[:])
	}
}

// closeWake closes the eventfd; c.mu held, no read in ppoll.
func (c *waitConn) closeWake() {
	if c.wake >= 0 {
		unix.Close(c.wake)
		c.wake = -1
	}
}

func (c *waitConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	// The session sets its idle deadline before each read, when no read
	// waits: only a wait's deadline moved earlier (shutdown's interrupt)
	// costs a wake-up.
	if c.waiting && !t.IsZero() && (c.deadline.IsZero() || t.Before(c.deadline)) {
		c.poke()
	}
	c.deadline = t
	return nil
}

func (c *waitConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}

// Close closes the connection and ends a read waiting in ppoll (which
// closing a descriptor does not).
func (c *waitConn) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		if c.waiting {
			c.poke() // the waiting read closes the eventfd
		} else {
			c.closeWake()
		}
	}
	c.mu.Unlock()
	return c.Conn.Close()
}
