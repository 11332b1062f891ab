package mbox

// Issue 15's attacks on the mbox, replayed on stand-in files: a symlinked
// mbox or dotlock, a forged stale dotlock, a hard-linked or foreign mbox.
// The tests run as root (as CI does), where only the checks below stand
// between a user's symlink and any file of the system.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"letterbox/pkg/privsep/privseptest"
)

// standIn writes a file standing for /etc/passwd (root's, when the test
// runs as root) in a directory of its own, and returns its path and
// content.
func standIn(t *testing.T) (string, []byte) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "passwd")
	content := []byte("root:x:0:0:root:/root:/bin/bash\nbin:x:1:1:bin:/bin:/usr/sbin/nologin\n")
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, content
}

// unchanged fails the test unless the file at p still holds want.
func unchanged(t *testing.T, what, p string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: the stand-in changed: %q, was %q", what, got, want)
	}
}

// names lists dir's entries.
func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// msg is the message the tests try to deliver.
func msg() *strings.Reader { return strings.NewReader("Subject: attack\n\nroot::0:0::/:/bin/sh\n") }

// forgedLock writes a dotlock at lock naming a dead process and an append
// that started at size in the file at target (dev, ino), dated long ago.
func forgedLock(t *testing.T, lock, target string, size int) {
	t.Helper()
	if err := os.WriteFile(lock, []byte(appendRecordOf(t, deadPID(t), size, target)), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-StaleAfter - time.Hour)
	if err := os.Chtimes(lock, old, old); err != nil {
		t.Fatal(err)
	}
}

// TestSymlinkedMboxRefused: ~/mbox → /etc/passwd. Append refuses with
// ErrUnsafe, the target is unchanged, nothing is created (not even the
// target of a dangling symlink).
func TestSymlinkedMboxRefused(t *testing.T) {
	target, content := standIn(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "mbox")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	err := Append(path, "evil@example.org", date, msg())
	if !errors.Is(err, ErrUnsafe) {
		t.Fatalf("Append through a symlink: %v, want ErrUnsafe", err)
	}
	unchanged(t, "append through a symlink", target, content)
	if got := names(t, dir); strings.Join(got, ",") != "mbox" {
		t.Errorf("left in the mbox's directory: %q", got)
	}
	if err := Rewrite(path, nil, nil); !errors.Is(err, ErrUnsafe) {
		t.Errorf("Rewrite through a symlink: %v, want ErrUnsafe", err)
	}
	unchanged(t, "rewrite through a symlink", target, content)

	// A symlink to nothing: the target is not created.
	nowhere := filepath.Join(t.TempDir(), "nologin")
	os.Remove(path)
	os.Symlink(nowhere, path)
	if err := Append(path, "evil@example.org", date, msg()); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("Append through a dangling symlink: %v, want ErrUnsafe", err)
	}
	if _, err := os.Lstat(nowhere); err == nil {
		t.Fatal("the dangling symlink's target was created")
	}
}

