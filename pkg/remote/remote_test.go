package remote

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/urfave/cli/v2"

	"letterbox/pkg/internal/testwait"
)

const testMsg = "From: a@src.test\r\nTo: b@example.test\r\nSubject: hello\r\n\r\nline one\r\n.leading dot\r\n"

func msgOpen(s string) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(s)), nil }
}

// fixture is a test DNS server and one SMTP port shared by 127.0.0.2–.9.
type fixture struct {
	t    *testing.T
	dns  *testDNS
	port int
}

var ips = []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return &fixture{t: t, dns: newTestDNS(t), port: freePort(t, ips...)}
}

func (f *fixture) sink(ip string, opts ...sinkOpt) *sink { return newSink(f.t, ip, f.port, opts...) }

func (f *fixture) client(mod ...func(*Config)) *Client {
	f.t.Helper()
	cfg := Config{
		Helo: "client.test",
		Port: f.port,
		DNS:  f.dns.addr,
		Timeouts: Timeouts{
			Connect: 2 * time.Second, Greeting: 2 * time.Second, Command: 2 * time.Second,
			DataInit: 2 * time.Second, DataBlock: 2 * time.Second, DataEnd: 2 * time.Second,
		},
	}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c
}

func deliver(t *testing.T, c *Client, domain string, rcpts ...string) []Result {
	t.Helper()
	res, err := c.Deliver(context.Background(), domain, "sender@src.test", rcpts, msgOpen(testMsg))
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	if len(res) != len(rcpts) {
		t.Fatalf("Deliver: %d results for %d recipients", len(res), len(rcpts))
	}
	for i, r := range res {
		if r.Rcpt != rcpts[i] {
			t.Fatalf("result %d is for %q, want %q", i, r.Rcpt, rcpts[i])
		}
	}
	return res
}

func wantDelivered(t *testing.T, res []Result) {
	t.Helper()
	for _, r := range res {
		if !r.Delivered() || r.Temporary || r.Status != "2.0.0" {
			t.Fatalf("%s: want delivered, got %+v", r.Rcpt, r)
		}
	}
}

func wantFailed(t *testing.T, res []Result, temporary bool, status string) {
	t.Helper()
	for _, r := range res {
		if r.Delivered() || r.Temporary != temporary || (status != "" && r.Status != status) {
			t.Fatalf("%s: want temporary=%v status %s, got %+v", r.Rcpt, temporary, status, r)
		}
	}
}

func TestDeliverViaMXOneTransaction(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "example.test. MX 10 mx1.example.test.", "mx1.example.test. A 127.0.0.2")
	k := f.sink("127.0.0.2")
	res := deliver(t, f.client(), "example.test", "b@example.test", "c@example.test", "d@Example.TEST")
	wantDelivered(t, res)
	if !strings.Contains(res[0].Message, "mx1.example.test[127.0.0.2]") {
		t.Errorf("message does not name the host: %q", res[0].Message)
	}
	m := k.messages()
	if len(m) != 1 {
		t.Fatalf("sink got %d messages, want 1 transaction", len(m))
	}
	if m[0].From != "sender@src.test" || strings.Join(m[0].Rcpts, ",") != "b@example.test,c@example.test,d@Example.TEST" {
		t.Errorf("envelope: %+v", m[0])
	}
	if m[0].Data != testMsg {
		t.Errorf("data:\n%q\nwant\n%q", m[0].Data, testMsg)
	}
	if m[0].Opts.Size != int64(len(testMsg)) {
		t.Errorf("SIZE=%d, want %d", m[0].Opts.Size, len(testMsg))
	}
}

func TestBareLFMessageGoesOutWithCRLF(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "example.test. MX 10 mx1.example.test.", "mx1.example.test. A 127.0.0.2")
	k := f.sink("127.0.0.2")
	lf := strings.ReplaceAll(testMsg, "\r\n", "\n")
	res, _ := f.client().Deliver(context.Background(), "example.test", "s@src.test", []string{"b@example.test"}, msgOpen(lf))
	wantDelivered(t, res)
	if m := k.messages(); len(m) != 1 || m[0].Data != testMsg {
		t.Fatalf("sink got %+v", m)
	}
}

func TestMXPreferenceOrder(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t,
		"example.test. MX 30 mx3.example.test.", "example.test. MX 10 mx1.example.test.", "example.test. MX 20 mx2.example.test.",
		"mx1.example.test. A 127.0.0.2", "mx2.example.test. A 127.0.0.3", "mx3.example.test. A 127.0.0.4")
	k1, k2, k3 := f.sink("127.0.0.2"), f.sink("127.0.0.3"), f.sink("127.0.0.4")
	for i := 0; i < 5; i++ {
		wantDelivered(t, deliver(t, f.client(), "example.test", "b@example.test"))
	}
	if len(k1.messages()) != 5 || len(k2.messages()) != 0 || len(k3.messages()) != 0 {
		t.Fatalf("want all 5 at preference 10: got %d/%d/%d", len(k1.messages()), len(k2.messages()), len(k3.messages()))
	}
}

