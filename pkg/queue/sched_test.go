package queue

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"letterbox/pkg/internal/testwait"
	"letterbox/pkg/remote"
	"letterbox/pkg/spool"
)

// sinkBackend is an SMTP server that takes every message and counts the
// recipients it got.
type sinkBackend struct {
	mu   sync.Mutex
	got  map[string]int
	cond *sync.Cond
}

func (k *sinkBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{k: k}, nil }

type sinkSession struct {
	k     *sinkBackend
	rcpts []string
}

func (s *sinkSession) Reset()        { s.rcpts = nil }
func (s *sinkSession) Logout() error { return nil }
func (s *sinkSession) Mail(string, *smtp.MailOptions) error {
	return nil
}
func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *sinkSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	s.k.mu.Lock()
	for _, rc := range s.rcpts {
		s.k.got[rc]++
	}
	s.k.mu.Unlock()
	s.k.cond.Broadcast()
	return nil
}

func (k *sinkBackend) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.got)
}

func startSink(t *testing.T) (*sinkBackend, int) {
	t.Helper()
	k := &sinkBackend{got: map[string]int{}}
	k.cond = sync.NewCond(&k.mu)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(k)
	srv.Domain = "sink.test"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return k, ln.Addr().(*net.TCPAddr).Port
}

// blackHole accepts TCP connections on ip and never says a word, as a
// host behind a broken firewall or an overloaded MX does.
func blackHole(t *testing.T, ip string) (int, func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("cannot listen on %s (the tests need all of 127.0.0.0/8 on loopback): %v", ip, err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	accepted := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(conns)
	}
	return ln.Addr().(*net.TCPAddr).Port, accepted
}

// deadAndSink sets r up with a remote client routing dead.test to a black
// hole and sink.test to a working SMTP server, with --concurrency 4 and
// --concurrency-per-domain 4 (so a destination gets at most 3 slots).
func deadAndSink(t *testing.T, r *Runner) (*sinkBackend, func() int) {
	t.Helper()
	sink, sinkPort := startSink(t)
	deadPort, accepted := blackHole(t, "127.0.0.2")
	var routes []remote.Route
	for _, s := range []string{"dead.test=127.0.0.2:" + strconv.Itoa(deadPort), "sink.test=127.0.0.1:" + strconv.Itoa(sinkPort)} {
		rt, err := remote.ParseRoute(s)
		if err != nil {
			t.Fatal(err)
		}
		routes = append(routes, rt)
	}
	// Timeouts long enough that the test's own deadline is what ends the
	// hang: the other mail must get through while it lasts.
	to := remote.DefaultTimeouts
	to.Greeting = time.Minute
	cl, err := remote.New(remote.Config{Helo: "mx.example.test", Routes: routes, Concurrency: 4, PerDestination: 4, Timeouts: to})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	r.Remote = cl
	r.Workers, r.PerDestination = 4, 4
	return sink, accepted
}

