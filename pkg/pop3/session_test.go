package pop3

import (
	"bufio"
	"crypto/md5"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"letterbox/pkg/internal/testwait"
	"letterbox/pkg/privsep"
)

// fakeDrop is an in-memory maildrop.
type fakeDrop struct {
	mu        sync.Mutex
	msgs      []string
	committed bool
	retrieved []int
	deleted   []int
	closed    bool
	commitErr error
	opens     []int         // the messages opened, in order
	listed    map[int]int64 // sizes listed other than the content's
}

func (d *fakeDrop) Messages() []MessageInfo {
	out := make([]MessageInfo, len(d.msgs))
	for i, m := range d.msgs {
		n, _ := CRLFSize(strings.NewReader(m))
		if l, ok := d.listed[i]; ok {
			n = l
		}
		out[i] = MessageInfo{UID: fmt.Sprintf("uid-%d", i+1), Size: n}
	}
	return out
}

func (d *fakeDrop) Open(i int) (io.ReadCloser, error) {
	d.mu.Lock()
	d.opens = append(d.opens, i)
	d.mu.Unlock()
	return io.NopCloser(strings.NewReader(d.msgs[i])), nil
}

func (d *fakeDrop) opened() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]int(nil), d.opens...)
}

func (d *fakeDrop) Commit(retrieved, deleted []int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.commitErr != nil {
		return d.commitErr
	}
	d.committed, d.retrieved, d.deleted = true, retrieved, deleted
	return nil
}

func (d *fakeDrop) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}

func (d *fakeDrop) state() (bool, []int, []int, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.committed, d.retrieved, d.deleted, d.closed
}

type fakeBackend struct {
	mu     sync.Mutex
	drop   *fakeDrop
	inUse  bool
	apop   bool
	logins int
}

func (b *fakeBackend) Login(user, pw string) (string, error) {
	if user == "alice@example.test" && pw == "secret pw" {
		return user, nil
	}
	return "", ErrAuth
}

func (b *fakeBackend) APOP(user, ts, digest string) (string, error) {
	sum := md5.Sum([]byte(ts + "secret pw"))
	if user == "alice@example.test" && digest == hex.EncodeToString(sum[:]) {
		return user, nil
	}
	return "", ErrAuth
}

func (b *fakeBackend) HasAPOP() bool { return b.apop }

func (b *fakeBackend) Locate(user string) (Location, error) {
	return Location{User: user, Kind: "fake", Owner: privsep.Self()}, nil
}

func (b *fakeBackend) Open(loc Location) (Maildrop, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.inUse {
		return nil, ErrInUse
	}
	b.logins++
	return b.drop, nil
}

var testMsgs = []string{
	"Subject: one\n\nbody one\n",
	"Subject: two\r\nX: y\r\n\r\nline1\r\n.dot line\r\nline3\r\n",
	"Subject: three\n\n.\n..\nno newline at end",
}

type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func startServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	if cfg.AuthFailureDelay == 0 {
		cfg.AuthFailureDelay = -1
	}
	srv := New(cfg)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(l, false); close(done) }()
	t.Cleanup(func() { srv.Shutdown(time.Second); <-done })
	return srv, l.Addr().String()
}

func connect(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	cl := &client{t: t, conn: c, r: bufio.NewReader(c)}
	if g := cl.line(); !strings.HasPrefix(g, "+OK") {
		t.Fatalf("greeting %q", g)
	}
	return cl
}

