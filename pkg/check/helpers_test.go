package check

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"

	"letterbox/pkg/dnsclient"
)

// zone is a DNS server for the tests: records by name and type, and names
// that get SERVFAIL, no answer at all, or garbage.
type zone struct {
	mu       sync.Mutex
	rrs      map[string][]dns.RR // "name.|TYPE"
	servfail map[string]bool
	hang     map[string]bool
	garbage  map[string]bool
	gate     map[string]chan struct{} // answered once the channel is closed
	queries  []string
	addr     string
}

func startDNS(t testing.TB) *zone {
	t.Helper()
	z := &zone{rrs: map[string][]dns.RR{}, servfail: map[string]bool{}, hang: map[string]bool{}, garbage: map[string]bool{}, gate: map[string]chan struct{}{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: z}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	z.addr = pc.LocalAddr().String()
	return z
}

// mark sets name in one of the zone's answer switches (servfail, hang,
// garbage) under the lock the server's goroutines read them with.
func (z *zone) mark(set map[string]bool, name string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	set[name] = true
}

// add adds records in zone-file syntax.
func (z *zone) add(t testing.TB, lines ...string) {
	t.Helper()
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil {
			t.Fatalf("record %q: %v", l, err)
		}
		k := strings.ToLower(rr.Header().Name) + "|" + dns.TypeToString[rr.Header().Rrtype]
		z.rrs[k] = append(z.rrs[k], rr)
	}
}

// txt adds a TXT record, split into strings of 255 octets.
func (z *zone) txt(t testing.TB, name, value string) {
	t.Helper()
	var parts []string
	for len(value) > 255 {
		parts = append(parts, value[:255])
		value = value[255:]
	}
	parts = append(parts, value)
	z.mu.Lock()
	defer z.mu.Unlock()
	rr := &dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: parts}
	k := strings.ToLower(dns.Fqdn(name)) + "|TXT"
	z.rrs[k] = append(z.rrs[k], rr)
}

func (z *zone) asked(name string) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	n := 0
	for _, q := range z.queries {
		if strings.EqualFold(q, dns.Fqdn(name)) {
			n++
		}
	}
	return n
}

func (z *zone) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	z.mu.Lock()
	z.queries = append(z.queries, name)
	hang, garbage, servfail, gate := z.hang[name], z.garbage[name], z.servfail[name], z.gate[name]
	ans := z.rrs[name+"|"+dns.TypeToString[q.Qtype]]
	exists := false
	for k := range z.rrs {
		if strings.HasPrefix(k, name+"|") {
			exists = true
		}
	}
	z.mu.Unlock()
	if gate != nil {
		<-gate
	}
	switch {
	case hang:
		return
	case garbage:
		b, _ := r.Pack()
		w.Write(append(b[:2], 0x81, 0x80, 0xff, 0xff, 0x13, 0x37, 0xde, 0xad, 0xbe, 0xef))
		return
	}
	m := new(dns.Msg)
	m.SetReply(r)
	switch {
	case servfail:
		m.Rcode = dns.RcodeServerFailure
	case len(ans) > 0:
		m.Answer = ans
	case !exists:
		m.Rcode = dns.RcodeNameError
	}
	if len(m.Answer) == 0 {
		// The SOA of the zone the name is in, for negative caching.
		z.mu.Lock()
		for k, rrs := range z.rrs {
			if soaName, ok := strings.CutSuffix(k, "|SOA"); ok && dns.IsSubDomain(soaName, name) {
				m.Ns = append(m.Ns, rrs...)
			}
		}
		z.mu.Unlock()
	}
	w.WriteMsg(m)
}

