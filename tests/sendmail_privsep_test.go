package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"letterbox/pkg/privsep/privseptest"
	"letterbox/pkg/spool"
)

// Local submission by ordinary users (issue 15): sendmail needs nothing
// they cannot read, and who they are comes from the kernel, written by
// queue-runner when it takes their drop file in.

// privateEnv is an installation whose users file and aliases are root's
// alone (0600), as a file of password hashes must be, with a spool root
// made; the config file and the commands are open to every user.
func privateEnv(t *testing.T, extra ...string) *env {
	t.Helper()
	e := smtpdEnv(t, extra...)
	openTo(t, e)
	must(t, os.WriteFile(e.Aliases, []byte("postmaster: joe\nstaff: joe\n"), 0o600))
	for _, f := range []string{e.Users, e.Aliases} {
		must(t, os.Chmod(f, 0o600))
	}
	_, err := spool.Open(e.Spool)
	must(t, err)
	return e
}

// as runs a letterbox command as u with stdin, and returns its output
// and exit code.
func (e *env) as(u privseptest.User, stdin string, name string, args ...string) (string, int) {
	e.t.Helper()
	c := e.cmd(name, args...)
	c.SysProcAttr = u.SysProcAttr()
	c.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("%s as %s: %v", name, u.Name, err)
	}
	return out.String(), 0
}

// deliveredTo runs a queue-runner pass and returns the messages in the
// local user's Maildir (new/), waiting for n.
func deliveredTo(t *testing.T, e *env, local string, n int) []string {
	t.Helper()
	if out, errs, code := e.run("", "queue-runner"); code != 0 {
		t.Fatalf("queue-runner: %d %s%s", code, out, errs)
	}
	md := filepath.Join(e.MailRoot, "example.test", local)
	var msgs []string
	waitFor(t, 10*time.Second, fmt.Sprintf("%d messages for %s", n, local), func() bool {
		msgs = nil
		for _, f := range append(maildirFiles(t, md, "new"), maildirFiles(t, md, "cur")...) {
			b, err := os.ReadFile(f)
			must(t, err)
			msgs = append(msgs, string(b))
		}
		return len(msgs) >= n
	})
	if len(msgs) != n {
		t.Fatalf("%d messages for %s, want %d", len(msgs), local, n)
	}
	return msgs
}

// bySubject finds the message with subject s.
func bySubject(t *testing.T, msgs []string, s string) string {
	t.Helper()
	for _, m := range msgs {
		if strings.Contains(m, "\nSubject: "+s+"\r\n") || strings.HasPrefix(m, "Subject: "+s+"\r\n") {
			return m
		}
	}
	t.Fatalf("no message %q among %d", s, len(msgs))
	return ""
}

// firstReceived is the message's first Received field (delivery put
// Return-Path and Delivered-To above it), unfolded.
func firstReceived(m string) string {
	h := m[:strings.Index(m, "\r\n\r\n")+2]
	i := strings.Index(h, "Received: ")
	if i < 0 {
		return ""
	}
	l, rest, _ := strings.Cut(h[i:], "\r\n")
	for strings.HasPrefix(rest, "\t") || strings.HasPrefix(rest, " ") {
		var next string
		next, rest, _ = strings.Cut(rest, "\r\n")
		l += " " + strings.TrimSpace(next)
	}
	return l
}

