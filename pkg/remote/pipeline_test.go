package remote

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawEvent is one command line a rawSink read, with how many command
// replies it had written on that connection before the line arrived: under
// pipelining MAIL, the RCPTs and DATA all arrive before their replies.
type rawEvent struct {
	conn    int
	line    string
	replied int
}

// rawSink is an SMTP server written by hand, so that tests see the exact
// command sequence and control the timing of replies, which go-smtp's
// server hides.
type rawSink struct {
	t    *testing.T
	ext  []string                      // EHLO keywords offered
	rcpt func(to string, n int) string // RCPT reply; "" = 250
	data string                        // DATA reply; "" = 354
	// hold keeps the replies to RSET, MAIL and RCPT until a command that
	// ends a group arrives (or holdFor passes without another line): a
	// client that waits for each reply gets them late, and the events
	// show it.
	hold    bool
	holdFor time.Duration

	mu     sync.Mutex
	events []rawEvent
	msgs   []string // message data as received, dot-unstuffed, one per end of data
	conns  int
}

func newRawSink(t *testing.T, addr string, ext ...string) *rawSink {
	t.Helper()
	k := &rawSink{t: t, ext: ext, holdFor: time.Second}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var live sync.Map
	t.Cleanup(func() {
		l.Close()
		live.Range(func(c, _ any) bool { c.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			k.mu.Lock()
			k.conns++
			n := k.conns
			k.mu.Unlock()
			live.Store(c, true)
			wg.Add(1)
			go func() { defer wg.Done(); defer live.Delete(c); k.serve(c, n) }()
		}
	}()
	return k
}

// set changes the sink's behaviour while it serves.
func (k *rawSink) set(f func(k *rawSink)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	f(k)
}

func (k *rawSink) log() []rawEvent {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]rawEvent(nil), k.events...)
}

func (k *rawSink) messages() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.msgs...)
}

// lines is the command lines of connection conn (0 = all), joined by "|".
func (k *rawSink) lines(conn int) string {
	var out []string
	for _, e := range k.log() {
		if conn == 0 || e.conn == conn {
			out = append(out, e.line)
		}
	}
	return strings.Join(out, "|")
}

func (k *rawSink) serve(c net.Conn, n int) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	w.WriteString("220 raw.test ESMTP\r\n")
	w.Flush()
	replied := 0
	var pending []string
	flush := func() bool {
		for _, r := range pending {
			w.WriteString(r)
			replied++
		}
		pending = nil
		return w.Flush() == nil
	}
	rcpts := 0
	holdFor := k.holdFor
	for {
		if len(pending) > 0 {
			c.SetReadDeadline(time.Now().Add(holdFor))
		} else {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
		}
		l, err := br.ReadString('\n')
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && len(pending) > 0 {
			if !flush() {
				return
			}
			continue
		}
		if err != nil {
			return
		}
		line := strings.TrimSuffix(l, "\r\n")
		k.mu.Lock()
		k.events = append(k.events, rawEvent{conn: n, line: line, replied: replied})
		hold, rcptFn, dataReply := k.hold, k.rcpt, k.data
		k.mu.Unlock()
		verb := strings.ToUpper(strings.Fields(line + " x")[0])
		var r string
		switch verb {
		case "EHLO":
			r = "250"
			if len(k.ext) > 0 {
				r += "-raw.test\r\n"
				for i, e := range k.ext {
					sep := "-"
					if i == len(k.ext)-1 {
						sep = " "
					}
					r += "250" + sep + e + "\r\n"
				}
			} else {
				r += " raw.test\r\n"
			}
		case "MAIL", "RSET":
			rcpts = 0
			r = "250 2.1.0 ok\r\n"
		case "RCPT":
			to := strings.TrimSuffix(strings.TrimPrefix(line[len("RCPT TO:"):], "<"), ">")
			r = "250 2.1.5 ok\r\n"
			if rcptFn != nil {
				if s := rcptFn(to, rcpts); s != "" {
					r = s + "\r\n"
				}
			}
			rcpts++
		case "DATA":
			r = "354 go ahead\r\n"
			if dataReply != "" {
				r = dataReply + "\r\n"
			}
		case "QUIT":
			pending = append(pending, "221 bye\r\n")
			flush()
			return
		default:
			r = "250 ok\r\n"
		}
		pending = append(pending, r)
		if hold && (verb == "MAIL" || verb == "RCPT" || verb == "RSET") {
			continue
		}
		if !flush() {
			return
		}
		if !strings.HasPrefix(r, "354") {
			continue
		}
		var msg strings.Builder
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if l == ".\r\n" {
				break
			}
			msg.WriteString(strings.TrimPrefix(l, "."))
		}
		k.mu.Lock()
		k.msgs = append(k.msgs, msg.String())
		k.mu.Unlock()
		pending = append(pending, "250 2.0.0 queued\r\n")
		if !flush() {
			return
		}
	}
}