func TestMXEqualPreferenceShuffled(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "example.test. MX 10 a.example.test.", "example.test. MX 10 b.example.test.", "example.test. MX 5 c.example.test.")
	c := f.client()
	seen := map[string]bool{}
	for i := 0; i < 64 && len(seen) < 2; i++ {
		hs, _, err := c.hosts(context.Background(), "example.test", destination{})
		if err != nil {
			t.Fatal(err)
		}
		if len(hs) != 3 || hs[0].Name != "c.example.test" {
			t.Fatalf("order %+v", hs)
		}
		seen[hs[1].Name] = true
	}
	if len(seen) != 2 {
		t.Fatalf("equal preferences never shuffled in 64 lookups: %v", seen)
	}
}

func TestPrimaryDownSecondaryGetsIt(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "example.test. MX 10 mx1.example.test.", "example.test. MX 20 mx2.example.test.",
		"mx1.example.test. A 127.0.0.4", "mx2.example.test. A 127.0.0.3")
	k := f.sink("127.0.0.3") // nothing on 127.0.0.4
	wantDelivered(t, deliver(t, f.client(), "example.test", "b@example.test"))
	if len(k.messages()) != 1 {
		t.Fatal("secondary did not get the message")
	}
}

// rawServer answers each connection with greeting and then keeps reading.
func rawServer(t *testing.T, addr, greeting string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if greeting != "" {
					io.WriteString(c, greeting)
				}
				io.Copy(io.Discard, c)
			}()
		}
	}()
}

func TestGreeting4xxOrSilenceNextHost(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "example.test. MX 10 mx1.example.test.", "example.test. MX 20 mx2.example.test.", "example.test. MX 30 mx3.example.test.",
		"mx1.example.test. A 127.0.0.4", "mx2.example.test. A 127.0.0.5", "mx3.example.test. A 127.0.0.3")
	rawServer(t, fmt.Sprintf("127.0.0.4:%d", f.port), "421 4.3.2 too busy\r\n")
	rawServer(t, fmt.Sprintf("127.0.0.5:%d", f.port), "") // never greets
	k := f.sink("127.0.0.3")
	c := f.client(func(c *Config) { c.Timeouts.Greeting = 300 * time.Millisecond })
	wantDelivered(t, deliver(t, c, "example.test", "b@example.test"))
	if len(k.messages()) != 1 {
		t.Fatal("third MX did not get the message")
	}
}

func TestAllMXDownTemporary(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "example.test. MX 10 mx1.example.test.", "example.test. MX 20 mx2.example.test.",
		"mx1.example.test. A 127.0.0.4", "mx2.example.test. A 127.0.0.5")
	rawServer(t, fmt.Sprintf("127.0.0.5:%d", f.port), "421 4.3.2 too busy\r\n")
	res := deliver(t, f.client(), "example.test", "b@example.test", "c@example.test")
	wantFailed(t, res, true, "")
	// The last host tried is the secondary, which said 421.
	if res[0].Code != 421 || !strings.Contains(res[0].Message, "too busy") || !strings.Contains(res[0].Message, "mx2.example.test[127.0.0.5]") {
		t.Fatalf("want the last error quoted: %+v", res[0])
	}
	f2 := newFixture(t)
	f2.dns.add(t, "example.test. MX 10 mx1.example.test.", "mx1.example.test. A 127.0.0.4")
	res = deliver(t, f2.client(), "example.test", "b@example.test")
	wantFailed(t, res, true, "4.4.1")
	if res[0].Code != 0 || !strings.Contains(res[0].Message, "connect to mx1.example.test[127.0.0.4]") {
		t.Fatalf("connection failure: %+v", res[0])
	}
}

func TestImplicitMX(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "bare.test. A 127.0.0.2")
	k := f.sink("127.0.0.2")
	wantDelivered(t, deliver(t, f.client(), "bare.test", "b@bare.test"))
	if len(k.messages()) != 1 {
		t.Fatal("implicit MX not used")
	}
}

func TestDNSFailures(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "null.test. MX 0 .", "noaddr.test. TXT hello")
	f.dns.setServfail("broken.test")
	f.dns.add(t, "mxbroken.test. MX 10 mx.broken.test.", "mxgone.test. MX 10 gone.test.", "self.test. MX 0 self.test.", "self.test. TXT x")
	f.dns.setServfail("mx.broken.test")
	c := f.client()
	for _, tc := range []struct {
		domain string
		temp   bool
		status string
		text   string
	}{
		{"null.test", false, "5.1.10", "null MX"},
		{"nxdomain.test", false, "5.1.2", "not found"},
		{"noaddr.test", false, "5.1.2", "no MX and no address"},
		{"broken.test", true, "4.4.3", "SERVFAIL"},
		{"mxbroken.test", true, "4.4.3", "SERVFAIL"},
		// An MX host that does not resolve is the domain's (maybe
		// passing) fault: retry, unlike a domain without MX and address.
		{"mxgone.test", true, "4.4.3", "MX host gone.test"},
		{"self.test", true, "4.4.3", "MX host self.test"},
	} {
		res := deliver(t, c, tc.domain, "x@"+tc.domain)
		wantFailed(t, res, tc.temp, tc.status)
		if res[0].Code != 0 || !strings.Contains(res[0].Message, tc.text) {
			t.Errorf("%s: %+v, want %q in the message", tc.domain, res[0], tc.text)
		}
	}
}

