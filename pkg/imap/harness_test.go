package imap

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testServer is a server on loopback over memory stores.
type testServer struct {
	srv  *Server
	addr string
	be   *memBackend
	log  *logBuffer
}

type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startServer(t testing.TB, mod func(*Config)) *testServer {
	t.Helper()
	be := newMemBackend()
	lb := &logBuffer{}
	cfg := Config{Hostname: "mx.example.test", Backend: be, AuthFailureDelay: -1,
		Log: slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if mod != nil {
		mod(&cfg)
	}
	srv := New(cfg)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(l, false); close(done) }()
	t.Cleanup(func() {
		srv.Shutdown(time.Second)
		<-done
		if t.Failed() {
			t.Logf("server log:\n%s", lb.String())
		}
	})
	return &testServer{srv: srv, addr: l.Addr().String(), be: be, log: lb}
}

// client is a raw IMAP client for protocol tests.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
	n    int
}

func (ts *testServer) dial(t testing.TB) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", ts.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	cl := &client{t: t, conn: c, r: bufio.NewReader(c)}
	if g := cl.line(); !strings.HasPrefix(g, "* OK [CAPABILITY IMAP4rev1") {
		t.Fatalf("greeting %q", g)
	}
	return cl
}

// login dials and logs in as alice.
func (ts *testServer) login(t testing.TB) *client {
	c := ts.dial(t)
	c.ok(`LOGIN alice@example.test "alice pw"`)
	return c
}

// raw writes s as is.
func (c *client) raw(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// line reads one response line; a literal at its end is read with it
// (its data, then the rest of the line), so one response is one string.
func (c *client) line() string {
	c.t.Helper()
	var b strings.Builder
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("read: %v (got %q)", err, b.String()+l)
		}
		l = strings.TrimSuffix(l, "\r\n")
		b.WriteString(l)
		n, ok := trailingLiteral(l)
		if !ok {
			return b.String()
		}
		b.WriteString("\r\n")
		buf := make([]byte, n)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			c.t.Fatalf("read literal: %v", err)
		}
		b.Write(buf)
	}
}

func trailingLiteral(l string) (int, bool) {
	if !strings.HasSuffix(l, "}") {
		return 0, false
	}
	i := strings.LastIndexByte(l, '{')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSuffix(l[i+1:len(l)-1], "+"))
	return n, err == nil
}

// do sends a tagged command and returns the untagged lines and the
// tagged response.
func (c *client) do(cmd string) ([]string, string) {
	c.t.Helper()
	c.n++
	tag := fmt.Sprintf("t%d", c.n)
	c.raw(tag + " " + cmd + "\r\n")
	return c.until(tag)
}

// until reads responses up to the tagged one.
func (c *client) until(tag string) ([]string, string) {
	c.t.Helper()
	var un []string
	for {
		l := c.line()
		if strings.HasPrefix(l, tag+" ") {
			return un, strings.TrimPrefix(l, tag+" ")
		}
		un = append(un, l)
	}
}

// ok runs a command that must succeed.
func (c *client) ok(cmd string) []string {
	c.t.Helper()
	un, tagged := c.do(cmd)
	if !strings.HasPrefix(tagged, "OK") {
		c.t.Fatalf("%s: %s (untagged %q)", cmd, tagged, un)
	}
	return un
}

// expect runs a command whose tagged response must start with prefix.
func (c *client) expect(cmd, prefix string) []string {
	c.t.Helper()
	un, tagged := c.do(cmd)
	if !strings.HasPrefix(tagged, prefix) {
		c.t.Fatalf("%s: want %q…, got %q (untagged %q)", cmd, prefix, tagged, un)
	}
	return un
}

// has fails unless some line contains want.
func has(t testing.TB, lines []string, want string) {
	t.Helper()
	for _, l := range lines {
		if strings.Contains(l, want) {
			return
		}
	}
	t.Fatalf("no line with %q in %q", want, lines)
}

func hasNot(t testing.TB, lines []string, not string) {
	t.Helper()
	for _, l := range lines {
		if strings.Contains(l, not) {
			t.Fatalf("line %q has %q", l, not)
		}
	}
}

// put adds a message to alice's folder directly, as a delivery would.
func (ts *testServer) put(t testing.TB, folder, msg string, flags ...string) uint32 {
	t.Helper()
	r, err := ts.be.store("alice@example.test").add(folder, flags, time.Date(2024, 3, 5, 10, 0, 0, 0, time.UTC), []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	return r.UID
}

// watchers counts the watches of alice's folder.
func (ts *testServer) watchers(t testing.TB, folder string) int {
	t.Helper()
	s := ts.be.store("alice@example.test")
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := s.folder(folder)
	if err != nil {
		t.Fatal(err)
	}
	return len(f.watchers)
}

func testMsg(subject, body string) string {
	return "From: Sender <sender@example.org>\nTo: alice@example.test\nSubject: " + subject +
		"\nDate: Tue, 5 Mar 2024 10:00:00 +0000\nMessage-ID: <" + strings.ReplaceAll(subject, " ", "-") + "@example.org>\n\n" + body
}
