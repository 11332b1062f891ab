package tests

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
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

	for i := 0; i < 8; i++ {
		qSubmit(t, e, "alice@example.test", []string{fmt.Sprintf("u%d@dead.test", i)}, qMsg(i))
	}
	for i := 0; i < 20; i++ {
		qSubmit(t, e, "alice@example.test", []string{fmt.Sprintf("u%d@sink.test", i)}, qMsg(100+i))
	}
	for i := 0; i < 2; i++ {
		qSubmit(t, e, "alice@example.test", []string{"bob@example.test"}, qMsg(200+i))
	}

	c := e.cmd("queue-runner", "--route", "dead.test="+hole.Addr().String(), "--route", "sink.test="+sinkAddr,
		"--concurrency", "4")
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

	waitFor(t, 20*time.Second, "20 messages at the working domain's MX", func() bool { return len(sink.messages()) == 20 })
	waitFor(t, 10*time.Second, "the local messages", func() bool {
		return qCount(t, qMailbox(e, "bob")) == 2
	})
	select {
	case <-exited:
		t.Fatal("the pass ended although the dead domain's sessions cannot have")
	default:
	}
	mu.Lock()
	n := len(held)
	mu.Unlock()
	if n != 3 {
		t.Fatalf("the dead domain got %d connections; want 3 (--concurrency 4 leaves one slot for the others)", n)
	}

	must(t, c.Process.Signal(syscall.SIGTERM))
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("queue-runner did not stop on SIGTERM")
	}
	envs, err := os.ReadDir(filepath.Join(e.Spool, "env"))
	must(t, err)
	if len(envs) != 8 {
		t.Fatalf("%d messages queued after the pass; want the 8 for the dead domain", len(envs))
	}
}
