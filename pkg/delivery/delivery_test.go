package delivery

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"letterbox/pkg/maildir"
	"letterbox/pkg/mbox"
	"letterbox/pkg/route"
	"letterbox/pkg/sysexits"
)

func prepared(t *testing.T, sender, to, msg string) string {
	t.Helper()
	r, err := Prepare(sender, to, strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r)
	return string(b)
}

func TestPrepareHeaders(t *testing.T) {
	if got := prepared(t, "a@b", "u@x", "Subject: s\n\nbody\n"); got != "Return-Path: <a@b>\nDelivered-To: u@x\nSubject: s\n\nbody\n" {
		t.Errorf("LF: %q", got)
	}
	if got := prepared(t, "", "u@x", "Subject: s\r\n\r\nbody\r\n"); got != "Return-Path: <>\r\nDelivered-To: u@x\r\nSubject: s\r\n\r\nbody\r\n" {
		t.Errorf("CRLF, null sender: %q", got)
	}
	if got := prepared(t, "a@b", "", "x"); got != "Return-Path: <a@b>\nx" {
		t.Errorf("no recipient: %q", got)
	}
	// Delivered-To for someone else, and a body line that looks like ours,
	// are not loops.
	msg := "Delivered-To: other@x\nSubject: s\n\nDelivered-To: u@x\n"
	if got := prepared(t, "a@b", "u@x", msg); !strings.HasSuffix(got, msg) {
		t.Errorf("passed through: %q", got)
	}
}

// TestPrepareLongHeader: a header longer than the read buffer, with lines
// longer than it too, comes through unchanged; so does a message with no
// body, or whose last line has no line feed.
func TestPrepareLongHeader(t *testing.T) {
	for _, msg := range []string{
		strings.Repeat("X-Long: "+strings.Repeat("y", 990)+"\r\n", 100) + "\r\nbody\r\n",
		"X-Huge: " + strings.Repeat("z", 100<<10) + "\nSubject: s\n\nbody",
		strings.Repeat("X-H: v\n", 20000),
		"Subject: s",
		"",
	} {
		eol := "\n"
		if strings.HasPrefix(msg, "X-Long") {
			eol = "\r\n"
		}
		want := "Return-Path: <a@b>" + eol + "Delivered-To: u@x" + eol + msg
		if got := prepared(t, "a@b", "u@x", msg); got != want {
			t.Errorf("%.30q (%d bytes): got %d bytes %.60q", msg, len(msg), len(got), got)
		}
	}
	// A Delivered-To in the last line, unterminated, is not examined (it
	// isn't a complete header line).
	if got := prepared(t, "a@b", "u@x", "Subject: s\nDelivered-To: u@x"); !strings.HasSuffix(got, "Delivered-To: u@x") {
		t.Errorf("unterminated last line: %q", got)
	}
}

// errReader returns data, then err.
type errReader struct {
	data string
	err  error
}

func (e *errReader) Read(p []byte) (int, error) {
	if e.data == "" {
		return 0, e.err
	}
	n := copy(p, e.data)
	e.data = e.data[n:]
	return n, nil
}

func TestPrepareReadError(t *testing.T) {
	_, err := Prepare("a@b", "u@x", &errReader{data: "Subject: s\n", err: syscall.EIO})
	if !errors.Is(err, ErrInput) || ExitCode(err) != sysexits.IOErr {
		t.Errorf("read error: %v (exit %d)", err, ExitCode(err))
	}
}

func TestPrepareLoop(t *testing.T) {
	for _, msg := range []string{
		"Subject: s\nDelivered-To: u@x\n\nbody\n",
		"delivered-to:   U@X \r\n\r\n",
		"Delivered-To: <u@x>\n\n",
		strings.Repeat("Delivered-To: hop@x\n", MaxDeliveredTo+1) + "\n",
		// Headers longer than the first buffer take the line-by-line path.
		strings.Repeat("X-Long: "+strings.Repeat("y", 990)+"\n", 100) + "Delivered-To: u@x\n\nbody\n",
		"X-Huge: " + strings.Repeat("z", 100<<10) + "\nDelivered-To: u@x\n\n",
	} {
		_, err := Prepare("a@b", "u@x", strings.NewReader(msg))
		var de *Error
		if !errors.As(err, &de) || de.Temporary || de.Status != "5.4.6" || !errors.Is(err, ErrLoop) {
			t.Errorf("%.40q: %v", msg, err)
		}
		if ExitCode(err) != sysexits.DataErr {
			t.Errorf("exit code %d, want 65", ExitCode(err))
		}
	}
}

