package tests

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"letterbox/pkg/privsep/privseptest"
)

// POP3 sessions as the mailbox's owner (issue 15): pop3d runs as root and
// serves mailboxes in users' home directories, each session in a process
// running as the owner; nothing in a maildrop is followed through a
// symlink, and only regular files are read, whoever serves it.

// ownerEnv is a pop3d installation whose users have their mailboxes in the
// home directories of throw-away system users.
type ownerEnv struct {
	*env
	lines []string // users file lines
}

func newOwnerEnv(t *testing.T, extra ...string) *ownerEnv {
	t.Helper()
	e := newEnv(t, append([]string{`auth-failure-delay = "10ms"`}, extra...)...)
	openTo(t, e)
	return &ownerEnv{env: e}
}

// add puts addr (password "pw") in the users file with u's home, and
// mail= extra when given ("mbox:~/mbox").
func (o *ownerEnv) add(addr string, u privseptest.User, mail string) {
	l := fmt.Sprintf("%s:{PLAIN}pw::::%s::", addr, u.Home)
	if mail != "" {
		l += "mail=" + mail
	}
	o.lines = append(o.lines, l)
	must(o.t, os.WriteFile(o.Users, []byte(strings.Join(o.lines, "\n")+"\n"), 0o644))
}

// userMaildir makes ~/Maildir for u with the messages given (name →
// content, names relative to the Maildir), all owned by u.
func userMaildir(t *testing.T, u privseptest.User, msgs map[string]string) string {
	t.Helper()
	md := u.Path("Maildir")
	for _, sub := range []string{"new", "cur", "tmp"} {
		must(t, os.MkdirAll(filepath.Join(md, sub), 0o700))
	}
	for name, m := range msgs {
		must(t, os.WriteFile(filepath.Join(md, name), []byte(m), 0o600))
	}
	u.Chown(t, md)
	return md
}

// rootSecret writes a file only root may read, in a directory only root
// may enter, and returns its path and content.
func rootSecret(t *testing.T, name string) (string, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "root-only")
	must(t, os.Mkdir(dir, 0o700))
	content := "From: root@example.test\nSubject: root's secret " + name + "\n\nssh-ed25519 AAAA root's key\n"
	p := filepath.Join(dir, name)
	must(t, os.WriteFile(p, []byte(content), 0o600))
	return p, content
}

// sessionChildren returns the pids of the processes pop3d (pid) started.
func sessionChildren(t *testing.T, pid int) []int {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	must(t, err)
	var out []int
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			out = append(out, n)
		}
	}
	return out
}

// oneSessionProcess waits until pop3d has exactly one session process and
// returns its pid.
func oneSessionProcess(t *testing.T, s *server) int {
	t.Helper()
	var kids []int
	waitFor(t, 10*time.Second, "one session process under pop3d", func() bool {
		kids = sessionChildren(t, s.Cmd.Process.Pid)
		return len(kids) == 1
	})
	return kids[0]
}

func fileOwner(t *testing.T, p string) uint32 {
	t.Helper()
	fi, err := os.Lstat(p)
	must(t, err)
	return fi.Sys().(*syscall.Stat_t).Uid
}

