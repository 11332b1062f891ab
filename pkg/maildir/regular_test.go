package maildir

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestOpenRegular(t *testing.T) {
	dir := t.TempDir()
	msg := filepath.Join(dir, "msg")
	if err := os.WriteFile(msg, []byte("Subject: a\n\nbody\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := OpenRegular(msg)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(f); err != nil || string(b) != "Subject: a\n\nbody\n" {
		t.Errorf("read %q, %v", b, err)
	}
	if n, err := f.Seek(9, io.SeekStart); err != nil || n != 9 {
		t.Errorf("seek: %d, %v", n, err)
	}
	if b, _ := io.ReadAll(f); string(b) != "a\n\nbody\n" {
		t.Errorf("after seek: %q", b)
	}
	if err := f.Close(); err != nil {
		t.Error(err)
	}
	if _, err := f.Read(make([]byte, 1)); !errors.Is(err, os.ErrClosed) {
		t.Errorf("read after close: %v", err)
	}

	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	fifo := filepath.Join(dir, "fifo")
	sub := filepath.Join(dir, "sub")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	// A FIFO must be refused at once: with no writer, a blocking open
	// would never return and the test would time out.
	for _, p := range []string{link, fifo, sub} {
		if f, err := OpenRegular(p); !errors.Is(err, ErrNotRegular) {
			if f != nil {
				f.Close()
			}
			t.Errorf("%s: %v, want ErrNotRegular", filepath.Base(p), err)
		}
	}
	if _, err := OpenRegular(filepath.Join(dir, "gone")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
