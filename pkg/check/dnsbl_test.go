package check

import (
	"net"
	"strings"
	"testing"
	"time"
)

func TestParseList(t *testing.T) {
	for in, want := range map[string]string{
		"zen.spamhaus.org":                      "zen.spamhaus.org",
		" ZEN.Spamhaus.org. ":                   "zen.spamhaus.org",
		"zen.spamhaus.org=127.0.0.2,127.0.0.4":  "zen.spamhaus.org=127.0.0.2,127.0.0.4",
		"list.dnswl.org=127.0.10.1, 127.0.10.2": "list.dnswl.org=127.0.10.1,127.0.10.2",
	} {
		l, err := ParseList(in)
		if err != nil || l.String() != want {
			t.Errorf("ParseList(%q) = %v, %v; want %s", in, l, err, want)
		}
	}
	for _, bad := range []string{"", "=127.0.0.2", "zone=127.0.0", "zone=::1", "a zone"} {
		if _, err := ParseList(bad); err == nil {
			t.Errorf("ParseList(%q) accepted", bad)
		}
	}
}

func TestListQuery(t *testing.T) {
	if q := listQuery(net.ParseIP("192.0.2.99"), "bl.test"); q != "99.2.0.192.bl.test" {
		t.Error(q)
	}
	want := "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.bl.test"
	if q := listQuery(net.ParseIP("4321:0:1:2:3:4:567:89ab"), "bl.test"); q != want {
		t.Errorf("%s\nwant %s", q, want)
	}
}

// TestDNSBL: a listed client is refused at connect with 554 5.7.1 and the
// list's text; not listed, it passes (and Authentication-Results says
// so); a list that times out or answers garbage does not block mail;
// return codes filter the answers; an allow list skips the rest.
func TestDNSBL(t *testing.T) {
	z := startDNS(t)
	z.add(t, "1.2.0.192.bl.test. 60 IN A 127.0.0.2")
	z.txt(t, "1.2.0.192.bl.test", "Listed: see https://bl.test/q?192.0.2.1\x07")
	z.add(t, "2.2.0.192.bl.test. 60 IN A 127.0.0.4")
	z.add(t, "3.2.0.192.bl.test. 60 IN A 127.255.255.254") // the list refusing our resolver
	z.add(t, "4.2.0.192.wl.test. 60 IN A 127.0.10.1")
	z.add(t, "4.2.0.192.bl.test. 60 IN A 127.0.0.2")
	z.mark(z.hang, "5.2.0.192.bl.test.")
	z.mark(z.garbage, "6.2.0.192.bl.test.")
	z.txt(t, "spf.test", "v=spf1 -all")
	bl := func(s string) List { l, _ := ParseList(s); return l }
	c := newChecker(t, z, Config{DNSBL: []List{bl("bl.test")}, DNSWL: []List{bl("wl.test")}, SPF: ModeReject, DKIMVerify: ModeOff, DMARC: ModeOff})
	tx := func(ip string) outcome {
		return run(t, c, transaction{ip: ip, from: "a@spf.test", rcpts: []string{"u@example.test"}, msg: "Subject: s\n\nb\n"})
	}
	o := tx("192.0.2.1")
	if o.connect == nil || o.connect.Error() != "554 5.7.1 Service unavailable; client [192.0.2.1] blocked using bl.test; Listed: see https://bl.test/q?192.0.2.1" {
		t.Errorf("listed: %v", o.connect)
	}
	o = tx("192.0.2.2")
	if o.connect == nil || o.connect.Code != 554 {
		t.Errorf("listed with 127.0.0.4: %v", o.connect)
	}
	// Not listed: MAIL goes on to SPF, which refuses here.
	for _, ip := range []string{"192.0.2.3", "192.0.2.7"} {
		o = tx(ip)
		if o.connect != nil || o.mail == nil || o.mail.Code != 550 {
			t.Errorf("%s not listed: connect %v, mail %v", ip, o.connect, o.mail)
		}
	}
	// The allow list: no DNS list, no SPF.
	o = tx("192.0.2.4")
	if o.connect != nil || o.mail != nil || o.err != nil {
		t.Fatalf("allow-listed: %v %v %v", o.connect, o.mail, o.err)
	}
	if ar := authResults(o.stored); ar != "mx.example.test; dnswl=pass dns.zone=wl.test policy.ip=127.0.10.1; dnsbl=fail dns.zone=bl.test policy.ip=127.0.0.2" {
		t.Errorf("allow-listed: %q", ar)
	}
	// A list that does not answer, or answers garbage, lists nobody.
	c2 := newChecker(t, z, Config{DNSBL: []List{bl("bl.test")}, SPF: ModeOff, DKIMVerify: ModeOff, DMARC: ModeOff})
	for _, ip := range []string{"192.0.2.5", "192.0.2.6"} {
		start := time.Now()
		o = run(t, c2, transaction{ip: ip, from: "a@spf.test", rcpts: []string{"u@example.test"}, msg: "Subject: s\n\nb\n"})
		if o.connect != nil || o.err != nil {
			t.Errorf("%s: %v %v", ip, o.connect, o.err)
		}
		if ar := authResults(o.stored); ar != "mx.example.test; dnsbl=temperror dns.zone=bl.test" {
			t.Errorf("%s: %q", ip, ar)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: took %v", ip, d)
		}
	}
	o = run(t, c2, transaction{ip: "192.0.2.8", from: "a@spf.test", rcpts: []string{"u@example.test"}, msg: "Subject: s\n\nb\n"})
	if ar := authResults(o.stored); ar != "mx.example.test; dnsbl=pass dns.zone=bl.test" {
		t.Errorf("not listed: %q", ar)
	}
	// Return codes: 127.0.0.4 only.
	c3 := newChecker(t, z, Config{DNSBL: []List{bl("bl.test=127.0.0.4")}, SPF: ModeOff, DKIMVerify: ModeOff, DMARC: ModeOff})
	if cn, v := c3.Connect(ConnInfo{IP: net.ParseIP("192.0.2.1")}); v != nil {
		t.Errorf("127.0.0.2 counted under =127.0.0.4: %v", v)
	} else {
		cn.Close()
	}
	if _, v := c3.Connect(ConnInfo{IP: net.ParseIP("192.0.2.2")}); v == nil || !strings.Contains(v.Text, "bl.test") {
		t.Errorf("127.0.0.4 not counted: %v", v)
	}
}