// TestForgedStaleDotlock: a dotlock naming a dead process and a size
// smaller than a file: it truncates nothing but the mbox it was written
// for, by a writer we trust.
func TestForgedStaleDotlock(t *testing.T) {
	t.Run("mbox symlinked to the target", func(t *testing.T) {
		target, content := standIn(t)
		path := filepath.Join(t.TempDir(), "mbox")
		os.Symlink(target, path)
		forgedLock(t, path+".lock", target, 4)
		if err := Append(path, "evil@example.org", date, msg()); !errors.Is(err, ErrUnsafe) {
			t.Fatalf("Append: %v, want ErrUnsafe", err)
		}
		unchanged(t, "forged lock, symlinked mbox", target, content)
	})

	// A regular mbox of ours, the record naming another file: nothing cut.
	t.Run("record of another file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "mbox")
		Append(path, "a@b", date, strings.NewReader("Subject: kept\n\nbody\n"))
		whole, _ := os.ReadFile(path)
		other, _ := standIn(t)
		forgedLock(t, path+".lock", other, 4)
		l, err := LockFile(path, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		l.Unlock()
		unchanged(t, "record of another file", path, whole)
	})

	// The record of an older letterbox (or forged) without dev and ino:
	// its size is ignored.
	t.Run("record without dev and ino", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "mbox")
		Append(path, "a@b", date, strings.NewReader("Subject: kept\n\nbody\n"))
		whole, _ := os.ReadFile(path)
		os.WriteFile(path+".lock", []byte(fmt.Sprintf("%d %d\n", deadPID(t), 4)), 0o600)
		l, err := LockFile(path, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		l.Unlock()
		unchanged(t, "record without dev and ino", path, whole)
	})

	// A record right in every field, in a dotlock we did not write: one
	// owned by another user, or a hard link to some file.
	t.Run("dotlock owned by another user", func(t *testing.T) {
		u := privseptest.NewUser(t)
		path := filepath.Join(t.TempDir(), "mbox")
		Append(path, "a@b", date, strings.NewReader("Subject: kept\n\nbody\n"))
		whole, _ := os.ReadFile(path)
		forgedLock(t, path+".lock", path, 4)
		if err := os.Chown(path+".lock", int(u.UID), int(u.GID)); err != nil {
			t.Fatal(err)
		}
		l, err := LockFile(path, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		l.Unlock()
		unchanged(t, "another user's dotlock", path, whole)
	})
	t.Run("dotlock with two links", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "mbox")
		Append(path, "a@b", date, strings.NewReader("Subject: kept\n\nbody\n"))
		whole, _ := os.ReadFile(path)
		forgedLock(t, filepath.Join(dir, "planted"), path, 4)
		if err := os.Link(filepath.Join(dir, "planted"), path+".lock"); err != nil {
			t.Fatal(err)
		}
		l, err := LockFile(path, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		l.Unlock()
		unchanged(t, "a hard-linked dotlock", path, whole)
	})

	// Our own crash, for contrast: the same record in our dotlock cuts.
	t.Run("our own record", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "mbox")
		Append(path, "a@b", date, strings.NewReader("Subject: kept\n\nbody\n"))
		whole, _ := os.ReadFile(path)
		f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		f.WriteString("From a@b Mon Nov 23 12:00:00 2026\nSubject: partial\n")
		f.Close()
		forgedLock(t, path+".lock", path, len(whole))
		l, err := LockFile(path, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		l.Unlock()
		unchanged(t, "our own record", path, whole)
	})
}

// TestSymlinkedDotlock: mbox.lock → a file. No locker makes a dotlock a
// symlink, so it is a trap: moved away at once (the link, not its target)
// and the lock taken. The file is never read for a record, written,
// touched, nor removed.
func TestSymlinkedDotlock(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mbox")
	Append(path, "a@b", date, strings.NewReader("Subject: kept\n\nbody\n"))
	Append(path, "a@b", date, strings.NewReader("Subject: kept too\n\nbody\n"))
	whole, _ := os.ReadFile(path)
	// The stand-in holds what would be a dead holder's record for the
	// mbox: read through the symlink, it would cut the mbox.
	target := filepath.Join(t.TempDir(), "authorized_keys")
	forgedLock(t, target, path, 4)
	content, _ := os.ReadFile(target)
	targetInfo, _ := os.Stat(target)
	if err := os.Symlink(target, path+".lock"); err != nil {
		t.Fatal(err)
	}
	defer func(d time.Duration) { LockTimeout = d }(LockTimeout)
	LockTimeout = 2 * time.Second
	if err := Append(path, "a@b", date, strings.NewReader("Subject: third\n\nbody\n")); err != nil {
		t.Fatalf("Append with a symlinked dotlock: %v", err)
	}
	unchanged(t, "the symlinked dotlock's target", target, content)
	if fi, _ := os.Stat(target); !fi.ModTime().Equal(targetInfo.ModTime()) {
		t.Error("the symlinked dotlock's target was touched")
	}
	if got, _ := os.ReadFile(path); !bytes.HasPrefix(got, whole) {
		t.Fatalf("the mbox was cut by a record read through a symlink: %q", got)
	}
	if got := names(t, dir); strings.Join(got, ",") != "mbox" {
		t.Errorf("left in the mbox's directory: %q", got)
	}
}

