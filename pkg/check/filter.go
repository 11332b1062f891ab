package check

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// Exit codes of the filter command (qmail's, which sysexits-aware MTAs'
// filters also use): anything else, a crash or the time limit is a
// temporary failure, so the client keeps the message and retries.
const (
	FilterAccept   = 0
	FilterReject   = 100
	FilterTempFail = 111
)

// runFilter runs the filter command with the message on stdin and the
// envelope in the environment. It returns the verdict and a word for the
// log.
func (cn *Conn) runFilter(m *message) (*Verdict, string) {
	cfg := &cn.c.cfg
	ctx, cancel := context.WithTimeout(context.Background(), cfg.FilterTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", cfg.Filter)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The whole process group goes on timeout, not only the shell.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 0
	ip := ""
	if cn.info.IP != nil {
		ip = cn.info.IP.String()
	}
	cmd.Env = append(os.Environ(),
		"SENDER="+m.from,
		"RECIPIENTS="+strings.Join(m.rcpts, " "),
		"QUEUE_ID="+cn.id,
		"CLIENT_ADDR="+ip,
		"HELO="+cn.helo,
	)
	cmd.Stdin = m.reader()
	var out boundedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	text := firstLine(out.String())
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		cn.log.Error("check: filter timed out", "id", cn.id, "after", cfg.FilterTimeout)
		return verdict(451, "4.3.0", "Content filter timed out, try again later"), "timeout"
	case err == nil:
		return nil, "0"
	case errors.As(err, &ee) && ee.ExitCode() == FilterReject:
		if text == "" {
			text = "Message rejected by the content filter"
		}
		return verdict(554, "5.7.1", "%s", text), "100"
	case errors.As(err, &ee) && ee.ExitCode() == FilterTempFail:
		if text == "" {
			text = "Message deferred by the content filter, try again later"
		}
		return verdict(451, "4.7.1", "%s", text), "111"
	default:
		cn.log.Error("check: filter failed", "id", cn.id, "err", err, "output", text)
		return verdict(451, "4.3.0", "Content filter failed, try again later"), fmt.Sprint(err)
	}
}

// boundedBuffer keeps the first 4 KiB written to it and discards the
// rest, so a chatty filter cannot fill our memory.
type boundedBuffer struct{ b []byte }

func (w *boundedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(w.b); room > 0 {
		w.b = append(w.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (w *boundedBuffer) String() string { return string(w.b) }

// firstLine returns the first non-empty line of s, printable, for a reply.
func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = printable(strings.TrimSpace(l), 200); l != "" {
			return l
		}
	}
	return ""
}
