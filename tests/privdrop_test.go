package tests

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"letterbox/pkg/privsep/privseptest"
)

// checkProcCred fails unless process pid runs as u: real, effective,
// saved and file system uid and gid all u's, exactly u's groups, and no
// capability left (so nothing only root may read is readable).
func checkProcCred(t *testing.T, pid int, u privseptest.User) {
	t.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	must(t, err)
	uid, gid := strconv.Itoa(int(u.UID)), strconv.Itoa(int(u.GID))
	var groups []string
	for _, g := range u.Groups {
		groups = append(groups, strconv.Itoa(int(g)))
	}
	sort.Strings(groups)
	want := map[string]string{
		"Uid":    strings.Join([]string{uid, uid, uid, uid}, " "),
		"Gid":    strings.Join([]string{gid, gid, gid, gid}, " "),
		"Groups": strings.Join(groups, " "),
		"CapEff": "0000000000000000",
		"CapPrm": "0000000000000000",
	}
	for _, l := range strings.Split(string(st), "\n") {
		k, v, _ := strings.Cut(l, ":")
		w, ok := want[k]
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if k == "Groups" {
			sort.Strings(f)
		}
		if got := strings.Join(f, " "); got != w {
			t.Errorf("process %d %s: %q, want %q", pid, k, got, w)
		}
		delete(want, k)
	}
	if len(want) > 0 {
		t.Errorf("process %d: no %v in /proc status", pid, want)
	}
}

// openTo lets u reach the env's directory and read its config, users and
// aliases files (as a --user server must), and the test binaries.
func openTo(t *testing.T, e *env) {
	t.Helper()
	for _, d := range []string{filepath.Dir(e.Dir), e.Dir, filepath.Dir(bin(t, "smtpd"))} {
		must(t, os.Chmod(d, 0o755))
	}
	for _, f := range []string{e.Config, e.Users, e.Aliases} {
		must(t, os.Chmod(f, 0o644))
	}
}

// smtpd --user: the TLS key is root's alone (0600) and still serves
// STARTTLS, because it is read before the drop; after it the process has
// the user's ids and groups only, and a file only root may read stays
// unread (an alias added to a root-only aliases file is unknown; the same
// file readable, it is known).
func TestSmtpdUserDropCredentials(t *testing.T) {
	u := privseptest.NewUser(t)
	e := smtpdEnv(t)
	e = smtpdEnv(t, smtpdTLS(t, e.Dir)...)
	openTo(t, e)
	must(t, os.MkdirAll(e.Spool, 0o700))
	u.Chown(t, e.Spool)
	s := e.start("smtpd", "", "--user", u.Name)
	d := dial(t, s.Addr)
	d.expect("220 ")
	d.send("EHLO x")
	d.expect("250 ")
	d.send("STARTTLS")
	d.expect("220 ")
	tc := tls.Client(d.conn, &tls.Config{InsecureSkipVerify: true})
	must(t, tc.Handshake())
	d = &dialog{t: t, conn: tc, r: bufio.NewReader(tc)}
	d.send("EHLO x")
	d.expect("250 ")
	checkProcCred(t, s.Cmd.Process.Pid, u)

	rcpt := func(to string) string {
		d.send("MAIL FROM:<a@remote.test>")
		d.expect("250 ")
		d.send("RCPT TO:<" + to + ">")
		l := d.reply()
		d.send("RSET")
		d.expect("250 ")
		return l
	}
	must(t, os.WriteFile(e.Aliases, []byte("postmaster: joe\nsecret-alias: joe\n"), 0o600))
	must(t, os.Chmod(e.Aliases, 0o600))
	if l := rcpt("secret-alias@example.test"); strings.HasPrefix(l, "250") {
		t.Fatalf("smtpd --user read a root-only aliases file: %q", l)
	}
	must(t, os.Chmod(e.Aliases, 0o644))
	if l := rcpt("secret-alias@example.test"); !strings.HasPrefix(l, "250") {
		t.Fatalf("the alias, readable: %q", l)
	}
}

// pop3d --user: the same drop (ids, groups, no capabilities), pop3s with a
// root-only key, and a root-only message file in the served Maildir is not
// served while its neighbour is.
func TestPOP3UserDropCredentials(t *testing.T) {
	u := privseptest.NewUser(t)
	dir := t.TempDir()
	pe := newPOP3Env(t, pop3TLS(t, dir)...)
	openTo(t, pe.env)
	readable := pe.putMaildir("cur", "1700000001.M1P1Q1.host:2,", pop3Msg("readable", "x\n"))
	u.Chown(t, filepath.Join(pe.MailRoot, "example.test"), readable)
	secret := pop3Msg("rootonly", "secret\n")
	n := len(secret)
	pe.putMaildir("cur", fmt.Sprintf("1700000002.M1P1Q1.host,S=%d,W=%d:2,", n, n+strings.Count(secret, "\n")), secret)
	must(t, os.Chmod(filepath.Join(pe.MailRoot), 0o755))
	s := pe.start("pop3d", "pop3s", "--user", u.Name)
	c, err := tls.Dial("tcp", s.Addr, &tls.Config{InsecureSkipVerify: true})
	must(t, err)
	defer c.Close()
	d := &dialog{t: t, conn: c, r: bufio.NewReader(c)}
	pop3Expect(d, "+OK")
	d.send("USER alice@example.test")
	pop3Expect(d, "+OK")
	d.send("PASS alice pw")
	pop3Expect(d, "+OK")
	checkProcCred(t, s.Cmd.Process.Pid, u)
	d.send("RETR 1")
	pop3Expect(d, "+OK")
	if m := pop3Multi(d); !strings.Contains(m, "Subject: readable") {
		t.Fatalf("RETR 1: %q", m)
	}
	// The root-only file: listed (its name says nothing) but never read.
	d.send("RETR 2")
	if l := d.line(); !strings.HasPrefix(l, "-ERR") {
		t.Fatalf("root-only message served under --user: %q", l)
	}
	d.send("QUIT")
	pop3Expect(d, "+OK")
}