func TestDNSTimeoutTemporary(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0") // never answers
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := New(Config{DNS: pc.LocalAddr().String()})
	if err != nil {
		t.Fatal(err)
	}
	c.res.Timeout = 200 * time.Millisecond
	res := deliver(t, c, "example.test", "b@example.test")
	wantFailed(t, res, true, "4.4.3")
}

func TestRcptRepliesPerRecipient(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "example.test. MX 10 mx1.example.test.", "mx1.example.test. A 127.0.0.2")
	k := f.sink("127.0.0.2")
	k.rcpt = func(to string, n int) error {
		switch {
		case strings.HasPrefix(to, "unknown"):
			return errUnknownUser
		case strings.HasPrefix(to, "full"):
			return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full, try later"}
		case strings.HasPrefix(to, "noenh"):
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.NoEnhancedCode, Message: "go away"}
		}
		return nil
	}
	res := deliver(t, f.client(), "example.test", "ok1@example.test", "unknown@example.test", "full@example.test", "noenh@example.test", "ok2@example.test")
	wantDelivered(t, []Result{res[0], res[4]})
	u := res[1]
	if u.Temporary || u.Code != 550 || u.Status != "5.1.1" || !strings.Contains(u.Message, "550 5.1.1 user unknown") || !strings.Contains(u.Message, "mx1.example.test[127.0.0.2]") || !strings.Contains(u.Message, "RCPT TO") {
		t.Errorf("unknown user: %+v", u)
	}
	if r := res[2]; !r.Temporary || r.Code != 450 || r.Status != "4.2.2" || !strings.Contains(r.Message, "mailbox full") {
		t.Errorf("mailbox full: %+v", r)
	}
	if r := res[3]; r.Temporary || r.Code != 550 || r.Status != "5.1.1" {
		t.Errorf("550 without enhanced code: %+v (want synthesised 5.1.1)", r)
	}
	m := k.messages()
	if len(m) != 1 || strings.Join(m[0].Rcpts, ",") != "ok1@example.test,ok2@example.test" {
		t.Fatalf("sink got %+v", m)
	}
}

func TestTooManyRecipients452(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "example.test. MX 10 mx1.example.test.", "mx1.example.test. A 127.0.0.2")
	k := f.sink("127.0.0.2")
	k.rcpt = func(to string, n int) error {
		if n >= 2 {
			return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "too many recipients"}
		}
		return nil
	}
	res := deliver(t, f.client(), "example.test", "a@example.test", "b@example.test", "c@example.test", "d@example.test")
	wantDelivered(t, res[:2])
	wantFailed(t, res[2:], true, "4.5.3")
	if m := k.messages(); len(m) != 1 || len(m[0].Rcpts) != 2 {
		t.Fatalf("sink got %+v", m)
	}
}

func TestMailAndDataReplies(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "example.test. MX 10 mx1.example.test.", "mx1.example.test. A 127.0.0.2")
	k := f.sink("127.0.0.2")
	var mu sync.Mutex
	var dataErr error
	k.data = func() error { mu.Lock(); defer mu.Unlock(); return dataErr }
	c := f.client()
	for _, tc := range []struct {
		err    error
		temp   bool
		status string
	}{
		{&smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "spam detected"}, false, "5.7.1"},
		{&smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "local error"}, true, "4.3.0"},
	} {
		mu.Lock()
		dataErr = tc.err
		mu.Unlock()
		res := deliver(t, c, "example.test", "a@example.test", "b@example.test")
		wantFailed(t, res, tc.temp, tc.status)
		if !strings.Contains(res[0].Message, tc.err.(*smtp.SMTPError).Message) || !strings.Contains(res[0].Message, "end of data") {
			t.Errorf("message %q", res[0].Message)
		}
	}
	// The session survived the refusals and carries the next message.
	mu.Lock()
	dataErr = nil
	mu.Unlock()
	wantDelivered(t, deliver(t, c, "example.test", "a@example.test"))
	if k.connections() != 1 {
		t.Errorf("%d connections, want 1 reused", k.connections())
	}
}

