//go:build interop

package tests

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pop3Nobody returns a command line prefix that runs a program as nobody
// when we are root (getmail and Dovecot refuse to deliver as root), and a
// function that hands a path to that user.
func pop3Nobody(t *testing.T) ([]string, func(string)) {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil, func(string) {}
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal("no user nobody to run the clients that refuse root")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		t.Fatal("no group for nobody")
	}
	chown := func(p string) {
		filepath.Walk(p, func(path string, _ os.FileInfo, err error) error {
			if err == nil {
				os.Lchown(path, uid, gid)
			}
			return nil
		})
	}
	return []string{"setpriv", "--reuid=" + u.Username, "--regid=" + g.Name, "--clear-groups"}, chown
}

// pop3OpenDir is a temp dir others can traverse (t.TempDir is 0700).
func pop3OpenDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "letterbox-pop3-interop-")
	must(t, err)
	must(t, os.Chmod(d, 0o755))
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func pop3Need(t *testing.T, progs ...string) {
	t.Helper()
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s not installed (tests/interop/packages.txt; make interop installs it)", p)
		}
	}
}

func pop3Run(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, name, args...)
	c.Env = append(os.Environ(), env...)
	out, err := c.CombinedOutput()
	return string(out), err
}

func pop3InteropMaildir(t *testing.T, pe *pop3Env, n int) []string {
	var msgs []string
	for i := 1; i <= n; i++ {
		m := pop3Msg(fmt.Sprintf("interop%d", i), fmt.Sprintf("body %d\n.dot line\nFrom here\n", i))
		pe.putMaildir("new", fmt.Sprintf("17000000%02d.M1P1Q%d.host", i, i), m)
		msgs = append(msgs, m)
	}
	return msgs
}

func pop3Count(pe *pop3Env) int {
	return len(maildirFiles(pe.t, pe.Maildir, "new")) + len(maildirFiles(pe.t, pe.Maildir, "cur"))
}

func TestInteropPOP3Fetchmail(t *testing.T) {
	pop3Need(t, "fetchmail")
	pe := newPOP3Env(t)
	pop3InteropMaildir(t, pe, 3)
	s := pe.start("pop3d", "")
	host, port, _ := net.SplitHostPort(s.Addr)
	home := t.TempDir()
	out := filepath.Join(home, "out.mbox")
	rc := func(keep string) string {
		p := filepath.Join(home, "fetchmailrc")
		must(t, os.WriteFile(p, []byte(fmt.Sprintf(`set no syslog
poll %s port %s proto pop3 uidl auth password user "alice@example.test" password "alice pw" sslproto "" %s mda "cat >> %s"
`, host, port, keep, out)), 0o600))
		return p
	}
	env := []string{"FETCHMAILHOME=" + home}
	// keep: everything fetched, nothing deleted; a second run sees the
	// same UIDLs and fetches nothing (fetchmail exit 1: no mail).
	if o, err := pop3Run(t, env, "fetchmail", "-f", rc("keep")); err != nil {
		t.Fatalf("fetchmail keep: %v\n%s\n%s", err, o, s.Log())
	}
	got, _ := os.ReadFile(out)
	if strings.Count(string(got), "Subject: interop") != 3 || !strings.Contains(string(got), "\n.dot line\n") {
		t.Fatalf("fetchmail delivered:\n%s", got)
	}
	if pop3Count(pe) != 3 {
		t.Fatal("keep deleted messages")
	}
	o, err := pop3Run(t, env, "fetchmail", "-f", rc("keep"))
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("second fetchmail run should find no new mail: %v\n%s", err, o)
	}
	// nokeep with fetchall: fetched again and deleted on the server.
	os.Remove(out)
	if o, err := pop3Run(t, env, "fetchmail", "-f", rc("nokeep fetchall")); err != nil {
		t.Fatalf("fetchmail nokeep: %v\n%s", err, o)
	}
	got, _ = os.ReadFile(out)
	if strings.Count(string(got), "Subject: interop") != 3 {
		t.Fatalf("fetchmail nokeep delivered:\n%s", got)
	}
	if n := pop3Count(pe); n != 0 {
		t.Fatalf("%d messages left after fetchmail nokeep", n)
	}
}

