package tests

import (
	"bytes"
	"fmt"
	"io"
	"letterbox/pkg/privsep/privseptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"letterbox/pkg/maildir"
	"letterbox/pkg/mbox"
)

const deliverMsg = "From: Alice <alice@example.org>\nTo: u@example.test\nSubject: hello\n\nFrom the start\n>From quoted\nbye\n"

// deliverUsers writes users file lines (address, extra field).
func (e *env) deliverUsers(lines ...string) {
	e.t.Helper()
	var b strings.Builder
	for _, l := range lines {
		addr, extra, _ := strings.Cut(l, " ")
		fmt.Fprintf(&b, "%s:{PLAIN}secret::::::%s\n", addr, extra)
	}
	must(e.t, os.WriteFile(e.Users, []byte(b.String()), 0o600))
}

func readOnly(t *testing.T, dir string) string {
	t.Helper()
	var files []string
	for _, sub := range []string{"new", "cur"} {
		files = append(files, maildirFiles(t, dir, sub)...)
	}
	if len(files) != 1 {
		t.Fatalf("%s: %d messages, want 1", dir, len(files))
	}
	b, err := os.ReadFile(files[0])
	must(t, err)
	return string(b)
}

func TestDeliverMaildir(t *testing.T) {
	e := newEnv(t)
	md := filepath.Join(e.Dir, "u", "Maildir")
	out, errs, code := e.run(deliverMsg, "deliver", "-f", "alice@example.org", "-a", "u@example.test", "--maildir", md)
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errs)
	}
	got := readOnly(t, md)
	if got != "Return-Path: <alice@example.org>\nDelivered-To: u@example.test\n"+deliverMsg {
		t.Fatalf("stored %q", got)
	}
	for _, p := range append(maildirFiles(t, md, "new"), md, filepath.Join(md, "new"), filepath.Join(md, "tmp")) {
		fi, err := os.Stat(p)
		must(t, err)
		want := os.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
	// SENDER and RECIPIENT from the environment (qmail, getmail, Postfix).
	md2 := filepath.Join(e.Dir, "env")
	c := e.cmd("deliver", "--maildir", md2)
	c.Env = append(c.Env, "SENDER=bob@example.org", "RECIPIENT=v@example.test")
	c.Stdin = strings.NewReader("Subject: env\n\nx\n")
	if out, err := bounded(t, c).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got := readOnly(t, md2); !strings.HasPrefix(got, "Return-Path: <bob@example.org>\nDelivered-To: v@example.test\nSubject: env\n") {
		t.Fatalf("env: %q", got)
	}
}

func TestDeliverMbox(t *testing.T) {
	e := newEnv(t)
	mb := filepath.Join(e.Dir, "mbox")
	for _, from := range []string{"alice@example.org", ""} {
		out, errs, code := e.run(deliverMsg, "deliver", "-f", from, "-a", "u@example.test", "--mbox", mb)
		if code != 0 {
			t.Fatalf("exit %d: %s%s", code, out, errs)
		}
	}
	// Python's mailbox module, a reader nobody here wrote.
	got := python(t, `
import mailbox, sys
for m in mailbox.mbox(sys.argv[1]):
    print(repr(m.get_from()), m["Return-Path"], m["Delivered-To"], m["Subject"], repr(m.get_payload()))
`, mb)
	want := `'alice@example.org ` // the date follows
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], want) || !strings.HasPrefix(lines[1], "'MAILER-DAEMON ") {
		t.Fatalf("python mailbox:\n%s", got)
	}
	for _, l := range lines {
		// mboxrd quoting as written; Python's reader doesn't unquote.
		if !strings.Contains(l, " u@example.test hello '>From the start\\n>>From quoted\\nbye\\n'") {
			t.Errorf("python saw %s", l)
		}
	}
	fi, _ := os.Stat(mb)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mbox mode %v", fi.Mode().Perm())
	}
}

