package pop3

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"letterbox/pkg/maildir"
)

// BenchmarkOpenMaildir: what a login costs on a 10,000-message Maildir
// (bench/pop3.sh's mailbox, beside Dovecot): the lock, the listing, a
// size for each message (from the ,W= in its name, as deliver writes
// them) and the UIDLs. The mailbox lives in the test's temporary
// directory (TMPDIR picks the file system). Run with
// go test -bench OpenMaildir -benchmem ./pkg/pop3.
func BenchmarkOpenMaildir(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "Maildir")
	if err := maildir.Create(dir); err != nil {
		b.Fatal(err)
	}
	const msgs = 10000
	for i := 0; i < msgs; i++ {
		name := fmt.Sprintf("%d.M%dP1V1I%d.bench,S=10240,W=10400", 1700000000+i, i, i)
		if err := os.WriteFile(filepath.Join(dir, "new", name), []byte("x"), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, err := OpenMaildir(dir, false)
		if err != nil {
			b.Fatal(err)
		}
		if n := len(d.(*maildirDrop).info); n != msgs {
			b.Fatalf("%d messages listed, want %d", n, msgs)
		}
		d.Close()
	}
}
