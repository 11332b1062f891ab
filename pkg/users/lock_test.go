package users

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// users.lock made a symbolic link (by whoever may write the directory)
// must not make root create, truncate or write the file it names.
func TestEditLockSymlink(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users")
	if err := os.WriteFile(path, []byte("a@example.test:{PLAIN}x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	standIn := filepath.Join(dir, "stand-in")
	if err := os.WriteFile(standIn, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	absent := filepath.Join(dir, "created-by-root")
	for _, target := range []string{standIn, absent} {
		if err := os.Symlink(target, path+".lock"); err != nil {
			t.Fatal(err)
		}
		err := Add(path, &User{Name: "b@example.test", Password: "{PLAIN}y"})
		if err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("lock → %s: Add = %v, want a refusal", target, err)
		}
		if b, _ := os.ReadFile(path); string(b) != "a@example.test:{PLAIN}x\n" {
			t.Errorf("lock → %s: the users file was written: %q", target, b)
		}
		if err := os.Remove(path + ".lock"); err != nil {
			t.Fatal(err)
		}
	}
	if b, err := os.ReadFile(standIn); err != nil || string(b) != "precious\n" {
		t.Errorf("the stand-in changed: %q %v", b, err)
	}
	if fi, err := os.Stat(standIn); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("the stand-in's mode changed: %v", err)
	}
	if _, err := os.Lstat(absent); !os.IsNotExist(err) {
		t.Errorf("a file was created through the symlink: %v", err)
	}
	// A FIFO or a directory is refused too, without hanging.
	if err := os.Mkdir(path+".lock", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Add(path, &User{Name: "b@example.test", Password: "{PLAIN}y"}); err == nil {
		t.Error("a directory as the lock was used")
	}
	os.Remove(path + ".lock")
	// And the ordinary case still works.
	if err := Add(path, &User{Name: "b@example.test", Password: "{PLAIN}y"}); err != nil {
		t.Fatal(err)
	}
}
