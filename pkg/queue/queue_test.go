package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"letterbox/pkg/delivery"
	"letterbox/pkg/remote"
	"letterbox/pkg/route"
	"letterbox/pkg/spool"
)

// fakeRouter: local addresses at example.test; "nobody" does not exist;
// "fwd" forwards to a remote address; anything else is remote.
type fakeRouter struct{}

func (fakeRouter) Resolve(addr string) ([]route.Destination, error) {
	local, domain, _ := strings.Cut(addr, "@")
	if addr == "postmaster" {
		local, domain = "postmaster", "example.test"
	}
	if domain != "example.test" {
		return []route.Destination{{Kind: route.Remote, Address: addr}}, nil
	}
	switch local {
	case "nobody":
		return nil, fmt.Errorf("route: %w: %s", route.ErrNoSuchUser, addr)
	case "fwd":
		return []route.Destination{{Kind: route.Remote, Address: "far@remote.test"}}, nil
	case "both": // both: both, far2@remote.test
		return []route.Destination{{Kind: route.Maildir, Path: "/mail/both", Address: addr},
			{Kind: route.Remote, Address: "far2@remote.test"}}, nil
	}
	return []route.Destination{{Kind: route.Maildir, Path: "/mail/" + local, Address: local + "@" + domain}}, nil
}

// box records local deliveries; fail maps a mailbox to the error it gives.
type box struct {
	mu    sync.Mutex
	got   map[string][]string // address → messages
	fail  map[string]error
	calls int
}

func (b *box) deliver(ctx context.Context, d route.Destination, sender string, r io.Reader) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls++
	if err := b.fail[d.Address]; err != nil {
		return err
	}
	data, _ := io.ReadAll(r)
	b.got[d.Address] = append(b.got[d.Address], "sender="+sender+"\n"+string(data))
	return nil
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time            { return c.t }
func (c *clock) add(d time.Duration)       { c.t = c.t.Add(d) }
func (c *clock) at(d time.Duration) *clock { c.t = start.Add(d); return c }

var start = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func newRunner(t *testing.T) (*Runner, *box, *clock, *bytes.Buffer) {
	t.Helper()
	sp, err := spool.Open(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	b := &box{got: map[string][]string{}, fail: map[string]error{}}
	c := &clock{t: start}
	var logs bytes.Buffer
	r := &Runner{Spool: sp, Router: fakeRouter{}, Hostname: "mx.example.test", Postmaster: "postmaster@example.test",
		RetryAfter: time.Minute, MaxRetryInterval: 10 * time.Minute, WarnAfter: 30 * time.Minute, BounceAfter: 2 * time.Hour,
		Now: c.now, Log: slog.New(slog.NewTextHandler(&logs, nil)), deliverLocal: b.deliver}
	return r, b, c, &logs
}

func submit(t *testing.T, r *Runner, from string, arrived time.Time, rcpts ...string) string {
	t.Helper()
	env := &spool.Envelope{From: from, Arrived: arrived}
	for _, a := range rcpts {
		env.Recipients = append(env.Recipients, &spool.Recipient{Address: a, State: spool.Pending})
	}
	id, err := r.Spool.Submit(env, strings.NewReader("Subject: test\r\n\r\nhello\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// passTimeout bounds one pass of these tests: a pass that runs on (a
// bounce loop, a dispatcher that never drains) fails, naming it, instead
// of hanging until make test's timeout.
const passTimeout = 30 * time.Second

func pass(t *testing.T, r *Runner) Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), passTimeout)
	defer cancel()
	st, err := r.Pass(ctx, false)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the pass did not end within %v (a loop? %+v)", passTimeout, st)
	}
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestBackoff(t *testing.T) {
	r := &Runner{RetryAfter: time.Minute, MaxRetryInterval: 10 * time.Minute}
	want := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 10 * time.Minute, 10 * time.Minute}
	for i, w := range want {
		if g := r.Backoff(i + 1); g != w {
			t.Errorf("Backoff(%d) = %v, want %v", i+1, g, w)
		}
	}
	if g := (&Runner{}).Backoff(1); g != DefaultRetryAfter {
		t.Errorf("default first retry %v", g)
	}
	if g := (&Runner{}).Backoff(100); g != DefaultMaxRetryInterval {
		t.Errorf("default cap %v", g)
	}
}