func TestStartTLS(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "example.test. MX 10 mx1.example.test.", "mx1.example.test. A 127.0.0.2",
		"plain.test. MX 10 mx.plain.test.", "mx.plain.test. A 127.0.0.3",
		"old.test. MX 10 mx.old.test.", "mx.old.test. A 127.0.0.4")
	cert, leaf := selfSigned(t, "mx1.example.test")
	k := f.sink("127.0.0.2", withTLS(cert))
	plain := f.sink("127.0.0.3")
	oldCert, _ := selfSigned(t, "mx.old.test")
	old := f.sink("127.0.0.4", withTLS(oldCert))
	old.srv.TLSConfig.MaxVersion = 0x0302 // TLS 1.1: our client refuses it

	// may: self-signed is fine, TLS is used.
	wantDelivered(t, deliver(t, f.client(), "example.test", "b@example.test"))
	if m := k.messages(); len(m) != 1 || !m[0].TLS {
		t.Fatalf("policy may: %+v, want one message over TLS", m)
	}
	// verify: the self-signed certificate is refused, the mail stays queued.
	res := deliver(t, f.client(func(c *Config) { c.TLSPolicy = TLSVerify }), "example.test", "b@example.test")
	wantFailed(t, res, true, "4.7.5")
	if !strings.Contains(res[0].Message, "certificate") {
		t.Errorf("verify: %q", res[0].Message)
	}
	// verify with the certificate trusted: delivered.
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	wantDelivered(t, deliver(t, f.client(func(c *Config) { c.TLSPolicy = TLSVerify; c.RootCAs = pool }), "example.test", "b@example.test"))
	if len(k.messages()) != 2 {
		t.Fatal("verified delivery missing")
	}
	// encrypt: a host without STARTTLS is refused; may sends in plaintext.
	res = deliver(t, f.client(func(c *Config) { c.TLSPolicy = TLSEncrypt }), "plain.test", "b@plain.test")
	wantFailed(t, res, true, "4.7.4")
	wantDelivered(t, deliver(t, f.client(), "plain.test", "b@plain.test"))
	if m := plain.messages(); len(m) != 1 || m[0].TLS {
		t.Fatalf("plaintext: %+v", m)
	}
	// may: a failed handshake is retried in plaintext on the same host.
	wantDelivered(t, deliver(t, f.client(), "old.test", "b@old.test"))
	if m := old.messages(); len(m) != 1 || m[0].TLS {
		t.Fatalf("fallback: %+v", m)
	}
	if old.connections() != 2 {
		t.Errorf("fallback used %d connections, want 2", old.connections())
	}
	// A per-route policy overrides the global one.
	r, err := ParseRoute(fmt.Sprintf("plain.test=127.0.0.3:%d tls=encrypt", f.port))
	if err != nil {
		t.Fatal(err)
	}
	res = deliver(t, f.client(func(c *Config) { c.Routes = []Route{r} }), "plain.test", "b@plain.test")
	wantFailed(t, res, true, "4.7.4")
}

func TestSizeTooLargePermanent(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "example.test. MX 10 mx1.example.test.", "mx1.example.test. A 127.0.0.2")
	k := f.sink("127.0.0.2", withMaxSize(20))
	res := deliver(t, f.client(), "example.test", "b@example.test")
	wantFailed(t, res, false, "5.3.4")
	if !strings.Contains(res[0].Message, "limit 20") {
		t.Errorf("message %q", res[0].Message)
	}
	if len(k.messages()) != 0 {
		t.Fatal("sent anyway")
	}
}

func TestScanMessage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m")
	if err := os.WriteFile(p, []byte(testMsg), 0o600); err != nil {
		t.Fatal(err)
	}
	n, eight, err := scanMessage(func() (io.ReadCloser, error) { return os.Open(p) })
	if err != nil || n != int64(len(testMsg)) || eight {
		t.Fatalf("file: size %d, 8-bit %v, %v", n, eight, err)
	}
	for _, tc := range []struct {
		in    string
		size  int64
		eight bool
	}{
		{"a\nb\n", 6, false},                // bare LFs go out as CRLF
		{"a\r\nb", 4, false},                // no line end added to the count
		{"Subject: \xc3\xa9\r\n", 13, true}, // UTF-8
		{strings.Repeat("x", 40000) + "\n\xff", 40003, true},
		{"\r\n\n", 4, false},
	} {
		n, eight, err := scanMessage(msgOpen(tc.in))
		if err != nil || n != tc.size || eight != tc.eight {
			t.Errorf("%.20q: size %d, 8-bit %v, %v; want %d, %v", tc.in, n, eight, err, tc.size, tc.eight)
		}
	}
	if _, _, err := scanMessage(func() (io.ReadCloser, error) { return nil, os.ErrPermission }); err == nil {
		t.Error("open error not reported")
	}
}

func TestSMTPUTF8(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "example.test. MX 10 mx1.example.test.", "mx1.example.test. A 127.0.0.2",
		"utf.test. MX 10 mx.utf.test.", "mx.utf.test. A 127.0.0.3")
	f.sink("127.0.0.2")
	u := f.sink("127.0.0.3", withUTF8())
	c := f.client()
	res := deliver(t, c, "example.test", "jürgen@example.test")
	wantFailed(t, res, false, "5.6.7")
	wantDelivered(t, deliver(t, c, "utf.test", "jürgen@utf.test"))
	if m := u.messages(); len(m) != 1 || !m[0].Opts.UTF8 {
		t.Fatalf("SMTPUTF8 not used: %+v", m)
	}
}

