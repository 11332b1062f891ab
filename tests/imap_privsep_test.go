package tests

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"letterbox/pkg/privsep/privseptest"
)

// IMAP sessions as the mailbox's owner (DESIGN.md § Guarantees): imapd
// runs as root and serves Maildirs in users' home directories, each
// session after login in a process running as the owner, as pop3d's.

// Started as root, imapd serves alice's session (Maildir in her home) in a
// process with her uid, gid and groups, plaintext (the socket passed) and
// over imaps (the parent keeps TLS and proxies); what the session writes
// belongs to her.
func TestIMAPSessionAsOwner(t *testing.T) {
	alice := privseptest.NewUser(t)
	dir := t.TempDir()
	o := newOwnerEnv(t, pop3TLS(t, dir)...)
	o.add("alice@example.test", alice, "")
	md := userMaildir(t, alice, map[string]string{"new/1700000001.M1P1Q1.host": pop3Msg("mine", "hello\n")})
	for _, mode := range []string{"imap", "imaps"} {
		t.Run(mode, func(t *testing.T) {
			s := o.start("imapd", mode)
			var c *imapConn
			if mode == "imaps" {
				tc, err := tls.Dial("tcp", s.Addr, &tls.Config{InsecureSkipVerify: true})
				must(t, err)
				defer tc.Close()
				tc.SetDeadline(time.Now().Add(30 * time.Second))
				c = &imapConn{t: t, conn: tc, r: bufio.NewReader(tc)}
				c.line()
			} else {
				c = imapDial(t, s.Addr)
			}
			// LOGIN and SELECT in one write: SELECT is already read by the
			// parent when it hands the session over, and still answered.
			c.raw("a LOGIN alice@example.test pw\r\nb SELECT INBOX\r\n")
			if _, tagged := c.until("a"); !strings.HasPrefix(tagged, "OK [CAPABILITY") {
				t.Fatalf("LOGIN: %q", tagged)
			}
			un, tagged := c.until("b")
			if !strings.HasPrefix(tagged, "OK [READ-WRITE]") {
				t.Fatalf("SELECT: %q %q", tagged, un)
			}
			hasLine(t, un, "* 1 EXISTS")
			checkProcCred(t, oneSessionProcess(t, s), alice)
			c.ok("APPEND Sent {12}\r\nSubject: x\r\n")
			hasLine(t, c.ok("FETCH 1 BODY[]"), "Subject: mine")
			c.ok("LOGOUT")
			waitFor(t, 10*time.Second, "the session process to exit", func() bool { return len(sessionChildren(t, s.Cmd.Process.Pid)) == 0 })
			s.stop()
			if n := strings.Count(s.Log(), `msg="session end" cmd=imapd remote=`+c.conn.LocalAddr().String()); n != 1 {
				t.Errorf("%d session end lines for one session:\n%s", n, s.Log())
			}
			if !strings.Contains(s.Log(), fmt.Sprintf(" uid=%d", alice.UID)) {
				t.Errorf("login line does not name the owner's uid:\n%s", s.Log())
			}
		})
	}
	// What the sessions made belongs to alice: the uidlist, the folders,
	// the appended and the renamed (\Seen) messages.
	for _, p := range []string{"dovecot-uidlist", ".Sent", ".Sent/cur", ".Trash"} {
		if uid := fileOwner(t, md+"/"+p); uid != alice.UID {
			t.Errorf("%s owned by uid %d, want alice's %d", p, uid, alice.UID)
		}
	}
	for _, sub := range []string{"cur", ".Sent/cur"} {
		files := append(maildirFiles(t, md, sub), maildirFiles(t, md, strings.Replace(sub, "cur", "new", 1))...)
		if len(files) == 0 {
			t.Errorf("%s: empty", sub)
		}
		for _, f := range files {
			if fileOwner(t, f) != alice.UID {
				t.Errorf("%s not alice's", f)
			}
		}
	}
}