func TestDeliverAndRemove(t *testing.T) {
	r, b, _, logs := newRunner(t)
	id := submit(t, r, "alice@example.org", start, "bob@example.test", "carol@example.test")
	st := pass(t, r)
	if st.Delivered != 2 || len(b.got["bob@example.test"]) != 1 || len(b.got["carol@example.test"]) != 1 {
		t.Fatalf("stats %+v, got %v", st, b.got)
	}
	if !strings.Contains(b.got["bob@example.test"][0], "sender=alice@example.org\nSubject: test") {
		t.Fatalf("message %q", b.got["bob@example.test"][0])
	}
	if ents, _ := r.Spool.Scan(); len(ents) != 0 {
		t.Fatalf("spool not empty: %v", ents)
	}
	if !strings.Contains(logs.String(), "id="+id) {
		t.Fatalf("logs lack the id: %s", logs)
	}
	// Nothing left: a second pass does nothing.
	if st := pass(t, r); st.Messages != 0 || b.calls != 2 {
		t.Fatalf("second pass %+v", st)
	}
}

// TestRetryScheduleWarnBounce walks a message whose recipient always fails
// temporarily through the whole schedule with a fake clock.
func TestRetryScheduleWarnBounce(t *testing.T) {
	r, b, c, _ := newRunner(t)
	b.fail["bob@example.test"] = &delivery.Error{Temporary: true, Status: "4.2.2", Err: errors.New("mailbox full")}
	id := submit(t, r, "alice@example.test", start, "bob@example.test", "carol@example.test")

	next := func() time.Time {
		env, err := r.Spool.Load(id)
		if err != nil {
			t.Fatal(err)
		}
		return env.Recipients[0].NextAttempt
	}
	st := pass(t, r)
	if st.Delivered != 1 || st.Deferred != 1 {
		t.Fatalf("first pass %+v", st)
	}
	// Delivered recipients are never retried; the others back off 1, 2, 4, 8, 10, 10 min.
	wantGaps := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute}
	for i, gap := range wantGaps {
		if g := next().Sub(c.t); g != gap {
			t.Fatalf("attempt %d: next in %v, want %v", i+1, g, gap)
		}
		c.add(gap - time.Second)
		if st := pass(t, r); st.Messages != 0 {
			t.Fatalf("worked before due: %+v", st)
		}
		c.add(time.Second)
		if st := pass(t, r); st.Deferred != 1 || st.Delivered != 0 {
			t.Fatalf("retry %d: %+v", i+1, st)
		}
	}
	// Now 15 min after arrival; the warning (at 30 min) caps the next gap.
	if g := next().Sub(c.t); g != 10*time.Minute {
		t.Fatalf("capped gap %v", g)
	}
	c.at(25 * time.Minute)
	pass(t, r)
	if g := next(); !g.Equal(start.Add(30 * time.Minute)) {
		t.Fatalf("next attempt %v, want the warning time", g)
	}
	c.at(30 * time.Minute)
	st = pass(t, r)
	if st.Notices != 1 || len(b.got["alice@example.test"]) != 1 {
		t.Fatalf("warning: %+v %v", st, b.got)
	}
	warning := b.got["alice@example.test"][0]
	if !strings.Contains(warning, "sender=\n") || !strings.Contains(warning, "Action: delayed") ||
		!strings.Contains(warning, "Final-Recipient: rfc822; bob@example.test") || strings.Contains(warning, "carol@") {
		t.Fatalf("warning:\n%s", warning)
	}
	// Only one warning, however many more attempts.
	for i := 0; i < 20; i++ {
		c.t = next()
		if c.t.After(start.Add(2 * time.Hour)) {
			t.Fatalf("next attempt %v after the bounce time", c.t)
		}
		pass(t, r)
		warnings := 0
		for _, m := range b.got["alice@example.test"] {
			warnings += strings.Count(m, "Action: delayed")
		}
		if warnings != 1 {
			t.Fatal("second warning sent")
		}
		if _, err := r.Spool.Load(id); err != nil {
			break
		}
	}
	// The attempt at the bounce time gives up.
	if _, err := r.Spool.Load(id); !errors.Is(err, spool.ErrNotFound) {
		t.Fatalf("message still queued after bounce-after: %v (now %v)", err, c.t.Sub(start))
	}
	if got := b.got["alice@example.test"]; len(got) != 2 || !strings.Contains(got[1], "Action: failed") {
		t.Fatalf("want a warning, then a bounce: %v", got)
	}
}

func TestBounceExpired(t *testing.T) {
	r, b, c, _ := newRunner(t)
	b.fail["bob@example.test"] = &delivery.Error{Temporary: true, Status: "4.2.2", Err: errors.New("mailbox full")}
	r.WarnAfter = -1
	submit(t, r, "alice@example.test", start, "bob@example.test")
	pass(t, r)
	c.at(2 * time.Hour)
	st := pass(t, r)
	if st.Bounced != 1 || st.Notices != 1 {
		t.Fatalf("%+v", st)
	}
	got := b.got["alice@example.test"]
	if len(got) != 1 || !strings.Contains(got[0], "Action: failed") || !strings.Contains(got[0], "gave up after 2h0m0s") {
		t.Fatalf("bounce %v", got)
	}
	if ents, _ := r.Spool.Scan(); len(ents) != 0 {
		t.Fatalf("spool %v", ents)
	}
}