func TestDeliverMaildirAndFolder(t *testing.T) {
	root := filepath.Join(t.TempDir(), "u", "Maildir")
	d := route.Destination{Kind: route.Maildir, Path: root, Address: "u@x"}
	if err := Deliver(d, "a@b", strings.NewReader("Subject: 1\n\nbody\n")); err != nil {
		t.Fatal(err)
	}
	d.Folder = "lists"
	if err := Deliver(d, "a@b", strings.NewReader("Subject: 2\n\nbody\n")); err != nil {
		t.Fatal(err)
	}
	for dir, subj := range map[string]string{root: "Subject: 1", filepath.Join(root, ".lists"): "Subject: 2"} {
		msgs, err := maildir.List(dir)
		if err != nil || len(msgs) != 1 {
			t.Fatalf("%s: %d messages, %v", dir, len(msgs), err)
		}
		b, _ := os.ReadFile(msgs[0].Path)
		if !strings.HasPrefix(string(b), "Return-Path: <a@b>\nDelivered-To: u@x\n"+subj) {
			t.Errorf("%s: %q", dir, b)
		}
	}
	// A Folder that would leave the Maildir is refused.
	d.Folder = "../evil"
	if err := Deliver(d, "a@b", strings.NewReader("x\n")); err == nil {
		t.Fatal("delivered to ../evil")
	}
}

func TestDeliverMbox(t *testing.T) {
	p := filepath.Join(t.TempDir(), "mbox")
	d := route.Destination{Kind: route.Mbox, Path: p, Address: "u@x"}
	if err := Deliver(d, "a@b", strings.NewReader("Subject: 1\n\nFrom here\n")); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(p)
	defer f.Close()
	msgs, err := mbox.Scan(f)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("%d %v", len(msgs), err)
	}
	b, _ := io.ReadAll(mbox.Open(f, msgs[0]))
	if string(b) != "Return-Path: <a@b>\nDelivered-To: u@x\nSubject: 1\n\nFrom here\n" {
		t.Errorf("%q", b)
	}
	if !strings.HasPrefix(msgs[0].From, "From a@b ") {
		t.Errorf("From_ line %q", msgs[0].From)
	}
}

func TestCantCreateIsTemporary(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	for _, d := range []route.Destination{
		{Kind: route.Maildir, Path: filepath.Join(file, "Maildir"), Address: "u@x"},
		{Kind: route.Mbox, Path: filepath.Join(file, "mbox"), Address: "u@x"},
		{Kind: route.Mbox, Path: filepath.Join(t.TempDir(), "missing", "mbox"), Address: "u@x"},
	} {
		err := Deliver(d, "a@b", strings.NewReader("x\n"))
		var de *Error
		if !errors.As(err, &de) || !de.Temporary || !strings.HasPrefix(de.Status, "4.") {
			t.Errorf("%s: %v", d.Path, err)
		}
		if ExitCode(err) != sysexits.CantCreat {
			t.Errorf("%s: exit %d, want 73 (%v)", d.Path, ExitCode(err), err)
		}
	}
}