func TestDeliverAddress(t *testing.T) {
	e := newEnv(t)
	mboxPath := filepath.Join(e.Dir, "m.mbox")
	// The aliases file is root's: its pipes run as default-privs (nobody),
	// who may write only where everyone may (issue 15).
	pipeDir := privseptest.Dir(t)
	must(t, os.Chmod(pipeDir, 0o777))
	piped := filepath.Join(pipeDir, "piped")
	e.deliverUsers("u@example.test", "m@example.test mail=mbox:"+mboxPath)
	must(t, os.WriteFile(e.Aliases, []byte("postmaster: u\nteam: u, m\nbot: |cat > "+piped+"\nfwd: someone@remote.test\n"), 0o600))
	udir := filepath.Join(e.MailRoot, "example.test", "u")
	_, errs, code := e.run(deliverMsg, "deliver", "-f", "alice@example.org", "U@Example.Test")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if got := readOnly(t, udir); !strings.HasPrefix(got, "Return-Path: <alice@example.org>\nDelivered-To: u@example.test\n") {
		t.Fatalf("stored %q", got)
	}
	// +detail: the folder .lists when it exists, else INBOX.
	_, err := maildir.CreateFolder(udir, "lists")
	must(t, err)
	if _, errs, code := e.run(deliverMsg, "deliver", "u+lists@example.test"); code != 0 {
		t.Fatalf("+lists: exit %d: %s", code, errs)
	}
	if got := readOnly(t, filepath.Join(udir, ".lists")); !strings.Contains(got, "Delivered-To: u+lists@example.test\n") {
		t.Fatalf(".lists got %q", got)
	}
	if _, errs, code := e.run(deliverMsg, "deliver", "u+nofolder@example.test"); code != 0 {
		t.Fatalf("+nofolder: exit %d: %s", code, errs)
	}
	if n := len(maildirFiles(t, udir, "new")); n != 2 {
		t.Fatalf("INBOX holds %d messages, want 2", n)
	}
	// An alias to two users: a Maildir and an mbox.
	if _, errs, code := e.run(deliverMsg, "deliver", "team@example.test"); code != 0 {
		t.Fatalf("team: exit %d: %s", code, errs)
	}
	f, err := os.Open(mboxPath)
	must(t, err)
	msgs, err := mbox.Scan(f)
	f.Close()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("mbox user: %d messages, %v", len(msgs), err)
	}
	// A pipe alias gets the environment.
	if _, errs, code := e.run(deliverMsg, "deliver", "-f", "alice@example.org", "bot@example.test"); code != 0 {
		t.Fatalf("bot: exit %d: %s", code, errs)
	}
	b, _ := os.ReadFile(piped)
	if !strings.HasPrefix(string(b), "Return-Path: <alice@example.org>\n") || !strings.HasSuffix(string(b), deliverMsg) {
		t.Fatalf("pipe got %q", b)
	}
	// A remote alias target is forwarded through sendmail into the queue,
	// with a Delivered-To that catches a loop back to us.
	if _, errs, code := e.run(deliverMsg, "deliver", "-f", "alice@example.org", "fwd@example.test"); code != 0 {
		t.Fatalf("fwd: exit %d: %s", code, errs)
	}
	q, errs, code := e.run("", "queue-runner", "list", "--json")
	if code != 0 || !strings.Contains(q, `"address": "someone@remote.test"`) || !strings.Contains(q, `"from": "alice@example.org"`) {
		t.Fatalf("queue after forwarding (exit %d):\n%s%s", code, q, errs)
	}
	// Unknown user: 67, nothing delivered.
	if _, errs, code := e.run(deliverMsg, "deliver", "nobody@example.test"); code != 67 {
		t.Fatalf("unknown user: exit %d, want 67: %s", code, errs)
	}
}