func TestPermanentFailureOneDSN(t *testing.T) {
	r, b, _, _ := newRunner(t)
	b.fail["dave@example.test"] = &delivery.Error{Status: "5.2.0", Err: errors.New("mailbox disabled")}
	submit(t, r, "alice@example.test", start, "nobody@example.test", "dave@example.test", "bob@example.test")
	st := pass(t, r)
	if st.Bounced != 2 || st.Delivered != 2 || st.Notices != 1 { // bob + the DSN to alice
		t.Fatalf("%+v", st)
	}
	dsns := b.got["alice@example.test"]
	if len(dsns) != 1 || !strings.Contains(dsns[0], "Status: 5.1.1") || !strings.Contains(dsns[0], "Status: 5.2.0") ||
		!strings.Contains(dsns[0], "Auto-Submitted: auto-replied") {
		t.Fatalf("dsn %v", dsns)
	}
}

// TestNeverBounceABounce: a null-sender message that fails goes to the
// postmaster once; when that fails too it is dropped with a log line.
func TestNeverBounceABounce(t *testing.T) {
	r, b, _, logs := newRunner(t)
	b.fail["postmaster@example.test"] = &delivery.Error{Status: "5.2.0", Err: errors.New("postmaster broken")}
	submit(t, r, "", start, "nobody@example.test")
	// A bounced bounce would bounce again at once, in the same pass: stop
	// the pass after a few notices and say so, rather than loop.
	ctx, cancel := context.WithTimeout(context.Background(), passTimeout)
	defer cancel()
	inner := r.deliverLocal
	var attempts atomic.Int32
	r.deliverLocal = func(ctx context.Context, d route.Destination, sender string, rd io.Reader) error {
		if attempts.Add(1) > 10 {
			cancel()
		}
		return inner(ctx, d, sender, rd)
	}
	st, err := r.Pass(ctx, false)
	r.deliverLocal = inner
	if n := attempts.Load(); n > 10 || err != nil {
		t.Fatalf("bounce loop: %d local delivery attempts for one null-sender message whose postmaster notice fails (%v, %+v)", n, err, st)
	}
	if st.Notices != 1 || st.Bounced != 2 {
		t.Fatalf("%+v\n%s", st, logs)
	}
	if !strings.Contains(logs.String(), "double bounce dropped") {
		t.Fatalf("no log line:\n%s", logs)
	}
	if ents, _ := r.Spool.Scan(); len(ents) != 0 {
		t.Fatalf("spool %v", ents)
	}
	// With a working postmaster, the notice arrives there.
	delete(b.fail, "postmaster@example.test")
	submit(t, r, "", start, "nobody@example.test")
	pass(t, r)
	if got := b.got["postmaster@example.test"]; len(got) != 1 || !strings.Contains(got[0], "nobody@example.test") {
		t.Fatalf("postmaster got %v", got)
	}
	// A DSN to a sender that fails goes to the postmaster, not back.
	submit(t, r, "nobody@example.test", start, "nobody@example.test")
	st = pass(t, r)
	if st.Notices != 2 || len(b.got["postmaster@example.test"]) != 2 {
		t.Fatalf("%+v %v", st, b.got)
	}
}

// fakeRemote records its calls; a message's destinations are worked at
// once, so calls come in any order.
type fakeRemote struct {
	mu    sync.Mutex
	calls [][]string
	res   func(rcpt string) remote.Result
}

func (f *fakeRemote) Deliver(ctx context.Context, domain, from string, rcpts []string, open func() (io.ReadCloser, error)) ([]remote.Result, error) {
	f.mu.Lock()
	f.calls = append(f.calls, append([]string{domain, from}, rcpts...))
	f.mu.Unlock()
	rc, _ := open()
	io.ReadAll(rc)
	rc.Close()
	var out []remote.Result
	for _, r := range rcpts {
		out = append(out, f.res(r))
	}
	return out, nil
}

