// Package tests holds the black-box integration tests: they build the real
// binaries once and drive them over loopback in temporary directories, with
// clients nobody here wrote (Python's smtplib/poplib, curl) where possible.
package tests

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	binDir   string
	buildErr error
	buildMu  sync.Once
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "letterbox-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// bin returns the path of the built command name; the first call builds all
// commands.
func bin(t testing.TB, name string) string {
	t.Helper()
	buildMu.Do(func() {
		cmd := exec.Command("go", "build", "-tags", "urfave_cli_no_docs", "-o", binDir+"/", "letterbox/cmd/...") // the Makefile's TAGS
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		// deliver as the Makefile builds it: without cgo.
		cmd = exec.Command("go", "build", "-tags", "urfave_cli_no_docs", "-o", binDir+"/", "letterbox/cmd/deliver")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build deliver: %v\n%s", err, out)
			return
		}
		os.Symlink("sendmail", filepath.Join(binDir, "mailq"))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	p := filepath.Join(binDir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("command %s was not built: %v", name, err)
	}
	return p
}

// env is one letterbox installation in a temp dir: config file, users,
// aliases, spool and mail root.
type env struct {
	t        testing.TB
	Dir      string
	Config   string
	Spool    string
	MailRoot string
	Users    string
	Aliases  string
}

// newEnv writes a config for domain example.test (plus extra TOML lines) and
// empty users/aliases files.
func newEnv(t testing.TB, extra ...string) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, Dir: dir,
		Config:   filepath.Join(dir, "letterbox.conf"),
		Spool:    filepath.Join(dir, "spool"),
		MailRoot: filepath.Join(dir, "mail"),
		Users:    filepath.Join(dir, "users"),
		Aliases:  filepath.Join(dir, "aliases"),
	}
	conf := fmt.Sprintf(`hostname = "mx.example.test"
domains = ["example.test"]
spool = %q
mail-root = %q
users = %q
aliases = %q
log-level = "debug"
`, e.Spool, e.MailRoot, e.Users, e.Aliases)
	conf += strings.Join(extra, "\n") + "\n"
	must(t, os.WriteFile(e.Config, []byte(conf), 0o600))
	must(t, os.WriteFile(e.Users, nil, 0o600))
	must(t, os.WriteFile(e.Aliases, []byte("postmaster: demo\n"), 0o600))
	return e
}

// cmd returns an exec.Cmd for a letterbox command with this env's config.
func (e *env) cmd(name string, args ...string) *exec.Cmd {
	c := exec.Command(bin(e.t, name), args...)
	c.Env = append(os.Environ(), "LETTERBOX_CONFIG="+e.Config)
	return c
}

// processDeadline bounds every command a test runs to completion (a
// client, a pass of queue-runner, deliver, mailuser …), far below make
// test's timeout: a command that hangs (a bounce loop, a lost reply) is
// killed and the test fails naming it.
const processDeadline = 2 * time.Minute

// bounded returns c (not started yet) made to run under processDeadline:
// past it, the command is killed and the test fails saying which command
// hung. Servers a test starts and stops itself don't need it.
func bounded(t testing.TB, c *exec.Cmd) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), processDeadline)
	t.Cleanup(cancel)
	b := exec.CommandContext(ctx, c.Path)
	b.Args, b.Env, b.Dir, b.SysProcAttr, b.ExtraFiles = c.Args, c.Env, c.Dir, c.SysProcAttr, c.ExtraFiles
	b.Stdin, b.Stdout, b.Stderr = c.Stdin, c.Stdout, c.Stderr
	b.Err = c.Err
	// Children that keep the output pipes open don't hold Wait for ever.
	b.WaitDelay = 5 * time.Second
	b.Cancel = func() error {
		t.Errorf("%s still running after %v: killed", strings.Join(c.Args, " "), processDeadline)
		return b.Process.Kill()
	}
	return b
}

// run runs a command with stdin and returns stdout, stderr and exit code.
func (e *env) run(stdin string, name string, args ...string) (string, string, int) {
	e.t.Helper()
	c := bounded(e.t, e.cmd(name, args...))
	c.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			e.t.Fatalf("%s: %v", name, err)
		}
		code = ee.ExitCode()
	}
	return out.String(), errb.String(), code
}

// addUser adds addr with password via mailuser.
func (e *env) addUser(addr, password string) {
	e.t.Helper()
	out, errs, code := e.run(password+"\n", "mailuser", "add", addr)
	if code != 0 {
		e.t.Fatalf("mailuser add %s: exit %d\n%s%s", addr, code, out, errs)
	}
}

