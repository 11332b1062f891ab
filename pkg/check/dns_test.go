package check

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"letterbox/pkg/dnsclient"
)

// TestResolverCache: answers are kept for their TTL; a TTL of 0 is not
// kept; NXDOMAIN is kept only with an SOA's negative TTL; failures are
// never kept.
func TestResolverCache(t *testing.T) {
	z := startDNS(t)
	z.add(t, "kept.test. 60 IN TXT \"v=spf1 -all\"", "zero.test. 0 IN TXT \"v=spf1 -all\"")
	z.add(t, "neg.test. 60 IN SOA ns.neg.test. admin.neg.test. 1 3600 600 86400 30")
	z.mark(z.servfail, "fail.test.")
	r := &Resolver{DNS: &dnsclient.Client{Servers: []string{z.addr}, Timeout: time.Second}}
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		r.LookupTXT(ctx, "kept.test")
		r.LookupTXT(ctx, "zero.test")
		r.LookupTXT(ctx, "fail.test")
		r.LookupTXT(ctx, "gone.test")
		r.LookupTXT(ctx, "x.neg.test")
		r.LookupTXT(ctx, "neg.test")
	}
	for name, want := range map[string]int{"kept.test": 1, "zero.test": 3, "fail.test": 3, "gone.test": 3, "x.neg.test": 1, "neg.test": 1} {
		if n := z.asked(name); n != want {
			t.Errorf("%s asked %d times, want %d", name, n, want)
		}
	}
}

// TestLookupJoinsQuestionInFlight: a question already being asked (a
// prefetch) is waited for, not asked again; its answer is then kept.
func TestLookupJoinsQuestionInFlight(t *testing.T) {
	z := startDNS(t)
	z.add(t, `slow.test. 60 IN TXT "v=spf1 -all"`)
	open := make(chan struct{})
	var opened sync.Once
	release := func() { opened.Do(func() { close(open) }) }
	t.Cleanup(release) // before the server's shutdown, which waits for it
	z.mu.Lock()
	z.gate["slow.test."] = open
	z.mu.Unlock()
	r := &Resolver{DNS: &dnsclient.Client{Servers: []string{z.addr}, Timeout: 5 * time.Second}}
	r.prefetchTXT(context.Background(), "slow.test")
	// The server holds the answer: this lookup joins the prefetch and
	// gives up with its context, having asked nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err := r.LookupTXT(ctx, "slow.test")
	cancel()
	if err == nil {
		t.Fatal("lookup answered while the server held the answer")
	}
	if n := z.asked("slow.test"); n != 1 {
		t.Fatalf("asked %d times while in flight, want 1", n)
	}
	release()
	txt, err := r.LookupTXT(context.Background(), "slow.test")
	if err != nil || len(txt) != 1 || txt[0] != "v=spf1 -all" {
		t.Fatalf("after the answer: %q, %v", txt, err)
	}
	if n := z.asked("slow.test"); n != 1 {
		t.Errorf("asked %d times, want 1", n)
	}
}

// TestReverseLookupNegativeCache: the client's reverse name that does not
// exist is asked once while the SOA sent with the NXDOMAIN allows (RFC
// 2308), for smtpd's Received field; without an SOA it is asked again.
func TestReverseLookupNegativeCache(t *testing.T) {
	z := startDNS(t)
	z.add(t, "2.0.192.in-addr.arpa. 3600 IN SOA ns.test. nobody.invalid. 1 3600 1200 604800 10800")
	r := &Resolver{DNS: &dnsclient.Client{Servers: []string{z.addr}, Timeout: time.Second}}
	for i := 0; i < 3; i++ {
		if name := r.ReverseLookup("192.0.2.7"); name != "" {
			t.Fatalf("name %q for an address without one", name)
		}
		r.ReverseLookup("198.51.100.7")
	}
	if n := z.asked("7.2.0.192.in-addr.arpa"); n != 1 {
		t.Errorf("NXDOMAIN with an SOA asked %d times, want 1", n)
	}
	if n := z.asked("7.100.51.198.in-addr.arpa"); n != 3 {
		t.Errorf("NXDOMAIN without an SOA asked %d times, want 3", n)
	}
}

