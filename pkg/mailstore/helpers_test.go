package mailstore

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"letterbox/pkg/maildir"
)

// logBuf collects a store's log lines for tests to check.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testLogger(l *logBuf) *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

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

// openAlone opens root with state of its own, shared with no other Store:
// as another process would.
func openAlone(t testing.TB, root string, log *logBuf) *Store {
	t.Helper()
	if log == nil {
		log = &logBuf{}
	}
	s, err := Open(Options{Root: root}) // creates the Maildir
	must(t, err)
	s.Close()
	a := &account{root: root, log: testLogger(log), folders: map[string]*folder{}, refs: 1}
	alone := &Store{acc: a}
	t.Cleanup(func() { alone.Close() })
	return alone
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

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }

// withDates returns snap with the internal dates it lacks (a first SELECT
// leaves those of new mail unread) read through v.InternalDates, as the
// protocol does; a message whose date cannot be read fails the test.
func withDates(t testing.TB, v *View, snap Snapshot) Snapshot {
	t.Helper()
	msgs := slices.Clone(snap.Msgs)
	var uids []uint32
	for _, m := range msgs {
		uids = append(uids, m.UID)
	}
	dates, err := v.InternalDates(uids)
	must(t, err)
	for i := range msgs {
		if msgs[i].InternalDate.IsZero() {
			if dates[i].IsZero() {
				t.Fatalf("UID %d: no date", msgs[i].UID)
			}
			msgs[i].InternalDate = dates[i]
		} else if !dates[i].Equal(msgs[i].InternalDate) {
			t.Errorf("UID %d: InternalDates %v, snapshot %v", msgs[i].UID, dates[i], msgs[i].InternalDate)
		}
	}
	snap.Msgs = msgs
	return snap
}
