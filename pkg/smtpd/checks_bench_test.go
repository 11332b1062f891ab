package smtpd

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"

	"letterbox/pkg/check"
)

// BenchmarkSessionChecks: what bench/checks.sh measures, in one process:
// a new session per message from a stranger (EHLO, MAIL, RCPT, DATA of a
// 10 KB DKIM-signed message, QUIT) on a goroutine of its own, with SPF (reject), DKIM and DMARC
// (enforce) on and off, records served by a DNS server on loopback. The
// difference of the two cpu-ns/op is what the checks cost smtpd per
// message, beside BenchmarkChecks (pkg/check), which leaves the SMTP side
// out. cpu-ns/op is the process's CPU time (user + system, the DNS
// server's included: it answers nothing once the resolver has the
// records) per message.
func BenchmarkSessionChecks(b *testing.B) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(key.Public())
	rrs := map[string]string{
		"remote.test.":                  "v=spf1 ip4:127.0.0.1 -all",
		"_dmarc.remote.test.":           "v=DMARC1; p=reject",
		"bench._domainkey.remote.test.": "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(pub),
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	dsrv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		name := strings.ToLower(q.Question[0].Name)
		soa := &dns.SOA{Hdr: dns.RR_Header{Name: "remote.test.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 3600},
			Ns: "remote.test.", Mbox: "nobody.invalid.", Serial: 1, Minttl: 3600}
		if txt, ok := rrs[name]; ok && q.Question[0].Qtype == dns.TypeTXT {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 3600},
				Txt: splitTXT(txt)})
		} else if !ok {
			m.Rcode = dns.RcodeNameError
			m.Ns = append(m.Ns, soa)
		} else {
			m.Ns = append(m.Ns, soa)
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	dsrv.NotifyStartedFunc = func() { close(started) }
	go dsrv.ActivateAndServe()
	<-started
	defer dsrv.Shutdown()

	var signed bytes.Buffer
	err = dkim.Sign(&signed, strings.NewReader(benchMessage), &dkim.SignOptions{Domain: "remote.test", Selector: "bench", Signer: key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
		HeaderKeys: []string{"From", "From", "To", "Subject", "Date", "Message-ID"}})
	if err != nil {
		b.Fatal(err)
	}
	script := []byte("EHLO client.test\r\n" + benchTx + signed.String() + ".\r\nQUIT\r\n")

	for _, mode := range []string{"off", "on"} {
		b.Run(mode, func(b *testing.B) {
			srv, q := benchServer()
			srv.Log = slog.New(slog.DiscardHandler)
			if mode == "on" {
				res, err := check.NewResolver(pc.LocalAddr().String())
				if err != nil {
					b.Fatal(err)
				}
				srv.Checks, err = check.New(check.Config{Hostname: srv.Hostname, SPF: check.ModeReject, DKIMVerify: check.ModeTag,
					DMARC: check.ModeEnforce, Resolver: res, TempDir: b.TempDir(), Log: srv.Log})
				if err != nil {
					b.Fatal(err)
				}
				// The resolver has the records, as in a bench's rounds.
				srv.ServeConn(&memConn{r: bytes.NewReader(script)}, ModeSMTP)
				q.n = 0
			}
			b.SetBytes(int64(signed.Len()))
			b.ReportAllocs()
			cpu0, flt0 := benchCPU()
			b.ResetTimer()
			done := make(chan struct{})
			for i := 0; i < b.N; i++ {
				// A goroutine per connection, as Serve has: its
				// stack starts small and grows with what the
				// session calls.
				go func() {
					srv.ServeConn(&memConn{r: bytes.NewReader(script)}, ModeSMTP)
					done <- struct{}{}
				}()
				<-done
			}
			b.StopTimer()
			cpu1, flt1 := benchCPU()
			b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(flt1-flt0)/float64(b.N), "faults/op")
			if q.n != b.N {
				b.Fatalf("%d messages queued, want %d", q.n, b.N)
			}
		})
	}
}

// splitTXT cuts a record into character strings of at most 255 octets.
func splitTXT(s string) []string {
	var out []string
	for len(s) > 255 {
		out = append(out, s[:255])
		s = s[255:]
	}
	return append(out, s)
}

// benchCPU is the process's user and system time so far, and its page
// faults (on this virtual machine ~10 µs each: memory the runtime gave
// back to the system and touches again).
func benchCPU() (time.Duration, int64) {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Minflt + ru.Majflt
}
