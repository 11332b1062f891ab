package mailstore

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// benchMaildir makes a Maildir of n messages in cur/ named as deliver and
// Dovecot name them (,S= and ,W=), some with flags, directories dated a
// minute back (settled, as a folder nobody touched in the last seconds).
func benchMaildir(b *testing.B, n int) string { return benchMaildirIn(b, n, "cur") }

func benchMaildirIn(b *testing.B, n int, sub string) string {
	b.Helper()
	root := filepath.Join(b.TempDir(), "Maildir")
	for _, sub := range []string{"cur", "new", "tmp"} {
		must(b, os.MkdirAll(filepath.Join(root, sub), 0o700))
	}
	body := "From: a@example.org\nSubject: benchmark\n\n" + strings.Repeat("a line of text\n", 100)
	flags := []string{"", "S", "RS", "FS", "Sa"}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%d.M%dP%d.bench,S=%d,W=%d", 1700000000+i/100, i, 4242, len(body), len(body)+strings.Count(body, "\n"))
		if sub == "cur" {
			name += ":2," + flags[i%len(flags)]
		}
		must(b, os.WriteFile(filepath.Join(root, sub, name), []byte(body), 0o600))
	}
	must(b, os.WriteFile(filepath.Join(root, keywordsName), []byte("0 $Label1\n"), 0o600))
	settle(b, root)
	return root
}

// settle dates new/ and cur/ a minute back.
func settle(b testing.TB, root string) {
	old := time.Now().Add(-time.Minute)
	for _, sub := range []string{"cur", "new"} {
		must(b, os.Chtimes(filepath.Join(root, sub), old, old))
	}
}

// cpuTime is this process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter reports CPU time per operation besides wall time: on a shared
// machine the wall time says more about the neighbours than about us.
type cpuMeter struct {
	b     *testing.B
	total time.Duration
	start time.Duration
}

func (c *cpuMeter) begin() { c.start = cpuTime() }
func (c *cpuMeter) end()   { c.total += cpuTime() - c.start }
func (c *cpuMeter) report() {
	c.b.ReportMetric(float64(c.total.Microseconds())/1000/float64(c.b.N), "cpu-ms/op")
}

// forget drops this process's state of root (as a new process).
func forget(root string) {
	accounts.Lock()
	delete(accounts.m, root)
	accounts.Unlock()
}

func benchSelect(b *testing.B, root string) {
	s, err := Open(Options{Root: root})
	if err != nil {
		b.Fatal(err)
	}
	v, err := s.Select("INBOX", false)
	if err != nil {
		b.Fatal(err)
	}
	snap, err := v.Sync()
	if err != nil || len(snap.Msgs) != 10000 {
		b.Fatalf("%d messages, %v", len(snap.Msgs), err)
	}
	v.Close()
	s.Close()
}

// BenchmarkOpenFirst: SELECT of a 10,000-message folder never opened
// before: no uidlist, no cache (10,000 UIDs given, every file stat'ed).
func BenchmarkOpenFirst(b *testing.B) {
	root := benchMaildir(b, 10000)
	b.ReportAllocs()
	c := cpuMeter{b: b}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		os.Remove(filepath.Join(root, uidlistName))
		os.Remove(filepath.Join(root, cacheName))
		forget(root)
		b.StartTimer()
		c.begin()
		benchSelect(b, root)
		c.end()
	}
	c.report()
}

// BenchmarkOpenFirstNew: the same with the 10,000 messages in new/, as
// deliver leaves them (each taken into cur/).
func BenchmarkOpenFirstNew(b *testing.B) {
	b.ReportAllocs()
	c := cpuMeter{b: b}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		root := benchMaildirIn(b, 10000, "new")
		forget(root)
		b.StartTimer()
		c.begin()
		benchSelect(b, root)
		c.end()
	}
	c.report()
}

// BenchmarkOpenCached: SELECT by a new process of a folder with our cache
// (nothing changed since).
func BenchmarkOpenCached(b *testing.B) {
	root := benchMaildir(b, 10000)
	forget(root)
	benchSelect(b, root)
	settle(b, root)
	forget(root)
	benchSelect(b, root) // records the settled directories
	b.ReportAllocs()
	c := cpuMeter{b: b}
	b.ResetTimer()
	c.begin()
	for i := 0; i < b.N; i++ {
		forget(root)
		benchSelect(b, root)
	}
	c.end()
	c.report()
}

// BenchmarkOpenDovecot: SELECT of a folder Dovecot has numbered (uidlist
// there) but we never opened (no cache).
func BenchmarkOpenDovecot(b *testing.B) {
	root := benchMaildir(b, 10000)
	forget(root)
	benchSelect(b, root)
	b.ReportAllocs()
	c := cpuMeter{b: b}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		os.Remove(filepath.Join(root, cacheName))
		forget(root)
		b.StartTimer()
		c.begin()
		benchSelect(b, root)
		c.end()
	}
	c.report()
}

// BenchmarkSyncUnchanged: a session's Sync when nothing changed.
func BenchmarkSyncUnchanged(b *testing.B) {
	root := benchMaildir(b, 10000)
	forget(root)
	s, err := Open(Options{Root: root})
	must(b, err)
	defer s.Close()
	v, err := s.Select("INBOX", false)
	must(b, err)
	defer v.Close()
	settle(b, root)
	mustSync(b, v)
	b.ReportAllocs()
	c := cpuMeter{b: b}
	b.ResetTimer()
	c.begin()
	for i := 0; i < b.N; i++ {
		if _, err := v.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	c.end()
	c.report()
}