// rawFixture is a client whose MX for example.test is a rawSink.
func rawFixture(t *testing.T, ext ...string) (*fixture, *rawSink, *Client) {
	f := newFixture(t)
	f.dns.add(t, "example.test. MX 10 mx1.example.test.", "mx1.example.test. A 127.0.0.2")
	k := newRawSink(t, fmt.Sprintf("127.0.0.2:%d", f.port), ext...)
	return f, k, f.client()
}

func replied(ev []rawEvent) []int {
	var out []int
	for _, e := range ev {
		out = append(out, e.replied)
	}
	return out
}

func TestPipeliningSendsOneGroup(t *testing.T) {
	_, k, c := rawFixture(t, "PIPELINING", "8BITMIME", "SIZE 1000000")
	k.set(func(k *rawSink) { k.hold = true })
	start := time.Now()
	wantDelivered(t, deliver(t, c, "example.test", "a@example.test", "b@example.test"))
	if d := time.Since(start); d > k.holdFor/2 {
		t.Errorf("delivery took %v: the sink held its replies waiting for the rest of the group", d)
	}
	want := fmt.Sprintf("EHLO client.test|MAIL FROM:<sender@src.test> SIZE=%d|RCPT TO:<a@example.test>|RCPT TO:<b@example.test>|DATA", len(testMsg))
	if got := k.lines(1); got != want {
		t.Fatalf("dialog\n%s\nwant\n%s", got, want)
	}
	// MAIL, both RCPTs and DATA arrived before any of them was answered.
	if got := fmt.Sprint(replied(k.log())); got != "[0 1 1 1 1]" {
		t.Fatalf("replies written before each command: %s, want [0 1 1 1 1]", got)
	}
	if m := k.messages(); len(m) != 1 || m[0] != testMsg {
		t.Fatalf("sink got %q", m)
	}
	// A reused session puts RSET in the same group.
	wantDelivered(t, deliver(t, c, "example.test", "c@example.test"))
	ev := k.log()[5:]
	if len(ev) != 4 || ev[0].line != "RSET" || fmt.Sprint(replied(ev)) != "[6 6 6 6]" {
		t.Fatalf("second transaction %+v, want RSET MAIL RCPT DATA in one group after 6 replies", ev)
	}
}

func TestNoPipeliningWithoutTheExtension(t *testing.T) {
	_, k, c := rawFixture(t, "8BITMIME")
	wantDelivered(t, deliver(t, c, "example.test", "a@example.test", "b@example.test"))
	wantDelivered(t, deliver(t, c, "example.test", "c@example.test"))
	want := "EHLO client.test|MAIL FROM:<sender@src.test>|RCPT TO:<a@example.test>|RCPT TO:<b@example.test>|DATA|" +
		"RSET|MAIL FROM:<sender@src.test>|RCPT TO:<c@example.test>|DATA"
	if got := k.lines(1); got != want {
		t.Fatalf("dialog\n%s\nwant\n%s", got, want)
	}
	// Each command waited for the reply to the one before (DATA's
	// message and its 250 count as one more reply each).
	if got := fmt.Sprint(replied(k.log())); got != "[0 1 2 3 4 6 7 8 9]" {
		t.Fatalf("replies written before each command: %s", got)
	}
}

