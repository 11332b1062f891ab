package mbox

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var date = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// readAll scans path and returns each message's content via Open, checking
// that Size and Lines agree with it.
func readAll(t testing.TB, path string) ([]Message, []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	msgs, err := Scan(f)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		b, err := io.ReadAll(Open(f, m))
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != m.Size || int64(bytes.Count(b, []byte("\n"))) != m.Lines {
			t.Fatalf("message at %d: Open gave %d bytes %d lines, Scan said %d, %d", m.Offset, len(b), bytes.Count(b, []byte("\n")), m.Size, m.Lines)
		}
		out = append(out, string(b))
	}
	return msgs, out
}

func TestRoundTripTrickyBodies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mbox")
	long := strings.Repeat(">", 70000) + "From the far end\n" // longer than any buffer
	bodies := []struct{ in, want string }{
		{"Subject: a\n\nFrom the start\n", ""},
		{"Subject: b\n\n>From once\n>>From twice\n>>>From thrice\n", ""},
		{"Subject: c\n\nno trailing newline", "Subject: c\n\nno trailing newline\n"},
		{"Subject: d\r\n\r\nCRLF\r\nFrom crlf\r\n", "Subject: d\n\nCRLF\nFrom crlf\n"},
		{"", ""},
		{"Subject: e\n\n\n\n", ""},
		{"Subject: f\n\nFrom\nFrom:\n>From\n>Fro\n From x\n", ""},
		{"Subject: g\n\n" + long, ""},
		{"Subject: h\n\nlone\rCR\n", ""},
	}
	for _, b := range bodies {
		if err := Append(path, "s@example.org", date, strings.NewReader(b.in)); err != nil {
			t.Fatal(err)
		}
	}
	msgs, got := readAll(t, path)
	if len(got) != len(bodies) {
		t.Fatalf("%d messages, want %d", len(got), len(bodies))
	}
	for i, b := range bodies {
		want := b.want
		if want == "" {
			want = b.in
		}
		if got[i] != want {
			t.Errorf("message %d: got %.80q, want %.80q", i, got[i], want)
		}
		if msgs[i].From != "From s@example.org Mon Nov 23 12:00:00 2026" {
			t.Errorf("From_ line %q", msgs[i].From)
		}
	}
	raw, _ := os.ReadFile(path)
	if !bytes.Contains(raw, []byte("\n>From the start\n")) || !bytes.Contains(raw, []byte("\n>>>>From thrice\n")) {
		t.Error("mboxrd quoting missing in the file")
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mbox mode %v, want 0600", fi.Mode())
	}
	if _, err := os.Stat(path + ".lock"); !os.IsNotExist(err) {
		t.Error("dotlock left behind")
	}
}

func TestNullSenderAndSpaces(t *testing.T) {
	if l := FromLine("", date); l != "From MAILER-DAEMON Mon Nov 23 12:00:00 2026" {
		t.Error(l)
	}
	if l := FromLine("a b@c", date); l != "From a_b@c Mon Nov 23 12:00:00 2026" {
		t.Error(l)
	}
}

func TestScanCorpus(t *testing.T) {
	cases := map[string][]string{
		"mixed.mbox": {"Subject: one\n\nFrom quoted\n>From twice\nFrom: not a separator (mid-line)\n", "Subject: two\n\nCRLF body\n"},
		"edge.mbox":  {"", "no trailing newline"},
		// An unquoted From_ line after a blank line starts a message: the
		// mboxo ambiguity every reader has.
		"mboxo.mbox": {"Subject: mboxo\n", "body\n"},
	}
	for name, want := range cases {
		_, got := readAll(t, filepath.Join("../../testdata/mbox", name))
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
	f, _ := os.Open("../../testdata/mbox/notmbox.txt")
	defer f.Close()
	if _, err := Scan(f); !errors.Is(err, ErrNotMbox) {
		t.Errorf("Scan of a non-mbox: %v", err)
	}
}

type failAfter struct{ n int }

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("reader broke")
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	for i := range p {
		p[i] = 'y'
	}
	f.n -= len(p)
	return len(p), nil
}

func TestTruncateBackOnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mbox")
	if err := Append(path, "a@b", date, strings.NewReader("Subject: kept\n\nbody\n")); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	if err := Append(path, "a@b", date, &failAfter{n: 300000}); err == nil {
		t.Fatal("Append with a failing reader succeeded")
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatalf("file changed after a failed append: %d → %d bytes", len(before), len(after))
	}
	if _, err := os.Stat(path + ".lock"); !os.IsNotExist(err) {
		t.Error("dotlock left behind after a failed append")
	}
}

func TestRecoverDeadHoldersPartialAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mbox")
	Append(path, "a@b", date, strings.NewReader("Subject: whole\n\nbody\n"))
	whole, _ := os.ReadFile(path)
	// What a killed Append leaves: its dotlock with the start size, and a
	// partial record.
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("From a@b Mon Nov 23 12:00:00 2026\nSubject: partial\n\nhalf a bo")
	f.Close()
	dead := deadPID(t)
	os.WriteFile(path+".lock", []byte(appendRecordOf(t, dead, len(whole), path)), 0o600)
	l, err := LockFile(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	l.Unlock()
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, whole) {
		t.Fatalf("partial record not truncated: %q", got)
	}
}

// appendRecordOf is the dotlock record a holder pid appending to the file
// at path from size leaves: "pid@host size dev ino".
func appendRecordOf(t testing.TB, pid, size int, path string) string {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%d@%s %d %d %d\n", pid, lockHost(), size, uint64(st.Dev), st.Ino)
}

// deadPID returns the pid of a process that has exited.
func deadPID(t testing.TB) int {
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	return c.Process.Pid
}

func TestStaleDotlockByAge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mbox")
	// procmail's dotlocks hold "0": no pid to check, so only age counts.
	os.WriteFile(path+".lock", []byte("0"), 0o600)
	if _, err := LockFile(path, 50*time.Millisecond); err == nil {
		t.Fatal("a fresh foreign dotlock was ignored")
	}
	old := time.Now().Add(-StaleAfter - time.Minute)
	os.Chtimes(path+".lock", old, old)
	l, err := LockFile(path, time.Second)
	if err != nil {
		t.Fatalf("stale dotlock not removed: %v", err)
	}
	l.Unlock()
}

// The helper process: holds the lock on MBOX_HELPER_PATH until stdin
// closes, or appends a message.
func TestMain(m *testing.M) {
	switch os.Getenv("MBOX_HELPER") {
	case "hold":
		l, err := LockFile(os.Getenv("MBOX_HELPER_PATH"), 10*time.Second)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("locked")
		io.Copy(io.Discard, os.Stdin)
		l.Unlock()
		os.Exit(0)
	case "append":
		err := Append(os.Getenv("MBOX_HELPER_PATH"), "helper@b", date, strings.NewReader("Subject: from helper\n\nhi\n"))
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func helper(t *testing.T, mode, path string) (*exec.Cmd, io.WriteCloser, *bytes.Buffer) {
	c := exec.Command(os.Args[0], "-test.run=^$")
	c.Env = append(os.Environ(), "MBOX_HELPER="+mode, "MBOX_HELPER_PATH="+path)
	in, _ := c.StdinPipe()
	var out bytes.Buffer
	c.Stdout = &out
	return c, in, &out
}

func TestLockContentionAcrossProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mbox")
	hold, in, _ := helper(t, "hold", path)
	hold.Stdout = nil
	stdout, err := hold.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 7)
	if _, err := io.ReadFull(stdout, line); err != nil || string(line) != "locked\n" {
		t.Fatalf("helper: %q %v", line, err)
	}
	// Held by the other process: we time out.
	if _, err := LockFile(path, 100*time.Millisecond); err == nil {
		t.Fatal("got the lock while another process holds it")
	}
	// An appender in a third process waits for the holder.
	app, _, appOut := helper(t, "append", path)
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	in.Close()
	if err := hold.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := app.Wait(); err != nil {
		t.Fatalf("appender: %v %s", err, appOut)
	}
	_, got := readAll(t, path)
	if len(got) != 1 || got[0] != "Subject: from helper\n\nhi\n" {
		t.Fatalf("after contention: %q", got)
	}
}

func TestRewrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mbox")
	for i := 0; i < 5; i++ {
		Append(path, "a@b", date, strings.NewReader("Subject: "+strconv.Itoa(i)+"\n\nFrom body "+strconv.Itoa(i)+"\n"))
	}
	os.Chmod(path, 0o640)
	l, err := LockFile(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := os.Open(path) // a reader of the old file keeps seeing it whole
	defer old.Close()
	msgs, err := Scan(l.File())
	if err != nil || len(msgs) != 5 {
		t.Fatalf("scan: %d %v", len(msgs), err)
	}
	// A bad message list fails and changes nothing.
	if err := Rewrite(path, []Message{{Offset: 0, Length: 1 << 30}}, l); err == nil {
		t.Fatal("Rewrite with an out-of-file message succeeded")
	}
	if err := Rewrite(path, []Message{msgs[1], msgs[3]}, l); err != nil {
		t.Fatal(err)
	}
	// The lock moved to the new file: it is still held against others.
	if os.Getenv("MBOX_HELPER") == "" {
		c, _, out := helper(t, "append", path)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		l.Unlock()
		if err := c.Wait(); err != nil {
			t.Fatalf("append after rewrite: %v %s", err, out)
		}
	}
	_, got := readAll(t, path)
	want := []string{"Subject: 1\n\nFrom body 1\n", "Subject: 3\n\nFrom body 3\n", "Subject: from helper\n\nhi\n"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("after Rewrite: %q", got)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v not preserved", fi.Mode())
	}
	oldMsgs, err := Scan(old)
	if err != nil || len(oldMsgs) != 5 {
		t.Errorf("old file seen by an open reader: %d messages, %v", len(oldMsgs), err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "mbox" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	// Rewrite of the last message without its blank line still separates.
	p2 := filepath.Join(dir, "edge")
	raw, _ := os.ReadFile("../../testdata/mbox/edge.mbox")
	os.WriteFile(p2, raw, 0o600)
	f2, _ := os.Open(p2)
	m2, _ := Scan(f2)
	f2.Close()
	if err := Rewrite(p2, []Message{m2[1], m2[0]}, nil); err != nil {
		t.Fatal(err)
	}
	_, got2 := readAll(t, p2)
	if strings.Join(got2, "|") != "no trailing newline\n|" {
		t.Fatalf("rewrite of edge: %q", got2)
	}
}

func FuzzScan(f *testing.F) {
	ents, _ := os.ReadDir("../../testdata/mbox")
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join("../../testdata/mbox", e.Name()))
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, err := Scan(bytes.NewReader(data))
		if err != nil {
			return
		}
		var end int64
		for _, m := range msgs {
			if m.Offset != end || m.Length <= 0 {
				t.Fatalf("records don't tile the file: %+v after %d", m, end)
			}
			end = m.Offset + m.Length
			b, err := io.ReadAll(Open(bytes.NewReader(data), m))
			if err != nil || int64(len(b)) != m.Size || int64(bytes.Count(b, []byte("\n"))) != m.Lines {
				t.Fatalf("Open %d bytes %v, Scan said %d", len(b), err, m.Size)
			}
		}
		if end != int64(len(data)) {
			t.Fatalf("records end at %d of %d", end, len(data))
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("Subject: x\n\nFrom a\n>From b\n"))
	f.Add([]byte("no newline"))
	f.Add([]byte("a\r\nFrom b\r\n\r\n"))
	f.Add([]byte("\n\nFrom \n"))
	dir := f.TempDir()
	n := 0
	f.Fuzz(func(t *testing.T, body []byte) {
		n++
		path := filepath.Join(dir, strconv.Itoa(n))
		defer os.Remove(path)
		for i := 0; i < 2; i++ {
			if err := Append(path, "s@x", date, bytes.NewReader(body)); err != nil {
				t.Fatal(err)
			}
		}
		_, got := readAll(t, path)
		if len(got) != 2 || got[0] != got[1] {
			t.Fatalf("2 appends gave %d messages: %q", len(got), got)
		}
		if !bytes.Contains(body, []byte("\r")) {
			want := string(body)
			if want != "" && !strings.HasSuffix(want, "\n") {
				want += "\n"
			}
			if got[0] != want {
				t.Fatalf("round trip: %q → %q", body, got[0])
			}
		}
		// What we read back is a fixed point.
		p2 := path + ".2"
		defer os.Remove(p2)
		Append(p2, "s@x", date, strings.NewReader(got[0]))
		_, again := readAll(t, p2)
		if len(again) != 1 || again[0] != got[0] {
			t.Fatalf("not stable: %q → %q", got[0], again)
		}
	})
}

func TestUnlockKeepsAnothersDotlock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mbox")
	l, err := LockFile(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Touch(); err != nil {
		t.Fatal(err)
	}
	// Our dotlock was taken for stale and replaced by another locker's.
	os.Remove(path + ".lock")
	os.WriteFile(path+".lock", []byte("1\n"), 0o600)
	l.Unlock()
	if b, err := os.ReadFile(path + ".lock"); err != nil || string(b) != "1\n" {
		t.Fatalf("another's dotlock removed: %q %v", b, err)
	}
	os.Remove(path + ".lock")
	if _, err := LockFile(path, time.Second); err != nil {
		t.Fatal(err)
	}
	// Held (the dotlock is ours, pid alive): a second locker times out
	// with ErrLocked.
	if _, err := LockFile(path, 50*time.Millisecond); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second locker: %v", err)
	}
}