func TestConnectionReuseAndIdleClose(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "example.test. MX 10 mx1.example.test.", "mx1.example.test. A 127.0.0.2")
	k := f.sink("127.0.0.2")
	k.rcpt = func(to string, n int) error {
		if strings.HasPrefix(to, "unknown") {
			return errUnknownUser
		}
		return nil
	}
	c := f.client(func(c *Config) { c.IdleTimeout = 300 * time.Millisecond })
	wantDelivered(t, deliver(t, c, "example.test", "a@example.test"))
	wantFailed(t, deliver(t, c, "example.test", "unknown@example.test"), false, "5.1.1") // aborted transaction: RSET
	wantDelivered(t, deliver(t, c, "example.test", "b@example.test"))
	if k.connections() != 1 || len(k.messages()) != 2 {
		t.Fatalf("%d connections, %d messages; want 1 connection carrying 2 messages", k.connections(), len(k.messages()))
	}
	// The idle session is closed after IdleTimeout.
	deadline := time.Now().Add(5 * time.Second)
	for {
		k.mu.Lock()
		live := k.live
		k.mu.Unlock()
		if live == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("idle connection never closed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantDelivered(t, deliver(t, c, "example.test", "c@example.test"))
	if k.connections() != 2 {
		t.Fatalf("%d connections after idle close, want 2", k.connections())
	}
}

func TestCachedConnectionDiedIsNoFailure(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "example.test. MX 10 mx1.example.test.", "mx1.example.test. A 127.0.0.2")
	k := f.sink("127.0.0.2")
	c := f.client()
	wantDelivered(t, deliver(t, c, "example.test", "a@example.test"))
	// Kill the cached session from our side of the wire, as a server
	// timing it out would.
	c.mu.Lock()
	for _, l := range c.idle {
		for _, cn := range l {
			cn.nc.Close()
		}
	}
	c.mu.Unlock()
	wantDelivered(t, deliver(t, c, "example.test", "b@example.test"))
	if len(k.messages()) != 2 || k.connections() != 2 {
		t.Fatalf("%d messages over %d connections", len(k.messages()), k.connections())
	}
}

func TestSlowDestinationDoesNotBlockOthers(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "slow.test. MX 10 mx.slow.test.", "mx.slow.test. A 127.0.0.2",
		"fast.test. MX 10 mx.fast.test.", "mx.fast.test. A 127.0.0.3")
	slow := f.sink("127.0.0.2")
	slow.block = make(chan struct{})
	slow.inData = make(chan struct{}, 10)
	fast := f.sink("127.0.0.3")
	c := f.client(func(c *Config) { c.Concurrency = 3; c.PerDestination = 2 })
	var wg sync.WaitGroup
	slowRes := make([][]Result, 4)
	for i := range slowRes {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			slowRes[i] = deliver(t, c, "slow.test", fmt.Sprintf("u%d@slow.test", i))
		}(i)
	}
	// Two sessions reach DATA at the slow host and hang there.
	testwait.Recv(t, slow.inData, 10*time.Second, "a first session to reach DATA at the slow host")
	testwait.Recv(t, slow.inData, 10*time.Second, "a second session to reach DATA at the slow host")
	for i := 0; i < 3; i++ {
		wantDelivered(t, deliver(t, c, "fast.test", "b@fast.test"))
	}
	if len(fast.messages()) != 3 {
		t.Fatal("fast domain was held up")
	}
	select {
	case <-slow.inData:
		t.Fatal("a third session reached the slow host past the per-destination limit")
	default:
	}
	close(slow.block)
	testwait.Group(t, &wg, 20*time.Second, "the slow host's deliveries to end once unblocked")
	for _, r := range slowRes {
		wantDelivered(t, r)
	}
	slow.mu.Lock()
	peak := slow.peak
	slow.mu.Unlock()
	if peak > 2 {
		t.Fatalf("%d sessions at once at the slow host, limit 2", peak)
	}
}

func TestTotalConcurrencyLimit(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "a.test. MX 10 mx.a.test.", "mx.a.test. A 127.0.0.2", "b.test. MX 10 mx.b.test.", "mx.b.test. A 127.0.0.3")
	a := f.sink("127.0.0.2")
	a.block = make(chan struct{})
	a.inData = make(chan struct{}, 10)
	b := f.sink("127.0.0.3")
	c := f.client(func(c *Config) { c.Concurrency = 1 })
	done := make(chan []Result)
	go func() { done <- deliver(t, c, "a.test", "x@a.test") }()
	testwait.Recv(t, a.inData, 10*time.Second, "the session to a.test to reach DATA")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	res, _ := c.Deliver(ctx, "b.test", "s@src.test", []string{"y@b.test"}, msgOpen(testMsg))
	wantFailed(t, res, true, "4.4.7")
	if b.connections() != 0 {
		t.Fatal("total limit 1 exceeded")
	}
	close(a.block)
	wantDelivered(t, <-done)
	wantDelivered(t, deliver(t, c, "b.test", "y@b.test"))
}