func TestPipeliningMixedRcptReplies(t *testing.T) {
	_, k, c := rawFixture(t, "PIPELINING", "ENHANCEDSTATUSCODES")
	k.set(func(k *rawSink) {
		k.rcpt = func(to string, n int) string {
			switch {
			case strings.HasPrefix(to, "unknown"):
				return "550-5.1.1 no such user\r\n550 5.1.1 here"
			case strings.HasPrefix(to, "full"):
				return "450 4.2.2 mailbox full"
			case strings.HasPrefix(to, "many"):
				return "452 4.5.3 too many recipients"
			}
			return ""
		}
	})
	res := deliver(t, c, "example.test", "ok1@example.test", "unknown@example.test", "full@example.test", "many@example.test", "ok2@example.test")
	wantDelivered(t, []Result{res[0], res[4]})
	if r := res[1]; r.Temporary || r.Code != 550 || r.Status != "5.1.1" || !strings.Contains(r.Message, "550 5.1.1 no such user here") {
		t.Errorf("unknown: %+v", r)
	}
	if r := res[2]; !r.Temporary || r.Code != 450 || r.Status != "4.2.2" {
		t.Errorf("full: %+v", r)
	}
	// Sent in the same group as a later accepted recipient: its own 452
	// stands, and ok2's acceptance too (no duplicate on retry).
	if r := res[3]; !r.Temporary || r.Code != 452 || r.Status != "4.5.3" || strings.Contains(r.Message, "not attempted") {
		t.Errorf("452: %+v", r)
	}
	if m := k.messages(); len(m) != 1 {
		t.Fatalf("sink got %d messages", len(m))
	}
}

// 452 without pipelining: the recipients after it are not sent at all.
func TestNoPipelining452StopsRcpts(t *testing.T) {
	_, k, c := rawFixture(t)
	k.set(func(k *rawSink) {
		k.rcpt = func(to string, n int) string {
			if n >= 1 {
				return "452 4.5.3 too many recipients"
			}
			return ""
		}
	})
	res := deliver(t, c, "example.test", "a@example.test", "b@example.test", "c@example.test")
	wantDelivered(t, res[:1])
	wantFailed(t, res[1:], true, "4.5.3")
	if !strings.Contains(res[2].Message, "not attempted") {
		t.Errorf("c: %+v", res[2])
	}
	if got := k.lines(1); strings.Contains(got, "c@example.test") || !strings.HasSuffix(got, "|DATA") {
		t.Fatalf("dialog %s", got)
	}
}

func TestAllRecipientsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		ext  []string
		data string // DATA reply when it is sent
		want string // dialog of the failed transaction
	}{
		// DATA already went in the group; the server refuses it.
		{"pipelined", []string{"PIPELINING"}, "554 5.5.1 no valid recipients", "MAIL|RCPT|RCPT|DATA"},
		// A server that says 354 anyway gets a lone dot (RFC 2920 §3.1).
		{"pipelined-354", []string{"PIPELINING"}, "", "MAIL|RCPT|RCPT|DATA"},
		// Without pipelining DATA is never sent.
		{"sequential", nil, "", "MAIL|RCPT|RCPT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, k, c := rawFixture(t, tc.ext...)
			k.set(func(k *rawSink) {
				k.data = tc.data
				k.rcpt = func(to string, n int) string {
					if strings.HasPrefix(to, "x") {
						return "550 5.1.1 unknown"
					}
					return ""
				}
			})
			res := deliver(t, c, "example.test", "x1@example.test", "x2@example.test")
			wantFailed(t, res, false, "5.1.1")
			for _, m := range k.messages() {
				if m != "" {
					t.Fatalf("a message was sent: %q", m)
				}
			}
			if n := len(k.messages()); (tc.name == "pipelined-354") != (n == 1) {
				t.Fatalf("%d empty messages", n)
			}
			// The same session carries the next message, after RSET.
			k.set(func(k *rawSink) { k.data = "" })
			wantDelivered(t, deliver(t, c, "example.test", "ok@example.test"))
			var verbs []string
			for _, e := range k.log()[1:] {
				verbs = append(verbs, strings.Fields(e.line)[0])
			}
			if got, want := strings.Join(verbs, "|"), tc.want+"|RSET|MAIL|RCPT|DATA"; got != want {
				t.Fatalf("dialog %s, want %s", got, want)
			}
			if m := k.messages(); m[len(m)-1] != testMsg {
				t.Fatalf("second message %q", m[len(m)-1])
			}
		})
	}
}

