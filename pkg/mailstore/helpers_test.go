package mailstore

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"letterbox/pkg/maildir"
)

// testStore opens a store on a fresh Maildir.
func testStore(t testing.TB) (*Store, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "Maildir")
	s, err := Open(Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, root
}

// reopen drops this process's shared state of root and opens it again, as
// another process would.
func reopen(t testing.TB, root string) *Store {
	t.Helper()
	accounts.Lock()
	if a := accounts.m[root]; a != nil {
		delete(accounts.m, root)
	}
	accounts.Unlock()
	s, err := Open(Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func deliver(t testing.TB, dir string, i int) string {
	t.Helper()
	p, err := maildir.Deliver(dir, strings.NewReader(fmt.Sprintf("Subject: m%d\n\nbody %d\n", i, i)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustSync(t testing.TB, v *View) Snapshot {
	t.Helper()
	s, err := v.Sync()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func uidsOf(s Snapshot) []uint32 {
	var u []uint32
	for _, m := range s.Msgs {
		u = append(u, m.UID)
	}
	return u
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
