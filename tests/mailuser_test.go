package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// muExpect runs mailuser and fails unless it exits with code.
func (e *env) muExpect(code int, stdin string, args ...string) (string, string) {
	e.t.Helper()
	out, errs, got := e.run(stdin, "mailuser", args...)
	if got != code {
		e.t.Fatalf("mailuser %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), got, code, out, errs)
	}
	return out, errs
}

func TestMailuserLifecycle(t *testing.T) {
	e := newEnv(t)
	e.muExpect(0, "s3cret pass\n", "add", "Alice@Example.Test")
	users, _ := os.ReadFile(e.Users)
	if !strings.HasPrefix(string(users), "Alice@example.test:{BLF-CRYPT}$2") {
		t.Errorf("users file:\n%s", users)
	}
	fi, err := os.Stat(e.Users)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("users file mode: %v %v", fi.Mode(), err)
	}

	md := filepath.Join(e.MailRoot, "example.test", "Alice")
	for _, sub := range []string{"", "tmp", "new", "cur"} {
		fi, err := os.Stat(filepath.Join(md, sub))
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("Maildir %s/%s: %v %v", md, sub, fi, err)
		}
	}

	e.muExpect(0, "s3cret pass\n", "check", "alice@example.test")
	e.muExpect(0, "s3cret pass\r\n", "check", "ALICE@EXAMPLE.TEST")
	e.muExpect(1, "s3cret pasS\n", "check", "alice@example.test")
	e.muExpect(1, "s3cret pass\n", "check", "nobody@example.test")
	e.muExpect(1, "s3cret pass \n", "check", "alice@example.test")

	// Duplicates are refused, whatever the case.
	_, errs := e.muExpect(65, "other\n", "add", "alice@EXAMPLE.test")
	if !strings.Contains(errs, "already exists") {
		t.Errorf("duplicate message: %q", errs)
	}

	e.muExpect(0, "pw2\n", "add", "--scheme", "ARGON2ID", "bob@example.test")
	e.muExpect(0, "pw2\n", "check", "bob@example.test")
	e.muExpect(0, "pw3\n", "add", "--scheme", "SHA512-CRYPT", "carol@example.test")
	e.muExpect(0, "pw3\n", "check", "carol@example.test")
	e.muExpect(64, "pw\n", "add", "--scheme", "MD5", "dan@example.test")

	out, _ := e.muExpect(0, "", "list")
	if out != "Alice@example.test\nbob@example.test\ncarol@example.test\n" {
		t.Errorf("list:\n%s", out)
	}

	// passwd changes the password and keeps the rest of the line.
	os.WriteFile(e.Users, []byte(strings.Replace(string(muRead(t, e.Users)), "bob@example.test:", "# a comment\nbob@example.test:", 1)), 0o600)
	e.muExpect(0, "new pw\n", "passwd", "bob@example.test")
	e.muExpect(0, "new pw\n", "check", "bob@example.test")
	e.muExpect(1, "pw2\n", "check", "bob@example.test")
	if !strings.Contains(string(muRead(t, e.Users)), "# a comment\nbob@example.test:{BLF-CRYPT}") {
		t.Errorf("passwd lost the comment or the scheme:\n%s", muRead(t, e.Users))
	}
	e.muExpect(67, "x\n", "passwd", "nobody@example.test")

	// del keeps the mail and says so.
	out, _ = e.muExpect(0, "", "del", "alice@example.test")
	if !strings.Contains(out, "kept") || !strings.Contains(out, md) {
		t.Errorf("del output: %q", out)
	}
	if _, err := os.Stat(filepath.Join(md, "new")); err != nil {
		t.Errorf("del removed the Maildir: %v", err)
	}
	e.muExpect(1, "s3cret pass\n", "check", "alice@example.test")
	e.muExpect(67, "", "del", "alice@example.test")
	out, _ = e.muExpect(0, "", "list")
	if out != "bob@example.test\ncarol@example.test\n" {
		t.Errorf("list after del:\n%s", out)
	}
	ents, _ := os.ReadDir(e.Dir)
	for _, ent := range ents {
		if strings.Contains(ent.Name(), ".tmp") {
			t.Errorf("temporary file left behind: %s", ent.Name())
		}
	}
}