func (c *client) line() string {
	c.t.Helper()
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, l)
	}
	if !strings.HasSuffix(l, "\r\n") {
		c.t.Fatalf("line without CRLF: %q", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

// cmd sends a command and returns the first reply line.
func (c *client) cmd(s string) string {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s+"\r\n"); err != nil {
		c.t.Fatal(err)
	}
	return c.line()
}

// expect sends a command and checks the reply's start.
func (c *client) expect(s, prefix string) string {
	c.t.Helper()
	l := c.cmd(s)
	if !strings.HasPrefix(l, prefix) {
		c.t.Fatalf("%s: got %q, want %q…", s, l, prefix)
	}
	return l
}

// multi reads a multi-line body, un-stuffed, lines joined with CRLF.
func (c *client) multi() []string {
	c.t.Helper()
	var out []string
	for {
		l := c.line()
		if l == "." {
			return out
		}
		out = append(out, strings.TrimPrefix(l, "."))
	}
}

func login(t *testing.T, addr string) *client {
	c := connect(t, addr)
	c.expect("USER alice@example.test", "+OK")
	c.expect("PASS secret pw", "+OK")
	return c
}

func TestTransaction(t *testing.T) {
	drop := &fakeDrop{msgs: testMsgs}
	_, addr := startServer(t, Config{Backend: &fakeBackend{drop: drop}})
	c := login(t, addr)
	sizes := []int64{}
	for _, m := range testMsgs {
		n, _ := CRLFSize(strings.NewReader(m))
		sizes = append(sizes, n)
	}
	total := sizes[0] + sizes[1] + sizes[2]
	c.expect("STAT", fmt.Sprintf("+OK 3 %d", total))
	c.expect("LIST", "+OK")
	if got := strings.Join(c.multi(), ","); got != fmt.Sprintf("1 %d,2 %d,3 %d", sizes[0], sizes[1], sizes[2]) {
		t.Fatalf("LIST: %s", got)
	}
	c.expect("LIST 2", fmt.Sprintf("+OK 2 %d", sizes[1]))
	c.expect("UIDL", "+OK")
	if got := strings.Join(c.multi(), ","); got != "1 uid-1,2 uid-2,3 uid-3" {
		t.Fatalf("UIDL: %s", got)
	}
	c.expect("UIDL 3", "+OK 3 uid-3")

	// RETR sends CRLF lines, stuffed dots, and exactly the listed size.
	c.expect("RETR 3", fmt.Sprintf("+OK %d octets", sizes[2]))
	var raw strings.Builder
	for {
		l := c.line()
		if l == "." {
			break
		}
		raw.WriteString(l + "\r\n")
	}
	want := "Subject: three\r\n\r\n..\r\n...\r\nno newline at end\r\n"
	if raw.String() != want {
		t.Fatalf("RETR 3 = %q, want %q", raw.String(), want)
	}
	if int64(len(strings.ReplaceAll(want, "\r\n.", "\r\n"))) != sizes[2] {
		t.Fatalf("size %d does not match what was sent", sizes[2])
	}

	c.expect("TOP 2 1", "+OK")
	if got := strings.Join(c.multi(), "|"); got != "Subject: two|X: y||line1" {
		t.Fatalf("TOP 2 1: %q", got)
	}
	c.expect("TOP 2 0", "+OK")
	if got := strings.Join(c.multi(), "|"); got != "Subject: two|X: y|" {
		t.Fatalf("TOP 2 0: %q", got)
	}
	c.expect("TOP 2 100", "+OK")
	if got := strings.Join(c.multi(), "|"); got != "Subject: two|X: y||line1|.dot line|line3" {
		t.Fatalf("TOP 2 100: %q", got)
	}

	c.expect("DELE 1", "+OK")
	c.expect("DELE 1", "-ERR")
	c.expect("RETR 1", "-ERR")
	c.expect("LIST 1", "-ERR")
	c.expect("UIDL 1", "-ERR")
	c.expect("TOP 1 0", "-ERR")
	c.expect("STAT", fmt.Sprintf("+OK 2 %d", sizes[1]+sizes[2]))
	c.expect("LIST", "+OK 2 messages")
	if got := strings.Join(c.multi(), ","); got != fmt.Sprintf("2 %d,3 %d", sizes[1], sizes[2]) {
		t.Fatalf("LIST after DELE: %s", got)
	}
	c.expect("RSET", fmt.Sprintf("+OK maildrop has 3 messages (%d octets)", total))
	c.expect("RETR 1", "+OK")
	c.multi()
	c.expect("DELE 2", "+OK")
	c.expect("NOOP", "+OK")
	if committed, _, _, _ := drop.state(); committed {
		t.Fatal("committed before QUIT")
	}
	c.expect("QUIT", "+OK")
	// Committed and unlocked before the reply (the client may reconnect
	// the moment it reads it).
	committed, retr, del, closed := drop.state()
	if !committed || fmt.Sprint(del) != "[1]" || fmt.Sprint(retr) != "[0 2]" || !closed {
		t.Fatalf("commit: %v retrieved %v deleted %v closed %v", committed, retr, del, closed)
	}
}

func TestNoUpdateWithoutQuit(t *testing.T) {
	drop := &fakeDrop{msgs: testMsgs}
	_, addr := startServer(t, Config{Backend: &fakeBackend{drop: drop}})
	c := login(t, addr)
	c.expect("DELE 1", "+OK")
	c.conn.Close()
	testwait.Until(t, 5*time.Second, "the maildrop to be closed", func() bool { _, _, _, closed := drop.state(); return closed })
	if committed, _, _, _ := drop.state(); committed {
		t.Fatal("a dropped connection must not enter UPDATE")
	}
}

func TestErrors(t *testing.T) {
	drop := &fakeDrop{msgs: testMsgs}
	_, addr := startServer(t, Config{Backend: &fakeBackend{drop: drop}, MaxErrors: 100})
	c := connect(t, addr)
	for _, cmd := range []string{"STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL"} {
		c.expect(cmd, "-ERR")
	}
	c.expect("PASS x", "-ERR")
	c.expect("FOO", "-ERR unknown command")
	c.expect("", "-ERR")
	c.expect("\x00\xff garbage", "-ERR")
	c.expect("USER", "-ERR")
	c.expect(strings.Repeat("x", 600), "-ERR line too long")
	c.expect("CAPA", "+OK")
	capa := strings.Join(c.multi(), ",")
	for _, want := range []string{"TOP", "UIDL", "USER", "SASL PLAIN", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "IMPLEMENTATION letterbox"} {
		if !strings.Contains(capa, want) {
			t.Errorf("CAPA lacks %s: %s", want, capa)
		}
	}
	if strings.Contains(capa, "STLS") {
		t.Errorf("STLS offered without TLS: %s", capa)
	}
	c.expect("STLS", "-ERR")
	c.expect("APOP alice@example.test 0123", "-ERR")
	c.expect("USER alice@example.test", "+OK")
	c.expect("PASS secret pw", "+OK")
	for _, cmd := range []string{"RETR 0", "RETR 4", "RETR -1", "RETR +1", "RETR x", "RETR 99999999999999999999",
		"LIST 0", "LIST 4", "UIDL 4", "DELE 4", "TOP 1", "TOP 1 -1", "TOP 1 x", "TOP 4 1",
		"RETR", "RETR 1 2", "STAT 1", "USER x", "PASS x", "APOP a b", "AUTH PLAIN", "STLS", "NOOP x", "BLAH"} {
		c.expect(cmd, "-ERR")
	}
	c.expect(strings.Repeat("y", 5000), "-ERR line too long")
	c.expect("stat", "+OK 3 ")
	c.expect("quit", "+OK")
}

func TestTooManyErrors(t *testing.T) {
	_, addr := startServer(t, Config{Backend: &fakeBackend{drop: &fakeDrop{}}, MaxErrors: 3})
	c := connect(t, addr)
	c.expect("X", "-ERR")
	c.expect("Y", "-ERR")
	c.expect("Z", "-ERR")
	l := c.line()
	if !strings.Contains(l, "too many errors") {
		t.Fatalf("got %q", l)
	}
	if _, err := c.r.ReadString('\n'); err != io.EOF {
		t.Fatalf("connection not closed: %v", err)
	}
}

func TestAuthFailures(t *testing.T) {
	drop := &fakeDrop{}
	_, addr := startServer(t, Config{Backend: &fakeBackend{drop: drop}, AuthFailureDelay: 50 * time.Millisecond})
	c := connect(t, addr)
	c.expect("USER nobody@example.test", "+OK")
	unknown := c.expect("PASS secret pw", "-ERR [AUTH]")
	c.expect("USER alice@example.test", "+OK")
	bad := c.expect("PASS wrong", "-ERR [AUTH]")
	if unknown != bad {
		t.Fatalf("unknown user and bad password differ: %q vs %q", unknown, bad)
	}
	c.expect("USER alice@example.test", "+OK")
	last := c.expect("PASS wrong again", "-ERR [AUTH]")
	if !strings.Contains(last, "too many") {
		t.Fatalf("third failure should close: %q", last)
	}
	if _, err := c.r.ReadString('\n'); err != io.EOF {
		t.Fatalf("connection not closed: %v", err)
	}
}

func TestInUse(t *testing.T) {
	b := &fakeBackend{drop: &fakeDrop{}, inUse: true}
	_, addr := startServer(t, Config{Backend: b})
	c := connect(t, addr)
	c.expect("USER alice@example.test", "+OK")
	c.expect("PASS secret pw", "-ERR [IN-USE]")
	// Still in AUTHORIZATION.
	c.expect("STAT", "-ERR")
	c.expect("QUIT", "+OK")
}

func TestAPOPAndAuthPlain(t *testing.T) {
	b := &fakeBackend{drop: &fakeDrop{msgs: testMsgs}, apop: true}
	_, addr := startServer(t, Config{Backend: b})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	g := c.line()
	i, j := strings.Index(g, "<"), strings.Index(g, ">")
	if i < 0 || j < i {
		t.Fatalf("no APOP timestamp in greeting %q", g)
	}
	ts := g[i : j+1]
	sum := md5.Sum([]byte(ts + "secret pw"))
	c.expect("APOP alice@example.test 00000000000000000000000000000000", "-ERR [AUTH]")
	c.expect("APOP alice@example.test "+hex.EncodeToString(sum[:]), "+OK")
	c.expect("STAT", "+OK 3")
	c.expect("QUIT", "+OK")

	// Without plaintext secrets there is no timestamp.
	b2 := &fakeBackend{drop: &fakeDrop{}}
	_, addr2 := startServer(t, Config{Backend: b2})
	conn2, _ := net.Dial("tcp", addr2)
	defer conn2.Close()
	g2, _ := bufio.NewReader(conn2).ReadString('\n')
	if strings.Contains(g2, "<") {
		t.Fatalf("APOP timestamp without APOP: %q", g2)
	}

	plain := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	c = connect(t, addr)
	c.expect("AUTH", "+OK")
	if m := strings.Join(c.multi(), ","); m != "PLAIN" {
		t.Fatalf("AUTH list %q", m)
	}
	c.expect("AUTH CRAM-MD5", "-ERR")
	c.expect("AUTH PLAIN "+plain("\x00alice@example.test\x00nope"), "-ERR [AUTH]")
	c.expect("AUTH PLAIN", "+ ")
	c.expect("*", "-ERR")
	c.expect("AUTH PLAIN", "+ ")
	c.expect("!!notbase64", "-ERR")
	c.expect("AUTH PLAIN "+plain("bob@example.test\x00alice@example.test\x00secret pw"), "-ERR [AUTH]")
	c = connect(t, addr)
	c.expect("AUTH PLAIN", "+ ")
	c.expect(plain("\x00alice@example.test\x00secret pw"), "+OK")
	c.expect("QUIT", "+OK")
	c = connect(t, addr)
	c.expect("AUTH PLAIN "+plain("alice@example.test\x00alice@example.test\x00secret pw"), "+OK")
	c.expect("QUIT", "+OK")
}

func TestPipelining(t *testing.T) {
	drop := &fakeDrop{msgs: testMsgs}
	_, addr := startServer(t, Config{Backend: &fakeBackend{drop: drop}})
	c := connect(t, addr)
	io.WriteString(c.conn, "USER alice@example.test\r\nPASS secret pw\r\nSTAT\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n")
	for _, want := range []string{"+OK", "+OK maildrop", "+OK 3"} {
		if l := c.line(); !strings.HasPrefix(l, want) {
			t.Fatalf("got %q want %q", l, want)
		}
	}
	if l := c.line(); !strings.HasPrefix(l, "+OK") {
		t.Fatal(l)
	}
	if m := strings.Join(c.multi(), "|"); m != "Subject: one||body one" {
		t.Fatalf("RETR: %q", m)
	}
	c.line()
	if l := c.line(); !strings.HasPrefix(l, "+OK") {
		t.Fatal(l)
	}
	if committed, _, del, _ := drop.state(); !committed || fmt.Sprint(del) != "[0]" {
		t.Fatalf("QUIT did not commit %v", del)
	}
}

func TestPlaintextRefusedWithoutTLS(t *testing.T) {
	// A non-loopback peer is simulated with a wrapper listener.
	b := &fakeBackend{drop: &fakeDrop{}}
	srv := New(Config{Backend: b, AuthFailureDelay: -1, TLS: testTLS(t)})
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(remoteListener{l}, false)
	defer srv.Shutdown(time.Second)
	c := connect(t, l.Addr().String())
	c.expect("CAPA", "+OK")
	capa := strings.Join(c.multi(), ",")
	if strings.Contains(capa, "USER") || strings.Contains(capa, "SASL") || !strings.Contains(capa, "STLS") {
		t.Fatalf("CAPA on insecure link: %s", capa)
	}
	c.expect("USER alice@example.test", "-ERR [AUTH]")
	c.expect("AUTH PLAIN AGFsaWNlAHg=", "-ERR [AUTH]")
	// Pipelined plaintext after STLS is dropped, not run under TLS.
	io.WriteString(c.conn, "STLS\r\nUSER injected@example.test\r\n")
	c.r = bufio.NewReader(c.conn)
	if l := c.line(); !strings.HasPrefix(l, "+OK") {
		t.Fatal(l)
	}
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
	c.conn, c.r = tc, bufio.NewReader(tc)
	c.expect("PASS secret pw", "-ERR USER first")
	c.expect("CAPA", "+OK")
	capa = strings.Join(c.multi(), ",")
	if !strings.Contains(capa, "USER") || strings.Contains(capa, "STLS") {
		t.Fatalf("CAPA under TLS: %s", capa)
	}
	c.expect("USER alice@example.test", "+OK")
	c.expect("PASS secret pw", "+OK")
	c.expect("QUIT", "+OK")
}

type remoteListener struct{ net.Listener }

func (l remoteListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return remoteConn{c}, nil
}

type remoteConn struct{ net.Conn }

func (remoteConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1234}
}

