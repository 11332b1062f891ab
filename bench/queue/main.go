// Command queue is bench/queue.sh's helper: it fills a spool with N
// deferred messages quickly (plain writes, no fsync: the benchmark measures
// reading the queue, not filling it), as queue-runner would have left them.
//
//	queue gen SPOOL N
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"letterbox/pkg/spool"
)

func main() {
	if len(os.Args) != 4 || os.Args[1] != "gen" {
		fmt.Fprintln(os.Stderr, "usage: queue gen SPOOL N")
		os.Exit(64)
	}
	n, err := strconv.Atoi(os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(64)
	}
	sp, err := spool.Open(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	now := time.Now()
	msg := []byte("From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: bench\r\n\r\n" +
		"A deferred message of a few hundred octets, as most mail is.\r\n")
	var wg sync.WaitGroup
	per := (n + 7) / 8
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w * per; i < (w+1)*per && i < n; i++ {
				id := spool.NewID()
				next := now.Add(time.Hour + time.Duration(i)*time.Millisecond)
				// One message in a hundred is for another domain, for
				// the listing by domain.
				dom := "remote.test"
				if i%100 == 50 {
					dom = "other.test"
				}
				env := &spool.Envelope{ID: id, From: "alice@example.test", Arrived: now.Add(-time.Hour), Size: int64(len(msg)),
					Recipients: []*spool.Recipient{{Address: fmt.Sprintf("user%d@%s", i, dom), State: spool.Pending,
						Attempts: 3, NextAttempt: next, LastError: "451 4.3.0 try again later"}}}
				if err := os.WriteFile(filepath.Join(sp.Dir, "data", id), msg, 0o600); err != nil {
					panic(err)
				}
				p := filepath.Join(sp.Dir, "env", id)
				if err := os.WriteFile(p, []byte(env.Format()), 0o600); err != nil {
					panic(err)
				}
				if err := os.Chtimes(p, env.Due(), env.Due()); err != nil {
					panic(err)
				}
			}
		}(w)
	}
	wg.Wait()
}