func TestMailuserRefuses(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		code  int
		stdin string
		args  []string
	}{
		{64, "", nil},
		{64, "", []string{"frobnicate"}},
		{64, "pw\n", []string{"add"}},
		{64, "pw\n", []string{"add", "a@example.test", "b@example.test"}},
		{65, "pw\n", []string{"add", "bob"}},
		{65, "pw\n", []string{"add", "bob@"}},
		{65, "pw\n", []string{"add", "bob smith@example.test"}},
		{65, "pw\n", []string{"add", "\"bob smith\"@example.test"}},
		{65, "pw\n", []string{"add", "bob:x@example.test"}},
		{65, "pw\n", []string{"add", "bob/../x@example.test"}},
		{65, "pw\n", []string{"add", "bob@exa_mple..test"}},
		{65, "pw\n", []string{"add", "<bob@example.test>"}},
		{65, "\n", []string{"add", "bob@example.test"}},
		{66, "", []string{"add", "bob@example.test"}},
		{65, strings.Repeat("x", 80) + "\n", []string{"add", "bob@example.test"}},
		{64, "", []string{"list", "extra"}},
	} {
		out, errs, code := e.run(c.stdin, "mailuser", c.args...)
		if code != c.code {
			t.Errorf("mailuser %q: exit %d, want %d (%s%s)", c.args, code, c.code, out, errs)
		}
		if code != 0 && !strings.HasPrefix(errs, "mailuser: ") && len(c.args) > 0 {
			t.Errorf("mailuser %q: message %q", c.args, errs)
		}
	}
	if b := muRead(t, e.Users); len(b) != 0 {
		t.Errorf("refused adds wrote the users file:\n%s", b)
	}
	// A user outside the local domains is added with a warning.
	_, errs := e.muExpect(0, "pw\n", "add", "x@elsewhere.test")
	if !strings.Contains(errs, "warning") {
		t.Errorf("no warning for a non-local domain: %q", errs)
	}
	for _, f := range []string{"--help", "--version"} {
		if out, _, code := e.run("", "mailuser", f); code != 0 || out == "" {
			t.Errorf("mailuser %s: exit %d", f, code)
		}
	}
}

// TestMailuserConcurrentAdds runs many mailuser processes at once: the lock
// must keep every line.
func TestMailuserConcurrentAdds(t *testing.T) {
	e := newEnv(t)
	const n = 12
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// SHA512-CRYPT is the cheapest scheme mailuser makes: the
			// processes then overlap in their file edits, not their hashing.
			out, errs, code := e.run("pw\n", "mailuser", "add", "--scheme", "SHA512-CRYPT", fmt.Sprintf("user%02d@example.test", i))
			if code != 0 {
				t.Errorf("add %d: exit %d %s%s", i, code, out, errs)
			}
		}(i)
	}
	wg.Wait()
	out, _ := e.muExpect(0, "", "list")
	got := strings.Fields(out)
	sort.Strings(got)
	if len(got) != n {
		t.Fatalf("%d users after %d concurrent adds:\n%s", len(got), n, out)
	}
	for i, name := range got {
		if want := fmt.Sprintf("user%02d@example.test", i); name != want {
			t.Errorf("user %d = %s", i, name)
		}
	}
}

// TestMailuserPythonCheck drives mailuser check the way a script would, with
// a Python subprocess feeding the password.
func TestMailuserPythonCheck(t *testing.T) {
	e := newEnv(t)
	e.addUser("py@example.test", "from python")
	out := python(t, `
import subprocess, sys, os
env = dict(os.environ, LETTERBOX_CONFIG=sys.argv[2])
for pw, want in (("from python", 0), ("from pythoN", 1)):
    r = subprocess.run([sys.argv[1], "check", "py@example.test"], input=(pw + "\n").encode(), env=env)
    print(pw, r.returncode, "ok" if r.returncode == want else "WRONG")
`, bin(t, "mailuser"), e.Config)
	if strings.Contains(out, "WRONG") || strings.Count(out, "ok") != 2 {
		t.Errorf("python:\n%s", out)
	}
}

func muRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMailuserSeenByRunningSmtpd: a running smtpd sees users that mailuser
// adds and deletes, and alias edits, without a restart; SMTP AUTH uses the
// hash mailuser wrote.
func TestMailuserSeenByRunningSmtpd(t *testing.T) {
	e := newEnv(t)
	e.addUser("demo@example.test", "demo pw")
	srv := e.start("smtpd", "")
	rcpt := func(addr string) string {
		t.Helper()
		d := dial(t, srv.Addr)
		d.expect("220")
		d.send("EHLO client.test")
		d.expect("250")
		d.send("MAIL FROM:<someone@remote.test>")
		d.expect("250")
		d.send("RCPT TO:<" + addr + ">")
		r := d.reply()
		d.send("QUIT")
		return r
	}
	if r := rcpt("newbie@example.test"); !strings.HasPrefix(r, "550") {
		t.Fatalf("unknown user: %s", r)
	}
	e.muExpect(0, "newbie pw\n", "add", "newbie@example.test")
	if r := rcpt("Newbie@Example.Test"); !strings.HasPrefix(r, "250") {
		t.Errorf("user added while smtpd runs: %s", r)
	}
	if r := rcpt("newbie+tag@example.test"); !strings.HasPrefix(r, "250") {
		t.Errorf("+detail: %s", r)
	}
	must(t, os.WriteFile(e.Aliases, []byte("postmaster: demo\nsupport: newbie, demo\n"), 0o600))
	if r := rcpt("support@example.test"); !strings.HasPrefix(r, "250") {
		t.Errorf("alias added while smtpd runs: %s", r)
	}
	if r := rcpt("postmaster@example.test"); !strings.HasPrefix(r, "250") {
		t.Errorf("postmaster: %s", r)
	}
	e.muExpect(0, "", "del", "newbie@example.test")
	if r := rcpt("newbie@example.test"); !strings.HasPrefix(r, "550") {
		t.Errorf("deleted user still accepted: %s", r)
	}

	// AUTH PLAIN with the password mailuser hashed (loopback: allowed).
	e.muExpect(0, "auth pw\n", "add", "authy@example.test")
	out := python(t, `
import smtplib, sys
host, port = sys.argv[1].rsplit(":", 1)
for pw in ("auth pw", "wrong pw"):
    s = smtplib.SMTP(host, int(port), timeout=20)
    s.ehlo("client.test")
    try:
        s.login("authy@example.test", pw)
        print(pw, "accepted")
    except smtplib.SMTPAuthenticationError as e:
        print(pw, "refused", e.smtp_code)
    s.quit()
`, srv.Addr)
	if !strings.Contains(out, "auth pw accepted") || !strings.Contains(out, "wrong pw refused 535") {
		t.Errorf("SMTP AUTH with mailuser's hash:\n%s", out)
	}
}

// TestMailuserTTYPrompt runs mailuser on a pseudo-terminal (Python's pty):
// it prompts twice, does not echo the password, and refuses two passwords
// that differ.
func TestMailuserTTYPrompt(t *testing.T) {
	e := newEnv(t)
	script := `
import os, pty, sys, time, select
def run(args, answers):
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["LETTERBOX_CONFIG"] = sys.argv[2]
        os.execv(sys.argv[1], [sys.argv[1]] + args)
    out, pending = b"", list(answers)
    while True:
        r, _, _ = select.select([fd], [], [], 20)
        if not r:
            break
        try:
            data = os.read(fd, 1024)
        except OSError:
            break
        if not data:
            break
        out += data
        # Answer each prompt once it has appeared.
        while pending and out.count(b"assword: ") > len(answers) - len(pending):
            os.write(fd, pending.pop(0).encode() + b"\r")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")
code, out = run(["add", "tty@example.test"], ["tty secret", "tty secret"])
print("ADD", code, "ECHOED" if "tty secret" in out else "QUIET", out.count("assword: "), "prompts")
code, out = run(["add", "tty2@example.test"], ["one secret", "another one"])
print("MISMATCH", code, "ECHOED" if "secret" in out else "QUIET")
code, out = run(["check", "tty@example.test"], ["tty secret"])
print("CHECK", code)
`
	out := python(t, script, bin(t, "mailuser"), e.Config)
	for _, want := range []string{"ADD 0 QUIET 2 prompts", "MISMATCH 65 QUIET", "CHECK 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}
	e.muExpect(0, "tty secret\n", "check", "tty@example.test")
	e.muExpect(1, "one secret\n", "check", "tty2@example.test")
}