// TestShutdown: shutdown's interrupt ends a session waiting for a command,
// in a daemon (Go's poller) and in a one-session process (waitConn's
// ppoll, woken by the deadline moved to now).
func TestShutdown(t *testing.T) {
	for _, one := range []bool{false, true} {
		t.Run(fmt.Sprintf("one-session=%v", one), func(t *testing.T) { testShutdown(t, one) })
	}
}

func testShutdown(t *testing.T, oneSession bool) {
	drop := &fakeDrop{msgs: testMsgs}
	srv, addr := startServer(t, Config{Backend: &fakeBackend{drop: drop}, SwitchProcess: oneSession})
	c := login(t, addr)
	c.expect("DELE 1", "+OK")
	start := time.Now()
	go srv.Shutdown(3 * time.Second)
	l := c.line()
	if !strings.HasPrefix(l, "-ERR [SYS/TEMP]") {
		t.Fatalf("shutdown reply %q", l)
	}
	testwait.Until(t, 5*time.Second, "the maildrop to be closed", func() bool { _, _, _, closed := drop.state(); return closed })
	if committed, _, _, _ := drop.state(); committed {
		t.Fatal("shutdown must not delete")
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("shutdown took %v", time.Since(start))
	}
}

// TestIdleTimeout: in a daemon and in a one-session process (where the
// deadline is waitConn's ppoll timeout).
func TestIdleTimeout(t *testing.T) {
	for _, one := range []bool{false, true} {
		t.Run(fmt.Sprintf("one-session=%v", one), func(t *testing.T) { testIdleTimeout(t, one) })
	}
}

