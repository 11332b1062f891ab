//go:build interop

package tests

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
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