func TestDeliverExitCodes(t *testing.T) {
	e := newEnv(t)
	file := filepath.Join(e.Dir, "plainfile")
	must(t, os.WriteFile(file, nil, 0o600))
	md := filepath.Join(e.Dir, "M")
	cases := []struct {
		name  string
		stdin string
		args  []string
		code  int
	}{
		{"no target", deliverMsg, nil, 64},
		{"two targets", deliverMsg, []string{"--maildir", md, "--mbox", file}, 64},
		{"unknown flag", deliverMsg, []string{"--bogus", "--maildir", md}, 64},
		{"two addresses", deliverMsg, []string{"a@example.test", "b@example.test"}, 64},
		{"loop", "Delivered-To: u@example.test\n" + deliverMsg, []string{"-a", "u@example.test", "--maildir", md}, 65},
		{"unknown user", deliverMsg, []string{"ghost@example.test"}, 67},
		{"can't create maildir", deliverMsg, []string{"--maildir", filepath.Join(file, "M")}, 73},
		{"can't create mbox", deliverMsg, []string{"--mbox", filepath.Join(e.Dir, "no", "such", "mbox")}, 73},
	}
	for _, c := range cases {
		out, errs, code := e.run(c.stdin, "deliver", c.args...)
		if code != c.code {
			t.Errorf("%s: exit %d, want %d\n%s%s", c.name, code, c.code, out, errs)
		}
	}
	// One good delivery, so that the Maildir is there to look in: only it
	// may be there.
	if _, errs, code := e.run(deliverMsg, "deliver", "--maildir", md); code != 0 {
		t.Fatalf("a good delivery: exit %d: %s", code, errs)
	}
	if n := len(maildirFiles(t, md, "new")); n != 1 {
		t.Fatalf("%d messages in new/, want only the good one: the failing runs delivered", n)
	}
}

// TestDeliverPermissionDenied runs deliver as a user without access to the
// mailbox: 77. As root, it drops to nobody with setpriv(1).
func TestDeliverPermissionDenied(t *testing.T) {
	locked, err := os.MkdirTemp("", "letterbox-perm-")
	must(t, err)
	defer os.RemoveAll(locked)
	must(t, os.Chmod(locked, 0o700))
	bdir, err := os.MkdirTemp("", "letterbox-permbin-")
	must(t, err)
	defer os.RemoveAll(bdir)
	must(t, os.Chmod(bdir, 0o755))
	exe := filepath.Join(bdir, "deliver")
	src, err := os.ReadFile(bin(t, "deliver"))
	must(t, err)
	must(t, os.WriteFile(exe, src, 0o755))
	var c *exec.Cmd
	args := []string{"--config", "/dev/null"}
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("setpriv"); err != nil {
			t.Fatal("running as root without setpriv(1): cannot test permission denied")
		}
		c = exec.Command("setpriv", append([]string{"--reuid=nobody", "--regid=nogroup", "--clear-groups", exe}, args...)...)
	} else {
		must(t, os.Chmod(locked, 0o500))
		defer os.Chmod(locked, 0o700)
		c = exec.Command(exe, args...)
	}
	for _, target := range [][]string{{"--maildir", filepath.Join(locked, "M")}, {"--mbox", filepath.Join(locked, "mbox")}} {
		cc := exec.Command(c.Path, append(c.Args[1:], target...)...)
		cc.Stdin = strings.NewReader(deliverMsg)
		out, err := bounded(t, cc).CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 77 {
			t.Errorf("%v: %v, want exit 77\n%s", target, err, out)
		}
	}
}

// crashMessage is a large message with From_ lines to quote.
func crashMessage() []byte {
	var b bytes.Buffer
	b.WriteString("From: big@example.org\nSubject: big\n\n")
	for i := 0; b.Len() < 4<<20; i++ {
		if i%100 == 0 {
			b.WriteString("From the middle of a line block " + strconv.Itoa(i) + "\n")
		}
		fmt.Fprintf(&b, "line %08d of a large message body, padded to a realistic width .....\n", i)
	}
	return b.Bytes()
}

// killDuring starts deliver, writes part of msg (all of it when part is
// len(msg), then closes stdin), and SIGKILLs it.
func killDuring(t *testing.T, e *env, msg []byte, part int, args ...string) {
	c := e.cmd("deliver", args...)
	in, err := c.StdinPipe()
	must(t, err)
	must(t, c.Start())
	in.Write(msg[:part])
	if part == len(msg) {
		in.Close()
	}
	c.Process.Signal(syscall.SIGKILL)
	c.Wait()
	in.Close()
}

