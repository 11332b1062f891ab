package maildir

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// standIn is a directory outside the Maildir that a symlink in it points
// to: nothing may ever be created there.
func standIn(t *testing.T) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("%s: something was created through the symlink: %v", dir, names)
	}
}

// TestDeliverRefusesSymlinks: tmp/ or new/ a symlink, or the Maildir
// itself one, and the delivery fails with ErrUnsafe, creating nothing
// where the link points (issue 15: root wrote the sender's text into a
// root-only directory that way).
func TestDeliverRefusesSymlinks(t *testing.T) {
	for _, sub := range []string{"tmp", "new"} {
		t.Run(sub, func(t *testing.T) {
			md := filepath.Join(t.TempDir(), "Maildir")
			if err := Create(md); err != nil {
				t.Fatal(err)
			}
			target := standIn(t)
			os.Remove(filepath.Join(md, sub))
			if err := os.Symlink(target, filepath.Join(md, sub)); err != nil {
				t.Fatal(err)
			}
			_, err := Deliver(md, strings.NewReader("Subject: x\n\nbody\n"))
			if !errors.Is(err, ErrUnsafe) {
				t.Fatalf("Deliver with %s/ a symlink: %v, want ErrUnsafe", sub, err)
			}
			assertEmpty(t, target)
			if err := Create(md); !errors.Is(err, ErrUnsafe) {
				t.Errorf("Create with %s/ a symlink: %v, want ErrUnsafe", sub, err)
			}
			assertEmpty(t, target)
		})
	}
	t.Run("maildir", func(t *testing.T) {
		target := standIn(t)
		for _, s := range []string{"tmp", "new", "cur"} {
			os.Mkdir(filepath.Join(target, s), 0o755)
		}
		md := filepath.Join(t.TempDir(), "Maildir")
		os.Symlink(target, md)
		if _, err := Deliver(md, strings.NewReader("x\n")); !errors.Is(err, ErrUnsafe) {
			t.Fatalf("Deliver to a symlinked Maildir: %v, want ErrUnsafe", err)
		}
		if err := Create(md); !errors.Is(err, ErrUnsafe) {
			t.Fatalf("Create of a symlinked Maildir: %v, want ErrUnsafe", err)
		}
		for _, s := range []string{"tmp", "new", "cur"} {
			assertEmpty(t, filepath.Join(target, s))
		}
	})
}

// TestFolderSymlinks: a folder .x that is a symlink is neither delivered
// into nor filled with tmp/, new/, cur/ and maildirfolder; a maildirfolder
// that is a symlink is not followed (root created /etc/nologin that way).
func TestFolderSymlinks(t *testing.T) {
	md := filepath.Join(t.TempDir(), "Maildir")
	if err := Create(md); err != nil {
		t.Fatal(err)
	}
	target := standIn(t)
	os.Symlink(target, filepath.Join(md, ".x"))
	if _, err := DeliverFolder(md, "x", strings.NewReader("x\n")); !errors.Is(err, ErrUnsafe) {
		t.Errorf("DeliverFolder into a symlinked folder: %v, want ErrUnsafe", err)
	}
	if _, err := CreateFolder(md, "x"); !errors.Is(err, ErrUnsafe) {
		t.Errorf("CreateFolder of a symlinked folder: %v, want ErrUnsafe", err)
	}
	assertEmpty(t, target)

	y := filepath.Join(md, ".y")
	os.Mkdir(y, 0o700)
	marker := filepath.Join(target, "nologin")
	os.Symlink(marker, filepath.Join(y, "maildirfolder"))
	if _, err := CreateFolder(md, "y"); err != nil {
		t.Fatalf("CreateFolder with maildirfolder a symlink: %v", err)
	}
	if _, err := os.Lstat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("maildirfolder's symlink was followed: %s exists (%v)", marker, err)
	}
	if _, err := DeliverFolder(md, "y", strings.NewReader("x\n")); err != nil {
		t.Errorf("delivery to a real folder: %v", err)
	}
	assertEmpty(t, target)
}

// TestDeliverFileMode: a delivered file is 0600 whatever the umask.
func TestDeliverFileMode(t *testing.T) {
	md := filepath.Join(t.TempDir(), "Maildir")
	if err := Create(md); err != nil {
		t.Fatal(err)
	}
	p, err := Deliver(md, strings.NewReader("x\n"))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want a regular file 0600", p, fi.Mode())
	}
}