// An ordinary user's sendmail works with the users file, the aliases and
// the TLS key private: plain, -t, -f someone else's address (queue-runner
// adds the warning) and -bs (no STARTTLS on a pipe); each message's first
// Received line names the user and uid as the kernel knows them.
func TestSendmailOrdinaryUser(t *testing.T) {
	u := privseptest.NewUser(t)
	e := privateEnv(t, smtpdTLS(t, t.TempDir())...)
	who := fmt.Sprintf("Received: (from %s uid %d) by mx.example.test (letterbox sendmail);", u.Name, u.UID)
	for _, c := range []struct {
		args  []string
		input string
	}{
		{[]string{"joe@example.test"}, "Subject: plain\n\nhello\n"},
		{[]string{"-t"}, "To: staff@example.test\nSubject: dash-t\n\nvia an alias\n"},
		{[]string{"-f", "root@mx.example.test", "joe@example.test"}, "Subject: forged sender\n\nx\n"},
		{[]string{"-f", u.Name + "+cron@example.test", "joe@example.test"}, "Subject: own sender\n\nx\n"},
	} {
		if out, code := e.as(u, c.input, "sendmail", c.args...); code != 0 {
			t.Fatalf("sendmail %v as %s: exit %d\n%s", c.args, u.Name, code, out)
		}
	}
	out, code := e.as(u, "EHLO local\r\nMAIL FROM:<"+u.Name+"@mx.example.test>\r\nRCPT TO:<joe@example.test>\r\nDATA\r\nSubject: bs\r\n\r\nvia -bs\r\n.\r\nQUIT\r\n", "sendmail", "-bs")
	if code != 0 || !strings.Contains(out, "250 2.0.0 OK: queued as ") || strings.Contains(out, "STARTTLS") {
		t.Fatalf("sendmail -bs as %s: exit %d\n%s", u.Name, code, out)
	}
	// root commits to the spool itself and writes the same field.
	if _, errs, code := e.run("Subject: by root\n\nx\n", "sendmail", "-f", "anyone@remote.test", "joe@example.test"); code != 0 {
		t.Fatalf("root's sendmail: %d %s", code, errs)
	}
	msgs := deliveredTo(t, e, "joe", 6)
	if m := bySubject(t, msgs, "by root"); !strings.HasPrefix(firstReceived(m), "Received: (from root uid 0) by mx.example.test (letterbox sendmail);") ||
		strings.Contains(m, "X-Authentication-Warning") {
		t.Errorf("root's message:\n%s", m)
	}
	for _, s := range []string{"plain", "dash-t", "forged sender", "own sender", "bs"} {
		m := bySubject(t, msgs, s)
		if r := firstReceived(m); !strings.HasPrefix(r, who) {
			t.Errorf("%s: first Received %q, want %q…", s, r, who)
		}
		warned := strings.Contains(m, "\r\nX-Authentication-Warning: mx.example.test: "+u.Name+" set sender to root@mx.example.test using -f\r\n")
		if warned != (s == "forged sender") {
			t.Errorf("%s: warning %v:\n%s", s, warned, m)
		}
	}
}

// A drop file written by hand with a forged sender and a forged
// Received line: the recipient sees the real login and uid on top, and
// the warning.
func TestSendmailDropForgery(t *testing.T) {
	u := privseptest.NewUser(t)
	e := privateEnv(t)
	env := spool.Envelope{From: "root@mx.example.test", Arrived: time.Now(), AuthUser: "root",
		Recipients: []*spool.Recipient{{Address: "joe@example.test", State: spool.Pending}}}
	forged := env.Format() + ".\n" +
		"Received: (from root uid 0)\r\n\tby mx.example.test (letterbox sendmail); Mon, 23 Nov 2026 10:00:00 +0000\r\n" +
		"From: root@mx.example.test\r\nSubject: forged by hand\r\n\r\nsend me your password\r\n"
	drop := filepath.Join(e.Spool, "drop", "FORGED")
	c := exec.Command("sh", "-c", `umask 077; cat > "$1" && chmod 744 "$1"`, "sh", drop)
	c.SysProcAttr = u.SysProcAttr()
	c.Stdin = strings.NewReader(forged)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("writing the drop file as %s: %v\n%s", u.Name, err, out)
	}
	m := bySubject(t, deliveredTo(t, e, "joe", 1), "forged by hand")
	want := fmt.Sprintf("Received: (from %s uid %d) by mx.example.test (letterbox sendmail);", u.Name, u.UID)
	if r := firstReceived(m); !strings.HasPrefix(r, want) {
		t.Fatalf("first Received %q, want %q…\n%s", r, want, m)
	}
	if !strings.Contains(m, "\r\nX-Authentication-Warning: mx.example.test: "+u.Name+" set sender to root@mx.example.test using -f\r\n") {
		t.Fatalf("no warning:\n%s", m)
	}
	if _, err := os.Lstat(drop); err == nil {
		t.Fatal("drop file left after the pass")
	}
}

// An unknown local recipient is not the client's to find (it cannot read
// the users file): queue-runner's delivery bounces it to the sender.
func TestSendmailOrdinaryUserUnknownRecipient(t *testing.T) {
	u := privseptest.NewUser(t)
	e := privateEnv(t)
	if out, code := e.as(u, "Subject: lost\n\nx\n", "sendmail", "-f", "joe@example.test", "nobody@example.test"); code != 0 {
		t.Fatalf("sendmail: exit %d\n%s", code, out)
	}
	// root's sendmail still checks, before queueing anything.
	if _, errs, code := e.run("Subject: lost\n\nx\n", "sendmail", "nobody@example.test"); code != 67 {
		t.Fatalf("root's sendmail to an unknown user: exit %d %s", code, errs)
	}
	m := deliveredTo(t, e, "joe", 1)[0]
	if !strings.Contains(m, "nobody@example.test") || !strings.Contains(m, "multipart/report") {
		t.Fatalf("no bounce for the unknown recipient:\n%s", m)
	}
}