// TestNoQuestionPerMessage: once the answers are kept, a message checked
// by SPF, DKIM and DMARC on a new connection costs no DNS question (what
// bench/checks.sh's smtpd relies on: strace -c shows no socket, sendto or
// recvfrom per message); each record is asked once, the key's two
// strings joined.
func TestNoQuestionPerMessage(t *testing.T) {
	z := startDNS(t)
	rk, _ := testKeys(t)
	publishKey(t, z, "rsa", "signed.test", rk)
	z.txt(t, "signed.test", "v=spf1 ip4:192.0.2.1 -all")
	z.txt(t, "_dmarc.signed.test", "v=DMARC1; p=reject")
	c := newChecker(t, z, Config{SPF: ModeReject})
	msg := sign(t, plainMsg, "signed.test", "rsa", rk)
	for i := 0; i < 4; i++ {
		o := run(t, c, transaction{from: "alice@signed.test", rcpts: []string{"u@example.test"}, msg: msg})
		ar := authResults(o.stored)
		for _, want := range []string{"spf=pass", "dkim=pass", "dmarc=pass"} {
			if !strings.Contains(ar, want) {
				t.Fatalf("message %d: %q lacks %s (err %v)", i, ar, want, o.err)
			}
		}
	}
	for _, name := range []string{"signed.test", "rsa._domainkey.signed.test", "_dmarc.signed.test"} {
		if n := z.asked(name); n != 1 {
			t.Errorf("%s asked %d times for 4 messages, want 1", name, n)
		}
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if len(z.queries) != 3 {
		t.Errorf("questions %q, want the 3 records once each", z.queries)
	}
}

// TestLookupTXTJoins: a record of one string is returned as it is, one of
// several strings joined, escapes undone in both.
func TestLookupTXTJoins(t *testing.T) {
	z := startDNS(t)
	z.add(t, `one.test. 60 IN TXT "v=spf1 -all"`, `two.test. 60 IN TXT "v=DKIM1; " "p=AB\"CD"`, `esc.test. 60 IN TXT "a\"b\\c"`)
	r := &Resolver{DNS: &dnsclient.Client{Servers: []string{z.addr}, Timeout: time.Second}}
	for name, want := range map[string]string{"one.test": "v=spf1 -all", "two.test": `v=DKIM1; p=AB"CD`, "esc.test": `a"b\c`} {
		for i := 0; i < 2; i++ { // asked, then kept
			got, err := r.LookupTXT(context.Background(), name)
			if err != nil || len(got) != 1 || got[0] != want {
				t.Errorf("%s: %q, %v; want %q", name, got, err, want)
			}
		}
	}
}

// TestLookupLimit: the time limit of a check's lookups (a message's DKIM
// keys, its DMARC policies) starts at the first question the resolver
// does not have kept, not before: an answer kept is given without a
// context or timer; a question asked is bounded by the limit; once the
// check is over (stop), a question not kept fails without waiting.
func TestLookupLimit(t *testing.T) {
	z := startDNS(t)
	z.add(t, `kept.test. 60 IN TXT "v=DKIM1; p=" "AB"`, `slow.test. 60 IN TXT "v=spf1 -all"`)
	open := make(chan struct{})
	var opened sync.Once
	release := func() { opened.Do(func() { close(open) }) }
	t.Cleanup(release)
	z.mu.Lock()
	z.gate["slow.test."] = open
	z.mu.Unlock()
	r := &Resolver{DNS: &dnsclient.Client{Servers: []string{z.addr}, Timeout: 5 * time.Second}}
	if _, err := r.LookupTXT(context.Background(), "kept.test"); err != nil {
		t.Fatal(err)
	}

	l := newLookupLimit(200 * time.Millisecond)
	txt, err := r.txtFunc(l)("kept.test")
	if err != nil || len(txt) != 1 || txt[0] != "v=DKIM1; p=AB" {
		t.Fatalf("kept answer: %q, %v", txt, err)
	}
	if l.ctx != nil {
		t.Error("an answer kept started the time limit")
	}
	if n := z.asked("kept.test"); n != 1 {
		t.Errorf("kept.test asked %d times, want 1", n)
	}
	// The server holds this answer: the limit ends the wait.
	done := make(chan error, 1)
	go func() { _, err := r.txtFunc(l)("slow.test"); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("answered while the server held the answer")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the time limit did not end the lookup")
	}
	if l.ctx == nil {
		t.Error("a question asked did not start the time limit")
	}
	l.stop()

	// Stopped before any question: one not kept fails at once.
	l = newLookupLimit(time.Hour)
	l.stop()
	go func() { _, err := r.txtFunc(l)("slow.test"); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a lookup after stop answered while the server held the answer")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a lookup after stop waited")
	}
	// Still given what is kept.
	if txt, err := r.txtFunc(l)("kept.test"); err != nil || len(txt) != 1 {
		t.Errorf("kept answer after stop: %q, %v", txt, err)
	}
}

