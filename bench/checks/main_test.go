package main

import (
	"net"
	"testing"

	"github.com/miekg/dns"
)

// TestNegativeAnswersCarrySOA: the bench's DNS server answers NXDOMAIN
// and NODATA with the SOA of the name's zone, as real resolvers do, so
// smtpd can keep them (RFC 2308) instead of asking for every message.
func TestNegativeAnswersCarrySOA(t *testing.T) {
	rr, err := dns.NewRR(domain + `. 60 IN TXT "v=spf1 -all"`)
	if err != nil {
		t.Fatal(err)
	}
	z := zoneServer{dns.Fqdn(domain): {rr}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: z}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	defer srv.Shutdown()
	rev, _ := dns.ReverseAddr("127.0.0.2")
	for _, c := range []struct {
		name    string
		qtype   uint16
		rcode   int
		zone    string
		minimum uint32
	}{
		{rev, dns.TypePTR, dns.RcodeNameError, "in-addr.arpa.", 10800},
		{"nothere." + domain, dns.TypeTXT, dns.RcodeNameError, dns.Fqdn(domain), 60},
		{domain, dns.TypeAAAA, dns.RcodeSuccess, dns.Fqdn(domain), 60},
	} {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(c.name), c.qtype)
		resp, err := dns.Exchange(m, pc.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Rcode != c.rcode || len(resp.Answer) != 0 || len(resp.Ns) != 1 {
			t.Fatalf("%s %s: rcode %d, %d answers, authority %v", c.name, dns.TypeToString[c.qtype], resp.Rcode, len(resp.Answer), resp.Ns)
		}
		soa, ok := resp.Ns[0].(*dns.SOA)
		if !ok || soa.Hdr.Name != c.zone || soa.Minttl != c.minimum || soa.Hdr.Ttl != c.minimum {
			t.Errorf("%s %s: authority %v, want the SOA of %s with minimum %d", c.name, dns.TypeToString[c.qtype], resp.Ns[0], c.zone, c.minimum)
		}
	}
}
