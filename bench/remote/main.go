// Command remote is bench/remote.sh's helper: it fills a letterbox spool
// with messages for a remote domain, or drives pkg/remote directly against
// a sink to measure the library without the queue around it.
//
//	remote fill -spool DIR -n N -size BYTES -to ADDR
//	remote direct -route HOST:PORT -n N -size BYTES -c CONCURRENCY
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"letterbox/pkg/remote"
	"letterbox/pkg/spool"
)

func message(i, size int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "From: bench@example.test\r\nTo: sink@remote.test\r\nSubject: bench %d\r\nMessage-ID: <bench-%d@example.test>\r\n\r\n", i, i)
	line := strings.Repeat("x", 76) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.String()
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: remote fill|direct [flags]")
		os.Exit(64)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("spool", "", "spool directory (fill)")
	n := fs.Int("n", 2000, "messages")
	size := fs.Int("size", 10240, "message size in bytes")
	to := fs.String("to", "sink@remote.test", "recipient")
	route := fs.String("route", "", "sink HOST:PORT (direct)")
	conc := fs.Int("c", 20, "concurrent deliveries (direct)")
	fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "fill":
		if err := fill(*dir, *n, *size, *to); err != nil {
			fmt.Fprintln(os.Stderr, "fill:", err)
			os.Exit(1)
		}
	case "direct":
		rate, err := direct(*route, *n, *size, *conc, *to)
		if err != nil {
			fmt.Fprintln(os.Stderr, "direct:", err)
			os.Exit(1)
		}
		fmt.Printf("%.0f\n", rate)
	default:
		fmt.Fprintln(os.Stderr, "usage: remote fill|direct [flags]")
		os.Exit(64)
	}
}

// fill submits n messages in parallel, as several smtpd sessions would.
func fill(dir string, n, size int, to string) error {
	sp, err := spool.Open(dir)
	if err != nil {
		return err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1))
				if i > n {
					return
				}
				env := &spool.Envelope{From: "bench@example.test", Arrived: time.Now(),
					Recipients: []*spool.Recipient{{Address: to, State: spool.Pending}}}
				if _, err := sp.Submit(env, strings.NewReader(message(i, size))); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// direct delivers n messages through pkg/remote with conc at once and
// returns messages per second; any message not accepted is an error.
func direct(route string, n, size, conc int, to string) (float64, error) {
	r, err := remote.ParseRoute("*=" + route)
	if err != nil {
		return 0, err
	}
	cl, err := remote.New(remote.Config{Helo: "bench.example.test", Routes: []remote.Route{r},
		DNS: "127.0.0.1:1", Concurrency: conc, PerDestination: conc})
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	domain := to[strings.LastIndexByte(to, '@')+1:]
	var next atomic.Int64
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1))
				if i > n {
					return
				}
				m := message(i, size)
				res, err := cl.Deliver(context.Background(), domain, "bench@example.test", []string{to},
					func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(m)), nil })
				if err != nil || !res[0].Delivered() {
					failed.Add(1)
					if err == nil {
						err = fmt.Errorf("%+v", res[0])
					}
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if f := failed.Load(); f > 0 {
		return 0, fmt.Errorf("%d of %d not delivered, first: %v", f, n, firstErr.Load())
	}
	return float64(n) / el.Seconds(), nil
}