func TestInteropPOP3Getmail(t *testing.T) {
	pop3Need(t, "getmail")
	prefix, chown := pop3Nobody(t)
	if prefix != nil {
		pop3Need(t, "setpriv")
	}
	pe := newPOP3Env(t)
	pop3InteropMaildir(t, pe, 3)
	s := pe.start("pop3d", "")
	host, port, _ := net.SplitHostPort(s.Addr)
	dir := pop3OpenDir(t)
	dest := filepath.Join(dir, "dest")
	for _, sub := range []string{"new", "cur", "tmp"} {
		must(t, os.MkdirAll(filepath.Join(dest, sub), 0o700))
	}
	rc := filepath.Join(dir, "getmailrc")
	run := func(del bool) string {
		t.Helper()
		must(t, os.WriteFile(rc, []byte(fmt.Sprintf(`[retriever]
type = SimplePOP3Retriever
server = %s
port = %s
username = alice@example.test
password = alice pw

[destination]
type = Maildir
path = %s/

[options]
delete = %v
read_all = false
`, host, port, dest, del)), 0o600))
		chown(dir)
		args := append(append([]string{}, prefix...), "env", "HOME="+dir, "getmail", "--rcfile", rc, "--getmaildir", dir)
		o, err := pop3Run(t, nil, args[0], args[1:]...)
		if err != nil {
			t.Fatalf("getmail: %v\n%s\n%s", err, o, s.Log())
		}
		return o
	}
	if o := run(false); !strings.Contains(o, "3 messages") {
		t.Fatalf("getmail keep: %s", o)
	}
	if n := len(maildirFiles(t, dest, "new")); n != 3 || pop3Count(pe) != 3 {
		t.Fatalf("getmail keep: %d delivered, %d left on server", n, pop3Count(pe))
	}
	// Stable UIDLs: the second run skips all three.
	if o := run(false); !strings.Contains(o, "0 messages") || !strings.Contains(o, "3 skipped") {
		t.Fatalf("getmail second run: %s", o)
	}
	// delete = true removes what was already seen, too (getmail deletes
	// every message it has retrieved before).
	run(true)
	if n := pop3Count(pe); n != 0 {
		t.Fatalf("%d messages left after getmail delete", n)
	}
	for _, f := range maildirFiles(t, dest, "new") {
		b, _ := os.ReadFile(f)
		if !strings.Contains(string(b), "\n.dot line\n") || strings.Contains(string(b), "\r\n") {
			t.Errorf("getmail message %s:\n%s", f, b)
		}
	}
}

func TestInteropPOP3Mutt(t *testing.T) {
	pop3Need(t, "mutt", "script")
	pe := newPOP3Env(t)
	pop3InteropMaildir(t, pe, 3)
	s := pe.start("pop3d", "")
	dir := t.TempDir()
	muttrc := filepath.Join(dir, "muttrc")
	// Every path mutt checks at startup exists or is set, under a HOME of
	// the test's own: a prompt (mutt asks to create a missing ~/Mail, as
	// on a fresh machine) would eat the first pushed key, and the tagging
	// with it.
	must(t, os.WriteFile(muttrc, []byte(`set folder="`+dir+`"
set spoolfile="`+dir+`/spool"
set mbox="`+dir+`/mbox"
set postponed="`+dir+`/postponed"
set record=""
set sleep_time=0
set pop_user="alice@example.test"
set pop_pass="alice pw"
set ssl_starttls=no
set ssl_force_tls=no
set confirmcreate=no
set confirmappend=no
set mbox_type=mbox
set delete=yes
set quit=yes
set move=no
set wait_key=no
set header_cache=""
set message_cachedir=""
`), 0o600))
	out := filepath.Join(dir, "copied.mbox")
	mutt := func(keys string) {
		t.Helper()
		cmd := fmt.Sprintf(`mutt -n -F %s -f pop://alice%%40example.test@%s/ -e 'push "%s"'`, muttrc, s.Addr, keys)
		if o, err := pop3Run(t, []string{"HOME=" + dir, "TERM=xterm", "LINES=24", "COLUMNS=80", "MAIL=" + dir + "/spool"},
			"script", "-qec", cmd, "/dev/null"); err != nil {
			t.Fatalf("mutt: %v\n%s\n%s", err, o, s.Log())
		}
	}
	mutt("<tag-pattern>~A<enter><tag-prefix><copy-message>" + out + "<enter><quit>")
	got, _ := os.ReadFile(out)
	if strings.Count(string(got), "Subject: interop") != 3 || !strings.Contains(string(got), "\n.dot line\n") {
		t.Fatalf("mutt copied:\n%s\n%s", got, s.Log())
	}
	if pop3Count(pe) != 3 {
		t.Fatal("reading with mutt deleted messages")
	}
	mutt("<tag-pattern>~s interop2<enter><tag-prefix><delete-message><sync-mailbox><quit>")
	if n := pop3Count(pe); n != 2 {
		t.Fatalf("after mutt deleted one: %d left\n%s", n, s.Log())
	}
}

