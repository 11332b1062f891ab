package remote

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"letterbox/pkg/internal/testwait"
)

// testDNS is a miekg/dns server on 127.0.0.1 answering from a map.
type testDNS struct {
	addr     string
	mu       sync.Mutex
	rrs      map[string][]dns.RR // by lower-case FQDN
	servfail map[string]bool
	exists   map[string]bool // names that exist without records (NODATA, not NXDOMAIN)
}

func newTestDNS(t *testing.T) *testDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z := &testDNS{addr: pc.LocalAddr().String(), rrs: map[string][]dns.RR{}, servfail: map[string]bool{}, exists: map[string]bool{}}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: z, NotifyStartedFunc: func() { close(started) }}
	go srv.ActivateAndServe()
	testwait.Recv(t, started, 10*time.Second, "the test DNS server to start")
	t.Cleanup(func() { srv.Shutdown() })
	return z
}

func (z *testDNS) setServfail(name string) {
	z.mu.Lock()
	z.servfail[dns.Fqdn(name)] = true
	z.mu.Unlock()
}

// add adds zone-file lines, e.g. "example.test. MX 10 mx1.example.test.".
func (z *testDNS) add(t *testing.T, lines ...string) {
	t.Helper()
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, l := range lines {
		rr, err := dns.NewRR("$TTL 60\n" + l)
		if err != nil {
			t.Fatalf("dns.NewRR(%q): %v", l, err)
		}
		n := strings.ToLower(rr.Header().Name)
		z.rrs[n] = append(z.rrs[n], rr)
	}
}

func (z *testDNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	z.mu.Lock()
	defer z.mu.Unlock()
	switch {
	case z.servfail[name]:
		m.Rcode = dns.RcodeServerFailure
	case len(z.rrs[name]) == 0 && !z.exists[name]:
		m.Rcode = dns.RcodeNameError
	default:
		for _, rr := range z.rrs[name] {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
	}
	w.WriteMsg(m)
}

// sinkMsg is one message a sink accepted.
type sinkMsg struct {
	From  string
	Rcpts []string
	Data  string
	Opts  smtp.MailOptions
	Conn  int // which connection (1, 2, …) carried it
	TLS   bool
	User  string // authenticated user
}

// sink is a go-smtp server recording messages, with scripted replies.
type sink struct {
	t     *testing.T
	addr  string
	srv   *smtp.Server
	mu    sync.Mutex
	msgs  []sinkMsg
	conns int
	live  int
	peak  int // most sessions at once

	rcpt   func(to string, n int) error // n: index of this RCPT in the transaction
	data   func() error
	block  chan struct{} // if set, Data waits for it to be closed
	inData chan struct{} // if set, gets a value when Data starts
	creds  map[string]string
	mechs  []string // AUTH mechanisms offered (default PLAIN)
}

type sinkOpt func(*smtp.Server, *sink)

func withTLS(cert tls.Certificate) sinkOpt {
	return func(s *smtp.Server, _ *sink) {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
}

func withMaxSize(n int64) sinkOpt { return func(s *smtp.Server, _ *sink) { s.MaxMessageBytes = n } }

func withUTF8() sinkOpt { return func(s *smtp.Server, _ *sink) { s.EnableSMTPUTF8 = true } }

func withAuth(user, pass string) sinkOpt {
	return func(s *smtp.Server, k *sink) {
		s.AllowInsecureAuth = true // loopback
		k.creds = map[string]string{user: pass}
	}
}

// newSink listens on ip:port (port 0 = any).
func newSink(t *testing.T, ip string, port int, opts ...sinkOpt) *sink {
	t.Helper()
	k := &sink{t: t}
	k.srv = smtp.NewServer(k)
	k.srv.Domain = "sink-" + ip
	k.srv.ReadTimeout = 10 * time.Second
	k.srv.WriteTimeout = 10 * time.Second
	k.srv.MaxMessageBytes = 10 << 20
	k.srv.MaxRecipients = 1000
	for _, o := range opts {
		o(k.srv, k)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
	if err != nil {
		t.Fatalf("sink listen %s:%d: %v", ip, port, err)
	}
	k.addr = l.Addr().String()
	go k.srv.Serve(l)
	t.Cleanup(func() { k.srv.Close() })
	return k
}

func (k *sink) messages() []sinkMsg {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]sinkMsg(nil), k.msgs...)
}

func (k *sink) connections() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.conns
}