func testIdleTimeout(t *testing.T, oneSession bool) {
	drop := &fakeDrop{msgs: testMsgs}
	_, addr := startServer(t, Config{Backend: &fakeBackend{drop: drop}, IdleTimeout: 300 * time.Millisecond, SwitchProcess: oneSession})
	c := connect(t, addr)
	// One write, so a slow machine can't make the timeout fire between
	// commands.
	io.WriteString(c.conn, "USER alice@example.test\r\nPASS secret pw\r\nDELE 1\r\n")
	for i := 0; i < 3; i++ {
		if l := c.line(); !strings.HasPrefix(l, "+OK") {
			t.Fatalf("got %q", l)
		}
	}
	if l := c.line(); !strings.Contains(l, "idle") {
		t.Fatalf("got %q", l)
	}
	testwait.Until(t, 5*time.Second, "the maildrop to be closed", func() bool { _, _, _, closed := drop.state(); return closed })
	if committed, _, _, _ := drop.state(); committed {
		t.Fatal("timeout must not delete")
	}
}

func TestCommitFailure(t *testing.T) {
	drop := &fakeDrop{msgs: testMsgs, commitErr: fmt.Errorf("maildir: remove x: disk on fire")}
	_, addr := startServer(t, Config{Backend: &fakeBackend{drop: drop}})
	c := login(t, addr)
	c.expect("DELE 1", "+OK")
	c.expect("QUIT", "-ERR [SYS/TEMP]")
	// The lock is released before the reply, failed UPDATE or not.
	if _, _, _, closed := drop.state(); !closed {
		t.Fatal("maildrop still locked when QUIT was answered")
	}
}