// inetd mode: one session on stdin/stdout; after login the whole process
// becomes the owner.
func TestIMAPStdioSwitchesToOwner(t *testing.T) {
	alice := privseptest.NewUser(t)
	o := newOwnerEnv(t)
	o.add("alice@example.test", alice, "")
	userMaildir(t, alice, map[string]string{"new/1700000001.M1P1Q1.host": pop3Msg("one", "x\n")})
	c := o.cmd("imapd", "--allow-insecure-auth")
	stdin, err := c.StdinPipe()
	must(t, err)
	var out syncBuffer
	c.Stdout, c.Stderr = &out, &out
	must(t, c.Start())
	defer func() { c.Process.Kill(); c.Wait() }()
	fmt.Fprint(stdin, "a LOGIN alice@example.test pw\r\nb STATUS INBOX (MESSAGES)\r\n")
	waitFor(t, 10*time.Second, "STATUS's answer", func() bool { return strings.Contains(out.String(), "b OK") })
	if !strings.Contains(out.String(), "* STATUS INBOX (MESSAGES 1)") {
		t.Fatalf("stdio session: %s", out.String())
	}
	checkProcCred(t, c.Process.Pid, alice)
	fmt.Fprint(stdin, "c LOGOUT\r\n")
	stdin.Close()
	if err := c.Wait(); err != nil {
		t.Fatalf("imapd: %v\n%s", err, out.String())
	}
}

// SIGTERM ends sessions served by children too, with BYE, within 5 s.
func TestIMAPSIGTERMSessionProcess(t *testing.T) {
	alice := privseptest.NewUser(t)
	o := newOwnerEnv(t)
	o.add("alice@example.test", alice, "")
	userMaildir(t, alice, map[string]string{"new/1700000001.M1P1Q1.host": pop3Msg("one", "x\n")})
	s := o.start("imapd", "")
	c := imapDial(t, s.Addr)
	c.ok("LOGIN alice@example.test pw")
	c.ok("SELECT INBOX")
	c.raw("i IDLE\r\n")
	c.line()
	child := oneSessionProcess(t, s)
	start := time.Now()
	s.Cmd.Process.Signal(syscall.SIGTERM)
	if l := c.line(); !strings.HasPrefix(l, "* BYE") {
		t.Fatalf("after SIGTERM: %q", l)
	}
	done := make(chan error, 1)
	go func() { done <- s.Cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("imapd still running 5 s after SIGTERM")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stop took %v", d)
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child)); err == nil && !strings.Contains(string(st), ") Z ") {
		t.Fatalf("session process %d outlived imapd", child)
	}
}

// Not root and not the mailbox's owner (imapd --user nobody, the users
// file naming another uid): the login gets NO [UNAVAILABLE] and nothing
// is touched. An mbox user is pop3d's only: NO [UNAVAILABLE] too.
func TestIMAPNotOwner(t *testing.T) {
	alice := privseptest.NewUser(t)
	o := newOwnerEnv(t)
	md := userMaildir(t, alice, map[string]string{"new/1700000001.M1P1Q1.host": pop3Msg("one", "x\n")})
	o.lines = append(o.lines, fmt.Sprintf("alice@example.test:{PLAIN}pw:%d:%d:::", alice.UID, alice.GID)+":mail=maildir:"+md,
		"bob@example.test:{PLAIN}pw::::::mail=mbox:"+alice.Path("mbox"))
	must(t, os.WriteFile(o.Users, []byte(strings.Join(o.lines, "\n")+"\n"), 0o644))
	s := o.start("imapd", "", "--user", "nobody")
	for _, u := range []string{"alice", "bob"} {
		c := imapDial(t, s.Addr)
		c.expect("LOGIN "+u+"@example.test pw", "NO [UNAVAILABLE]")
	}
	if _, err := os.Stat(md + "/dovecot-uidlist"); !os.IsNotExist(err) {
		t.Fatalf("the Maildir was touched: %v", err)
	}
	for _, why := range []string{"imapd runs as", "served by pop3d only"} {
		if !waitForLog(s, why) {
			t.Errorf("no %q in the log:\n%s", why, s.Log())
		}
	}
}