// TestTXTJoinedKept: a TXT answer's records are joined once and served
// as kept (the same strings, nothing asked) until the answer's TTL runs
// out; then the record is asked again, and its new text given.
func TestTXTJoinedKept(t *testing.T) {
	z := startDNS(t)
	z.add(t, `sel._domainkey.kept.test. 60 IN TXT "v=DKIM1; k=rsa; " "p=AAAA"`)
	now := time.Now()
	var mu sync.Mutex
	r := &Resolver{DNS: &dnsclient.Client{Servers: []string{z.addr}, Timeout: 5 * time.Second},
		now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }}
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	l := newLookupLimit(5 * time.Second)
	defer l.stop()
	var first string
	for i, lookup := range []func(string) ([]string, error){
		func(n string) ([]string, error) { return r.LookupTXT(context.Background(), n) },
		func(n string) ([]string, error) { return r.LookupTXT(context.Background(), n) },
		r.txtFunc(l),
	} {
		txt, err := lookup("sel._domainkey.kept.test")
		if err != nil || len(txt) != 1 || txt[0] != "v=DKIM1; k=rsa; p=AAAA" {
			t.Fatalf("lookup %d: %q, %v", i, txt, err)
		}
		// The asker's own answer is joined for it; the kept one is
		// joined once, for the lookups after.
		if i == 1 {
			first = txt[0]
		} else if i > 1 && unsafe.StringData(txt[0]) != unsafe.StringData(first) {
			t.Errorf("lookup %d: the record joined again, not the kept one", i)
		}
		advance(15 * time.Second)
	}
	if n := z.asked("sel._domainkey.kept.test"); n != 1 {
		t.Fatalf("asked %d times within the TTL, want 1", n)
	}
	// 60 s after the answer: expired, asked again.
	advance(15 * time.Second)
	z.mu.Lock()
	delete(z.rrs, "sel._domainkey.kept.test.|TXT")
	z.mu.Unlock()
	z.add(t, `sel._domainkey.kept.test. 60 IN TXT "v=DKIM1; k=rsa; " "p=BBBB"`)
	for _, lookup := range []func(string) ([]string, error){
		r.txtFunc(l),
		func(n string) ([]string, error) { return r.LookupTXT(context.Background(), n) },
	} {
		txt, err := lookup("sel._domainkey.kept.test")
		if err != nil || len(txt) != 1 || txt[0] != "v=DKIM1; k=rsa; p=BBBB" {
			t.Fatalf("after the TTL: %q, %v", txt, err)
		}
	}
	if n := z.asked("sel._domainkey.kept.test"); n != 2 {
		t.Errorf("asked %d times, want 2", n)
	}
}