func TestWriteMessage(t *testing.T) {
	long := strings.Repeat("a", 40000)
	cases := []struct{ in, out string }{
		{"", ""},
		{"a", "a\r\n"},
		{"a\n", "a\r\n"},
		{"a\r\n", "a\r\n"},
		{"a\r", "a\r\n"},
		{"a\rb\n", "a\rb\r\n"},
		{".\n.x\n", "..\r\n..x\r\n"},
		{long + "\r\n." + long + "\n", long + "\r\n.." + long + "\r\n"},
		{strings.Repeat("b", 32767) + "\r\nc\n", strings.Repeat("b", 32767) + "\r\nc\r\n"},
		{strings.Repeat("b", 32767) + "\rc\n", strings.Repeat("b", 32767) + "\rc\r\n"},
	}
	for _, tc := range cases {
		var sb strings.Builder
		w := bufio.NewWriter(&sb)
		n, err := writeMessage(w, strings.NewReader(tc.in), -1, -1)
		w.Flush()
		if err != nil || sb.String() != tc.out+".\r\n" {
			t.Errorf("writeMessage(%q) = %q, %v", clip(tc.in), clip(sb.String()), err)
		}
		// Given the size (a message file's, from its fstat), the same.
		var sized strings.Builder
		w = bufio.NewWriter(&sized)
		ns, err := writeMessage(w, strings.NewReader(tc.in), -1, int64(len(tc.in)))
		w.Flush()
		if err != nil || sized.String() != sb.String() || ns != n {
			t.Errorf("writeMessage(%q) with its size = %q, %v", clip(tc.in), clip(sized.String()), err)
		}
		size, _ := CRLFSize(strings.NewReader(tc.in))
		unstuffed := int64(len(strings.ReplaceAll("\n"+tc.out, "\n.", "\n"))) - 1
		if n != size || size != unstuffed {
			t.Errorf("%q: sent %d, CRLFSize %d, want %d", clip(tc.in), n, size, unstuffed)
		}
	}
}