// Started as root, pop3d serves alice's session (Maildir in her home) in a
// process with her uid, gid and groups, plaintext (the socket itself passed)
// and over pop3s (the parent keeps TLS and proxies); what the session
// writes belongs to her; one log line ends each session.
func TestPOP3SessionAsOwner(t *testing.T) {
	alice := privseptest.NewUser(t)
	dir := t.TempDir()
	o := newOwnerEnv(t, pop3TLS(t, dir)...)
	o.add("alice@example.test", alice, "")
	msg := pop3Msg("mine", "hello\n")
	md := userMaildir(t, alice, map[string]string{"new/1700000001.M1P1Q1.host": msg})
	for _, mode := range []string{"pop3", "pop3s"} {
		t.Run(mode, func(t *testing.T) {
			s := o.start("pop3d", mode)
			var d *dialog
			if mode == "pop3s" {
				c, err := tls.Dial("tcp", s.Addr, &tls.Config{InsecureSkipVerify: true})
				must(t, err)
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				d = &dialog{t: t, conn: c, r: bufio.NewReader(c)}
			} else {
				d = dial(t, s.Addr)
			}
			pop3Expect(d, "+OK")
			// PASS and STAT in one write: STAT is already read by the
			// parent when it hands the session over, and still answered.
			d.raw("USER alice@example.test\r\nPASS pw\r\nSTAT\r\n")
			pop3Expect(d, "+OK")
			pop3Expect(d, "+OK maildrop has 1 messages")
			pop3Expect(d, fmt.Sprintf("+OK 1 %d", len(crlf(msg))))
			checkProcCred(t, oneSessionProcess(t, s), alice)
			d.send("RETR 1")
			pop3Expect(d, "+OK")
			if got := pop3Multi(d); got != crlf(msg) {
				t.Fatalf("RETR: %q", got)
			}
			d.send("QUIT")
			pop3Expect(d, "+OK")
			waitFor(t, 10*time.Second, "the session process to exit", func() bool { return len(sessionChildren(t, s.Cmd.Process.Pid)) == 0 })
			s.stop()
			if n := strings.Count(s.Log(), `msg="session end" cmd=pop3d remote=`+d.conn.LocalAddr().String()); n != 1 {
				t.Errorf("%d session end lines for one session:\n%s", n, s.Log())
			}
			if !strings.Contains(s.Log(), fmt.Sprintf(" uid=%d ", alice.UID)) {
				t.Errorf("login line does not name the owner's uid:\n%s", s.Log())
			}
		})
	}
	// Files the sessions made (the lock, the size cache for a name
	// without sizes) and the renamed message are alice's.
	for _, p := range []string{filepath.Join(md, "letterbox-pop3.lock"), filepath.Join(md, "letterbox-pop3.sizes")} {
		if uid := fileOwner(t, p); uid != alice.UID {
			t.Errorf("%s owned by uid %d, want alice's %d", p, uid, alice.UID)
		}
	}
	if files := maildirFiles(t, md, "cur"); len(files) != 1 || fileOwner(t, files[0]) != alice.UID {
		t.Errorf("cur/: %v", files)
	}
}

// inetd mode: one session on stdin/stdout; after login the whole process
// becomes the owner.
func TestPOP3StdioSwitchesToOwner(t *testing.T) {
	alice := privseptest.NewUser(t)
	o := newOwnerEnv(t)
	o.add("alice@example.test", alice, "")
	userMaildir(t, alice, map[string]string{"new/1700000001.M1P1Q1.host": pop3Msg("one", "x\n")})
	c, stdin, out := pop3Stdio(t, o.env)
	defer func() { c.Process.Kill(); c.Wait() }()
	fmt.Fprint(stdin, "USER alice@example.test\r\nPASS pw\r\nSTAT\r\n")
	waitFor(t, 10*time.Second, "STAT's reply", func() bool { return strings.Contains(out.String(), "+OK 1 ") })
	checkProcCred(t, c.Process.Pid, alice)
	fmt.Fprint(stdin, "QUIT\r\n")
	stdin.Close()
	if err := c.Wait(); err != nil {
		t.Fatalf("pop3d: %v\n%s", err, out.String())
	}
}

// SIGTERM ends sessions served by children too, within 5 s, without
// UPDATE.
func TestPOP3SIGTERMSessionProcess(t *testing.T) {
	alice := privseptest.NewUser(t)
	o := newOwnerEnv(t)
	o.add("alice@example.test", alice, "")
	md := userMaildir(t, alice, map[string]string{"new/1700000001.M1P1Q1.host": pop3Msg("one", "x\n")})
	s := o.start("pop3d", "")
	d := pop3Login(t, s.Addr, "alice@example.test", "pw")
	child := oneSessionProcess(t, s)
	pop3SIGTERM(t, s, d, md)
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child)); err == nil && !strings.Contains(string(st), ") Z ") {
		t.Fatalf("session process %d outlived pop3d", child)
	}
}

