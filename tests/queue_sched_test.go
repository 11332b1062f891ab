package tests

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"letterbox/pkg/spool"
)

// TestQueueSchedDeadDestination: a cron pass with --concurrency 4 and 8
// messages queued first for a domain whose MX accepts TCP and never says a
// word: the 20 messages for a working domain and the local ones behind them
// are delivered in the same pass while the 8 hang; SIGTERM then ends the
// pass and the 8 stay queued.
func TestQueueSchedDeadDestination(t *testing.T) {
	e := newEnv(t)
	e.addUser("bob@example.test", "pw")
	sinkAddr := freeAddr(t, "127.0.0.1")
	sink := newRemoteSink(t, sinkAddr)

	hole, held := blackHoleMX(t)

	for i := 0; i < 8; i++ {
		qSubmit(t, e, "alice@example.test", []string{fmt.Sprintf("u%d@dead.test", i)}, qMsg(i))
	}
	for i := 0; i < 20; i++ {
		qSubmit(t, e, "alice@example.test", []string{fmt.Sprintf("u%d@sink.test", i)}, qMsg(100+i))
	}
	for i := 0; i < 2; i++ {
		qSubmit(t, e, "alice@example.test", []string{"bob@example.test"}, qMsg(200+i))
	}

	c, exited := startPass(t, e, "--route", "dead.test="+hole, "--route", "sink.test="+sinkAddr, "--concurrency", "4")

	waitFor(t, 20*time.Second, "20 messages at the working domain's MX", func() bool { return len(sink.messages()) == 20 })
	waitFor(t, 10*time.Second, "the local messages", func() bool {
		return qCount(t, qMailbox(e, "bob")) == 2
	})
	if n := held(); n != 3 {
		t.Fatalf("the dead domain got %d connections; want 3 (--concurrency 4 leaves one slot for the others)", n)
	}

	stopPass(t, c, exited)
	envs, err := os.ReadDir(filepath.Join(e.Spool, "env"))
	must(t, err)
	if len(envs) != 8 {
		t.Fatalf("%d messages queued after the pass; want the 8 for the dead domain", len(envs))
	}
}

// blackHoleMX listens on 127.0.0.3 and never says a word to the
// connections it accepts, as a host behind a broken firewall or an
// overloaded MX does. It returns its address and a count of the
// connections it holds.
func blackHoleMX(t *testing.T) (string, func() int) {
	t.Helper()
	hole, err := net.Listen("tcp", "127.0.0.3:0")
	must(t, err)
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		hole.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	return hole.Addr().String(), func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(held)
	}
}

// startPass starts one queue-runner pass with args, killed at the end of
// the test (its log shown when the test failed); exited is closed when it
// ends.
func startPass(t *testing.T, e *env, args ...string) (*exec.Cmd, chan struct{}) {
	t.Helper()
	c := e.cmd("queue-runner", args...)
	logs := &syncBuffer{}
	c.Stderr = logs
	must(t, c.Start())
	exited := make(chan struct{})
	go func() { c.Wait(); close(exited) }()
	t.Cleanup(func() {
		c.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("queue-runner log:\n%s", logs.String())
		}
	})
	return c, exited
}

// stopPass ends a pass that must still be running with SIGTERM.
func stopPass(t *testing.T, c *exec.Cmd, exited chan struct{}) {
	t.Helper()
	select {
	case <-exited:
		t.Fatal("the pass ended although the dead domain's sessions cannot have")
	default:
	}
	must(t, c.Process.Signal(syscall.SIGTERM))
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("queue-runner did not stop on SIGTERM")
	}
}

// TestQueueSchedMixedDestinations: 8 messages, each to a domain whose MX
// accepts TCP and never says a word, to a working domain and to a local
// user, one cron pass with --concurrency 4: each message's working-domain
// and local recipients are delivered (and recorded in its envelope) while
// its dead-domain recipient hangs, and the dead domain holds only its cap
// of 3 connections. After SIGTERM the 8 stay queued with only the
// dead-domain recipient pending.
func TestQueueSchedMixedDestinations(t *testing.T) {
	e := newEnv(t)
	e.addUser("bob@example.test", "pw")
	sinkAddr := freeAddr(t, "127.0.0.1")
	sink := newRemoteSink(t, sinkAddr)
	hole, held := blackHoleMX(t)
	var ids []string
	for i := 0; i < 8; i++ {
		ids = append(ids, qSubmit(t, e, "alice@example.test",
			[]string{fmt.Sprintf("u%d@dead.test", i), fmt.Sprintf("u%d@sink.test", i), "bob@example.test"}, qMsg(i)))
	}

	c, exited := startPass(t, e, "--route", "dead.test="+hole, "--route", "sink.test="+sinkAddr, "--concurrency", "4")

	waitFor(t, 20*time.Second, "8 messages at the working domain's MX", func() bool { return len(sink.messages()) == 8 })
	waitFor(t, 10*time.Second, "8 messages in bob's Maildir", func() bool { return qCount(t, qMailbox(e, "bob")) == 8 })
	sp, err := spool.Open(e.Spool)
	must(t, err)
	waitFor(t, 10*time.Second, "the delivered recipients recorded in the 8 envelopes", func() bool {
		for _, id := range ids {
			env, err := sp.Load(id)
			if err != nil || env.Recipients[1].State != spool.Delivered || env.Recipients[2].State != spool.Delivered {
				return false
			}
		}
		return true
	})
	if n := held(); n != 3 {
		t.Fatalf("the dead domain got %d connections; want 3 (--concurrency 4 leaves one slot for the others)", n)
	}
	for _, m := range sink.messages() {
		if len(m.Rcpts) != 1 || !strings.HasSuffix(m.Rcpts[0], "@sink.test") {
			t.Fatalf("the working domain's MX got recipients %v", m.Rcpts)
		}
	}

	stopPass(t, c, exited)
	for _, id := range ids {
		env, err := sp.Load(id)
		must(t, err)
		if r := env.Recipients; r[0].State != spool.Pending || r[1].State != spool.Delivered || r[2].State != spool.Delivered {
			t.Fatalf("%s after the pass: %+v %+v %+v", id, r[0], r[1], r[2])
		}
	}
}

