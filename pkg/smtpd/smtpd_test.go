package smtpd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"letterbox/pkg/internal/testwait"
	"letterbox/pkg/route"
	"letterbox/pkg/spool"
)

// fakeQueue keeps submitted messages in memory and, like the real spool,
// commits nothing when the data reader fails.
type fakeQueue struct {
	mu   sync.Mutex
	msgs []fakeMsg
	n    int
}

type fakeMsg struct {
	env  *spool.Envelope
	data string
}

func (q *fakeQueue) Submit(env *spool.Envelope, r io.Reader) (string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return "", fmt.Errorf("fake: %w", err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.msgs = append(q.msgs, fakeMsg{env, string(b)})
	return env.ID, nil
}

func (q *fakeQueue) NewID() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.n++
	return fmt.Sprintf("Q%04d", q.n)
}

func (q *fakeQueue) count() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.msgs)
}

type fakeRcpts map[string]bool

func (f fakeRcpts) Check(addr string) error {
	if f[strings.ToLower(addr)] {
		return nil
	}
	return fmt.Errorf("fake: %w", route.ErrNoSuchUser)
}

type fakeAuth struct{}

func (fakeAuth) Authenticate(u, p string) error {
	if u == "joe@example.test" && p == "secret" {
		return nil
	}
	return errors.New("bad")
}

// testConfig is the configuration of the unit tests' servers: one local
// domain, no DNS.
func testConfig() Config {
	return Config{
		Hostname:      "mx.example.test",
		IsLocal:       func(d string) bool { return d == "example.test" },
		PrimaryDomain: "example.test",
		ReverseLookup: func(string) string { return "localhost" },
	}
}

type testServer struct {
	srv  *Server
	q    *fakeQueue
	addr string
}

func newTestServer(t *testing.T, mode Mode, tweak func(*Server)) *testServer {
	t.Helper()
	q := &fakeQueue{}
	srv := &Server{
		Config:     testConfig(),
		Queue:      q,
		Recipients: fakeRcpts{"joe@example.test": true, "postmaster@example.test": true},
		Auth:       fakeAuth{},
	}
	if tweak != nil {
		tweak(srv)
	}
	srv.Defaults()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l, mode)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return &testServer{srv: srv, q: q, addr: l.Addr().String()}
}

type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func (ts *testServer) dial(t *testing.T) *client {
	t.Helper()
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	cl := &client{t: t, c: c, r: bufio.NewReader(c)}
	cl.expect("220 ")
	return cl
}

func (c *client) send(s string) { c.c.Write([]byte(s)) }

// reply reads a whole reply and returns its last line.
func (c *client) reply() string {
	c.t.Helper()
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("read: %v (%q)", err, l)
		}
		l = strings.TrimRight(l, "\r\n")
		if len(l) < 4 || l[3] != '-' {
			return l
		}
	}
}

func (c *client) expect(prefix string) string {
	c.t.Helper()
	l := c.reply()
	if !strings.HasPrefix(l, prefix) {
		c.t.Fatalf("want %q…, got %q", prefix, l)
	}
	return l
}

func (c *client) cmd(line, want string) string {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.expect(want)
}

func TestSessionBasicAndReceived(t *testing.T) {
	ts := newTestServer(t, ModeSMTP, nil)
	c := ts.dial(t)
	c.cmd("EHLO client.test", "250 HELP")
	c.cmd("MAIL FROM:<a@remote.test> SIZE=100 BODY=8BITMIME", "250 2.1.0")
	c.cmd("RCPT TO:<Joe@EXAMPLE.TEST.>", "250 2.1.5")
	c.cmd("DATA", "354 ")
	l := c.cmd("Subject: hi\r\n\r\n..dot\r\nbody\r\n.", "250 2.0.0 OK: queued as Q0001")
	_ = l
	c.cmd("QUIT", "221 ")
	if ts.q.count() != 1 {
		t.Fatalf("%d messages", ts.q.count())
	}
	m := ts.q.msgs[0]
	if m.env.From != "a@remote.test" || len(m.env.Recipients) != 1 || m.env.Recipients[0].Address != "Joe@example.test" {
		t.Fatalf("envelope %+v %+v", m.env, m.env.Recipients[0])
	}
	if !strings.HasPrefix(m.data, "Received: from client.test (localhost [127.0.0.1])\r\n\tby mx.example.test (letterbox) with ESMTP id Q0001\r\n\tfor <Joe@example.test>; ") {
		t.Fatalf("data %q", m.data)
	}
	if !strings.HasSuffix(m.data, "\r\nSubject: hi\r\n\r\n.dot\r\nbody\r\n") {
		t.Fatalf("data %q", m.data)
	}
}

