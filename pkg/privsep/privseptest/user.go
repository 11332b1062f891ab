// Package privseptest gives tests throw-away system users, for the checks
// that only mean something across a privilege boundary: a process running
// as a mailbox's owner, a symlink one user plants for root or for another
// user. Tests run as root (here and in CI); a test that cannot make its
// users fails and says why, it is never skipped.
package privseptest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"letterbox/pkg/privsep"
)

// User is a system user made for one test, removed at its end.
type User struct {
	privsep.Cred        // uid, primary gid, supplementary groups (the primary and Group)
	Group        uint32 // a supplementary group made for it alone
	Home         string // its home directory: mode 0700, owned by it
}

// Path returns a path under the user's home.
func (u User) Path(elem ...string) string {
	return filepath.Join(append([]string{u.Home}, elem...)...)
}

// mu serializes this process's useradd/userdel; other processes (test
// binaries of other packages) are waited for by retrying on the lock.
var mu sync.Mutex

// NewUser creates a user with a group of its own, one more supplementary
// group, and a home directory under Dir(t). It fails the test when the
// process cannot create users.
func NewUser(t testing.TB) User {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("privseptest: this test needs other users than the one running it: run it as root (useradd), as CI does")
	}
	suffix := randHex(4)
	name, group := "lbxt"+suffix, "lbxg"+suffix
	home := filepath.Join(Dir(t), name)
	run(t, "groupadd", group)
	t.Cleanup(func() { run(t, "groupdel", group) })
	run(t, "useradd", "-M", "-U", "-d", home, "-s", "/usr/sbin/nologin", "-G", group, name)
	t.Cleanup(func() { run(t, "userdel", name) })
	c, err := privsep.LookupUser(name)
	if err != nil {
		t.Fatalf("privseptest: the user useradd made: %v", err)
	}
	u := User{Cred: c, Home: home}
	for _, gid := range c.Groups {
		if gid != c.GID {
			u.Group = gid
		}
	}
	if u.Group == 0 {
		t.Fatalf("privseptest: %s has no supplementary group %s: groups %v", name, group, c.Groups)
	}
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, int(c.UID), int(c.GID)); err != nil {
		t.Fatal(err)
	}
	return u
}

// Dir returns a new directory that every user may traverse but not list
// (0711), removed at the test's end, for the homes of throw-away users and
// for anything they must reach (t.TempDir's parents are root's alone).
func Dir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "letterbox-privsep-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o711); err != nil {
		t.Fatal(err)
	}
	return d
}

// Chown gives paths (recursively) to u, as a delivery running as u would
// have made them.
func (u User) Chown(t testing.TB, paths ...string) {
	t.Helper()
	for _, p := range paths {
		err := filepath.Walk(p, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, int(u.UID), int(u.GID))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// run runs a user-database command, retrying while another process holds
// /etc/passwd's lock (useradd exits 10 then, "cannot lock").
func run(t testing.TB, name string, args ...string) {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err == nil {
			return
		}
		busy := strings.Contains(string(out), "lock")
		if !busy || time.Now().After(deadline) {
			t.Fatalf("privseptest: %s %s: %v\n%s(tests that need throw-away users run as root with useradd, groupadd, userdel and groupdel installed)",
				name, strings.Join(args, " "), err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