// TestReadAhead: after a RETR, while the client reads the reply, the
// session reads the next message; the RETR for it sends exactly what a
// RETR without the read-ahead sends, and counts it retrieved. A message
// read ahead and then deleted is not sent; undeleted, it is.
func TestReadAhead(t *testing.T) {
	drop := &fakeDrop{msgs: testMsgs}
	_, addr := startServer(t, Config{Backend: &fakeBackend{drop: drop}})
	c := login(t, addr)
	want, retr := wantRetr, c.retr
	if got := retr(0); got != want(0) {
		t.Fatalf("RETR 1: %q, want %q", got, want(0))
	}
	testwait.Until(t, 5*time.Second, "message 2 to be read ahead", func() bool { return len(drop.opened()) == 2 })
	if o := drop.opened(); o[1] != 1 {
		t.Fatalf("opened %v, want [0 1]", o)
	}
	if got := retr(1); got != want(1) {
		t.Fatalf("RETR 2 (read ahead): %q, want %q", got, want(1))
	}
	testwait.Until(t, 5*time.Second, "message 3 to be read ahead", func() bool { return len(drop.opened()) == 3 })
	if o := drop.opened(); o[1] != 1 || o[2] != 2 {
		t.Fatalf("opened %v, want [0 1 2]: RETR 2 opened its message again", o)
	}
	c.expect("DELE 3", "+OK")
	if got := retr(2); !strings.HasPrefix(got, "-ERR") {
		t.Fatalf("RETR of a deleted message read ahead: %q", got)
	}
	c.expect("RSET", "+OK")
	if got := retr(2); got != want(2) {
		t.Fatalf("RETR 3 (read ahead, deleted, undeleted): %q, want %q", got, want(2))
	}
	c.expect("QUIT", "+OK")
	if _, retrieved, _, _ := drop.state(); fmt.Sprint(retrieved) != "[0 1 2]" {
		t.Fatalf("retrieved %v at QUIT, want [0 1 2]", retrieved)
	}
}

