package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"letterbox/pkg/internal/testwait"
	"letterbox/pkg/maildir"
	"letterbox/pkg/route"
	"letterbox/pkg/spool"
	"letterbox/pkg/users"
)

// TestDeliveryFlushedBeforeRemoval: deliveries of several messages into
// one Maildir share the fsyncs of its new/ (maildir.DirSyncer), and still
// no message leaves the spool before an fsync of new/ that began after
// its link had ended. The first flush is held until every worker has
// linked its message and waits: none of those messages may have left the
// spool meanwhile; and at the end of every flush, each message in new/
// that no ended flush covers is still in the spool. The strace tests in
// tests/ (TestDurabilityQueue*) check the same order on the real calls.
func TestDeliveryFlushedBeforeRemoval(t *testing.T) {
	r, _, _, _ := newRunner(t)
	const workers, msgs = 4, 10
	r.Workers = workers
	md := filepath.Join(t.TempDir(), "Maildir")
	if err := maildir.Create(md); err != nil {
		t.Fatal(err)
	}
	envDir := filepath.Join(r.Spool.Dir, "env")
	// The message's queue id is its body, so a file in new/ names the
	// envelope that must outlive its flush.
	idOf := func(name string) string {
		b, err := os.ReadFile(filepath.Join(md, "new", name))
		if err != nil {
			t.Error(err)
			return ""
		}
		return strings.TrimSpace(string(b[strings.LastIndex(string(b), "\n\n")+2:]))
	}
	var mu sync.Mutex
	var problems []string
	covered := map[string]bool{} // in new/ at the start of a flush that ended
	var running []string         // in new/ at the start of the running flush
	flushes, joins := 0, 0
	hold := make(chan struct{})
	// unflushedStillQueued: each message in new/ that no ended flush
	// covers is still in env/; mu held.
	unflushedStillQueued := func(when string) {
		ents, _ := os.ReadDir(filepath.Join(md, "new"))
		for _, e := range ents {
			if covered[e.Name()] {
				continue
			}
			id := idOf(e.Name())
			if _, err := os.Lstat(filepath.Join(envDir, id)); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %s left the spool before a flush of its link into new/ ended (%v)", when, id, err))
			}
		}
	}
	ds := &maildir.DirSyncer{Hook: func(ev string) {
		mu.Lock()
		n := 0
		switch ev {
		case "join":
			joins++
		case "flush":
			flushes++
			n = flushes
			running = running[:0]
			ents, _ := os.ReadDir(filepath.Join(md, "new"))
			for _, e := range ents {
				running = append(running, e.Name())
			}
		case "flush done":
			unflushedStillQueued("at the end of flush " + strconv.Itoa(flushes))
			for _, name := range running {
				covered[name] = true
			}
		}
		mu.Unlock()
		if n == 1 {
			<-hold
		}
	}}
	r.Owners.DirSync = ds
	self := &users.User{Name: "bob@example.test", UID: strconv.Itoa(os.Getuid()), GID: strconv.Itoa(os.Getgid())}
	r.deliverLocal = func(ctx context.Context, d route.Destination, sender string, rd io.Reader) error {
		// The mailbox is this process's own, so Owners delivers in-process
		// (as root too): through ds.
		d.Path, d.User = md, self
		return r.Owners.Deliver(ctx, d, sender, rd)
	}
	for i := 0; i < msgs; i++ {
		env := &spool.Envelope{ID: spool.NewID(), From: "alice@example.test", Arrived: start,
			Recipients: []*spool.Recipient{{Address: "bob@example.test", State: spool.Pending}}}
		if _, err := r.Spool.Submit(env, strings.NewReader("Subject: m\n\n"+env.ID+"\n")); err != nil {
			t.Fatal(err)
		}
	}
	passed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), passTimeout)
		defer cancel()
		_, err := r.Pass(ctx, false)
		passed <- err
	}()
	testwait.Until(t, 20*time.Second, "every worker linked its message, the first flush held", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return flushes == 1 && joins >= workers-1
	})
	mu.Lock()
	if n := len(newNamesIn(t, md)); n != workers {
		t.Errorf("%d messages in new/ while the first flush is held, want %d", n, workers)
	}
	unflushedStillQueued("while the first flush is held")
	mu.Unlock()
	close(hold)
	if err := <-passed; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Error(p)
	}
	if n := len(newNamesIn(t, md)); n != msgs {
		t.Fatalf("%d messages delivered, want %d", n, msgs)
	}
	if ents, _ := r.Spool.Scan(); len(ents) != 0 {
		t.Fatalf("%d messages still queued", len(ents))
	}
	if flushes >= msgs {
		t.Errorf("%d flushes of new/ for %d deliveries: none shared", flushes, msgs)
	}
}