// TestDeadDestinationDoesNotBlock: 8 messages to a domain whose MX
// accepts and never answers, queued before 20 to a working domain and 5
// local ones, with --concurrency 4: the 25 are delivered in the same pass
// while the 8 hang, and the 8 are deferred, not lost, when the pass is
// stopped.
func TestDeadDestinationDoesNotBlock(t *testing.T) {
	r, b, _, logs := newRunner(t)
	sink, _ := deadAndSink(t, r)

	for i := 0; i < 8; i++ {
		submit(t, r, "alice@example.test", start, fmt.Sprintf("u%d@dead.test", i))
	}
	for i := 0; i < 20; i++ {
		submit(t, r, "alice@example.test", start, fmt.Sprintf("u%d@sink.test", i))
	}
	for i := 0; i < 5; i++ {
		submit(t, r, "alice@example.test", start, fmt.Sprintf("local%d@example.test", i))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type passResult struct {
		st  Stats
		err error
	}
	done := make(chan passResult, 1)
	go func() {
		st, err := r.Pass(ctx, false)
		done <- passResult{st, err}
	}()

	deadline := time.Now().Add(15 * time.Second)
	for sink.count() < 20 && time.Now().Before(deadline) {
		select {
		case res := <-done:
			t.Fatalf("pass ended before the black hole's timeout: %+v %v", res.st, res.err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if n := sink.count(); n != 20 {
		t.Fatalf("%d of 20 messages to the working domain delivered while the dead one hangs\n%s", n, logs)
	}
	b.mu.Lock()
	local := len(b.got)
	b.mu.Unlock()
	if local != 5 {
		t.Fatalf("%d of 5 local messages delivered while the dead domain hangs", local)
	}
	select {
	case res := <-done:
		t.Fatalf("pass ended while the black hole still holds connections: %+v %v", res.st, res.err)
	default:
	}

	// Stopping the pass ends the hung sessions; their messages stay queued.
	cancel()
	var res passResult
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("pass did not stop after its context ended")
	}
	if res.st.Delivered != 25 {
		t.Fatalf("stats: %+v (err %v)", res.st, res.err)
	}
	ents, err := r.Spool.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 8 {
		t.Fatalf("%d messages left in the queue, want the 8 to the dead domain", len(ents))
	}
	for _, e := range ents {
		env, err := r.Spool.Load(e.ID)
		if err != nil {
			t.Fatal(err)
		}
		if rc := env.Recipients[0]; rc.State != "pending" {
			t.Fatalf("%s: %+v", e.ID, rc)
		}
	}
}

// TestDaemonNotHeldByDeadDestination: the daemon's passes don't wait for
// messages hung on a dead destination, so mail arriving meanwhile goes out.
func TestDaemonNotHeldByDeadDestination(t *testing.T) {
	r, b, _, logs := newRunner(t)
	r.Now = nil // the daemon sleeps on the real clock
	r.Interval = time.Minute
	sink, accepted := deadAndSink(t, r)
	now := time.Now()
	for i := 0; i < 8; i++ {
		submit(t, r, "alice@example.test", now, fmt.Sprintf("u%d@dead.test", i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- r.Daemon(ctx) }()
	testwait.Until(t, 10*time.Second, "the dead destination holds its 3 slots", func() bool { return accepted() >= 3 })

	for i := 0; i < 5; i++ {
		submit(t, r, "alice@example.test", now, fmt.Sprintf("u%d@sink.test", i))
	}
	submit(t, r, "alice@example.test", now, "carol@example.test")
	testwait.Until(t, 10*time.Second, "mail that arrived later delivered", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return sink.count() == 5 && len(b.got["carol@example.test"]) == 1
	})
	if n := accepted(); n != 3 {
		t.Fatalf("the dead destination got %d connections, want its cap of 3", n)
	}
	cancel()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("daemon did not stop\n%s", logs)
	}
	if ents, _ := r.Spool.Scan(); len(ents) != 8 {
		t.Fatalf("%d messages queued after the daemon stopped, want the 8 to the dead domain", len(ents))
	}
}

// keyedRemote hangs for the domains routed to "smarthost" until the pass
// ends, and delivers the others at once; it names destinations as
// remote.Client would with a route shared by several domains.
type keyedRemote struct {
	mu            sync.Mutex
	hung, maxHung int
	delivered     int
}

func (k *keyedRemote) DestinationKey(domain string) string {
	if domain == "a.test" || domain == "b.test" {
		return "smarthost"
	}
	return domain
}

func (k *keyedRemote) Deliver(ctx context.Context, domain, from string, rcpts []string, open func() (io.ReadCloser, error)) ([]remote.Result, error) {
	res := make([]remote.Result, len(rcpts))
	k.mu.Lock()
	if k.DestinationKey(domain) != "smarthost" {
		k.delivered++
		k.mu.Unlock()
		for i, r := range rcpts {
			res[i] = remote.Result{Rcpt: r, Code: 250, Status: "2.0.0", Message: "ok"}
		}
		return res, nil
	}
	k.hung++
	k.maxHung = max(k.maxHung, k.hung)
	k.mu.Unlock()
	<-ctx.Done()
	k.mu.Lock()
	k.hung--
	k.mu.Unlock()
	for i, r := range rcpts {
		res[i] = remote.Result{Rcpt: r, Status: "4.4.7", Message: "interrupted", Temporary: true}
	}
	return res, nil
}

// TestDestinationKeyShared: domains that share a destination (one route)
// share its cap, so together they cannot take every slot.
func TestDestinationKeyShared(t *testing.T) {
	r, _, _, _ := newRunner(t)
	k := &keyedRemote{}
	r.Remote = k
	r.Workers, r.PerDestination = 4, 4
	for i := 0; i < 6; i++ {
		submit(t, r, "alice@example.test", start, fmt.Sprintf("u%d@a.test", i))
		submit(t, r, "alice@example.test", start, fmt.Sprintf("u%d@b.test", i))
	}
	for i := 0; i < 5; i++ {
		submit(t, r, "alice@example.test", start, fmt.Sprintf("u%d@c.test", i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Stats, 1)
	go func() { st, _ := r.Pass(ctx, false); done <- st }()
	testwait.Until(t, 10*time.Second, "c.test delivered while the smarthost hangs", func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		return k.delivered == 5
	})
	cancel()
	st := testwait.Recv(t, done, 10*time.Second, "the pass to stop after its context ended")
	if k.maxHung != 3 {
		t.Fatalf("%d messages hung on the shared destination at once, want its cap of 3", k.maxHung)
	}
	if st.Delivered != 5 || st.Deferred != 3 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestMixedDestinations: 8 messages, each to a domain whose MX never
// answers, a working domain and a local mailbox, with --concurrency 4:
// every message's working-domain and local recipients are delivered while
// its dead-domain recipient hangs, the dead domain holds only its cap of 3
// slots, and when the pass is stopped each message stays queued with only
// that recipient pending (the others recorded as delivered, so never sent
// twice).
func TestMixedDestinations(t *testing.T) {
	r, b, _, logs := newRunner(t)
	sink, accepted := deadAndSink(t, r)
	var ids []string
	for i := 0; i < 8; i++ {
		ids = append(ids, submit(t, r, "alice@example.test", start,
			fmt.Sprintf("u%d@dead.test", i), fmt.Sprintf("u%d@sink.test", i), fmt.Sprintf("local%d@example.test", i)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan Stats, 1)
	go func() { st, _ := r.Pass(ctx, false); done <- st }()
	testwait.Until(t, 15*time.Second, "8 working-domain and 8 local recipients delivered while the dead domain hangs", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return sink.count() == 8 && len(b.got) == 8
	})
	testwait.Until(t, 10*time.Second, "the dead domain's 3 slots taken", func() bool { return accepted() >= 3 })
	// The delivered recipients are in the envelope files already, while
	// the dead recipient's session still holds the message.
	testwait.Until(t, 10*time.Second, "the delivered recipients recorded in every envelope", func() bool {
		for _, id := range ids {
			env, err := r.Spool.Load(id)
			if err != nil || env.Recipients[1].State != spool.Delivered || env.Recipients[2].State != spool.Delivered {
				return false
			}
		}
		return true
	})
	select {
	case st := <-done:
		t.Fatalf("pass ended while the black hole holds connections: %+v\n%s", st, logs)
	default:
	}
	if n := accepted(); n != 3 {
		t.Fatalf("the dead domain got %d connections, want its cap of 3", n)
	}
	cancel()
	var st Stats
	select {
	case st = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("pass did not stop after its context ended")
	}
	if st.Delivered != 16 || st.Messages != 8 {
		t.Fatalf("stats %+v\n%s", st, logs)
	}
	for _, id := range ids {
		env, err := r.Spool.Load(id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if env.Recipients[0].State != spool.Pending || env.Recipients[1].State != spool.Delivered || env.Recipients[2].State != spool.Delivered {
			t.Fatalf("%s: %+v %+v %+v", id, env.Recipients[0], env.Recipients[1], env.Recipients[2])
		}
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	for rc, n := range sink.got {
		if n != 1 {
			t.Fatalf("%s got %d copies", rc, n)
		}
	}
}

// TestMixedDestinationsOneDSN: a message whose recipients fail for good at
// two domains and locally, worked as three items at once, still gets one
// DSN listing all three.
func TestMixedDestinationsOneDSN(t *testing.T) {
	r, b, _, _ := newRunner(t)
	r.Remote = &fakeRemote{res: func(rcpt string) remote.Result {
		return remote.Result{Rcpt: rcpt, Code: 550, Status: "5.1.1", Message: "550 5.1.1 unknown " + rcpt}
	}}
	id := submit(t, r, "alice@example.test", start, "x@one.test", "y@two.test", "nobody@example.test", "bob@example.test")
	st := pass(t, r)
	if st.Bounced != 3 || st.Notices != 1 || st.Delivered != 2 { // bob and the DSN to alice
		t.Fatalf("stats %+v", st)
	}
	if _, err := r.Spool.Load(id); err == nil {
		t.Fatal("message still queued")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.got["alice@example.test"]) != 1 {
		t.Fatalf("alice got %d DSNs", len(b.got["alice@example.test"]))
	}
	dsnText := b.got["alice@example.test"][0]
	for _, a := range []string{"x@one.test", "y@two.test", "nobody@example.test"} {
		if !strings.Contains(dsnText, "Final-Recipient: rfc822; "+a) {
			t.Fatalf("DSN lacks %s:\n%s", a, dsnText)
		}
	}
}