// TestQueueSchedIndexKill: queue-runner killed with SIGKILL at moments
// spread over its pass (its scan, its index write) never leaves a schedule
// index that a later pass has to refuse: the index is replaced by rename,
// so it is the old one or the new one. And the pass after each kill still
// sees every message.
func TestQueueSchedIndexKill(t *testing.T) {
	e := newEnv(t)
	const n = 3000
	sp, err := spool.Open(e.Spool)
	must(t, err)
	next := time.Now().Add(time.Hour)
	for i := 0; i < n; i++ {
		// Written directly, without Submit's fsyncs: this test is about
		// the index, and a durable submission each would take minutes.
		id := spool.NewID()
		env := &spool.Envelope{ID: id, From: "alice@example.test", Arrived: time.Now(), Size: 10,
			Recipients: []*spool.Recipient{{Address: fmt.Sprintf("u%d@remote.test", i), State: spool.Pending, Attempts: 1, NextAttempt: next}}}
		must(t, os.WriteFile(filepath.Join(sp.Dir, "data", id), []byte(qMsg(i)), 0o600))
		p := filepath.Join(sp.Dir, "env", id)
		must(t, os.WriteFile(p, []byte(env.Format()), 0o600))
		must(t, os.Chtimes(p, next, next))
	}
	index := filepath.Join(e.Spool, "schedule")
	// How long a full pass takes here, to spread the kills over it (the
	// first run may include building the commands).
	qRun(t, e)
	os.Remove(index)
	t0 := time.Now()
	qRun(t, e)
	full := time.Since(t0)
	// Kills that landed before the pass ended, and while its index was
	// being written (its temporary file left behind).
	midPass, midWrite := 0, 0
	for i := 0; i < 12; i++ {
		if i%2 == 0 {
			os.Remove(index) // the next pass stats everything and writes it whole
		} else {
			// A changed envelope: the pass rewrites the index.
			ents, _ := os.ReadDir(filepath.Join(e.Spool, "env"))
			p := filepath.Join(e.Spool, "env", ents[i].Name())
			b, err := os.ReadFile(p)
			must(t, err)
			tmp := filepath.Join(e.Spool, "tmp", "rewrite")
			must(t, os.WriteFile(tmp, b, 0o600))
			must(t, os.Chtimes(tmp, next, next))
			must(t, os.Rename(tmp, p))
		}
		c := e.cmd("queue-runner")
		must(t, c.Start())
		time.Sleep(full * time.Duration(i+1) / 12)
		c.Process.Kill()
		if c.Wait() != nil {
			midPass++
		}
		if indexBeingWritten(e, c.Process.Pid) {
			midWrite++
		}

		_, errs, code := e.run("", "queue-runner")
		if code != 0 || strings.Contains(errs, "schedule index ignored") {
			t.Fatalf("kill %d (after %v): pass after it: exit %d\n%s", i, full*time.Duration(i+1)/12, code, errs)
		}
		if !strings.Contains(errs, fmt.Sprintf("queued=%d", n)) {
			t.Fatalf("kill %d: the pass after it did not see the %d messages:\n%s", i, n, errs)
		}
	}
	// Kills aimed at the index write: watch for its temporary file and
	// kill on sight, until one lands while it is there.
	for try := 0; midWrite == 0 && try < 20; try++ {
		os.Remove(index)
		c := e.cmd("queue-runner")
		must(t, c.Start())
		tmp := filepath.Join(e.Spool, "tmp", fmt.Sprintf("schedule.%d", c.Process.Pid))
		exited := make(chan struct{})
		go func() { c.Wait(); close(exited) }()
		deadline := time.Now().Add(time.Minute)
	watch:
		for {
			select {
			case <-exited:
				break watch
			default:
			}
			if _, err := os.Lstat(tmp); err == nil {
				c.Process.Kill()
				<-exited
				break
			}
			if time.Now().After(deadline) {
				c.Process.Kill()
				<-exited
				t.Fatalf("queue-runner still running after %v without writing its index", time.Minute)
			}
		}
		if indexBeingWritten(e, c.Process.Pid) {
			midWrite++
		}
		if _, errs, code := e.run("", "queue-runner"); code != 0 || strings.Contains(errs, "schedule index ignored") {
			t.Fatalf("aimed kill %d: pass after it: exit %d\n%s", try, code, errs)
		}
	}
	t.Logf("of the kills, %d landed mid-pass, %d while the index was being written", midPass, midWrite)
	if midPass == 0 || midWrite == 0 {
		t.Fatalf("%d kills landed mid-pass, %d during the index write: the test proved nothing", midPass, midWrite)
	}
}

// indexBeingWritten reports whether the queue-runner pid left its
// temporary schedule index (killed while writing it), and removes it.
func indexBeingWritten(e *env, pid int) bool {
	tmp := filepath.Join(e.Spool, "tmp", fmt.Sprintf("schedule.%d", pid))
	if _, err := os.Lstat(tmp); err != nil {
		return false
	}
	os.Remove(tmp)
	return true
}
