package pop3

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"letterbox/pkg/maildir"
)

// The maildrop's files are opened as regular files only, never through a
// symlink, also when a file is swapped after the snapshot (tests/
// replays the attacks on the real pop3d; these cover what a black-box test
// can't time).

func TestMaildirSwappedForSymlink(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	d0, err := OpenMaildir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	d0.Close()
	secret := filepath.Join(t.TempDir(), "secret")
	writeFile(t, secret, "Subject: secret\n\nroot's\n")
	msg := filepath.Join(dir, "cur", "1700000001.M1P1.host,S=14,W=15:2,")
	writeFile(t, msg, "Subject: a\n\nx\n")
	d, err := OpenMaildir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if len(d.Messages()) != 1 {
		t.Fatalf("%+v", d.Messages())
	}
	// Swapped after the snapshot: RETR must not follow it.
	os.Remove(msg)
	if err := os.Symlink(secret, msg); err != nil {
		t.Fatal(err)
	}
	if rc, err := d.Open(0); err == nil || !errors.Is(err, maildir.ErrNotRegular) {
		if rc != nil {
			rc.Close()
		}
		t.Fatalf("symlinked message opened: %v", err)
	}
	// A FIFO neither hangs nor is read.
	os.Remove(msg)
	if err := syscall.Mkfifo(msg, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		rc, err := d.Open(0)
		if err == nil {
			rc.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, maildir.ErrNotRegular) {
			t.Fatalf("FIFO opened as a message: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("opening a FIFO hung")
	}
}

// A symlinked size cache is not read (its sizes would be believed), and a
// symlinked temporary cache file is replaced, never written through.
func TestMaildirCacheSymlinks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	d0, err := OpenMaildir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	d0.Close()
	writeFile(t, filepath.Join(dir, "new", "1700000001.M1P1.host"), "Subject: a\n\nx\n")
	other := t.TempDir()
	fake := filepath.Join(other, "sizes")
	writeFile(t, fake, "1700000001.M1P1.host 99\n")
	if err := os.Symlink(fake, filepath.Join(dir, SizeCacheName)); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(other, "authorized_keys")
	writeFile(t, target, "original\n")
	if err := os.Symlink(target, filepath.Join(dir, SizeCacheName+".tmp")); err != nil {
		t.Fatal(err)
	}
	d, err := OpenMaildir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if ms := d.Messages(); len(ms) != 1 || ms[0].Size != 17 {
		t.Fatalf("size taken from a symlinked cache: %+v", ms)
	}
	d.Close()
	if b, _ := os.ReadFile(target); string(b) != "original\n" {
		t.Fatalf("written through the symlinked temporary file: %q", b)
	}
	if b, _ := os.ReadFile(fake); string(b) != "1700000001.M1P1.host 99\n" {
		t.Fatalf("written through the symlinked cache: %q", b)
	}
	if fi, err := os.Lstat(filepath.Join(dir, SizeCacheName)); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("cache not replaced by a regular file: %v", err)
	}
}

// The lock file as a symlink: a permanent error, nothing created.
func TestMaildirLockSymlink(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	d0, err := OpenMaildir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	d0.Close()
	lock := filepath.Join(dir, LockName)
	os.Remove(lock)
	target := filepath.Join(t.TempDir(), "created")
	if err := os.Symlink(target, lock); err != nil {
		t.Fatal(err)
	}
	_, err = OpenMaildir(dir, false)
	var pe *PermError
	if !errors.As(err, &pe) {
		t.Fatalf("symlinked lock: %v, want a PermError", err)
	}
	if _, err := os.Lstat(target); err == nil {
		t.Fatal("the lock's symlink target was created")
	}
}

// An mbox must be a regular file with one link, owned by the owner.
func TestMboxOwnerChecks(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mbox")
	rec := "From a@b Mon Nov 23 10:00:00 2026\nSubject: x\n\nx\n\n"
	me := uint32(os.Geteuid())
	other := filepath.Join(dir, "other")
	writeFile(t, other, rec)
	for _, c := range []struct {
		name  string
		setup func()
		owner uint32
	}{
		{"symlink", func() { os.Symlink(other, path) }, me},
		{"two links", func() { os.Link(other, path) }, me},
		{"another owner", func() { writeFile(t, path, rec) }, me + 1},
	} {
		os.Remove(path)
		c.setup()
		_, err := OpenMbox(path, c.owner, time.Second)
		var pe *PermError
		if !errors.As(err, &pe) {
			t.Errorf("%s: %v, want a PermError", c.name, err)
		}
	}
	// A symlink to nothing: locking it would create its target.
	os.Remove(path)
	nowhere := filepath.Join(t.TempDir(), "created")
	os.Symlink(nowhere, path)
	if _, err := OpenMbox(path, me, time.Second); err == nil {
		t.Error("symlink to nothing opened")
	}
	if _, err := os.Lstat(nowhere); err == nil {
		t.Error("the mbox symlink's target was created")
	}
	os.Remove(path)
	writeFile(t, path, rec)
	d, err := OpenMbox(path, me, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
}
