package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"
)

// remoteDNS is a miekg/dns server on 127.0.0.1 answering from zone lines;
// other names are NXDOMAIN.
type remoteDNS struct {
	Addr string
	mu   sync.Mutex
	rrs  map[string][]dns.RR
}

func newRemoteDNS(t *testing.T, zone ...string) *remoteDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	must(t, err)
	z := &remoteDNS{Addr: pc.LocalAddr().String(), rrs: map[string][]dns.RR{}}
	for _, l := range zone {
		rr, err := dns.NewRR("$TTL 60\n" + l)
		must(t, err)
		n := strings.ToLower(rr.Header().Name)
		z.rrs[n] = append(z.rrs[n], rr)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: z, NotifyStartedFunc: func() { close(started) }}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return z
}

func (z *remoteDNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	q := req.Question[0]
	z.mu.Lock()
	rrs := z.rrs[strings.ToLower(q.Name)]
	z.mu.Unlock()
	if len(rrs) == 0 {
		m.Rcode = dns.RcodeNameError
	}
	for _, rr := range rrs {
		if rr.Header().Rrtype == q.Qtype {
			m.Answer = append(m.Answer, rr)
		}
	}
	w.WriteMsg(m)
}

// remoteSink is a go-smtp server recording what it accepts; reject scripts
// RCPT replies.
type remoteSink struct {
	mu     sync.Mutex
	msgs   []remoteSinkMsg
	reject func(rcpt string) error
}

type remoteSinkMsg struct {
	From  string
	Rcpts []string
	Data  string
}

func newRemoteSink(t *testing.T, addr string) *remoteSink {
	t.Helper()
	k := &remoteSink{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &remoteSinkSession{k: k}, nil }))
	srv.Domain = "sink.remote.test"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.MaxMessageBytes = 10 << 20
	l, err := net.Listen("tcp", addr)
	must(t, err)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return k
}

func (k *remoteSink) messages() []remoteSinkMsg {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]remoteSinkMsg(nil), k.msgs...)
}

type remoteSinkSession struct {
	k   *remoteSink
	cur remoteSinkMsg
}

func (s *remoteSinkSession) Reset()        { s.cur = remoteSinkMsg{} }
func (s *remoteSinkSession) Logout() error { return nil }
func (s *remoteSinkSession) Mail(from string, _ *smtp.MailOptions) error {
	s.cur = remoteSinkMsg{From: from}
	return nil
}
func (s *remoteSinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.k.reject != nil {
		if err := s.k.reject(to); err != nil {
			return err
		}
	}
	s.cur.Rcpts = append(s.cur.Rcpts, to)
	return nil
}
func (s *remoteSinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.Data = string(b)
	s.k.mu.Lock()
	s.k.msgs = append(s.k.msgs, s.cur)
	s.k.mu.Unlock()
	return nil
}

// remotePort returns a TCP port free on both 127.0.0.2 and 127.0.0.4.
func remotePort(t *testing.T) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		a := freeAddr(t, "127.0.0.2")
		_, p, _ := net.SplitHostPort(a)
		if l, err := net.Listen("tcp", "127.0.0.4:"+p); err == nil {
			l.Close()
			var n int
			fmt.Sscan(p, &n)
			return n
		}
	}
	t.Fatal("no port free on 127.0.0.2 and 127.0.0.4")
	return 0
}

// remoteSetup is an installation whose sender demo@example.test is local
// and whose remote domains are served by the test DNS: remote.test's MX is
// 127.0.0.2 (the sink), dead.test's is 127.0.0.4 (nothing listens).
type remoteSetup struct {
	e    *env
	dns  *remoteDNS
	port int
	sink *remoteSink
	args []string // queue-runner options
}

func newRemoteSetup(t *testing.T) *remoteSetup {
	t.Helper()
	r := newRemoteSetupOnPort(t, remotePort(t))
	r.sink = newRemoteSink(t, fmt.Sprintf("127.0.0.2:%d", r.port))
	return r
}

// newRemoteSetupOnPort leaves 127.0.0.2:port to the caller's MX.
func newRemoteSetupOnPort(t *testing.T, port int) *remoteSetup {
	t.Helper()
	z := newRemoteDNS(t,
		"remote.test. MX 10 mx.remote.test.", "mx.remote.test. A 127.0.0.2",
		"dead.test. MX 10 mx.dead.test.", "mx.dead.test. A 127.0.0.4")
	e := newEnv(t)
	e.addUser("demo@example.test", "demo-pw")
	return &remoteSetup{e: e, dns: z, port: port,
		args: []string{"--dns", z.Addr, "--smtp-port", fmt.Sprint(port), "--connect-timeout", "2s"}}
}

// submit sends a message through our smtpd (relaying from loopback) with
// Python's smtplib.
func (r *remoteSetup) submit(t *testing.T, smtpdAddr, to, subject string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(smtpdAddr)
	python(t, `
import smtplib, sys
from email.message import EmailMessage
m = EmailMessage()
m["From"] = "demo@example.test"
m["To"] = sys.argv[3]
m["Subject"] = sys.argv[4]
m.set_content("remote body line\n")
with smtplib.SMTP(sys.argv[1], int(sys.argv[2])) as s:
    s.send_message(m, from_addr="demo@example.test", to_addrs=[sys.argv[3]])
`, host, port, to, subject)
}

func (r *remoteSetup) run(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := r.e.run("", "queue-runner", append(append([]string{}, r.args...), args...)...)
	if code != 0 {
		t.Fatalf("queue-runner %v: exit %d\n%s%s", args, code, out, errs)
	}
	return errs
}