func (k *sink) NewSession(c *smtp.Conn) (smtp.Session, error) {
	k.mu.Lock()
	k.conns++
	k.live++
	if k.live > k.peak {
		k.peak = k.live
	}
	n := k.conns
	k.mu.Unlock()
	return &sinkSession{k: k, c: c, conn: n}, nil
}

type sinkSession struct {
	k    *sink
	c    *smtp.Conn
	conn int
	cur  sinkMsg
	user string
}

func (s *sinkSession) AuthMechanisms() []string {
	if s.k.creds == nil {
		return nil
	}
	if s.k.mechs != nil {
		return s.k.mechs
	}
	return []string{sasl.Plain}
}

// loginServer is the server side of AUTH LOGIN, which go-sasl lacks.
type loginServer struct {
	step  int
	user  string
	check func(user, pass string) error
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	l.step++
	switch l.step {
	case 1:
		if len(resp) > 0 { // initial response: the username
			l.user = string(resp)
			l.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 2:
		l.user = string(resp)
		return []byte("Password:"), false, nil
	default:
		return nil, true, l.check(l.user, string(resp))
	}
}

func (s *sinkSession) Auth(mech string) (sasl.Server, error) {
	if mech == sasl.Login {
		return &loginServer{check: func(user, pass string) error {
			if s.k.creds[user] != pass || pass == "" {
				return smtp.ErrAuthFailed
			}
			s.user = user
			return nil
		}}, nil
	}
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if s.k.creds[user] != pass || pass == "" {
			return smtp.ErrAuthFailed
		}
		s.user = user
		return nil
	}), nil
}

func (s *sinkSession) Reset() { s.cur = sinkMsg{} }

func (s *sinkSession) Logout() error {
	s.k.mu.Lock()
	s.k.live--
	s.k.mu.Unlock()
	return nil
}

func (s *sinkSession) Mail(from string, opts *smtp.MailOptions) error {
	if s.k.creds != nil && s.user == "" {
		return smtp.ErrAuthRequired
	}
	s.cur = sinkMsg{From: from, Conn: s.conn, User: s.user}
	if opts != nil {
		s.cur.Opts = *opts
	}
	_, s.cur.TLS = s.c.TLSConnectionState()
	return nil
}

func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.k.rcpt != nil {
		if err := s.k.rcpt(to, len(s.cur.Rcpts)); err != nil {
			return err
		}
	}
	s.cur.Rcpts = append(s.cur.Rcpts, to)
	return nil
}

func (s *sinkSession) Data(r io.Reader) error {
	if s.k.inData != nil {
		s.k.inData <- struct{}{}
	}
	if s.k.block != nil {
		<-s.k.block
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if s.k.data != nil {
		if err := s.k.data(); err != nil {
			return err
		}
	}
	s.cur.Data = string(b)
	s.k.mu.Lock()
	s.k.msgs = append(s.k.msgs, s.cur)
	s.k.mu.Unlock()
	return nil
}

// freePort finds a TCP port free on every one of ips.
func freePort(t *testing.T, ips ...string) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		l, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		ok := true
		var ls []net.Listener
		for _, ip := range ips[1:] {
			l2, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, l2)
		}
		l.Close()
		for _, l2 := range ls {
			l2.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no common free port")
	return 0
}

// selfSigned makes a certificate for names (DNS names or IPs).
func selfSigned(t *testing.T, names ...string) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf
}

var errUnknownUser = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "user unknown"}

var _ = errors.New
