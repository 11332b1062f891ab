//go:build linux

package tests

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRunExamples: every command `make run` prints and every line of
// README.md's five-minute tour works exactly as printed against a fresh
// `make run`, and does what it says (the message arrives, the listing
// lists, the attachment comes out whole). The commands are parsed from
// run.sh's output and from README.md, so a command added to either is run
// too: a command no rule below knows must at least exit 0.
//
// `make run` is scripts/run.sh once bin/ is built; here it runs in a copy
// of the tree (run.sh, README.md, the commands built for the tests as
// bin/), in a network namespace of its own, so that its fixed ports are
// its own whatever else runs on the machine. Each command runs with
// /bin/sh -c in that copy and namespace, with a plain environment (PATH,
// HOME), and the README's export lines carried to the commands after them
// as a shell session would.
func TestRunExamples(t *testing.T) {
	t.Run("printed", func(t *testing.T) {
		m := startMakeRun(t)
		if len(m.printed) < 4 {
			t.Fatalf("run.sh printed %d commands to try:\n%s", len(m.printed), m.out.String())
		}
		for _, c := range m.printed {
			m.try(t, nil, c)
		}
	})
	t.Run("README", func(t *testing.T) {
		tour := readmeTour(t)
		if len(tour) < 2 || tour[0] != "make run &" {
			t.Fatalf("README's tour does not start with `make run &`: %q", tour)
		}
		m := startMakeRun(t)
		var session []string
		for _, c := range tour[1:] {
			m.try(t, session, c)
			if strings.HasPrefix(c, "export ") {
				session = append(session, c)
			}
		}
	})
}

// readmeTour returns the commands of README.md's five-minute tour: the
// indented lines of the section, without their trailing comments.
func readmeTour(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	must(t, err)
	text := string(b)
	i := strings.Index(text, "## A five-minute tour")
	if i < 0 {
		t.Fatal("README.md has no five-minute tour")
	}
	text = text[i+1:]
	if j := strings.Index(text, "\n## "); j >= 0 {
		text = text[:j]
	}
	comment := regexp.MustCompile(`\s{2,}#.*$`)
	var cmds []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "    ") && strings.TrimSpace(l) != "" {
			cmds = append(cmds, comment.ReplaceAllString(strings.TrimSpace(l), ""))
		}
	}
	return cmds
}

// makeRun is a running scripts/run.sh in a copy of the tree.
type makeRun struct {
	dir     string
	ns      *netns
	out     *syncBuffer
	printed []string // the commands it printed to try
}

func startMakeRun(t *testing.T) *makeRun {
	t.Helper()
	bin(t, "smtpd") // builds them all
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "scripts"), 0o755))
	must(t, os.MkdirAll(filepath.Join(dir, "bin"), 0o755))
	for _, f := range []string{"scripts/run.sh", "README.md"} {
		b, err := os.ReadFile(filepath.Join("..", f))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dir, f), b, 0o755))
	}
	cmds, err := os.ReadDir(binDir)
	must(t, err)
	for _, c := range cmds {
		must(t, os.Symlink(filepath.Join(binDir, c.Name()), filepath.Join(dir, "bin", c.Name())))
	}

	m := &makeRun{dir: dir, ns: newNetns(t), out: &syncBuffer{}}
	c := exec.Command(filepath.Join(dir, "scripts", "run.sh"))
	c.Dir = dir
	c.Env = plainEnv(dir)
	c.Stdout = m.out
	c.Stderr = m.out
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	m.ns.do(t, func() error { return c.Start() })
	exited := make(chan struct{})
	go func() { c.Wait(); close(exited) }()
	t.Cleanup(func() {
		// Ctrl-C's signal to the whole group, as a terminal sends it.
		syscall.Kill(-c.Process.Pid, syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			<-exited
			t.Errorf("make run did not stop within 10 s of Ctrl-C")
		}
		if t.Failed() {
			t.Logf("make run's output:\n%s", m.out.String())
			for _, l := range []string{"smtpd.log", "queue-runner.log", "pop3d.log"} {
				b, _ := os.ReadFile(filepath.Join(dir, "var", l))
				t.Logf("%s:\n%s", l, b)
			}
		}
	})
	waitFor(t, 60*time.Second, "make run's banner (its listeners ready)", func() bool {
		select {
		case <-exited:
			t.Fatalf("make run exited:\n%s", m.out.String())
		default:
		}
		return strings.Contains(m.out.String(), "Ctrl-C stops it.")
	})
	in := false
	sc := bufio.NewScanner(strings.NewReader(m.out.String()))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case l == "Try:":
			in = true
		case strings.HasPrefix(l, "Ctrl-C"):
			in = false
		case in && strings.HasPrefix(l, "  ") && strings.TrimSpace(l) != "":
			// Commands are indented; a line in column 0 is prose.
			m.printed = append(m.printed, strings.TrimSpace(l))
		}
	}
	return m
}

// plainEnv is the environment of a fresh login: no LETTERBOX_ variable.
func plainEnv(home string) []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "LANG=C.UTF-8"}
}