// pop3Stat logs in and returns the STAT reply, or the login's -ERR.
func pop3Stat(t *testing.T, addr, user string) (string, *dialog) {
	t.Helper()
	d := dial(t, addr)
	pop3Expect(d, "+OK")
	d.send("USER " + user)
	pop3Expect(d, "+OK")
	d.send("PASS pw")
	if l := d.line(); !strings.HasPrefix(l, "+OK") {
		return l, d
	}
	d.send("STAT")
	return d.line(), d
}

// retrAll retrieves every message of a logged-in session and returns
// them joined.
func retrAll(t *testing.T, d *dialog, n int) string {
	t.Helper()
	var all strings.Builder
	for i := 1; i <= n+1; i++ {
		d.send(fmt.Sprintf("RETR %d", i))
		if l := d.line(); strings.HasPrefix(l, "+OK") {
			all.WriteString(pop3Multi(d))
		}
	}
	return all.String()
}

// The attacks of issue 15 on a root pop3d, replayed by a user on their own
// maildrop, in both ways root serves one: in a session process as the
// owner (alice's home), and itself, for a mailbox that is root's (a
// virtual mailbox without mail-user), where only O_NOFOLLOW and the
// regular-file checks stand between the symlink and root's files.
func TestPOP3SymlinkAttacks(t *testing.T) {
	alice := privseptest.NewUser(t)
	for _, served := range []string{"owner", "root"} {
		t.Run(served, func(t *testing.T) {
			o := newOwnerEnv(t)
			var md string
			mine := pop3Msg("mine", "hello\n")
			msgs := map[string]string{"cur/1700000001.M1P1Q1.host,S=1,W=1:2,": "", "new/1700000002.M1P1Q1.host": mine}
			if served == "owner" {
				o.add("alice@example.test", alice, "")
				md = userMaildir(t, alice, msgs)
			} else {
				o.lines = append(o.lines, "alice@example.test:{PLAIN}pw::::::")
				must(t, os.WriteFile(o.Users, []byte(strings.Join(o.lines, "\n")+"\n"), 0o644))
				md = filepath.Join(o.MailRoot, "example.test", "alice")
				for _, sub := range []string{"new", "cur", "tmp"} {
					must(t, os.MkdirAll(filepath.Join(md, sub), 0o700))
				}
				for name, m := range msgs {
					must(t, os.WriteFile(filepath.Join(md, name), []byte(m), 0o600))
				}
			}
			// A message file that is a symlink to a root-only file (its
			// name even claims a size), and one without sizes in its name.
			secret, secretText := rootSecret(t, "message")
			link := filepath.Join(md, "cur", "1700000001.M1P1Q1.host,S=1,W=1:2,")
			must(t, os.Remove(link))
			must(t, os.Symlink(secret, link))
			secret2, _ := rootSecret(t, "message2")
			must(t, os.Symlink(secret2, filepath.Join(md, "cur", "1700000003.M1P1Q1.host:2,")))
			// The size cache's temporary file, a symlink to root's
			// authorized_keys; the cache itself, a symlink to a file
			// that must not be created.
			keys, keysText := rootSecret(t, "authorized_keys")
			must(t, os.Symlink(keys, filepath.Join(md, "letterbox-pop3.sizes.tmp")))
			nowhere := filepath.Join(filepath.Dir(keys), "created-by-pop3d")
			s := o.start("pop3d", "")
			stat, d := pop3Stat(t, s.Addr, "alice@example.test")
			if stat != fmt.Sprintf("+OK 1 %d", len(crlf(mine))) {
				t.Fatalf("STAT %q: only alice's one regular message may be listed", stat)
			}
			got := retrAll(t, d, 1)
			if strings.Contains(got, "root's") || got != crlf(mine) {
				t.Fatalf("served %q", got)
			}
			d.send("QUIT")
			pop3Expect(d, "+OK")
			cache := filepath.Join(md, "letterbox-pop3.sizes")
			waitFor(t, 10*time.Second, "the size cache", func() bool { _, err := os.Lstat(cache); return err == nil })
			if b, _ := os.ReadFile(keys); string(b) != keysText {
				t.Fatalf("the symlinked cache temp file's target was written: %q", b)
			}
			if b, _ := os.ReadFile(secret); string(b) != secretText {
				t.Fatalf("target changed: %q", b)
			}
			if fi, err := os.Lstat(cache); err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("size cache: %v %v", fi, err)
			}
			if !strings.Contains(s.Log(), "maildrop entries skipped") {
				t.Errorf("the skipped symlinks were not logged:\n%s", s.Log())
			}

			// The lock file as a symlink: to a file that does not exist
			// (it must not be created) and to root's file (unchanged).
			lock := filepath.Join(md, "letterbox-pop3.lock")
			for _, target := range []string{nowhere, keys} {
				os.Remove(lock)
				must(t, os.Symlink(target, lock))
				if l, _ := pop3Stat(t, s.Addr, "alice@example.test"); !strings.HasPrefix(l, "-ERR [SYS/PERM]") {
					t.Fatalf("lock symlinked to %s: %q", target, l)
				}
			}
			if _, err := os.Lstat(nowhere); err == nil {
				t.Fatal("the symlinked lock's target was created")
			}
			if b, _ := os.ReadFile(keys); string(b) != keysText {
				t.Fatalf("the symlinked lock's target changed: %q", b)
			}
		})
	}
}