// Our pop3d serves a Maildir that Dovecot's LDA wrote (its ,S=,W= names and
// its index files beside the messages), and Dovecot's pop3 still reads it
// after we deleted from it.
func TestInteropPOP3DovecotLDA(t *testing.T) {
	const lda, dpop3 = "/usr/lib/dovecot/dovecot-lda", "/usr/lib/dovecot/pop3"
	if _, err := os.Stat(lda); err != nil {
		t.Fatal("dovecot-lda not installed (dovecot-core in tests/interop/packages.txt)")
	}
	prefix, chown := pop3Nobody(t)
	dir := pop3OpenDir(t)
	md := filepath.Join(dir, "Maildir")
	conf := filepath.Join(dir, "dovecot.conf")
	must(t, os.WriteFile(conf, []byte("mail_location = maildir:"+md+"\nssl = no\nlog_path = /dev/stderr\n"), 0o644))
	chown(dir)
	msgs := []string{
		"From: a@example.org\nSubject: lda1\n\nfirst\n.dot\n",
		"From: a@example.org\nSubject: lda2\n\nsecond\r\nwith CRLF\r\n",
		"From: a@example.org\nSubject: lda3\n\n" + strings.Repeat("x", 1500) + "\n",
	}
	for _, m := range msgs {
		args := append(append([]string{}, prefix...), "env", "-i", "USER=nobody", "HOME="+dir, lda, "-c", conf, "-f", "a@example.org")
		c := exec.Command(args[0], args[1:]...)
		c.Stdin = strings.NewReader(m)
		if o, err := c.CombinedOutput(); err != nil {
			t.Fatalf("dovecot-lda: %v\n%s", err, o)
		}
	}
	pe := newPOP3Env(t)
	pe.Maildir = md
	must(t, os.WriteFile(pe.Users, []byte("alice@example.test:{PLAIN}alice pw::::::mail=maildir:"+md+"\n"), 0o600))
	s := pe.start("pop3d", "")
	r := runPyPOP3(t, s.Addr, "alice@example.test", "alice pw", "keep")
	// Dovecot's LDA stores what it was given; we send it with CRLF.
	checkPy(t, r, msgs)
	d := pop3Login(t, s.Addr, "alice@example.test", "alice pw")
	d.send("DELE 2")
	pop3Expect(d, "+OK")
	d.send("QUIT")
	pop3Expect(d, "+OK")
	if _, err := os.Stat(dpop3); err != nil {
		t.Fatal("Dovecot's pop3 not installed (dovecot-pop3d in tests/interop/packages.txt)")
	}
	chown(dir)
	args := append(append([]string{}, prefix...), "env", "-i", "USER=nobody", "HOME="+dir, dpop3, "-c", conf)
	c := exec.Command(args[0], args[1:]...)
	c.Stdin = strings.NewReader("STAT\r\nTOP 2 0\r\nQUIT\r\n")
	o, err := c.Output()
	if err != nil {
		t.Fatalf("dovecot pop3: %v\n%s", err, o)
	}
	want := fmt.Sprintf("+OK 2 %d", len(crlf(msgs[0]))+len(crlf(msgs[2])))
	if !strings.HasPrefix(string(o), want) || !strings.Contains(string(o), "Subject: lda3") {
		t.Fatalf("dovecot pop3 after our DELE: %q, want %q", o, want)
	}
}
