// Package testwait gives the unit tests waits with their own deadlines: a
// wait that would hang (the code under test broke, a goroutine never
// answers) fails at once saying what it waited for, instead of hanging
// until go test's timeout kills the whole package.
package testwait

import (
	"sync"
	"testing"
	"time"
)

// Until polls cond every 10 ms until it is true; after d the test fails
// naming what.
func Until(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Recv receives from ch; after d the test fails naming what.
func Recv[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
		panic("unreachable")
	}
}

// Group waits for wg; after d the test fails naming what.
func Group(t testing.TB, wg *sync.WaitGroup, d time.Duration, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	Recv(t, done, d, what)
}