func TestSessionDataRejections(t *testing.T) {
	ts := newTestServer(t, ModeSMTP, func(s *Server) { s.MaxMessageSize = 2000; s.MaxReceived = 3 })
	cases := []struct{ name, data, want string }{
		{"bare LF", "a: b\r\n\r\nx\ny\r\n", "550 5.6.11"},
		{"bare CR", "a: b\r\n\r\nx\ry\r\n", "550 5.6.11"},
		{"smuggle", "a: b\r\n\r\nx\r\n.\nMAIL FROM:<x@y>\r\n", "550 5.6.11"},
		{"smuggle LF dot CRLF", "a: b\r\n\r\nx\n.\r\nMAIL FROM:<x@y>\r\n", "550 5.6.11"},
		{"smuggle CR dot CRLF", "a: b\r\n\r\nx\r.\r\nMAIL FROM:<x@y>\r\n", "550 5.6.11"},
		{"NUL", "a: b\r\n\r\nx\x00y\r\n", "554 5.6.0"},
		{"long line", "a: b\r\n\r\n" + strings.Repeat("x", 999) + "\r\n", "500 5.5.2"},
		{"too big", "a: b\r\n\r\n" + strings.Repeat(strings.Repeat("x", 70)+"\r\n", 40), "552 5.3.4"},
		{"loop", strings.Repeat("Received: x\r\n", 4) + "\r\nbody\r\n", "554 5.4.6"},
	}
	c := ts.dial(t)
	c.cmd("EHLO client.test", "250 ")
	for _, tc := range cases {
		c.cmd("MAIL FROM:<>", "250 ")
		c.cmd("RCPT TO:<joe@example.test>", "250 ")
		c.cmd("DATA", "354 ")
		c.send(tc.data)
		c.cmd(".", tc.want)
		// The dialog is still in step.
		c.cmd("NOOP", "250 ")
	}
	if ts.q.count() != 0 {
		t.Fatalf("%d messages queued", ts.q.count())
	}
	// Exactly at the limits is fine.
	c.cmd("RSET", "250 ")
	c.cmd("MAIL FROM:<>", "250 ")
	c.cmd("RCPT TO:<joe@example.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.send(strings.Repeat("Received: x\r\n", 3) + "\r\n" + strings.Repeat("x", 998) + "\r\n")
	c.cmd(".", "250 ")
}

func TestSessionMaxErrors(t *testing.T) {
	ts := newTestServer(t, ModeSMTP, func(s *Server) { s.MaxErrors = 3 })
	c := ts.dial(t)
	c.cmd("FOO", "500 5.5.1")
	c.cmd("BAR", "500 5.5.1")
	c.cmd("BAZ", "500 5.5.1")
	c.expect("421 4.7.0")
	if _, err := c.r.ReadString('\n'); err == nil {
		t.Fatal("connection still open")
	}
}

func TestSessionRelayRules(t *testing.T) {
	ts := newTestServer(t, ModeSMTP, func(s *Server) { s.RelayNetworks = nil; s.MaxErrors = 100 })
	c := ts.dial(t)
	c.cmd("EHLO x", "250 ")
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	for _, rcpt := range []string{
		"<x@remote.test>", "<@example.test:x@remote.test>", "<@a.test,@example.test:x@remote.test>",
		"<x@[127.0.0.1]>", "<\"x@remote.test\"@remote.test>", "<x@remote.test.>",
	} {
		c.cmd("RCPT TO:"+rcpt, "554 5.7.1")
		c.cmd("RSET", "250")
		c.cmd("MAIL FROM:<a@b.test>", "250 ")
	}
	for _, rcpt := range []string{"<x%remote.test@example.test>", "<\"x@remote.test\"@example.test>", "<remote.test!x@example.test>", "<nobody@example.test>"} {
		c.cmd("RCPT TO:"+rcpt, "550 5.1.1")
	}
	c.cmd("RCPT TO:<@remote.test:joe@example.test>", "250 ")
	c.cmd("RCPT TO:<postmaster>", "250 ")
	for _, rcpt := range []string{"<joe@>", "joe@example.test>", "<joe@exa mple.test>", "<>", "<a..b@example.test>", "<@x:>"} {
		c.cmd("RCPT TO:"+rcpt, "501 ")
		c.cmd("RSET", "250")
		c.cmd("MAIL FROM:<a@b.test>", "250 ")
	}
}

// A relay domain (backup MX) takes any address from anyone, without a
// user lookup; other remote domains stay refused, source routes and
// address literals cannot smuggle a relay through it.
func TestSessionRelayDomains(t *testing.T) {
	ts := newTestServer(t, ModeSMTP, func(s *Server) {
		s.RelayNetworks = nil
		s.MaxErrors = 100
		s.IsRelayDomain = func(d string) bool { return d == "relay.test" }
	})
	c := ts.dial(t)
	c.cmd("EHLO x", "250 ")
	c.cmd("MAIL FROM:<a@b.test>", "250 ")
	c.cmd("RCPT TO:<anyone@relay.test>", "250 2.1.5")
	c.cmd("RCPT TO:<Someone.Else@RELAY.test.>", "250 2.1.5")
	c.cmd("RCPT TO:<@relay.test:x@remote.test>", "554 5.7.1")
	c.cmd("RCPT TO:<x@remote.test>", "554 5.7.1")
	c.cmd("RCPT TO:<x@sub.relay.test>", "554 5.7.1")
	c.cmd("RCPT TO:<nobody@example.test>", "550 5.1.1")
	c.cmd("DATA", "354 ")
	c.cmd("Subject: to the backup\r\n\r\nbody\r\n.", "250 2.0.0")
	if ts.q.count() != 1 {
		t.Fatalf("%d messages", ts.q.count())
	}
	env := ts.q.msgs[0].env
	if len(env.Recipients) != 2 || env.Recipients[0].Address != "anyone@relay.test" || env.Recipients[1].Address != "Someone.Else@relay.test" {
		t.Fatalf("recipients %+v %+v", env.Recipients[0], env.Recipients)
	}
	if env.Relay {
		t.Fatal("a stranger's mail to a relay domain is marked as from a relay client")
	}
}

func TestSessionSubmissionAuth(t *testing.T) {
	ts := newTestServer(t, ModeSubmission, func(s *Server) { s.AuthFailureDelay = time.Millisecond })
	c := ts.dial(t)
	c.cmd("EHLO x", "250 ")
	c.cmd("MAIL FROM:<joe@example.test>", "530 5.7.0")
	c.cmd("AUTH PLAIN AGpvZUBleGFtcGxlLnRlc3QAd3Jvbmc=", "535 5.7.8") // wrong
	c.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6")
	c.cmd("am9lQGV4YW1wbGUudGVzdA==", "334 UGFzc3dvcmQ6")
	c.cmd("c2VjcmV0", "235 2.7.0")
	c.cmd("MAIL FROM:<joe@example.test>", "250 ")
	c.cmd("RCPT TO:<someone@remote.test>", "250 ")

	c2 := ts.dial(t)
	c2.cmd("EHLO x", "250 ")
	c2.cmd("AUTH PLAIN AGpvZUBleGFtcGxlLnRlc3QAd3Jvbmc=", "535 5.7.8")
	c2.cmd("AUTH PLAIN AGpvZUBleGFtcGxlLnRlc3QAd3Jvbmc=", "535 5.7.8")
	c2.cmd("AUTH PLAIN AGpvZUBleGFtcGxlLnRlc3QAd3Jvbmc=", "421 4.7.0")
}

func TestSessionBDATPipelinedRejection(t *testing.T) {
	ts := newTestServer(t, ModeSMTP, nil)
	c := ts.dial(t)
	c.cmd("EHLO x", "250 ")
	good := "Subject: x\r\n\r\nhello\r\n"
	bad := "bare\nLF\r\n"
	c.send("MAIL FROM:<>\r\nRCPT TO:<joe@example.test>\r\nBDAT " + fmt.Sprint(len(bad)) + "\r\n" + bad +
		"BDAT 6\r\nRSET\r\nBDAT 3 LAST\r\nabcNOOP\r\n")
	c.expect("250 2.1.0")
	c.expect("250 2.1.5")
	c.expect("550 5.6.11")
	c.expect("503 5.5.1")
	c.expect("503 5.5.1")
	c.expect("250 2.0.0") // NOOP: still in step
	c.send("MAIL FROM:<>\r\nRCPT TO:<joe@example.test>\r\nBDAT 5\r\n" + good[:5] + "BDAT " + fmt.Sprint(len(good)-5) + " LAST\r\n" + good[5:])
	c.expect("250 2.1.0")
	c.expect("250 2.1.5")
	c.expect("250 2.0.0 5 octets")
	c.expect("250 2.0.0 OK: queued")
	if ts.q.count() != 1 || !strings.HasSuffix(ts.q.msgs[0].data, "\r\n"+good) {
		t.Fatalf("%+v", ts.q.msgs)
	}
}

func TestSessionShutdown421(t *testing.T) {
	ts := newTestServer(t, ModeSMTP, nil)
	c := ts.dial(t)
	c.cmd("EHLO x", "250 ")
	go ts.srv.Shutdown(context.Background())
	c.expect("421 4.3.2")
}

func TestSessionShutdownFinishesData(t *testing.T) {
	ts := newTestServer(t, ModeSMTP, nil)
	c := ts.dial(t)
	c.cmd("EHLO x", "250 ")
	c.cmd("MAIL FROM:<>", "250 ")
	c.cmd("RCPT TO:<joe@example.test>", "250 ")
	c.cmd("DATA", "354 ")
	c.send("Subject: x\r\n\r\n")
	done := make(chan error)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		done <- ts.srv.Shutdown(ctx)
	}()
	// The server is stopping; the message in flight still gets in.
	testwait.Until(t, 5*time.Second, "the server to start stopping", func() bool { ts.srv.mu.Lock(); defer ts.srv.mu.Unlock(); return ts.srv.stopping })
	c.cmd("body\r\n.", "250 2.0.0")
	c.expect("421 4.3.2")
	if err := testwait.Recv(t, done, 10*time.Second, "Shutdown to return"); err != nil {
		t.Fatal(err)
	}
	if ts.q.count() != 1 {
		t.Fatal("message lost")
	}
}