func TestSmarthostRouteWithAuth(t *testing.T) {
	f := newFixture(t)
	// No DNS for the domain at all: the route decides.
	k := f.sink("127.0.0.3", withAuth("relayuser", "s3cret"))
	dir := t.TempDir()
	authFile := filepath.Join(dir, "auth")
	os.WriteFile(authFile, []byte("# smarthost\n127.0.0.3 relayuser s3cret\n"), 0o600)
	creds, err := ReadAuthFile(authFile)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRoute(fmt.Sprintf("*=127.0.0.3:%d", f.port))
	if err != nil {
		t.Fatal(err)
	}
	c := f.client(func(c *Config) { c.Routes = []Route{r}; c.Auth = creds; c.Port = 1 })
	wantDelivered(t, deliver(t, c, "anywhere.test", "b@anywhere.test"))
	wantDelivered(t, deliver(t, c, "elsewhere.test", "c@elsewhere.test"))
	m := k.messages()
	if len(m) != 2 || m[0].User != "relayuser" || m[1].User != "relayuser" {
		t.Fatalf("sink got %+v", m)
	}
	if k.connections() != 1 {
		t.Errorf("smarthost: %d connections for 2 domains, want 1", k.connections())
	}
	// AUTH LOGIN when the relay offers no PLAIN.
	login := f.sink("127.0.0.4", withAuth("relayuser", "s3cret"))
	login.mechs = []string{sasl.Login}
	rl, _ := ParseRoute(fmt.Sprintf("*=127.0.0.4:%d", f.port))
	wantDelivered(t, deliver(t, f.client(func(c *Config) {
		c.Routes = []Route{rl}
		c.Auth = map[string]Credentials{"127.0.0.4": {"relayuser", "s3cret"}}
	}), "anywhere.test", "b@anywhere.test"))
	if m := login.messages(); len(m) != 1 || m[0].User != "relayuser" {
		t.Fatalf("LOGIN sink got %+v", m)
	}
	// A wrong password keeps the mail queued.
	bad := map[string]Credentials{fmt.Sprintf("127.0.0.3:%d", f.port): {"relayuser", "wrong"}}
	res := deliver(t, f.client(func(c *Config) { c.Routes = []Route{r}; c.Auth = bad }), "anywhere.test", "b@anywhere.test")
	wantFailed(t, res, true, "4.7.8")
	// A domain route beats the smarthost.
	direct := f.sink("127.0.0.2")
	r2, _ := ParseRoute(fmt.Sprintf("special.test=[127.0.0.2]:%d", f.port))
	wantDelivered(t, deliver(t, f.client(func(c *Config) { c.Routes = []Route{r, r2}; c.Auth = creds }), "special.test", "b@special.test"))
	if len(direct.messages()) != 1 {
		t.Fatal("domain route not used")
	}
	// A route host that only the system resolver knows (/etc/hosts).
	r3, _ := ParseRoute(fmt.Sprintf("hosts.test=localhost:%d", f.port))
	local := newSink(t, "127.0.0.1", f.port)
	wantDelivered(t, deliver(t, f.client(func(c *Config) { c.Routes = []Route{r3} }), "hosts.test", "b@hosts.test"))
	if len(local.messages()) != 1 {
		t.Fatal("route by /etc/hosts name not used")
	}
}

func TestCredentialsOnlyOverTLSOrLoopback(t *testing.T) {
	for _, tc := range []struct {
		ip   string
		tls  bool
		want bool
	}{{"127.0.0.3", false, true}, {"::1", false, true}, {"192.0.2.1", false, false}, {"192.0.2.1", true, true}} {
		if got := authAllowed(tc.tls, netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("%s tls=%v: allowed=%v", tc.ip, tc.tls, got)
		}
	}
}

