// Package handoff gives an authenticated session to a child process
// running as the mailbox's owner. It is apart from package privsep so that
// deliver, which needs privsep's credentials but serves no connection,
// does not link package net.
package handoff

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"letterbox/pkg/privsep"
)

// A handoff gives an authenticated session to a child process running as
// the mailbox's owner (Dovecot's model: one process per session, with the
// user's credentials). The parent, root, has authenticated the user; the
// child opens the mailbox and serves the rest of the session, and so can
// touch nothing its owner could not.
//
// The child is this same executable (/proc/self/exe, so an upgrade of the
// file on disk does not matter), started in a clean environment holding
// only LETTERBOX_HANDOFF=1 (and TZ), in /, with stdin and stdout on
// /dev/null, stderr the parent's (for the logs), and three descriptors:
//
//	3  the connection: the client's socket itself when it is one; else
//	   one end of a socketpair whose other end the parent proxies. A TLS
//	   connection stays in the parent, so the key never reaches a user's
//	   process;
//	4  the state, read to its end: whatever the protocol needs to go on
//	   (who logged in, the mailbox, bytes the client already sent);
//	5  the report: the child writes its verdict once and closes it.
//
// The verdict lets the parent answer as if it had opened the mailbox
// itself: a child that cannot take the session (the mailbox is locked)
// refuses it and exits without touching the connection, and the parent
// goes on with the session. Every other descriptor of the parent is
// close-on-exec (Go opens them so), so the child holds nothing of other
// sessions or of the listeners.

const handoffEnv = "LETTERBOX_HANDOFF"

// maxHandoffState bounds the state and the report.
const maxHandoffState = 1 << 20

// The descriptors of the child (after stdin, stdout, stderr).
const (
	handoffConnFD   = 3
	handoffStateFD  = 4
	handoffReportFD = 5
)

// IsHandoffChild reports whether this process was started by Spawn: a
// command checks it first thing in main and serves the handed-off session
// instead of parsing its command line.
func IsHandoffChild() bool { return os.Getenv(handoffEnv) == "1" }

// Handoff is what the parent gives a child.
type Session struct {
	Cred  privsep.Cred // the child runs as this user, group and groups
	Conn  net.Conn     // the session's connection; passed or proxied (see above)
	State []byte       // read by the child with TakeHandoff
	Name  string       // the child's argv[0] (shown by ps); "" = this process's
	// Stderr receives the child's logs; nil: this process's stderr.
	Stderr io.Writer
}

// Child is a session running in a child process.
type Child struct {
	cmd    *exec.Cmd
	conn   net.Conn // Handoff.Conn: closed by Wait
	peer   net.Conn // the parent's end of the socketpair, nil when the socket was passed
	report *os.File

	proxyDone chan struct{}
	waitOnce  sync.Once
	waitErr   error
}

// Spawn starts a child for h. It returns once the child runs and has its
// state; Report then says whether it took the session.
func Spawn(h Session) (*Child, error) {
	connFile, peer, err := childConn(h.Conn)
	if err != nil {
		return nil, fmt.Errorf("privsep: handoff: %w", err)
	}
	closeAll := func(fs ...io.Closer) {
		for _, f := range fs {
			if f != nil {
				f.Close()
			}
		}
	}
	stateR, stateW, err := os.Pipe()
	if err != nil {
		closeAll(connFile, peer)
		return nil, fmt.Errorf("privsep: handoff: %w", err)
	}
	reportR, reportW, err := os.Pipe()
	if err != nil {
		closeAll(connFile, peer, stateR, stateW)
		return nil, fmt.Errorf("privsep: handoff: %w", err)
	}
	exe := "/proc/self/exe"
	if _, err := os.Stat(exe); err != nil {
		if exe, err = os.Executable(); err != nil {
			closeAll(connFile, peer, stateR, stateW, reportR, reportW)
			return nil, fmt.Errorf("privsep: handoff: %w", err)
		}
	}
	name := h.Name
	if name == "" {
		name = os.Args[0]
	}
	env := []string{handoffEnv + "=1"}
	if tz, ok := os.LookupEnv("TZ"); ok {
		env = append(env, "TZ="+tz)
	}
	cmd := &exec.Cmd{
		Path:       exe,
		Args:       []string{name},
		Env:        env,
		Dir:        "/",
		Stderr:     h.Stderr,
		ExtraFiles: []*os.File{connFile, stateR, reportW},
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	cmd.SysProcAttr = h.Cred.SysProcAttr()
	// A parent that dies leaves no session behind: the child ends it as
	// at shutdown (no UPDATE). Go sets this after the credentials, which
	// would clear it otherwise.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
	err = cmd.Start()
	closeAll(connFile, stateR, reportW)
	if err != nil {
		closeAll(peer, stateW, reportR)
		return nil, fmt.Errorf("privsep: handoff: start session as %s: %w", h.Cred, err)
	}
	c := &Child{cmd: cmd, conn: h.Conn, peer: peer, report: reportR}
	if len(h.State) > maxHandoffState {
		err = fmt.Errorf("state of %d bytes", len(h.State))
	} else {
		_, err = stateW.Write(h.State)
	}
	if cerr := stateW.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		c.Kill()
		c.reap()
		return nil, fmt.Errorf("privsep: handoff: state: %w", err)
	}
	return c, nil
}