// TestDotlockOtherHost: a dotlock naming a process of another host (the
// mbox shared over NFS) is not judged by this host's processes: it is
// waited for until it is StaleAfter old. One naming a dead process of
// this host is stale at once.
func TestDotlockOtherHost(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mbox")
	dead := deadPID(t)
	os.WriteFile(path+".lock", []byte(fmt.Sprintf("%d@other-host.example\n", dead)), 0o600)
	if _, err := LockFile(path, 100*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Fatalf("another host's fresh dotlock was not waited for: %v", err)
	}
	old := time.Now().Add(-StaleAfter - time.Minute)
	os.Chtimes(path+".lock", old, old)
	l, err := LockFile(path, time.Second)
	if err != nil {
		t.Fatalf("another host's stale dotlock: %v", err)
	}
	b, _ := os.ReadFile(path + ".lock")
	if want := fmt.Sprintf("%d@%s\n", os.Getpid(), lockHost()); string(b) != want {
		t.Errorf("our dotlock holds %q, want %q", b, want)
	}
	l.Unlock()

	os.WriteFile(path+".lock", []byte(fmt.Sprintf("%d@%s\n", dead, lockHost())), 0o600)
	l, err = LockFile(path, time.Second)
	if err != nil {
		t.Fatalf("a dead process's dotlock of this host: %v", err)
	}
	l.Unlock()
	if _, err := os.Stat(path + ".lock"); !os.IsNotExist(err) {
		t.Errorf("dotlock left: %v", err)
	}
}

// TestDotlockLinkFailedButMade: a link that reports an error but was made
// (a retransmitted NFS LINK) holds the lock; no temporary file is left.
func TestDotlockLinkFailedButMade(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mbox")
	orig := linkAt
	defer func() { linkAt = orig }()
	linkAt = func(dirfd int, old, new string) error {
		if err := orig(dirfd, old, new); err != nil {
			return err
		}
		return &os.LinkError{Op: "link", Old: old, New: new, Err: syscall.EEXIST}
	}
	l, err := LockFile(path, 200*time.Millisecond)
	if err != nil {
		t.Fatalf("LockFile with a link that failed but was made: %v", err)
	}
	l.Unlock()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "mbox" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}