func TestDeliverCrashMaildir(t *testing.T) {
	e := newEnv(t)
	md := filepath.Join(e.Dir, "Maildir")
	msg := crashMessage()
	want := "Return-Path: <s@example.org>\nDelivered-To: u@example.test\n" + string(msg)
	const rounds = 10
	for i := 0; i < rounds; i++ {
		killDuring(t, e, msg, (i+1)*len(msg)/rounds, "-f", "s@example.org", "-a", "u@example.test", "--maildir", md)
	}
	if _, errs, code := e.run(string(msg), "deliver", "-f", "s@example.org", "-a", "u@example.test", "--maildir", md); code != 0 {
		t.Fatalf("final delivery: exit %d %s", code, errs)
	}
	files := append(maildirFiles(t, md, "new"), maildirFiles(t, md, "cur")...)
	if len(files) == 0 {
		t.Fatal("no message in new/")
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		must(t, err)
		if string(b) != want {
			t.Fatalf("%s: partial or wrong message (%d bytes of %d)", p, len(b), len(want))
		}
	}
	// The kills landed while the message was being written (not before,
	// not after): their partial files stayed in tmp/.
	if n := len(maildirFiles(t, md, "tmp")); n < rounds/2 {
		t.Fatalf("only %d partial files in tmp/: the kills didn't land mid-write", n)
	}
}

func TestDeliverCrashMbox(t *testing.T) {
	e := newEnv(t)
	mb := filepath.Join(e.Dir, "mbox")
	msg := crashMessage()
	want := "Return-Path: <s@example.org>\nDelivered-To: u@example.test\n" + string(msg)
	const rounds = 10
	partial := 0
	for i := 0; i < rounds; i++ {
		killDuring(t, e, msg, (i+1)*len(msg)/rounds, "-f", "s@example.org", "-a", "u@example.test", "--mbox", mb)
		// Right after a kill: the file holds whole messages, or the dead
		// holder's dotlock records where the partial one starts ("pid@host
		// size dev ino").
		raw, _ := os.ReadFile(mb)
		if l, err := os.ReadFile(mb + ".lock"); err == nil {
			f := strings.Fields(string(l))
			if len(f) == 4 {
				n, _ := strconv.Atoi(f[1])
				if n < len(raw) {
					partial++
				}
				raw = raw[:n]
			}
		}
		msgs, err := mbox.Scan(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			b, _ := io.ReadAll(mbox.Open(bytes.NewReader(raw), m))
			if string(b) != want {
				t.Fatalf("round %d: message at %d is partial (%d bytes of %d)", i, m.Offset, len(b), len(want))
			}
		}
	}
	// The next delivery cuts any partial tail before appending.
	if _, errs, code := e.run(string(msg), "deliver", "-f", "s@example.org", "-a", "u@example.test", "--mbox", mb); code != 0 {
		t.Fatalf("final delivery: exit %d %s", code, errs)
	}
	f, err := os.Open(mb)
	must(t, err)
	defer f.Close()
	msgs, err := mbox.Scan(f)
	must(t, err)
	if len(msgs) == 0 {
		t.Fatal("empty mbox")
	}
	for _, m := range msgs {
		b, _ := io.ReadAll(mbox.Open(f, m))
		if string(b) != want {
			t.Fatalf("message at %d is partial (%d bytes of %d)", m.Offset, len(b), len(want))
		}
	}
	n := strings.TrimSpace(python(t, "import mailbox, sys; print(len(mailbox.mbox(sys.argv[1])))", mb))
	if n != strconv.Itoa(len(msgs)) {
		t.Fatalf("python counts %s messages, we %d", n, len(msgs))
	}
	if partial < rounds/2 {
		t.Fatalf("only %d kills left a partial message: they didn't land mid-write", partial)
	}
}