func TestRemote(t *testing.T) {
	r, _, c, _ := newRunner(t)
	id := submit(t, r, "alice@example.test", start, "x@remote.test", "y@remote.test", "fwd@example.test", "z@other.test")
	pass(t, r)
	env, _ := r.Spool.Load(id)
	for _, rc := range env.Recipients {
		if rc.State != spool.Pending || !strings.Contains(rc.LastError, "remote delivery not available") {
			t.Fatalf("without remote: %+v", rc)
		}
	}
	fr := &fakeRemote{res: func(rcpt string) remote.Result {
		switch rcpt {
		case "y@remote.test":
			return remote.Result{Rcpt: rcpt, Code: 550, Status: "5.1.1", Message: "550 5.1.1 unknown"}
		case "z@other.test":
			return remote.Result{Rcpt: rcpt, Code: 451, Status: "4.3.0", Message: "451 4.3.0 later", Temporary: true}
		}
		return remote.Result{Rcpt: rcpt, Code: 250, Status: "2.0.0", Message: "250 ok"}
	}}
	r.Remote = fr
	c.add(time.Minute)
	st := pass(t, r)
	if st.Delivered != 2+1 || st.Bounced != 1 || st.Deferred != 1 { // x, fwd, the DSN; y; z
		t.Fatalf("%+v %v", st, fr.calls)
	}
	var calls []string
	for _, c := range fr.calls {
		calls = append(calls, strings.Join(c, ","))
	}
	sort.Strings(calls)
	if strings.Join(calls, " ") != "other.test,alice@example.test,z@other.test remote.test,alice@example.test,x@remote.test,y@remote.test,far@remote.test" {
		t.Fatalf("calls %v", fr.calls)
	}
}

func TestLockedSkipped(t *testing.T) {
	r, b, _, _ := newRunner(t)
	id := submit(t, r, "alice@example.test", start, "bob@example.test")
	l, err := r.Spool.Lock(id)
	if err != nil {
		t.Fatal(err)
	}
	if st := pass(t, r); st.Messages != 0 || b.calls != 0 {
		t.Fatalf("worked a locked message: %+v", st)
	}
	l.Unlock()
	if st := pass(t, r); st.Delivered != 1 {
		t.Fatalf("%+v", st)
	}
}

func TestFlush(t *testing.T) {
	r, b, _, _ := newRunner(t)
	b.fail["bob@example.test"] = &delivery.Error{Temporary: true, Status: "4.2.2", Err: errors.New("full")}
	submit(t, r, "alice@example.test", start, "bob@example.test")
	pass(t, r)
	if st := pass(t, r); st.Messages != 0 {
		t.Fatal("not due yet, but worked")
	}
	delete(b.fail, "bob@example.test")
	st, err := r.Pass(context.Background(), true)
	if err != nil || st.Delivered != 1 {
		t.Fatalf("flush %+v %v", st, err)
	}
}

func TestReorderArgs(t *testing.T) {
	bools := map[string]bool{"daemon": true, "json": true}
	for in, want := range map[string]string{
		"qr list --json --spool /x":             "qr --spool /x list --json",
		"qr --spool /x list --json":             "qr --spool /x list --json",
		"qr show ID --config=/c --daemon":       "qr --config=/c --daemon show ID",
		"qr --retry-after 1s remove ID --mda m": "qr --retry-after 1s --mda m remove ID",
		"qr --daemon":                           "qr --daemon",
		"qr flush --route a=b --route c=d":      "qr --route a=b --route c=d flush",
		"qr list --limit 5 --spool /x --json":   "qr --spool /x list --limit 5 --json",
		"qr list --domain=a.test --state due":   "qr list --domain=a.test --state due",
		"qr show --limit 5 ID":                  "qr --limit 5 show ID",
	} {
		if g := strings.Join(ReorderArgs(strings.Fields(in), bools), " "); g != want {
			t.Errorf("%q → %q, want %q", in, g, want)
		}
	}
}

// TestScheduleHint: after a pass that changed nothing, a pass with nothing
// due skips the scan, until the spool changes or the earliest due time
// comes.
// TestPartialAlias: an alias with a local and a remote destination whose
// remote part fails temporarily: the local copy is not delivered again on
// retry, only the remote address is retried.
func TestPartialAlias(t *testing.T) {
	r, b, c, _ := newRunner(t)
	fr := &fakeRemote{res: func(rcpt string) remote.Result {
		return remote.Result{Rcpt: rcpt, Code: 451, Status: "4.3.0", Message: "451 4.3.0 later", Temporary: true}
	}}
	r.Remote = fr
	id := submit(t, r, "alice@example.test", start, "both@example.test")
	pass(t, r)
	env, err := r.Spool.Load(id)
	if err != nil {
		t.Fatal(err)
	}
	if len(env.Recipients) != 2 || env.Recipients[0].State != spool.Delivered || env.Recipients[1].Address != "far2@remote.test" ||
		env.Recipients[1].State != spool.Pending || env.Recipients[1].Original != "both@example.test" {
		t.Fatalf("envelope:\n%s", env.Format())
	}
	fr.res = func(rcpt string) remote.Result {
		return remote.Result{Rcpt: rcpt, Code: 250, Status: "2.0.0", Message: "250 ok"}
	}
	c.add(time.Hour)
	if st := pass(t, r); st.Delivered != 1 {
		t.Fatalf("%+v", st)
	}
	if n := len(b.got["both@example.test"]); n != 1 {
		t.Fatalf("local copy delivered %d times", n)
	}
	if len(fr.calls) != 2 {
		t.Fatalf("remote calls %v", fr.calls)
	}
}