func TestParseRoute(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Route
		bad  bool
	}{
		{in: "example.com=mx.example.com", want: Route{Domain: "example.com", Host: "mx.example.com"}},
		{in: "Example.COM.=mx.example.com:587 tls=verify", want: Route{Domain: "example.com", Host: "mx.example.com", Port: 587, TLS: "verify"}},
		{in: "*=192.0.2.1:2525", want: Route{Domain: "*", Host: "192.0.2.1", Port: 2525}},
		{in: "*=[2001:db8::1]:25", want: Route{Domain: "*", Host: "2001:db8::1", Port: 25}},
		{in: "*=[2001:db8::1]", want: Route{Domain: "*", Host: "2001:db8::1"}},
		{in: "example.com", bad: true},
		{in: "example.com=", bad: true},
		{in: "a=b:0", bad: true},
		{in: "a=b:99999", bad: true},
		{in: "a=b tls=maybe", bad: true},
		{in: "a=b foo=bar", bad: true},
	} {
		got, err := ParseRoute(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: want an error, got %+v", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: got %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestReadAuthFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "auth")
	os.WriteFile(p, []byte("\n# comment\nSMTP.example.com:587 user pw\n[192.0.2.1] u2 p2\n"), 0o600)
	a, err := ReadAuthFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if a["smtp.example.com:587"] != (Credentials{"user", "pw"}) || a["[192.0.2.1]"] != (Credentials{"u2", "p2"}) {
		t.Fatalf("%+v", a)
	}
	os.WriteFile(p, []byte("host only-user\n"), 0o600)
	if _, err := ReadAuthFile(p); err == nil || !strings.Contains(err.Error(), ":1") {
		t.Fatalf("bad line: %v", err)
	}
}

func TestFromContextFlags(t *testing.T) {
	app := &cli.App{Flags: Flags()}
	set := flag.NewFlagSet("t", flag.ContinueOnError)
	for _, f := range app.Flags {
		if err := f.Apply(set); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(t.TempDir(), "auth")
	os.WriteFile(p, []byte("smart.test u p\n"), 0o600)
	err := set.Parse([]string{"--route", "*=smart.test:587 tls=encrypt", "--route", "x.test=10.0.0.1",
		"--route-auth-file", p, "--dns", "127.0.0.1:5353", "--smtp-port", "2525", "--helo", "me.test",
		"--concurrency", "7", "--concurrency-per-domain", "3", "--connect-timeout", "3s"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := FromContext(cli.NewContext(app, set, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.cfg.Helo != "me.test" || c.cfg.Port != 2525 || c.cfg.Concurrency != 7 || c.cfg.PerDestination != 3 ||
		c.cfg.Timeouts.Connect != 3*time.Second || c.cfg.Timeouts.DataEnd != DefaultTimeouts.DataEnd || c.res.Servers[0] != "127.0.0.1:5353" {
		t.Fatalf("config %+v", c.cfg)
	}
	d := c.destination("any.test")
	if d.route == nil || d.route.Host != "smart.test" || d.route.Port != 587 || d.policy != TLSEncrypt {
		t.Fatalf("smarthost %+v", d)
	}
	if cr := c.credentials(d); cr == nil || cr.Username != "u" {
		t.Fatalf("credentials %+v", cr)
	}
	if d := c.destination("x.test"); d.route.Port != 2525 || d.policy != TLSMay {
		t.Fatalf("x.test %+v", d)
	}
	set2 := flag.NewFlagSet("t", flag.ContinueOnError)
	for _, f := range app.Flags {
		f.Apply(set2)
	}
	set2.Parse([]string{"--route", "bad", "--dns", "127.0.0.1"})
	if _, err := FromContext(cli.NewContext(app, set2, nil), nil); err == nil {
		t.Fatal("bad route accepted")
	}
}

func TestDeliverArgumentErrors(t *testing.T) {
	c, err := New(Config{DNS: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Deliver(context.Background(), "", "a@b", []string{"x@y"}, msgOpen("x")); err == nil {
		t.Error("empty domain accepted")
	}
	if _, err := c.Deliver(context.Background(), "y", "a@b", nil, msgOpen("x")); err == nil {
		t.Error("no recipients accepted")
	}
	if _, err := New(Config{DNS: "127.0.0.1:1", TLSPolicy: "sometimes"}); err == nil {
		t.Error("bad policy accepted")
	}
}

// scriptedServer answers each line the client sends with the next reply
// from replies (after the greeting); it records what it read.
func scriptedServer(t *testing.T, addr string, greeting string, replies map[string]string) (verbs func() []string) {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	verbs = func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), seen...) }
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, greeting)
				buf := make([]byte, 0, 4096)
				tmp := make([]byte, 4096)
				inData := false
				for {
					n, err := c.Read(tmp)
					if err != nil {
						return
					}
					buf = append(buf, tmp[:n]...)
					for {
						i := strings.Index(string(buf), "\r\n")
						if i < 0 {
							break
						}
						line := string(buf[:i])
						buf = buf[i+2:]
						if inData {
							if line == "." {
								inData = false
								io.WriteString(c, "250 2.0.0 queued\r\n")
							}
							continue
						}
						verb := strings.ToUpper(strings.Fields(line + " x")[0])
						mu.Lock()
						seen = append(seen, verb)
						mu.Unlock()
						if r, ok := replies[verb]; ok {
							io.WriteString(c, r)
						} else {
							io.WriteString(c, "250 ok\r\n")
						}
						if verb == "DATA" {
							inData = true
						}
						if verb == "QUIT" {
							return
						}
					}
				}
			}()
		}
	}()
	return verbs
}

// An EHLO reply with an empty line (seen from smtp-sink) once crashed the
// extension scan.
func TestOddEHLOReply(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "example.test. MX 10 mx1.example.test.", "mx1.example.test. A 127.0.0.2")
	scriptedServer(t, fmt.Sprintf("127.0.0.2:%d", f.port), "220 odd ESMTP\r\n", map[string]string{
		"EHLO": "250-odd.test\r\n250-\r\n250-PIPELINING\r\n250 \r\n",
		"DATA": "354 go\r\n",
	})
	wantDelivered(t, deliver(t, f.client(), "example.test", "b@example.test"))
}