// demoCount is how many messages the demo user's INBOX holds.
func (m *makeRun) demoCount(t *testing.T) int {
	return qCount(t, filepath.Join(m.dir, "var", "mail", "example.test", "demo"))
}

// Effects of the commands, by what they say they do.
var (
	sendsToDemo = regexp.MustCompile(`(smtp://|bin/sendmail|swaks|smtplib|bin/deliver ).*demo@example\.test|demo@example\.test.*\| *bin/sendmail`)
	listsQueue  = regexp.MustCompile(`bin/queue-runner list|bin/mailq`)
	popList     = regexp.MustCompile(`pop3://.*--list-only`)
	imapFolders = regexp.MustCompile(`imap://[^ /]+/ `)
	imapFetch   = regexp.MustCompile(`imap://[^ ]*INBOX;UID=`)
	toMaildir   = regexp.MustCompile(`--maildir (\S+)`)
	addsUser    = regexp.MustCompile(`mailuser add (\S+)`)
	unpacksTo   = regexp.MustCompile(`mime-pack unpack -d (\S+)`)
	writesFile  = regexp.MustCompile(`> *(\S+)$`)
)

// try runs one command as printed, after the session's earlier export
// lines, and checks its exit status and its effect.
func (m *makeRun) try(t *testing.T, session []string, command string) {
	t.Helper()
	before := m.demoCount(t)
	script := strings.Join(append(append([]string(nil), session...), command), "\n")
	c := exec.Command("/bin/sh", "-c", script)
	c.Dir = m.dir
	c.Env = plainEnv(m.dir)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	m.ns.do(t, func() error { return c.Start() })
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		c.Process.Kill()
		<-done
		t.Fatalf("%s\ndid not end within 60 s:\n%s%s", command, stdout.String(), stderr.String())
	}
	out := stdout.String()
	if err != nil {
		t.Fatalf("%s\nfailed (%v):\n%s%s", command, err, out, stderr.String())
	}
	checked := false
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s\n"+format+"\nstdout:\n%s\nstderr:\n%s", append(append([]any{command}, args...), out, stderr.String())...)
	}
	if sendsToDemo.MatchString(command) {
		checked = true
		waitFor(t, 30*time.Second, "the message of `"+command+"` in demo's Maildir", func() bool { return m.demoCount(t) > before })
	}
	if listsQueue.MatchString(command) {
		checked = true
		if !strings.Contains(out, "Mail queue is empty") && !strings.Contains(out, " Request") {
			fail("printed no queue listing")
		}
	}
	if popList.MatchString(command) {
		checked = true
		lines := strings.Split(strings.TrimSpace(out), "\n")
		for _, l := range lines {
			if !regexp.MustCompile(`^\d+ \d+\r?$`).MatchString(l) {
				fail("line %q is not a POP3 LIST entry", l)
			}
		}
		if n := m.demoCount(t); len(lines) != n {
			fail("listed %d messages; the Maildir holds %d", len(lines), n)
		}
	}
	if imapFolders.MatchString(command) {
		checked = true
		if !strings.Contains(out, "INBOX") {
			fail("listed no INBOX")
		}
	}
	if imapFetch.MatchString(command) {
		checked = true
		if !strings.Contains(out, "Subject:") {
			fail("printed no message")
		}
	}
	if strings.HasPrefix(command, "ls ") {
		checked = true
		if strings.TrimSpace(out) == "" {
			fail("listed nothing")
		}
	}
	if g := toMaildir.FindStringSubmatch(command); g != nil {
		checked = true
		if n := len(maildirFiles(t, filepath.Join(m.dir, g[1]), "new")); n != 1 {
			fail("%s/new holds %d messages, want 1", g[1], n)
		}
	}
	if g := addsUser.FindStringSubmatch(command); g != nil {
		checked = true
		users, _ := os.ReadFile(filepath.Join(m.dir, "var", "users"))
		if !strings.Contains(string(users), "\n"+g[1]+":") {
			fail("the users file has no line for %s:\n%s", g[1], users)
		}
	}
	if g := unpacksTo.FindStringSubmatch(command); g != nil {
		checked = true
		// The tour attaches README.md to the message it unpacks.
		got, err1 := os.ReadFile(filepath.Join(m.dir, g[1], "README.md"))
		want, err2 := os.ReadFile(filepath.Join(m.dir, "README.md"))
		if err := errors.Join(err1, err2); err != nil || !bytes.Equal(got, want) {
			fail("%s/README.md is not the attached README.md (%v)", g[1], err)
		}
		if !strings.Contains(out, filepath.Join(g[1], "README.md")) {
			fail("did not print the path it wrote")
		}
	}
	if g := writesFile.FindStringSubmatch(command); g != nil {
		checked = true
		if fi, err := os.Stat(filepath.Join(m.dir, g[1])); err != nil || fi.Size() == 0 {
			fail("wrote no %s (%v)", g[1], err)
		}
	}
	if !checked && !strings.HasPrefix(command, "export ") && command != "bin/queue-runner" {
		t.Logf("no effect check for %q: its exit status only", command)
	}
}