// TestDotlockReplacedWhileHeld: our dotlock replaced (taken for stale by
// another locker, or swapped for a symlink by the directory's owner) is
// not written to by markAppend, not touched by Touch, not removed by
// Unlock.
func TestDotlockReplacedWhileHeld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mbox")
	target, content := standIn(t)
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	os.Chtimes(target, old, old)
	for _, c := range []struct {
		name  string
		plant func()
	}{
		{"another's dotlock", func() { os.WriteFile(path+".lock", []byte("1\n"), 0o600) }},
		{"a symlink", func() { os.Symlink(target, path+".lock") }},
	} {
		l, err := LockFile(path, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(path + ".lock")
		c.plant()
		planted, _ := os.ReadFile(path + ".lock")
		if err := l.markAppend(0); err == nil {
			t.Errorf("%s: markAppend wrote to a dotlock not ours", c.name)
		}
		if err := l.Touch(); err != nil {
			t.Errorf("%s: Touch: %v", c.name, err)
		}
		l.Unlock()
		if got, err := os.ReadFile(path + ".lock"); err != nil || !bytes.Equal(got, planted) {
			t.Errorf("%s: the planted dotlock changed: %q %v", c.name, got, err)
		}
		unchanged(t, c.name, target, content)
		if fi, _ := os.Stat(target); !fi.ModTime().Equal(old) {
			t.Errorf("%s: Touch changed the stand-in's time: %v", c.name, fi.ModTime())
		}
		os.Remove(path + ".lock")
	}
}

// TestUnsafeMboxRefused: a hard link (two links), a file of another user,
// a FIFO: refused with ErrUnsafe and a message that says why, nothing
// written.
func TestUnsafeMboxRefused(t *testing.T) {
	u := privseptest.NewUser(t)
	rec := []byte("From a@b Mon Nov 23 12:00:00 2026\nSubject: x\n\nx\n\n")
	for _, c := range []struct {
		name  string
		setup func(dir, path string) string // returns the file to watch
		why   string
	}{
		{"two links", func(dir, path string) string {
			other := filepath.Join(dir, "shadow")
			os.WriteFile(other, rec, 0o600)
			os.Link(other, path)
			return other
		}, "has 2 links"},
		{"another user's", func(dir, path string) string {
			os.WriteFile(path, rec, 0o600)
			if err := os.Chown(path, int(u.UID), int(u.GID)); err != nil {
				t.Fatal(err)
			}
			return path
		}, fmt.Sprintf("owned by uid %d, not %d", u.UID, os.Geteuid())},
		{"a FIFO", func(dir, path string) string {
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
			return ""
		}, "not a regular file"},
	} {
		dir := t.TempDir()
		path := filepath.Join(dir, "mbox")
		watch := c.setup(dir, path)
		before := names(t, dir)
		err := Append(path, "a@b", date, msg())
		if !errors.Is(err, ErrUnsafe) || err.Error() != "mbox: "+path+": "+c.why {
			t.Errorf("%s: Append: %v, want ErrUnsafe (%s)", c.name, err, c.why)
		}
		if _, err := LockFile(path, time.Second); !errors.Is(err, ErrUnsafe) {
			t.Errorf("%s: LockFile: %v, want ErrUnsafe", c.name, err)
		}
		if watch != "" {
			unchanged(t, c.name, watch, rec)
		}
		if got := names(t, dir); strings.Join(got, ",") != strings.Join(before, ",") {
			t.Errorf("%s: the directory changed: %q, was %q", c.name, got, before)
		}
	}
}

// TestNewFilesMode: the mbox and the dotlock are created 0600, whatever
// the umask.
func TestNewFilesMode(t *testing.T) {
	defer syscall.Umask(syscall.Umask(0))
	path := filepath.Join(t.TempDir(), "mbox")
	l, err := LockFile(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + ".lock"} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != 0o600 {
			t.Errorf("%s: mode %v, want -rw-------", p, fi.Mode())
		}
	}
	l.Unlock()
}