func newNamesIn(t *testing.T, md string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(md, "new"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestDaemonRemovalsFlushedInBatches: the daemon's deliveries do not wait
// for the fsync of env/ that makes their removals durable — messages leave
// the spool while one is held — and the removals made while one ran are
// covered by one that begins after them: here the daemon's last one, when
// it stops while the first is still running.
func TestDaemonRemovalsFlushedInBatches(t *testing.T) {
	r, b, _, logs := newRunner(t)
	r.Now = nil // the daemon sleeps on the real clock
	r.Interval = time.Minute
	r.Workers = 4
	envDir := filepath.Join(r.Spool.Dir, "env")
	var mu sync.Mutex
	var starts []int // messages in env/ as each flush began
	stopping := false
	hold := make(chan struct{})
	r.flushRemovals = func() error {
		ents, err := os.ReadDir(envDir)
		mu.Lock()
		starts = append(starts, len(ents))
		n := len(starts)
		mu.Unlock()
		if n == 1 {
			<-hold
		}
		if err != nil {
			return err
		}
		return r.Spool.SyncRemovals()
	}
	r.daemonHook = func(ev string) {
		if ev == "stopping" {
			mu.Lock()
			stopping = true
			mu.Unlock()
		}
	}
	const msgs = 8
	now := time.Now()
	for i := 0; i < msgs; i++ {
		submit(t, r, "alice@example.test", now, fmt.Sprintf("u%d@example.test", i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- r.Daemon(ctx) }()
	testwait.Until(t, 20*time.Second, "every message delivered and out of env/ while the first fsync of env/ is held", func() bool {
		ents, _ := os.ReadDir(envDir)
		mu.Lock()
		defer mu.Unlock()
		return len(starts) == 1 && len(ents) == 0
	})
	cancel()
	testwait.Until(t, 20*time.Second, "the daemon stopping", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return stopping
	})
	close(hold)
	select {
	case err := <-stopped:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("daemon did not stop\n%s", logs)
	}
	b.mu.Lock()
	delivered := len(b.got)
	b.mu.Unlock()
	if delivered != msgs {
		t.Fatalf("%d recipients delivered, want %d", delivered, msgs)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(starts) != 2 || starts[1] != 0 {
		t.Fatalf("fsyncs of env/ began with %v messages queued: want two, the last with none left (covering every removal)", starts)
	}
}

// BenchmarkPassMaildir: one pass delivering b.N messages of 10 KB into one
// Maildir with 4 workers, each delivery fsyncing new/ on its own ("own")
// or sharing the fsyncs (maildir.DirSyncer, as queue-runner does); the
// pass's removals get one fsync of env/ either way. The spool and the
// Maildir live under TMPDIR: TMPDIR=/var/tmp puts them on the disk.
func BenchmarkPassMaildir(b *testing.B) {
	body := strings.Repeat("a line of the body of the message, 72 octets long, padded out to that.\n", 140)
	self := &users.User{Name: "bob@example.test", UID: strconv.Itoa(os.Getuid()), GID: strconv.Itoa(os.Getgid())}
	for _, mode := range []string{"own", "shared"} {
		b.Run(mode, func(b *testing.B) {
			dir := b.TempDir()
			sp, err := spool.Open(filepath.Join(dir, "spool"))
			if err != nil {
				b.Fatal(err)
			}
			md := filepath.Join(dir, "Maildir")
			if err := maildir.Create(md); err != nil {
				b.Fatal(err)
			}
			r := &Runner{Spool: sp, Router: fakeRouter{}, Hostname: "mx.example.test", Workers: 4,
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			if mode == "shared" {
				r.Owners.DirSync = &maildir.DirSyncer{}
			}
			r.deliverLocal = func(ctx context.Context, d route.Destination, sender string, rd io.Reader) error {
				d.Path, d.User = md, self
				return r.Owners.Deliver(ctx, d, sender, rd)
			}
			for i := 0; i < b.N; i++ {
				env := &spool.Envelope{From: "alice@example.test", Arrived: time.Now(),
					Recipients: []*spool.Recipient{{Address: "bob@example.test", State: spool.Pending}}}
				if _, err := sp.Submit(env, strings.NewReader("Subject: m\n\n"+body)); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			st, err := r.Pass(context.Background(), false)
			b.StopTimer()
			if err != nil || st.Delivered != b.N {
				b.Fatalf("delivered %d of %d: %v", st.Delivered, b.N, err)
			}
		})
	}
}