func TestReusedSessionGetsRSET(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "example.test. MX 10 mx1.example.test.", "mx1.example.test. A 127.0.0.2")
	verbs := scriptedServer(t, fmt.Sprintf("127.0.0.2:%d", f.port), "220 s ESMTP\r\n", map[string]string{
		"EHLO": "250-s.test\r\n250 PIPELINING\r\n",
		"DATA": "354 go\r\n",
		"QUIT": "221 bye\r\n",
	})
	c := f.client()
	wantDelivered(t, deliver(t, c, "example.test", "a@example.test"))
	wantDelivered(t, deliver(t, c, "example.test", "b@example.test"))
	c.Close()
	got := strings.Join(verbs(), " ")
	want := "EHLO MAIL RCPT DATA RSET MAIL RCPT DATA QUIT"
	if got != want {
		t.Fatalf("dialog %q, want %q", got, want)
	}
}

func TestAddressAttemptsBounded(t *testing.T) {
	f := newFixture(t)
	var zone []string
	for i := 0; i < 8; i++ {
		zone = append(zone, fmt.Sprintf("many.test. MX %d mx%d.many.test.", 10+i, i), fmt.Sprintf("mx%d.many.test. A 127.0.0.%d", i, 2+i%5))
	}
	zone = append(zone, "mx7.many.test. A 127.0.0.1")
	f.dns.add(t, zone...)
	k := f.sink("127.0.0.1") // only the 8th MX, past the limit of 5 addresses, listens
	res := deliver(t, f.client(), "many.test", "b@many.test")
	wantFailed(t, res, true, "4.4.1")
	if len(k.messages()) != 0 {
		t.Fatal("tried more than 5 addresses")
	}
}

// SelectMX sees every MX host marked Ours when its name is our hostname or
// it resolves to one of proxy-interfaces, gets only the hosts it keeps
// tried, and its refusal fails the recipients with 5.4.6, permanently,
// before any connection.
func TestSelectMXOursAndLoop(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t,
		"relay.test. MX 10 mx1.relay.test.", "relay.test. MX 20 Backup.Test.", "relay.test. MX 30 behind-nat.relay.test.",
		"mx1.relay.test. A 127.0.0.2", "backup.test. A 127.0.0.3", "behind-nat.relay.test. A 127.0.0.5")
	k1, k2, k5 := f.sink("127.0.0.2"), f.sink("127.0.0.3"), f.sink("127.0.0.5")
	var seen []MX
	loop := false
	c := f.client(func(cfg *Config) {
		cfg.Hostname = "backup.test"
		cfg.ProxyInterfaces = []netip.Addr{netip.MustParseAddr("127.0.0.5")}
		cfg.SelectMX = func(domain string, hosts []MX) ([]MX, error) {
			seen = append([]MX(nil), hosts...)
			if loop {
				return nil, fmt.Errorf("mail for %s loops back to myself", domain)
			}
			var out []MX
			for _, h := range hosts {
				if !h.Ours {
					out = append(out, h)
				}
			}
			return out, nil
		}
	})
	wantDelivered(t, deliver(t, c, "relay.test", "b@relay.test"))
	want := []MX{{"mx1.relay.test", 10, false}, {"Backup.Test", 20, true}, {"behind-nat.relay.test", 30, true}}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("SelectMX saw %v, want %v", seen, want)
	}
	if len(k1.messages()) != 1 || len(k2.messages())+len(k5.messages()) != 0 {
		t.Fatalf("deliveries %d/%d/%d, want 1/0/0", len(k1.messages()), len(k2.messages()), len(k5.messages()))
	}
	c.Close()

	loop = true
	c = f.client(func(cfg *Config) {
		cfg.Hostname = "backup.test"
		cfg.SelectMX = func(domain string, hosts []MX) ([]MX, error) {
			return nil, fmt.Errorf("mail for %s loops back to myself", domain)
		}
	})
	res := deliver(t, c, "relay.test", "b@relay.test")
	wantFailed(t, res, false, "5.4.6")
	if !strings.Contains(res[0].Message, "loops back to myself") {
		t.Fatalf("message %q", res[0].Message)
	}
	if n := k1.connections() + k2.connections() + k5.connections(); n != 1 {
		t.Fatalf("%d connections in all, want only the first delivery's", n)
	}

	// A route is not subject to SelectMX.
	c = f.client(func(cfg *Config) {
		cfg.Routes = []Route{{Domain: "relay.test", Host: "127.0.0.3"}}
		cfg.SelectMX = func(domain string, hosts []MX) ([]MX, error) {
			return nil, fmt.Errorf("mail for %s loops back to myself", domain)
		}
	})
	wantDelivered(t, deliver(t, c, "relay.test", "b@relay.test"))
	if len(k2.messages()) != 1 {
		t.Fatalf("the route's host got %d messages", len(k2.messages()))
	}
}
