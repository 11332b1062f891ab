package tests

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"letterbox/pkg/privsep/privseptest"
)

// mailuser add as root makes the Maildir the user's: the users file's
// uid/gid when given, else the home directory's owner; mode 0700.
func TestMailuserMaildirOwner(t *testing.T) {
	bob := privseptest.NewUser(t)
	carol := privseptest.NewUser(t)
	e := newEnv(t)
	e.muExpect(0, "pw\n", "add", "--scheme", "SHA512-CRYPT", "--uid", strconv.Itoa(int(bob.UID)), "--gid", strconv.Itoa(int(bob.GID)), "bob@example.test")
	e.muExpect(0, "pw\n", "add", "--scheme", "SHA512-CRYPT", "--home", carol.Home, "carol@example.test")
	check := func(md string, uid, gid uint32) {
		t.Helper()
		for _, sub := range []string{"", "tmp", "new", "cur"} {
			fi, err := os.Lstat(filepath.Join(md, sub))
			if err != nil {
				t.Errorf("%s/%s: %v", md, sub, err)
				continue
			}
			st := fi.Sys().(*syscall.Stat_t)
			if !fi.IsDir() || fi.Mode().Perm() != 0o700 || st.Uid != uid || st.Gid != gid {
				t.Errorf("%s/%s: %v %d:%d, want a directory 0700 %d:%d", md, sub, fi.Mode(), st.Uid, st.Gid, uid, gid)
			}
		}
	}
	check(filepath.Join(e.MailRoot, "example.test", "bob"), bob.UID, bob.GID)
	check(carol.Path("Maildir"), carol.UID, carol.GID)
	users, _ := os.ReadFile(e.Users)
	if !strings.Contains(string(users), "bob@example.test:{SHA512-CRYPT}") ||
		!strings.Contains(string(users), ":"+strconv.Itoa(int(bob.UID))+":"+strconv.Itoa(int(bob.GID))+":") ||
		!strings.Contains(string(users), ":"+carol.Home+":") {
		t.Errorf("users file:\n%s", users)
	}
}

// users.lock a symlink to a stand-in file: mailuser refuses, the target
// stays as it was, and nothing is created through a dangling one.
func TestMailuserLockSymlink(t *testing.T) {
	e := newEnv(t)
	e.muExpect(0, "pw\n", "add", "--scheme", "SHA512-CRYPT", "joe@example.test")
	before, _ := os.ReadFile(e.Users)
	standIn := filepath.Join(e.Dir, "authorized_keys")
	must(t, os.WriteFile(standIn, []byte("ssh-ed25519 AAAA root\n"), 0o600))
	absent := filepath.Join(e.Dir, "nologin")
	must(t, os.Remove(e.Users+".lock")) // the last add's
	for _, target := range []string{standIn, absent} {
		must(t, os.Symlink(target, e.Users+".lock"))
		_, errs, code := e.run("pw\n", "mailuser", "add", "--scheme", "SHA512-CRYPT", "ann@example.test")
		if code == 0 || !strings.Contains(errs, "symbolic link") {
			t.Errorf("lock → %s: exit %d: %s", target, code, errs)
		}
		if _, errs, code := e.run("pw\n", "mailuser", "passwd", "--scheme", "SHA512-CRYPT", "joe@example.test"); code == 0 {
			t.Errorf("passwd with the lock → %s: exit 0: %s", target, errs)
		}
		must(t, os.Remove(e.Users+".lock"))
	}
	if b, _ := os.ReadFile(standIn); string(b) != "ssh-ed25519 AAAA root\n" {
		t.Errorf("the stand-in changed: %q", b)
	}
	if _, err := os.Lstat(absent); !os.IsNotExist(err) {
		t.Errorf("created through the dangling lock symlink: %v", err)
	}
	if after, _ := os.ReadFile(e.Users); string(after) != string(before) {
		t.Errorf("the users file changed:\n%s", after)
	}
}
