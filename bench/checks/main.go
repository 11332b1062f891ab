// Command checks is bench/checks.sh's helper: it makes a DKIM-signed test
// message and the DNS records that make it pass SPF, DKIM and DMARC,
// serves those records, and sends the message to an SMTP server from a
// chosen local address (a client outside relay-networks) as fast as the
// server takes it.
//
//	checks setup -dir DIR -size BYTES,…    DIR/msg-BYTES.eml…, DIR/zone
//	checks dns -addr HOST:PORT -zone FILE  serve the zone until killed
//	checks send -server HOST:PORT -from IP -n N -c C -msg FILE   prints msg/s
package main

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"letterbox/pkg/dkim"
)

const (
	domain   = "sender.bench"
	selector = "bench"
	sender   = "alice@sender.bench"
	rcpt     = "bench@example.test"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: checks setup|dns|send [flags]")
		os.Exit(64)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", "", "output directory (setup)")
	sizes := fs.String("size", "10240", "message sizes, comma-separated (setup)")
	ip := fs.String("ip", "127.0.0.2", "the sending client's address, allowed by SPF (setup)")
	addr := fs.String("addr", "127.0.0.1:5300", "address to serve DNS on (dns)")
	zone := fs.String("zone", "", "zone file (dns)")
	server := fs.String("server", "", "SMTP server HOST:PORT (send)")
	from := fs.String("from", "127.0.0.2", "local address to send from (send)")
	n := fs.Int("n", 2000, "messages (send)")
	c := fs.Int("c", 10, "concurrent sessions (send)")
	msg := fs.String("msg", "", "message file (send)")
	fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "setup":
		err = setup(*dir, *sizes, *ip)
	case "dns":
		err = serve(*addr, *zone)
	case "send":
		var rate float64
		rate, err = send(*server, *from, *n, *c, *msg)
		if err == nil {
			fmt.Printf("%.0f\n", rate)
		}
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "checks:", err)
		os.Exit(1)
	}
}

// setup signs a message of about each size with a new 2048-bit RSA key
// and writes them with the records SPF, DKIM and DMARC check.
func setup(dir, sizes, ip string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	k := &dkim.Key{Domain: domain, Selector: selector, Signer: key}
	for _, s := range strings.Split(sizes, ",") {
		size, err := strconv.Atoi(s)
		if err != nil {
			return err
		}
		if err := signed(k, filepath.Join(dir, "msg-"+s+".eml"), size); err != nil {
			return err
		}
	}
	zl, err := k.ZoneLine()
	if err != nil {
		return err
	}
	zone := strings.Join([]string{
		fmt.Sprintf(`%s. IN TXT "v=spf1 ip4:%s -all"`, domain, ip),
		fmt.Sprintf(`_dmarc.%s. IN TXT "v=DMARC1; p=reject"`, domain),
		zl,
	}, "\n") + "\n"
	return os.WriteFile(filepath.Join(dir, "zone"), []byte(zone), 0o644)
}

// signed writes a message of about size octets signed with k to path.
func signed(k *dkim.Key, path string, size int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Alice <%s>\r\nTo: %s\r\nSubject: bench\r\nDate: Mon, 1 Dec 2025 10:00:00 +0000\r\nMessage-ID: <bench@%s>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n", sender, rcpt, domain)
	line := strings.Repeat("x", 76) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	body := b.String()
	sig, err := dkim.SignWith([]*dkim.Key{k}, []string{"from", "from", "to", "subject", "date", "message-id", "mime-version", "content-type"}, strings.NewReader(body))
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(sig+body), 0o644)
}

type zoneServer map[string][]dns.RR

// ServeDNS answers as a real resolver does: the records asked for, or
// NXDOMAIN or an empty answer with the SOA of the name's zone in the
// authority section (RFC 2308), whose TTL and minimum are how long the
// resolver may keep the negative answer.
func (z zoneServer) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	q := r.Question[0]
	rrs, ok := z[strings.ToLower(q.Name)]
	if !ok {
		m.Rcode = dns.RcodeNameError
	}
	for _, rr := range rrs {
		if rr.Header().Rrtype == q.Qtype {
			m.Answer = append(m.Answer, rr)
		}
	}
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{soaOf(q.Name)}
	}
	w.WriteMsg(m)
}

// soaOf returns the SOA of the zone of name: the bench's domain, with the
// TTL of its records; else a locally served zone of RFC 6303 (the client's
// reverse name, 2.0.0.127.in-addr.arpa, is in one on any resolver), whose
// SOA keeps negative answers three hours.
func soaOf(name string) dns.RR {
	zone, ttl := dns.Fqdn(domain), uint32(60)
	if !dns.IsSubDomain(zone, strings.ToLower(name)) {
		labels := dns.SplitDomainName(name)
		zone, ttl = dns.Fqdn(strings.Join(labels[max(0, len(labels)-2):], ".")), 10800
	}
	return &dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns: zone, Mbox: "nobody.invalid.", Serial: 1, Refresh: 3600, Retry: 1200, Expire: 604800, Minttl: ttl}
}

// serve answers from the zone on addr (UDP and TCP); other names are
// NXDOMAIN (with an SOA).
func serve(addr, file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	z := zoneServer{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		rr, err := dns.NewRR("$TTL 60\n" + l)
		if err != nil {
			return fmt.Errorf("%q: %w", l, err)
		}
		n := strings.ToLower(rr.Header().Name)
		z[n] = append(z[n], rr)
	}
	errs := make(chan error, 2)
	for _, netw := range []string{"udp", "tcp"} {
		s := &dns.Server{Addr: addr, Net: netw, Handler: z}
		go func() { errs <- s.ListenAndServe() }()
	}
	return <-errs
}

// send delivers the message n times over c concurrent sessions, a new
// connection per message, from the local address from; it returns the
// rate in messages per second.
func send(server, from string, n, c int, file string) (float64, error) {
	msg, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	var next, failed atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < c; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if err := one(server, from, msg); err != nil {
					failed.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	if failed.Load() > 0 {
		return 0, fmt.Errorf("%d of %d messages failed, the first: %v", failed.Load(), n, firstErr)
	}
	return float64(n) / d.Seconds(), nil
}

func one(server, from string, msg []byte) error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
	conn, err := d.Dial("tcp", server)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Minute))
	r := bufio.NewReader(conn)
	w := bufio.NewWriter(conn)
	expect := func(code string) error {
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return err
			}
			if !strings.HasPrefix(l, code) {
				return fmt.Errorf("want %s, got %q", code, strings.TrimSpace(l))
			}
			if len(l) < 4 || l[3] != '-' {
				return nil
			}
		}
	}
	cmd := func(s, code string) error {
		w.WriteString(s + "\r\n")
		if err := w.Flush(); err != nil {
			return err
		}
		return expect(code)
	}
	if err := expect("220"); err != nil {
		return err
	}
	for _, st := range [][2]string{{"EHLO client.bench", "250"}, {"MAIL FROM:<" + sender + ">", "250"}, {"RCPT TO:<" + rcpt + ">", "250"}, {"DATA", "354"}} {
		if err := cmd(st[0], st[1]); err != nil {
			return err
		}
	}
	w.Write(msg)
	w.WriteString(".\r\n")
	if err := w.Flush(); err != nil {
		return err
	}
	if err := expect("250"); err != nil {
		return err
	}
	w.WriteString("QUIT\r\n")
	w.Flush()
	io.Copy(io.Discard, r)
	return nil
}