// ~/mbox as a symlink to another mbox (/var/mail/root), as a hard link, or
// owned by someone else: never served.
func TestPOP3MboxNotTheOwners(t *testing.T) {
	alice := privseptest.NewUser(t)
	o := newOwnerEnv(t)
	o.add("alice@example.test", alice, "mbox:~/mbox")
	s := o.start("pop3d", "")
	rootMbox, _ := rootSecret(t, "mbox")
	rootText := mboxRecord(pop3Msg("root's mail", "secret\n"))
	must(t, os.WriteFile(rootMbox, []byte(rootText), 0o600))
	mbox := alice.Path("mbox")
	cases := []struct {
		name  string
		setup func()
	}{
		{"symlink to root's mbox", func() { must(t, os.Symlink(rootMbox, mbox)) }},
		{"hard link to root's mbox", func() { must(t, os.Link(rootMbox, mbox)) }},
		{"alice's hard link to her own other file", func() {
			other := alice.Path("other")
			must(t, os.WriteFile(other, []byte(mboxRecord(pop3Msg("mine", "x\n"))), 0o600))
			alice.Chown(t, other)
			must(t, os.Link(other, mbox))
		}},
		{"owned by root", func() { must(t, os.WriteFile(mbox, []byte(mboxRecord(pop3Msg("planted", "x\n"))), 0o600)) }},
	}
	for _, c := range cases {
		os.Remove(mbox)
		os.Remove(alice.Path("other"))
		c.setup()
		if l, _ := pop3Stat(t, s.Addr, "alice@example.test"); !strings.HasPrefix(l, "-ERR") {
			t.Errorf("%s: served: %q", c.name, l)
		}
		if b, _ := os.ReadFile(rootMbox); string(b) != rootText {
			t.Fatalf("%s: root's mbox changed: %q", c.name, b)
		}
	}
	// Her own regular mbox is served.
	os.Remove(mbox)
	must(t, os.WriteFile(mbox, []byte(mboxRecord(pop3Msg("mine", "x\n"))), 0o600))
	alice.Chown(t, mbox)
	if l, _ := pop3Stat(t, s.Addr, "alice@example.test"); !strings.HasPrefix(l, "+OK 1 ") {
		t.Fatalf("her own mbox: %q", l)
	}
}