func (r *remoteSetup) list(t *testing.T) []map[string]any {
	t.Helper()
	out, errs, code := r.e.run("", "queue-runner", "list", "--json")
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, errs)
	}
	var l []map[string]any
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	return l
}

// demoMail returns the contents of demo@example.test's messages.
func (r *remoteSetup) demoMail(t *testing.T) []string {
	t.Helper()
	dir := r.e.MailRoot + "/example.test/demo"
	var out []string
	for _, sub := range []string{"new", "cur"} {
		for _, f := range maildirFiles(t, dir, sub) {
			b, err := os.ReadFile(f)
			must(t, err)
			out = append(out, string(b))
		}
	}
	return out
}

func TestRemoteEndToEnd(t *testing.T) {
	r := newRemoteSetup(t)
	s := r.e.start("smtpd", "")
	r.submit(t, s.Addr, "friend@remote.test", "hello remote")
	if len(r.list(t)) != 1 {
		t.Fatal("message not queued")
	}
	log := r.run(t)
	m := r.sink.messages()
	if len(m) != 1 {
		t.Fatalf("sink got %d messages\n%s", len(m), log)
	}
	if m[0].From != "demo@example.test" || len(m[0].Rcpts) != 1 || m[0].Rcpts[0] != "friend@remote.test" {
		t.Fatalf("envelope %+v", m[0])
	}
	if !strings.Contains(m[0].Data, "Subject: hello remote") || !strings.Contains(m[0].Data, "remote body line") || !strings.Contains(m[0].Data, "Received: ") {
		t.Fatalf("data:\n%s", m[0].Data)
	}
	if l := r.list(t); len(l) != 0 {
		t.Fatalf("still queued: %v", l)
	}
}

func TestRemoteAllMXDownWarnThenBounce(t *testing.T) {
	r := newRemoteSetup(t)
	r.args = append(r.args, "--retry-after", "1s", "--max-retry-interval", "1s", "--warn-after", "2s", "--bounce-after", "5s")
	s := r.e.start("smtpd", "")
	r.submit(t, s.Addr, "someone@dead.test", "to a dead host")
	r.run(t)
	l := r.list(t)
	if len(l) != 1 {
		t.Fatalf("after one pass: %v", l)
	}
	rc := l[0]["recipients"].([]any)[0].(map[string]any)
	if rc["state"] != "pending" || !strings.Contains(fmt.Sprint(rc["last_error"]), "mx.dead.test[127.0.0.4]") {
		t.Fatalf("after one pass: %v", rc)
	}
	if len(r.demoMail(t)) != 0 {
		t.Fatal("notice before warn-after")
	}
	waitFor(t, 20*time.Second, "a delay warning", func() bool {
		r.run(t)
		return len(r.demoMail(t)) >= 1
	})
	if len(r.list(t)) == 0 {
		t.Fatal("message left the queue with the warning")
	}
	warn := r.demoMail(t)[0]
	if !strings.Contains(warn, "Action: delayed") || !strings.Contains(warn, "someone@dead.test") {
		t.Fatalf("warning:\n%s", warn)
	}
	waitFor(t, 20*time.Second, "the bounce", func() bool {
		r.run(t)
		return len(r.demoMail(t)) >= 2
	})
	var bounce string
	for _, m := range r.demoMail(t) {
		if strings.Contains(m, "Action: failed") {
			bounce = m
		}
	}
	if bounce == "" || !strings.Contains(bounce, "someone@dead.test") || !strings.Contains(bounce, "Subject: to a dead host") {
		t.Fatalf("bounce:\n%v", r.demoMail(t))
	}
	if len(r.list(t)) != 0 {
		t.Fatal("still queued after the bounce")
	}
	if len(r.sink.messages()) != 0 {
		t.Fatal("the live sink got mail for dead.test")
	}
}

func TestRemote550ImmediateBounce(t *testing.T) {
	r := newRemoteSetup(t)
	r.sink.reject = func(to string) error {
		if strings.HasPrefix(to, "nobody@") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no mailbox here by that name"}
		}
		return nil
	}
	s := r.e.start("smtpd", "")
	r.submit(t, s.Addr, "nobody@remote.test", "to nobody")
	waitFor(t, 10*time.Second, "the bounce", func() bool {
		r.run(t)
		return len(r.demoMail(t)) >= 1
	})
	b := r.demoMail(t)[0]
	out := python(t, `
import sys, email, email.policy
m = email.message_from_string(sys.stdin.read() if False else open(sys.argv[1]).read(), policy=email.policy.default)
assert m.get_content_type() == "multipart/report", m.get_content_type()
ds = list(m.iter_parts())[1]
r = ds.get_payload()[1]
print(r["Final-Recipient"], "|", r["Action"], "|", r["Status"], "|", r["Remote-MTA"], "|", r["Diagnostic-Code"])
`, remoteWriteTemp(t, b))
	if !strings.Contains(out, "nobody@remote.test | failed | 5.1.1") || !strings.Contains(out, "no mailbox here by that name") || !strings.Contains(out, "550") {
		t.Fatalf("DSN as Python reads it:\n%s\n%s", out, b)
	}
	if len(r.list(t)) != 0 {
		t.Fatal("still queued after a 550")
	}
}

func remoteWriteTemp(t *testing.T, s string) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "msg")
	must(t, err)
	_, err = f.WriteString(s)
	must(t, err)
	must(t, f.Close())
	return f.Name()
}
