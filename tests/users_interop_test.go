//go:build interop

package tests

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// doveadmPw runs `doveadm pw` with args and returns its output line.
func doveadmPw(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("doveadm", append([]string{"pw"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("doveadm pw %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestInteropDoveadmHashes: hashes made by Dovecot's doveadm pw, in every
// scheme we claim, authenticate through mailuser check; wrong passwords
// don't.
func TestInteropDoveadmHashes(t *testing.T) {
	if _, err := exec.LookPath("doveadm"); err != nil {
		t.Fatal("doveadm not installed (dovecot-core in tests/interop/packages.txt)")
	}
	e := newEnv(t)
	schemes := []string{"BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "ARGON2ID", "ARGON2I", "PLAIN", "CLEAR", "CRYPT", "MD5-CRYPT"}
	var lines []string
	pw := func(s string) string { return "pw for " + s + " ✓" }
	for _, s := range schemes {
		h := doveadmPw(t, "-s", s, "-p", pw(s))
		lines = append(lines, fmt.Sprintf("%s@example.test:%s::::::", strings.ToLower(s), h))
	}
	// A non-default cost and round count too.
	lines = append(lines, "rounds@example.test:"+doveadmPw(t, "-s", "SHA512-CRYPT", "-r", "7000", "-p", pw("rounds")))
	lines = append(lines, "cost@example.test:"+doveadmPw(t, "-s", "BLF-CRYPT", "-r", "8", "-p", pw("cost")))
	must(t, os.WriteFile(e.Users, []byte(strings.Join(lines, "\n")+"\n"), 0o600))
	for _, s := range append(schemes, "rounds", "cost") {
		addr := strings.ToLower(s) + "@example.test"
		if out, errs, code := e.run(pw(s)+"\n", "mailuser", "check", addr); code != 0 {
			t.Errorf("%s: doveadm hash not verified: exit %d %s%s", s, code, out, errs)
		}
		if _, _, code := e.run(pw(s)+"x\n", "mailuser", "check", addr); code != 1 {
			t.Errorf("%s: wrong password: exit %d, want 1", s, code)
		}
	}
}

// TestInteropDoveadmVerifiesOurs: hashes that mailuser writes verify with
// `doveadm pw -t`, so a users file we write works for Dovecot unchanged.
func TestInteropDoveadmVerifiesOurs(t *testing.T) {
	if _, err := exec.LookPath("doveadm"); err != nil {
		t.Fatal("doveadm not installed (dovecot-core in tests/interop/packages.txt)")
	}
	e := newEnv(t)
	for _, s := range []string{"BLF-CRYPT", "ARGON2ID", "SHA512-CRYPT"} {
		addr := strings.ToLower(s) + "@example.test"
		e.muExpect(0, "our "+s+" pw\n", "add", "--scheme", s, addr)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(muRead(t, e.Users))), "\n") {
		f := strings.Split(line, ":")
		scheme := strings.ToUpper(strings.TrimSuffix(f[0], "@example.test"))
		good := "our " + scheme + " pw"
		if out, err := exec.Command("doveadm", "pw", "-t", f[1], "-p", good).CombinedOutput(); err != nil || !strings.Contains(string(out), "(verified)") {
			t.Errorf("doveadm does not verify our %s hash %s: %v %s", scheme, f[1], err, out)
		}
		if out, err := exec.Command("doveadm", "pw", "-t", f[1], "-p", good+"x").CombinedOutput(); err == nil {
			t.Errorf("doveadm verified a wrong password against our %s hash: %s", scheme, out)
		}
	}
}

// TestInteropDovecotPasswdFile: a users file written by mailuser serves a
// real Dovecot as its passwd-file passdb and userdb unchanged (doveadm auth
// test against a private dovecot instance).
func TestInteropDovecotPasswdFile(t *testing.T) {
	for _, p := range []string{"doveadm", "dovecot"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s not installed (dovecot-core in tests/interop/packages.txt)", p)
		}
	}
	e := newEnv(t)
	for _, s := range []string{"BLF-CRYPT", "ARGON2ID", "SHA512-CRYPT"} {
		e.muExpect(0, "dove "+s+"\n", "add", "--scheme", s, strings.ToLower(s)+"@example.test")
	}
	// A line as an admin might write it, with a home and a mail= field.
	f, err := os.OpenFile(e.Users, os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	fmt.Fprintf(f, "# by hand\nhand@example.test:{PLAIN}hand pw::::%s/hand::mail=maildir:~/Mail\n", e.Dir)
	f.Close()

	dir := t.TempDir()
	conf := dir + "/dovecot.conf"
	must(t, os.WriteFile(conf, []byte(fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/log
protocols =
listen = 127.0.0.1
ssl = no
# Wrong passwords are part of the test: no 2 s penalty each.
auth_failure_delay = 0
default_internal_user = root
default_login_user = root
default_internal_group = root
passdb {
  driver = passwd-file
  args = scheme=CRYPT username_format=%%u %[2]s
}
userdb {
  driver = passwd-file
  args = username_format=%%u %[2]s
  default_fields = uid=root gid=root home=%[1]s/home/%%u
}
`, dir, e.Users)), 0o600))
	// dovecot daemonizes and its children keep stdout/stderr: point them at
	// a file, not at a pipe we would wait on for ever.
	dlog, err := os.Create(dir + "/start.log")
	must(t, err)
	start := exec.Command("dovecot", "-c", conf)
	start.Stdout, start.Stderr = dlog, dlog
	err = start.Run()
	dlog.Close()
	if err != nil {
		out, _ := os.ReadFile(dir + "/start.log")
		t.Fatalf("dovecot: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		exec.Command("doveadm", "-c", conf, "stop").Run()
		if t.Failed() {
			log, _ := os.ReadFile(dir + "/log")
			t.Logf("dovecot log:\n%s", log)
		}
	})
	waitFor(t, 60*time.Second, "dovecot auth socket", func() bool {
		_, err := os.Stat(dir + "/run/auth-client")
		return err == nil
	})
	auth := func(user, pw string) (string, bool) {
		out, err := exec.Command("doveadm", "-c", conf, "auth", "test", user, pw).CombinedOutput()
		return string(out), err == nil && strings.Contains(string(out), "auth succeeded")
	}
	for _, s := range []string{"BLF-CRYPT", "ARGON2ID", "SHA512-CRYPT"} {
		user := strings.ToLower(s) + "@example.test"
		if out, ok := auth(user, "dove "+s); !ok {
			t.Errorf("dovecot refused mailuser's %s user: %s", s, out)
		}
		if out, ok := auth(user, "dove "+s+"!"); ok {
			t.Errorf("dovecot accepted a wrong password for %s: %s", s, out)
		}
	}
	if out, ok := auth("hand@example.test", "hand pw"); !ok {
		t.Errorf("hand-written line: %s", out)
	}
}