// childConn returns the descriptor to give the child for conn: a
// duplicate of the socket when conn is a bare socket, else one end of a
// socketpair (and the other end, for the proxy).
func childConn(conn net.Conn) (*os.File, net.Conn, error) {
	if fc, ok := conn.(interface{ File() (*os.File, error) }); ok {
		switch conn.(type) {
		case *net.TCPConn, *net.UnixConn:
			f, err := fc.File()
			return f, nil, err
		}
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "handoff-proxy")
	peer, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		syscall.Close(fds[1])
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[1]), "handoff-conn"), peer, nil
}

// ErrNoReport: the child ended without saying whether it took the session.
var ErrNoReport = errors.New("privsep: handoff: the session's child exited without taking or refusing the session")

// Report waits for the child's verdict. Accepted: the child serves the
// connection from now on; the caller must not use it again, and calls
// Wait. Refused (or an error): the child has exited without touching the
// connection, which is the caller's again; report is what the child said.
func (c *Child) Report() (accepted bool, report []byte, err error) {
	b, rerr := io.ReadAll(io.LimitReader(c.report, maxHandoffState))
	c.report.Close()
	if rerr == nil && len(b) > 0 && b[0] == '1' {
		if c.peer != nil {
			c.proxyDone = make(chan struct{})
			go c.proxy()
		}
		return true, b[1:], nil
	}
	// Refused or failed: the connection goes back to the caller.
	werr := c.reap()
	if rerr != nil || len(b) == 0 || b[0] != '0' {
		if werr != nil {
			return false, nil, fmt.Errorf("%w (%v)", ErrNoReport, werr)
		}
		return false, nil, ErrNoReport
	}
	return false, b[1:], nil
}

// reap waits for a child that did not take the session, keeping the
// connection open for the caller.
func (c *Child) reap() error {
	c.waitOnce.Do(func() {
		c.waitErr = c.cmd.Wait()
		if c.peer != nil {
			c.peer.Close()
		}
	})
	return c.waitErr
}

// proxy copies between the client's connection and the child's end of the
// socketpair until both directions are done: the client's end of input is
// passed on as a half-close, and when the child is done writing (it ended
// the session or died) the client's connection is closed, which for TLS
// sends close_notify.
func (c *Child) proxy() {
	defer close(c.proxyDone)
	toChild := make(chan struct{})
	go func() {
		defer close(toChild)
		io.Copy(c.peer, c.conn)
		if hc, ok := c.peer.(interface{ CloseWrite() error }); ok {
			hc.CloseWrite()
		}
	}()
	io.Copy(c.conn, c.peer)
	c.conn.Close()
	c.peer.Close()
	<-toChild
}

// Wait waits for a child that took the session to exit (and for the
// proxy), then closes the parent's copy of the connection. The error is
// the child's exit status: nil when it ended the session itself.
func (c *Child) Wait() error {
	c.waitOnce.Do(func() {
		c.waitErr = c.cmd.Wait()
		if c.proxyDone != nil {
			<-c.proxyDone
		}
		c.conn.Close()
	})
	return c.waitErr
}

// Pid is the child's process id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Signal sends sig to the child (SIGTERM: end the session as at shutdown).
func (c *Child) Signal(sig os.Signal) error { return c.cmd.Process.Signal(sig) }

// Kill ends the child at once and cuts the connection.
func (c *Child) Kill() {
	c.cmd.Process.Kill()
	if c.peer != nil {
		c.peer.Close()
	}
}

// Handed is the child's side of a handoff.
type Handed struct {
	Conn   net.Conn // the session's connection
	State  []byte   // the parent's state
	report *os.File
}

// TakeHandoff picks up what Spawn gave this process (descriptors 3, 4 and
// 5). Call it once, first thing in a process for which IsHandoffChild is
// true, then Accept or Refuse.
func TakeHandoff() (*Handed, error) {
	os.Unsetenv(handoffEnv)
	connFile := os.NewFile(handoffConnFD, "handoff-conn")
	stateFile := os.NewFile(handoffStateFD, "handoff-state")
	report := os.NewFile(handoffReportFD, "handoff-report")
	for _, fd := range []int{handoffConnFD, handoffStateFD, handoffReportFD} {
		syscall.CloseOnExec(fd)
	}
	state, err := io.ReadAll(io.LimitReader(stateFile, maxHandoffState))
	stateFile.Close()
	if err != nil {
		connFile.Close()
		report.Close()
		return nil, fmt.Errorf("privsep: handoff: read state: %w", err)
	}
	conn, err := net.FileConn(connFile)
	connFile.Close()
	if err != nil {
		report.Close()
		return nil, fmt.Errorf("privsep: handoff: connection: %w", err)
	}
	return &Handed{Conn: conn, State: state, report: report}, nil
}

// Accept tells the parent that this process serves the session from now
// on; report goes with it.
func (h *Handed) Accept(report []byte) error { return h.verdict('1', report) }

// Refuse tells the parent that this process will not serve the session
// (report says why) and must exit without using the connection.
func (h *Handed) Refuse(report []byte) error {
	err := h.verdict('0', report)
	h.Conn.Close() // our copy only: the parent keeps the connection
	return err
}

func (h *Handed) verdict(v byte, report []byte) error {
	if h.report == nil {
		return errors.New("privsep: handoff: verdict already given")
	}
	_, err := h.report.Write(append([]byte{v}, report...))
	if cerr := h.report.Close(); err == nil {
		err = cerr
	}
	h.report = nil
	if err != nil {
		return fmt.Errorf("privsep: handoff: report: %w", err)
	}
	return nil
}
