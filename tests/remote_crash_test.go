package tests

import (
	"fmt"
	"math/rand"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"letterbox/pkg/spool"
)

// TestRemoteCrash kills queue-runner with SIGKILL at random moments while
// it delivers 1,000 messages to a remote sink: every message must arrive at
// least once (a kill between the peer's 250 and the envelope update may
// send one twice), and the spool must end empty.
func TestRemoteCrash(t *testing.T) {
	r := newRemoteSetup(t)
	const n = 1000
	start := time.Now()
	sp, err := spool.Open(r.e.Spool)
	must(t, err)
	// Concurrent submissions share the spool's commits.
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				env := &spool.Envelope{From: "demo@example.test", Arrived: time.Now(),
					Recipients: []*spool.Recipient{{Address: fmt.Sprintf("rcpt%d@remote.test", i%7), State: spool.Pending}}}
				if _, err := sp.Submit(env, strings.NewReader(qMsg(i))); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	t.Logf("%d messages queued in %v", n, time.Since(start))
	rng := rand.New(rand.NewSource(3))
	// Kills that landed while the runner held a message's lock (mid-work).
	kills, midMessage := 0, 0
	// With at most this many messages in flight, a kill between a peer's
	// 250 and the envelope update repeats at most this many.
	const concurrency = 8
	const roundTimeout = time.Minute
	args := append(append([]string{}, r.args...), "--log-level", "error", "--concurrency", fmt.Sprint(concurrency))
	for round := 0; round < 400 && !qSpoolEmpty(t, r.e); round++ {
		// Kill after a random number of further arrivals, so the runner
		// dies in the middle of its work whatever the machine's speed.
		target := len(r.sink.messages()) + 1 + rng.Intn(150)
		c := r.e.cmd("queue-runner", args...)
		must(t, c.Start())
		deadline := time.Now().Add(roundTimeout)
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
	watch:
		for {
			select {
			case <-done:
				break watch
			default:
			}
			if len(r.sink.messages()) >= target {
				// A random extra moment: mid-transaction, mid-update.
				time.Sleep(time.Duration(rng.Intn(3000)) * time.Microsecond)
				if holdsFlock(t, c.Process.Pid) {
					midMessage++
				}
				c.Process.Signal(syscall.SIGKILL)
				<-done
				kills++
				break
			}
			if time.Now().After(deadline) {
				c.Process.Kill()
				<-done
				t.Fatalf("round %d: the sink got %d messages, not %d, within %v", round, len(r.sink.messages()), target, roundTimeout)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	t.Logf("%d kills in %v", kills, time.Since(start))
	r.run(t, "flush") // a last pass nobody kills
	for _, sub := range []string{"env", "data"} {
		if ents := mustReadDir(t, filepath.Join(r.e.Spool, sub)); len(ents) != 0 {
			t.Fatalf("%d files left in %s/ after the last pass", len(ents), sub)
		}
	}
	seen := map[int]int{}
	for _, m := range r.sink.messages() {
		i := strings.Index(m.Data, "Subject: test ")
		if i < 0 {
			t.Fatalf("unexpected message at the sink: %q", m.Data)
		}
		var k int
		if _, err := fmt.Sscanf(m.Data[i:], "Subject: test %d", &k); err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(m.Data, fmt.Sprintf("end-of-message-%d\r\n", k)) {
			t.Fatalf("message %d arrived truncated", k)
		}
		if want := fmt.Sprintf("rcpt%d@remote.test", k%7); len(m.Rcpts) != 1 || m.Rcpts[0] != want {
			t.Fatalf("message %d went to %v, want %s", k, m.Rcpts, want)
		}
		seen[k]++
	}
	dups := 0
	for i := 0; i < n; i++ {
		if seen[i] == 0 {
			t.Errorf("message %d lost", i)
		}
		dups += max(seen[i]-1, 0)
	}
	t.Logf("%d kills (%d while a message was locked), %d duplicates of %d messages", kills, midMessage, dups, n)
	if kills == 0 || midMessage == 0 {
		t.Fatalf("%d kills, %d of them while a message was locked: the test proved nothing", kills, midMessage)
	}
	if dups > concurrency*kills {
		t.Fatalf("%d duplicates for %d kills: at most %d per kill (the messages in flight)", dups, kills, concurrency)
	}
}