// newChecker returns a Checker asking z, with short timeouts.
func newChecker(t testing.TB, z *zone, cfg Config) *Checker {
	t.Helper()
	if cfg.Hostname == "" {
		cfg.Hostname = "mx.example.test"
	}
	if z != nil {
		cfg.Resolver = &Resolver{DNS: &dnsclient.Client{Servers: []string{z.addr}, Timeout: 300 * time.Millisecond}}
	}
	if cfg.DNSTimeout == 0 {
		cfg.DNSTimeout = 3 * time.Second
	}
	cfg.TempDir = t.TempDir()
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(&testLog{t: t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type testLog struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// transaction is one SMTP transaction through a Conn.
type transaction struct {
	ip    string
	helo  string
	from  string
	rcpts []string
	msg   string // LF line ends are turned into CRLF
}

type outcome struct {
	connect *Verdict
	mail    *Verdict
	rcpt    []*Verdict
	data    *Verdict
	result  *Result
	stored  string // what commit got
	err     error
}

// run drives one connection with one transaction, as smtpd would.
func run(t testing.TB, c *Checker, tx transaction) outcome {
	t.Helper()
	var o outcome
	ip := net.ParseIP(tx.ip)
	if tx.ip == "" {
		ip = net.ParseIP("192.0.2.1")
	}
	cn, v := c.Connect(ConnInfo{IP: ip, Port: 40000, LocalIP: net.ParseIP("127.0.0.1"), LocalPort: 25})
	defer cn.Close()
	o.connect = v
	if v != nil {
		return o
	}
	helo := tx.helo
	if helo == "" {
		helo = "client.test"
	}
	if v := cn.Helo(helo); v != nil {
		o.mail = v
		return o
	}
	if o.mail = cn.Mail("TESTID0001", tx.from, ""); o.mail != nil {
		return o
	}
	ok := 0
	for _, r := range tx.rcpts {
		v := cn.Rcpt(r, "")
		o.rcpt = append(o.rcpt, v)
		if v == nil {
			ok++
		}
	}
	if ok == 0 {
		return o
	}
	if o.data = cn.Data(); o.data != nil {
		return o
	}
	msg := strings.ReplaceAll(strings.ReplaceAll(tx.msg, "\r\n", "\n"), "\n", "\r\n")
	_, o.err = cn.Message(strings.NewReader(msg), func(r *Result) (string, error) {
		o.result = r
		b, err := io.ReadAll(r.Data)
		o.stored = string(b)
		return "TESTID0001", err
	})
	cn.Reset()
	return o
}

// headerFields returns the header fields of msg (CRLF), unfolded, as
// "Name: value" with white space runs made one space.
func headerFields(msg string) []string {
	head, _, _ := strings.Cut(msg, "\r\n\r\n")
	var out []string
	for _, l := range strings.Split(head, "\r\n") {
		if (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) && len(out) > 0 {
			out[len(out)-1] += " " + strings.TrimSpace(l)
			continue
		}
		out = append(out, l)
	}
	for i, f := range out {
		out[i] = strings.Join(strings.Fields(f), " ")
	}
	return out
}

// authResults returns the value of the first Authentication-Results field
// of msg, unfolded.
func authResults(msg string) string {
	for _, f := range headerFields(msg) {
		if v, ok := strings.CutPrefix(f, "Authentication-Results: "); ok {
			return v
		}
	}
	return ""
}

var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	edKey    ed25519.PrivateKey
)

func testKeys(t testing.TB) (*rsa.PrivateKey, ed25519.PrivateKey) {
	keysOnce.Do(func() {
		var err error
		rsaKey, err = rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		_, edKey, err = ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
	})
	return rsaKey, edKey
}

// publishKey adds the DKIM key record of key at selector._domainkey.domain.
func publishKey(t testing.TB, z *zone, selector, domain string, key crypto.Signer) {
	t.Helper()
	var rec string
	switch k := key.Public().(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		rec = "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	case ed25519.PublicKey:
		rec = "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(k)
	}
	z.txt(t, selector+"._domainkey."+domain, rec)
}

// sign signs msg (CRLF) with go-msgauth's signer.
func sign(t testing.TB, msg, domain, selector string, key crypto.Signer, headers ...string) string {
	t.Helper()
	msg = strings.ReplaceAll(strings.ReplaceAll(msg, "\r\n", "\n"), "\n", "\r\n")
	if len(headers) == 0 {
		headers = []string{"From", "To", "Subject", "Date"}
	}
	var b bytes.Buffer
	err := dkim.Sign(&b, strings.NewReader(msg), &dkim.SignOptions{Domain: domain, Selector: selector, Signer: key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed, HeaderKeys: headers})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