// One user's symlink to another user's message is served to neither the
// wrong user nor anyone: whether pop3d runs as a mail user that can read
// both (--user, virtual mailboxes) or as root with a session process per
// owner.
func TestPOP3SymlinkToAnotherUsersMessage(t *testing.T) {
	bob := privseptest.NewUser(t)
	bobMsg := pop3Msg("for bob only", "bob's secret\n")

	t.Run("sessions as owners", func(t *testing.T) {
		alice := privseptest.NewUser(t)
		o := newOwnerEnv(t)
		o.add("alice@example.test", alice, "")
		o.add("bob@example.test", bob, "")
		md := userMaildir(t, alice, nil)
		bmd := userMaildir(t, bob, map[string]string{"cur/1700000009.M1P1Q1.host:2,": bobMsg})
		must(t, os.Symlink(filepath.Join(bmd, "cur", "1700000009.M1P1Q1.host:2,"), filepath.Join(md, "cur", "1700000010.M1P1Q1.host:2,")))
		s := o.start("pop3d", "")
		stat, d := pop3Stat(t, s.Addr, "alice@example.test")
		if stat != "+OK 0 0" || strings.Contains(retrAll(t, d, 0), "bob") {
			t.Fatalf("alice's STAT %q", stat)
		}
	})

	t.Run("--user mail user", func(t *testing.T) {
		vmail := privseptest.NewUser(t)
		e := newEnv(t, `auth-failure-delay = "10ms"`)
		openTo(t, e)
		must(t, os.WriteFile(e.Users, []byte("alice@example.test:{PLAIN}pw::::::\nbob@example.test:{PLAIN}pw::::::\n"), 0o644))
		root := filepath.Join(e.MailRoot, "example.test")
		for _, u := range []string{"alice", "bob"} {
			for _, sub := range []string{"new", "cur", "tmp"} {
				must(t, os.MkdirAll(filepath.Join(root, u, sub), 0o700))
			}
		}
		bobFile := filepath.Join(root, "bob", "cur", "1700000009.M1P1Q1.host:2,")
		must(t, os.WriteFile(bobFile, []byte(bobMsg), 0o600))
		must(t, os.Symlink(bobFile, filepath.Join(root, "alice", "cur", "1700000010.M1P1Q1.host,S=1,W=1:2,")))
		vmail.Chown(t, e.MailRoot)
		s := e.start("pop3d", "", "--user", vmail.Name)
		stat, d := pop3Stat(t, s.Addr, "alice@example.test")
		if stat != "+OK 0 0" || strings.Contains(retrAll(t, d, 0), "bob") {
			t.Fatalf("alice's STAT %q", stat)
		}
		// bob still gets his.
		stat, _ = pop3Stat(t, s.Addr, "bob@example.test")
		if !strings.HasPrefix(stat, "+OK 1 ") {
			t.Fatalf("bob's STAT %q", stat)
		}
	})
}

// Whom a session runs as: the users file's uid and gid; else (virtual
// mailboxes) mail-user; and a pop3d that is neither root nor the owner
// refuses the login.
func TestPOP3OwnerRules(t *testing.T) {
	alice := privseptest.NewUser(t)
	vmail := privseptest.NewUser(t)
	virtual := func(e *env) string {
		md := filepath.Join(e.MailRoot, "example.test", "alice")
		for _, sub := range []string{"new", "cur", "tmp"} {
			must(t, os.MkdirAll(filepath.Join(md, sub), 0o700))
		}
		must(t, os.WriteFile(filepath.Join(md, "new", "1700000001.M1P1Q1.host"), []byte(pop3Msg("one", "x\n")), 0o600))
		return md
	}
	sessionAs := func(t *testing.T, e *env, want privseptest.User, args ...string) {
		t.Helper()
		s := e.start("pop3d", "", args...)
		stat, d := pop3Stat(t, s.Addr, "alice@example.test")
		if !strings.HasPrefix(stat, "+OK 1 ") {
			t.Fatalf("STAT %q", stat)
		}
		checkProcCred(t, oneSessionProcess(t, s), want)
		d.send("QUIT")
		pop3Expect(d, "+OK")
	}
	t.Run("users file uid and gid", func(t *testing.T) {
		e := newEnv(t, `auth-failure-delay = "10ms"`)
		openTo(t, e)
		must(t, os.WriteFile(e.Users, []byte(fmt.Sprintf("alice@example.test:{PLAIN}pw:%d:%d::::\n", alice.UID, alice.GID)), 0o644))
		virtual(e)
		must(t, os.Chmod(e.MailRoot, 0o755))
		alice.Chown(t, filepath.Join(e.MailRoot, "example.test"))
		sessionAs(t, e, alice)
	})
	t.Run("mail-user", func(t *testing.T) {
		e := newEnv(t, `auth-failure-delay = "10ms"`, fmt.Sprintf("mail-user = %q", vmail.Name))
		openTo(t, e)
		must(t, os.WriteFile(e.Users, []byte("alice@example.test:{PLAIN}pw::::::\n"), 0o644))
		virtual(e)
		vmail.Chown(t, e.MailRoot)
		sessionAs(t, e, vmail)
	})
	t.Run("neither root nor the owner", func(t *testing.T) {
		e := newEnv(t, `auth-failure-delay = "10ms"`)
		openTo(t, e)
		must(t, os.WriteFile(e.Users, []byte(fmt.Sprintf("alice@example.test:{PLAIN}pw:%d:%d::::\n", alice.UID, alice.GID)), 0o644))
		virtual(e)
		vmail.Chown(t, e.MailRoot)
		s := e.start("pop3d", "", "--user", vmail.Name)
		if l, _ := pop3Stat(t, s.Addr, "alice@example.test"); !strings.HasPrefix(l, "-ERR [SYS/PERM]") {
			t.Fatalf("login to another owner's maildrop: %q", l)
		}
	})
}

