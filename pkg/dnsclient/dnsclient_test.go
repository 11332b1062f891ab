package dnsclient

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func serve(t *testing.T, net_ string, h dns.HandlerFunc) string {
	t.Helper()
	srv := &dns.Server{Net: net_, Handler: h}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	if net_ == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv.PacketConn = pc
	} else {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv.Listener = l
	}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	if srv.PacketConn != nil {
		return srv.PacketConn.LocalAddr().String()
	}
	return srv.Listener.Addr().String()
}

// TestExchange: an answer comes back; a truncated UDP answer is asked
// again over TCP; an answer to another question, or garbage, is no answer
// and the next server is asked.
func TestExchange(t *testing.T) {
	good := serve(t, "udp", func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{"ok"}})
		w.WriteMsg(m)
	})
	other := serve(t, "udp", func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Question[0].Name = "evil.test."
		w.WriteMsg(m)
	})
	garbage := serve(t, "udp", func(w dns.ResponseWriter, r *dns.Msg) {
		b, _ := r.Pack()
		w.Write(append(b[:2], 0x81, 0x80, 0xde, 0xad))
	})
	c := &Client{Servers: []string{other, garbage, good}, Timeout: time.Second}
	m, err := c.Exchange(context.Background(), "x.test", dns.TypeTXT)
	if err != nil || len(m.Answer) != 1 {
		t.Fatalf("%v %v", m, err)
	}
	c.Servers = []string{other}
	if _, err := c.Exchange(context.Background(), "x.test", dns.TypeTXT); err == nil || !strings.Contains(err.Error(), "another question") {
		t.Fatalf("answer to another question taken: %v", err)
	}
	c.Servers = []string{garbage}
	if _, err := c.Exchange(context.Background(), "x.test", dns.TypeTXT); err == nil {
		t.Fatal("garbage taken")
	}

	// Truncated over UDP, whole over TCP on the same port.
	// A free TCP port may be taken for UDP: try a few, rather than skip.
	var l net.Listener
	var pc net.PacketConn
	for try := 0; pc == nil; try++ {
		var err error
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if pc, err = net.ListenPacket("udp", l.Addr().String()); err != nil {
			l.Close()
			if try == 10 {
				t.Fatalf("no port free for both TCP and UDP in 10 tries: %v", err)
			}
		}
	}
	port := l.Addr().(*net.TCPAddr).Port
	h := func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			m.Truncated = true
		} else {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{"tcp"}})
		}
		w.WriteMsg(m)
	}
	for _, s := range []*dns.Server{{Listener: l, Handler: dns.HandlerFunc(h)}, {PacketConn: pc, Handler: dns.HandlerFunc(h)}} {
		go s.ActivateAndServe()
		t.Cleanup(func() { s.Shutdown() })
	}
	c.Servers = []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	m, err = c.Exchange(context.Background(), "x.test", dns.TypeTXT)
	if err != nil || len(m.Answer) != 1 || m.Answer[0].(*dns.TXT).Txt[0] != "tcp" {
		t.Fatalf("truncated: %v %v", m, err)
	}
}

func TestNew(t *testing.T) {
	c, err := New("127.0.0.1")
	if err != nil || c.Servers[0] != "127.0.0.1:53" {
		t.Fatal(c, err)
	}
	c, err = New("[::1]:5353")
	if err != nil || c.Servers[0] != "[::1]:5353" {
		t.Fatal(c, err)
	}
}