// server is a running letterbox server process.
type server struct {
	Cmd      *exec.Cmd
	Addr     string
	stderr   *syncBuffer
	stopOnce sync.Once
}

// start runs a server with --listen on a free loopback port and waits until
// it accepts connections. mode may be "" for the default.
func (e *env) start(name, mode string, args ...string) *server {
	e.t.Helper()
	return e.startAt(freeAddr(e.t, "127.0.0.1"), name, mode, args...)
}

// startAt is start on the address addr (a host of its own: 127.0.0.2 …).
func (e *env) startAt(addr, name, mode string, args ...string) *server {
	e.t.Helper()
	spec := addr
	if mode != "" {
		spec = mode + "=" + addr
	}
	c := e.cmd(name, append([]string{"--listen", spec}, args...)...)
	s := &server{Cmd: c, Addr: addr, stderr: &syncBuffer{}}
	c.Stderr = s.stderr
	// A session child still holding stderr does not hold stop for ever.
	c.WaitDelay = 5 * time.Second
	must(e.t, c.Start())
	e.t.Cleanup(func() {
		s.stop()
		if e.t.Failed() {
			e.t.Logf("%s stderr:\n%s", name, s.stderr.String())
		}
	})
	waitListening(e.t, addr)
	return s
}

// stop kills the server and waits until everything it (and any child
// still holding its stderr) wrote is in Log: a line written just before
// a child exits may still be in the pipe when the exit is seen.
func (s *server) stop() {
	s.stopOnce.Do(func() {
		s.Cmd.Process.Kill()
		s.Cmd.Wait()
	})
}

// Log returns what the server wrote on stderr so far.
func (s *server) Log() string { return s.stderr.String() }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freeAddr returns host:port with a port free right now on host.
func freeAddr(t testing.TB, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitListening(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing listening on %s after 10s", addr)
}

// waitFor polls cond every 20 ms until it is true or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", timeout, what)
}

// maildirFiles lists the files in dir/sub (sub is "new", "cur" or "tmp").
// A missing directory fails the test: "no message there" must not pass
// because the test looks in the wrong place. Waits for a first delivery,
// which may create the Maildir, use maildirFilesSoFar.
func maildirFiles(t testing.TB, dir, sub string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, sub))
	if err != nil {
		t.Fatalf("maildir: %v", err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, filepath.Join(dir, sub, e.Name()))
	}
	return out
}

// mustReadDir lists dir, which must exist: an empty listing of a
// directory that is not there would pass "nothing left" checks wrongly.
func mustReadDir(t testing.TB, dir string) []os.DirEntry {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("listing %s: %v", dir, err)
	}
	return ents
}

// maildirFilesSoFar is maildirFiles for a wait: a Maildir not created yet
// has no files so far.
func maildirFilesSoFar(t testing.TB, dir, sub string) []string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, sub)); os.IsNotExist(err) {
		return nil
	}
	return maildirFiles(t, dir, sub)
}

// python runs a Python 3 script with args and returns its combined output;
// a non-zero exit fails the test.
func python(t testing.TB, script string, args ...string) string {
	t.Helper()
	c := bounded(t, exec.Command("python3", append([]string{"-c", script}, args...)...))
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, out)
	}
	return string(out)
}

// dialog is a raw line-oriented client for protocol tests.
type dialog struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dial(t testing.TB, addr string) *dialog {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &dialog{t: t, conn: c, r: bufio.NewReader(c)}
}

// send writes s followed by CRLF.
func (d *dialog) send(s string) {
	d.t.Helper()
	if _, err := d.conn.Write([]byte(s + "\r\n")); err != nil {
		d.t.Fatalf("send %q: %v", s, err)
	}
}

// raw writes b as is.
func (d *dialog) raw(b string) {
	d.t.Helper()
	if _, err := d.conn.Write([]byte(b)); err != nil {
		d.t.Fatalf("write: %v", err)
	}
}

// line reads one line without its CRLF.
func (d *dialog) line() string {
	d.t.Helper()
	l, err := d.r.ReadString('\n')
	if err != nil {
		d.t.Fatalf("read: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// reply reads an SMTP reply (all continuation lines) and returns its last line.
func (d *dialog) reply() string {
	d.t.Helper()
	for {
		l := d.line()
		if len(l) < 4 || l[3] != '-' {
			return l
		}
	}
}

// expect reads an SMTP reply and fails unless it starts with prefix.
func (d *dialog) expect(prefix string) string {
	d.t.Helper()
	l := d.reply()
	if !strings.HasPrefix(l, prefix) {
		d.t.Fatalf("want reply %q…, got %q", prefix, l)
	}
	return l
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