func TestPipe(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	d := route.Destination{Kind: route.Pipe, Address: "u+x@example.test", Original: "alias@example.test",
		Command: fmt.Sprintf(`{ echo "$SENDER|$RECIPIENT|$LOCAL|$DOMAIN|$ORIGINAL_RECIPIENT"; cat; } > %s`, out)}
	if err := Deliver(d, "a@b", strings.NewReader("Subject: p\n\nbody\n")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	want := "a@b|u+x@example.test|u+x|example.test|alias@example.test\nReturn-Path: <a@b>\nDelivered-To: u+x@example.test\nSubject: p\n\nbody\n"
	if string(b) != want {
		t.Errorf("pipe got %q", b)
	}
	d.Command = "cat >/dev/null; echo '  try later  ' >&2; exit 75"
	err := Deliver(d, "a@b", strings.NewReader("x\n"))
	var de *Error
	if !errors.As(err, &de) || !de.Temporary || !strings.Contains(err.Error(), "try later") {
		t.Errorf("exit 75: %v", err)
	}
	d.Command = "echo '  no such list  ' >&2; exit 1"
	err = Deliver(d, "a@b", strings.NewReader("x\n"))
	if !errors.As(err, &de) || de.Temporary || !strings.HasSuffix(err.Error(), ": no such list") || !strings.HasPrefix(de.Status, "5.") {
		t.Errorf("exit 1: %v", err)
	}
	d.Command = "kill -9 $$"
	if err := Deliver(d, "a@b", strings.NewReader("x\n")); !errors.As(err, &de) || !de.Temporary {
		t.Errorf("killed: %v", err)
	}
	// A command that doesn't read its input still succeeds.
	d.Command = "exit 0"
	if err := Deliver(d, "a@b", strings.NewReader(strings.Repeat("x", 1<<20))); err != nil {
		t.Errorf("exit 0 without reading: %v", err)
	}
}

func TestRemoteIsNotLocal(t *testing.T) {
	err := Deliver(route.Destination{Kind: route.Remote, Address: "r@far"}, "a@b", strings.NewReader("x\n"))
	var de *Error
	if !errors.As(err, &de) || de.Temporary {
		t.Fatalf("remote: %v", err)
	}
}

type brokenReader struct{}

func (brokenReader) Read([]byte) (int, error) { return 0, syscall.EIO }

func TestExitCodes(t *testing.T) {
	cases := []struct {
		err  error
		code int
	}{
		{nil, 0},
		{sysexits.New(sysexits.Usage, errors.New("u")), 64},
		{fmt.Errorf("x: %w", route.ErrNoSuchUser), 67},
		{fmt.Errorf("x: %w", route.ErrBadAddress), 64},
		{fmt.Errorf("x: %w", route.ErrLoop), 65},
		{classify(fmt.Errorf("x: %w", syscall.EACCES)), 77},
		{classify(fmt.Errorf("%w: %w", ErrCantCreate, syscall.ENOTDIR)), 73},
		{classify(fmt.Errorf("x: %w", syscall.ENOSPC)), 75},
		{classify(fmt.Errorf("x: %w", syscall.EIO)), 75},
		{&Error{Status: "5.3.0", Err: fmt.Errorf("%w: x", ErrPipe)}, 69},
		{errors.New("unknown"), 75},
	}
	for _, c := range cases {
		if got := ExitCode(c.err); got != c.code {
			t.Errorf("ExitCode(%v) = %d, want %d", c.err, got, c.code)
		}
	}
	if de := classify(fmt.Errorf("x: %w", syscall.ENOSPC)); de.Status != "4.2.0" || !de.Temporary {
		t.Errorf("disk full: %+v", de)
	}
	if de := classify(fmt.Errorf("x: %w", syscall.EIO)); de.Status != "4.3.0" || !de.Temporary {
		t.Errorf("I/O error: %+v", de)
	}
	// A message that can't be read is 74, not the mailbox's fault.
	err := Deliver(route.Destination{Kind: route.Maildir, Path: filepath.Join(t.TempDir(), "M")}, "", brokenReader{})
	if ExitCode(err) != sysexits.IOErr {
		t.Errorf("broken input: exit %d (%v)", ExitCode(err), err)
	}
}

func TestRunUsage(t *testing.T) {
	for _, q := range []Request{{}, {Maildir: "a", Mbox: "b"}, {Maildir: "a", Address: "u@x"}} {
		if err := Run(q); ExitCode(err) != sysexits.Usage {
			t.Errorf("%+v: %v", q, err)
		}
	}
}