func TestBody8BitMIMEOnlyFor8BitMessages(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "example.test. MX 10 mx1.example.test.", "mx1.example.test. A 127.0.0.2",
		"seven.test. MX 10 mx.seven.test.", "mx.seven.test. A 127.0.0.3")
	k := f.sink("127.0.0.2") // go-smtp offers 8BITMIME
	c := f.client()
	eight := "From: a@src.test\r\nSubject: Grüße\r\n\r\nnaïve café\r\n"
	for _, msg := range []string{testMsg, eight} {
		res, err := c.Deliver(context.Background(), "example.test", "s@src.test", []string{"b@example.test"}, msgOpen(msg))
		if err != nil {
			t.Fatal(err)
		}
		wantDelivered(t, res)
	}
	m := k.messages()
	if len(m) != 2 || m[0].Opts.Body != "" || m[1].Opts.Body != "8BITMIME" || m[1].Data != eight {
		t.Fatalf("BODY: 7-bit %q, 8-bit %q (want none, 8BITMIME)", m[0].Opts.Body, m[1].Opts.Body)
	}
	// A host without 8BITMIME gets the 8-bit message unchanged, without
	// BODY= (the documented choice).
	raw := newRawSink(t, fmt.Sprintf("127.0.0.3:%d", f.port), "PIPELINING")
	res, _ := c.Deliver(context.Background(), "seven.test", "s@src.test", []string{"b@seven.test"}, msgOpen(eight))
	wantDelivered(t, res)
	if got := raw.lines(1); !strings.Contains(got, "MAIL FROM:<s@src.test>|") {
		t.Fatalf("dialog %s", got)
	}
	if ms := raw.messages(); len(ms) != 1 || ms[0] != eight {
		t.Fatalf("got %q", ms)
	}
}

func TestPipelinedSessionLostMidGroup(t *testing.T) {
	f := newFixture(t)
	f.dns.add(t, "example.test. MX 10 mx1.example.test.", "mx1.example.test. A 127.0.0.2")
	// Accepts a, then closes the connection before answering b.
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.2:%d", f.port))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		fmt.Fprint(c, "220 x\r\n")
		br.ReadString('\n')
		fmt.Fprint(c, "250-x\r\n250 PIPELINING\r\n")
		br.ReadString('\n') // MAIL
		br.ReadString('\n') // RCPT a
		fmt.Fprint(c, "250 ok\r\n250 ok\r\n")
	}()
	res := deliver(t, f.client(), "example.test", "a@example.test", "b@example.test")
	wantFailed(t, res, true, "")
	if res[0].Code != 0 || !strings.Contains(res[1].Message, "RCPT TO") {
		t.Fatalf("%+v", res)
	}
}

func TestReadReply(t *testing.T) {
	for _, tc := range []struct {
		in     string
		want   string // String() of the reply, or "error"
		status string
	}{
		{"250 ok\r\n", "250 ok", ""},
		{"250\r\n", "250 ", ""},
		{"550-5.1.1 no such\r\n550-5.1.1 user\r\n550 5.1.1 here\r\n", "550 5.1.1 no such user here", "5.1.1"},
		{"451 4.3.0\r\n", "451 4.3.0 ", "4.3.0"},
		{"250 2.0.0x queued\r\n", "250 2.0.0x queued", ""},
		{"250-a\r\n251 b\r\n", "error", ""},
		{"25x ok\r\n", "error", ""},
		{"250_ok\r\n", "error", ""},
		{"220 " + strings.Repeat("x", 5000) + "\r\n", "error", ""},
		{strings.Repeat("250-x\r\n", 600) + "250 x\r\n", "error", ""},
		{"250-no end\r\n", "error", ""},
	} {
		a, b := net.Pipe()
		go func() { b.Write([]byte(tc.in)); b.Close() }()
		cn := newConn(a, "h", netip.MustParseAddr("192.0.2.1"), DefaultTimeouts)
		r, err := cn.read(time.Second)
		a.Close()
		got := "error"
		if err == nil {
			got = r.String()
		}
		if got != tc.want || (err == nil && r.status != tc.status) {
			t.Errorf("%.30q: got %q (status %q), %v; want %q", tc.in, got, r.status, err, tc.want)
		}
	}
}

func TestBadAddressesRefusedLocally(t *testing.T) {
	_, k, c := rawFixture(t, "PIPELINING")
	res, err := c.Deliver(context.Background(), "example.test", "s@src.test", []string{"a@example.test", "b@example.test\r\nRSET"}, msgOpen(testMsg))
	if err != nil {
		t.Fatal(err)
	}
	wantDelivered(t, res[:1])
	if r := res[1]; r.Temporary || r.Status != "5.1.3" {
		t.Fatalf("%+v", r)
	}
	if got := k.lines(0); strings.Contains(got, "b@example") {
		t.Fatalf("dialog %s", got)
	}
	res, _ = c.Deliver(context.Background(), "example.test", "s@src\n.test", []string{"a@example.test"}, msgOpen(testMsg))
	wantFailed(t, res, false, "5.1.7")
}