// TestReadAheadOutOfOrder: a message read ahead is sent only for its own
// RETR; a client that asks for another gets that one.
func TestReadAheadOutOfOrder(t *testing.T) {
	drop := &fakeDrop{msgs: testMsgs}
	_, addr := startServer(t, Config{Backend: &fakeBackend{drop: drop}})
	c := login(t, addr)
	if got := c.retr(0); got != wantRetr(0) {
		t.Fatalf("RETR 1: %q, want %q", got, wantRetr(0))
	}
	testwait.Until(t, 5*time.Second, "message 2 to be read ahead", func() bool { return len(drop.opened()) == 2 })
	if got := c.retr(2); got != wantRetr(2) {
		t.Fatalf("RETR 3 with message 2 read ahead: %q, want %q", got, wantRetr(2))
	}
	if got := c.retr(1); got != wantRetr(1) {
		t.Fatalf("RETR 2 after RETR 3: %q, want %q", got, wantRetr(1))
	}
	c.expect("QUIT", "+OK")
}

// wantRetr is the reply to RETR of testMsgs[i].
func wantRetr(i int) string {
	var sb strings.Builder
	w := bufio.NewWriter(&sb)
	writeMessage(w, strings.NewReader(testMsgs[i]), -1, -1)
	w.Flush()
	n, _ := CRLFSize(strings.NewReader(testMsgs[i]))
	return fmt.Sprintf("+OK %d octets\r\n", n) + sb.String()
}

// retr sends RETR for message i (from 0) and returns the whole reply.
func (c *client) retr(i int) string {
	c.t.Helper()
	io.WriteString(c.conn, fmt.Sprintf("RETR %d\r\n", i+1))
	var sb strings.Builder
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("RETR %d: %v", i+1, err)
		}
		sb.WriteString(l)
		if l == ".\r\n" || strings.HasPrefix(l, "-ERR") {
			return sb.String()
		}
	}
}

// TestReadAheadLarger: a message that outgrows the read-ahead's buffer (a
// file larger than listed) is not read ahead; its RETR sends it whole.
func TestReadAheadLarger(t *testing.T) {
	big := "Subject: big\n\n" + strings.Repeat(".\n", readAheadBuf/3+10)
	drop := &fakeDrop{msgs: []string{"Subject: one\n\nx\n", big}, listed: map[int]int64{1: 1000}}
	_, addr := startServer(t, Config{Backend: &fakeBackend{drop: drop}})
	c := login(t, addr)
	c.expect("RETR 1", "+OK")
	c.multi()
	testwait.Until(t, 5*time.Second, "message 2 to be opened for the read-ahead", func() bool { return len(drop.opened()) == 2 })
	c.expect("RETR 2", "+OK")
	if got := len(c.multi()); got != readAheadBuf/3+10+2 {
		t.Fatalf("RETR 2: %d lines, want %d", got, readAheadBuf/3+10+2)
	}
	if o := drop.opened(); len(o) != 3 {
		t.Fatalf("opened %v: the message that outgrew the buffer must be opened again by RETR", o)
	}
}