// A session process that dies has its session's end logged by pop3d; the
// client's connection is closed and pop3d goes on serving.
func TestPOP3SessionProcessDies(t *testing.T) {
	alice := privseptest.NewUser(t)
	o := newOwnerEnv(t)
	o.add("alice@example.test", alice, "")
	userMaildir(t, alice, map[string]string{"new/1700000001.M1P1Q1.host": pop3Msg("one", "x\n")})
	s := o.start("pop3d", "")
	stat, d := pop3Stat(t, s.Addr, "alice@example.test")
	if !strings.HasPrefix(stat, "+OK 1 ") {
		t.Fatal(stat)
	}
	must(t, syscall.Kill(oneSessionProcess(t, s), syscall.SIGKILL))
	if l, err := d.r.ReadString('\n'); err == nil {
		t.Fatalf("connection open after its session process died: %q", l)
	}
	waitFor(t, 10*time.Second, "pop3d's line for the dead session", func() bool {
		return strings.Contains(s.Log(), "reason=session-process-failed")
	})
	if stat, _ := pop3Stat(t, s.Addr, "alice@example.test"); !strings.HasPrefix(stat, "+OK 1 ") {
		t.Fatalf("after the death: %q", stat)
	}
}

// Clients nobody here wrote, against sessions served by a session process:
// Python's poplib (every command, then deletion) and curl.
func TestPOP3ClientsOwnerSession(t *testing.T) {
	alice := privseptest.NewUser(t)
	o := newOwnerEnv(t)
	o.add("alice@example.test", alice, "")
	msgs := []string{pop3Msg("p1", "first\n.dot line\n"), pop3Msg("p2", "second\r\nwith CRLF\r\n")}
	md := userMaildir(t, alice, map[string]string{"new/1700000001.M1P1Q1.host": msgs[0], "new/1700000002.M1P1Q1.host": msgs[1]})
	s := o.start("pop3d", "")
	out, err := bounded(t, exec.Command("curl", "-sS", "--max-time", "20", "-u", "alice@example.test:pw", "pop3://"+s.Addr+"/2")).CombinedOutput()
	if err != nil || string(out) != crlf(msgs[1]) {
		t.Fatalf("curl RETR 2: %v %q", err, out)
	}
	checkPy(t, runPyPOP3(t, s.Addr, "alice@example.test", "pw", "keep"), msgs)
	checkPy(t, runPyPOP3(t, s.Addr, "alice@example.test", "pw", "delete"), msgs)
	if n := len(maildirFiles(t, md, "cur")) + len(maildirFiles(t, md, "new")); n != 0 {
		t.Fatalf("%d messages left after poplib's DELE and QUIT", n)
	}
}