func TestSessionMisc(t *testing.T) {
	ts := newTestServer(t, ModeSMTP, func(s *Server) { s.MaxRecipients = 2 })
	c := ts.dial(t)
	c.cmd("MAIL FROM:<>", "503 5.5.1")
	c.cmd("HELP", "214 2.0.0")
	c.cmd("VRFY joe", "252 2.5.0")
	c.cmd("EXPN list", "502 5.5.1")
	c.cmd("EHLO x\rX-Injected: 1", "501 5.5.2")
	c.cmd("EHLO x", "250 ")
	c.cmd("STARTTLS", "502 5.5.1")
	c.send(strings.Repeat("N", 600) + "\r\n")
	c.expect("500 5.5.2")
	c.cmd("MAIL FROM:<a@b.test> SIZE=999999999999", "552 5.3.4")
	c.cmd("MAIL FROM:<a@b.test> FOO=1", "555 5.5.4")
	c.cmd("MAIL FROM:<ü@b.test>", "553 5.6.7")
	c.cmd("MAIL FROM:<ü@b.test> SMTPUTF8", "250 ")
	c.cmd("RCPT TO:<joe@example.test>", "250 ")
	c.cmd("RCPT TO:<postmaster@example.test>", "250 ")
	c.cmd("RCPT TO:<x@remote.test>", "452 4.5.3")
}
