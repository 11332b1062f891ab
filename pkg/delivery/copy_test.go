package delivery

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"letterbox/pkg/maildir"
	"letterbox/pkg/route"
	"letterbox/pkg/sysexits"
)

// TestTracedWriteToIsRead: what traced's WriteTo hands over is what
// reading it gives, for a message in one buffer, one longer than the
// buffer and one whose header is longer than the buffer.
func TestTracedWriteToIsRead(t *testing.T) {
	big := strings.Repeat("line of the body\n", 8000) // > 64 KiB
	longHead := "Subject: s\nX-Long: " + strings.Repeat("x", 70<<10) + "\n\n"
	for _, msg := range []string{"Subject: s\n\nbody\n", "Subject: s\r\n\r\n" + big, longHead + "body\n"} {
		read := prepared(t, "a@b", "u@x", msg)
		r, err := Prepare("a@b", "u@x", strings.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		var w bytes.Buffer
		n, err := r.(io.WriterTo).WriteTo(&w)
		if err != nil || n != int64(w.Len()) || w.String() != read {
			t.Fatalf("WriteTo of a %d-octet message: %d %v, same as Read: %v", len(msg), n, err, w.String() == read)
		}
		if !strings.HasSuffix(read, msg) {
			t.Fatalf("message changed")
		}
	}
}

// TestReadErrorAfterBuffer: a read error of the message after its first
// buffer, met while the message is written into the Maildir, is the
// message's (EX_IOERR), not the mailbox's, and leaves nothing in new/.
func TestReadErrorAfterBuffer(t *testing.T) {
	root := filepath.Join(t.TempDir(), "Maildir")
	d := route.Destination{Kind: route.Maildir, Path: root, Address: "u@x"}
	msg := &errReader{data: "Subject: s\n\n" + strings.Repeat("b", 100<<10), err: syscall.EIO}
	err := Deliver(d, "a@b", msg)
	if !errors.Is(err, ErrInput) || ExitCode(err) != sysexits.IOErr {
		t.Fatalf("read error: %v (exit %d)", err, ExitCode(err))
	}
	if msgs, _ := maildir.List(root); len(msgs) != 0 {
		t.Fatalf("%d messages delivered", len(msgs))
	}
}

type failWriter struct{ err error }

func (f failWriter) Write(p []byte) (int, error) { return 0, f.err }

// TestInputWriteError: an error of the writer the message is copied to is
// the writer's: the message is not marked as unreadable.
func TestInputWriteError(t *testing.T) {
	r, err := Prepare("a@b", "u@x", strings.NewReader("Subject: s\n\nbody\n"))
	if err != nil {
		t.Fatal(err)
	}
	in := &inputReader{r: r}
	if _, err := io.Copy(failWriter{syscall.ENOSPC}, in); !errors.Is(err, syscall.ENOSPC) || in.err != nil {
		t.Fatalf("copy: %v, input error %v", err, in.err)
	}
	in = &inputReader{r: &errReader{data: "x", err: syscall.EIO}}
	if _, err := io.Copy(io.Discard, in); !errors.Is(err, syscall.EIO) || !errors.Is(in.err, syscall.EIO) {
		t.Fatalf("copy of a failing reader without WriteTo: %v, input error %v", err, in.err)
	}
}

// TestMaildirDeliveryAllocs: delivering a 10 KB message into a Maildir
// allocates the 64 KiB buffer the message is read into and little else;
// a copy through a buffer of io.Copy's or io.MultiReader's (32 KiB more,
// pages deliver(8) would touch at every run) fails it.
func TestMaildirDeliveryAllocs(t *testing.T) {
	root := filepath.Join(t.TempDir(), "Maildir")
	if err := maildir.Create(root); err != nil {
		t.Fatal(err)
	}
	d := route.Destination{Kind: route.Maildir, Path: root}
	msg := "Subject: s\n\n" + strings.Repeat("0123456789abcde\n", 640)
	deliverOnce := func() {
		if err := Deliver(d, "a@b", strings.NewReader(msg)); err != nil {
			t.Fatal(err)
		}
	}
	deliverOnce() // first-use allocations (the host name) out of the count
	const runs = 5
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < runs; i++ {
		deliverOnce()
	}
	runtime.ReadMemStats(&after)
	per := (after.TotalAlloc - before.TotalAlloc) / runs
	if limit := uint64(64<<10 + 16<<10); per > limit {
		t.Errorf("%d octets allocated per delivery, want at most %d", per, limit)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "new")); len(ents) != runs+1 {
		t.Errorf("%d messages in new/", len(ents))
	}
}
