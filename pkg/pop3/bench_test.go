package pop3

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	gomaildir "github.com/emersion/go-maildir"
	"golang.org/x/sys/unix"

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

// BenchmarkMaildirListing compares ways to take a login's listing of a
// 10,000-message Maildir (all in cur/, as after a first session) that
// leave out entries that are not regular files (issue 15): "typed" is
// maildir.List, whose entries carry the type the directory listing gave
// (d_type), no stat; "gomaildir-fstatat" is go-maildir's Walk of cur/ and
// the names of new/ (go-maildir lists new/ only by moving it into cur/),
// with an fstatat(AT_SYMLINK_NOFOLLOW) per entry to learn its type;
// "gomaildir-typed" is the Walk beside a typed listing for the types;
// "typed-unsorted" is maildir.List's typed listing without its sort (the
// go-maildir variants don't sort).
// Run with go test -run X -bench MaildirListing -benchmem ./pkg/pop3.
func BenchmarkMaildirListing(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "Maildir")
	if err := maildir.Create(dir); err != nil {
		b.Fatal(err)
	}
	const msgs = 10000
	for i := 0; i < msgs; i++ {
		name := fmt.Sprintf("%d.M%dP1V1I%d.bench,S=10240,W=10400:2,S", 1700000000+i, i, i)
		if err := os.WriteFile(filepath.Join(dir, "cur", name), []byte("x"), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	check := func(b *testing.B, n int, err error) {
		if err != nil {
			b.Fatal(err)
		}
		if n != msgs {
			b.Fatalf("%d messages listed, want %d", n, msgs)
		}
	}
	b.Run("typed", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			ms, err := maildir.List(dir)
			n := 0
			for _, m := range ms {
				if m.Type.IsRegular() {
					n++
				}
			}
			check(b, n, err)
		}
	})
	b.Run("typed-unsorted", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			n, err := listTyped(dir)
			check(b, n, err)
		}
	})
	b.Run("gomaildir-fstatat", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			n, err := listGoMaildirFstatat(dir)
			check(b, n, err)
		}
	})
	b.Run("gomaildir-typed", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			n, err := listGoMaildirTyped(dir)
			check(b, n, err)
		}
	})
}

// listTyped counts the regular files of cur/ and new/ as maildir.List
// finds them (a typed listing, the names parsed), without List's sort, to
// compare with the go-maildir variants, which don't sort either.
func listTyped(dir string) (int, error) {
	n := 0
	for _, sub := range []string{"cur", "new"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			return 0, err
		}
		for _, e := range ents {
			if _, _, _, ok := maildir.ParseName(e.Name()); ok && e.Type().IsRegular() {
				n++
			}
		}
	}
	return n, nil
}

// listGoMaildirFstatat counts the regular files of cur/ (go-maildir's
// Walk) and new/ (their names), each typed by an fstatat on the
// directory's descriptor without following a symlink.
func listGoMaildirFstatat(dir string) (int, error) {
	n := 0
	regular := func(d *os.File, name string) bool {
		var st unix.Stat_t
		return unix.Fstatat(int(d.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG
	}
	cur, err := os.Open(filepath.Join(dir, "cur"))
	if err != nil {
		return 0, err
	}
	defer cur.Close()
	prefix := len(cur.Name()) + 1
	err = gomaildir.Dir(dir).Walk(func(m *gomaildir.Message) error {
		if regular(cur, m.Filename()[prefix:]) {
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	nd, err := os.Open(filepath.Join(dir, "new"))
	if err != nil {
		return 0, err
	}
	defer nd.Close()
	names, err := nd.Readdirnames(-1)
	if err != nil {
		return 0, err
	}
	for _, name := range names {
		if _, _, _, ok := maildir.ParseName(name); ok && regular(nd, name) {
			n++
		}
	}
	return n, nil
}

// listGoMaildirTyped counts go-maildir's messages of cur/ that a typed
// listing of cur/ says are regular files, and new/'s typed entries.
func listGoMaildirTyped(dir string) (int, error) {
	ents, err := os.ReadDir(filepath.Join(dir, "cur"))
	if err != nil {
		return 0, err
	}
	regular := make(map[string]bool, len(ents))
	for _, e := range ents {
		regular[e.Name()] = e.Type().IsRegular()
	}
	n := 0
	prefix := len(filepath.Join(dir, "cur")) + 1
	err = gomaildir.Dir(dir).Walk(func(m *gomaildir.Message) error {
		if regular[m.Filename()[prefix:]] {
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	ents, err = os.ReadDir(filepath.Join(dir, "new"))
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		if _, _, _, ok := maildir.ParseName(e.Name()); ok && e.Type().IsRegular() {
			n++
		}
	}
	return n, nil
}

// BenchmarkWriteMessage: RETR's conversion of one message as bench/pop3.sh's
// mailbox holds them (10 KB, LF line ends, 72-octet lines, one in 20
// starting with a dot) into the session's 64 KiB writer: "new" is
// writeMessage, "readslice" the ReadSlice loop it replaced
// (writeMessageRef); "new-sized" is given the size, as RETR is for a
// message file, and skips the read that finds its end. Run with
// go test -run X -bench WriteMessage -benchmem ./pkg/pop3.
func BenchmarkWriteMessage(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("From: sender@example.org\nTo: bench@example.test\nSubject: message\nMessage-ID: <1@bench.example.org>\n\n")
	for i := 0; sb.Len() < 10240; i++ {
		if i%20 == 0 {
			sb.WriteString(".a line starting with a dot\n")
		}
		sb.WriteString(strings.Repeat("The quick brown fox jumps over the lazy dog. ", 2)[:71] + "\n")
	}
	msg := []byte(sb.String())
	w := bufio.NewWriterSize(io.Discard, 64*1024)
	for _, bc := range []struct {
		name  string
		fn    func(*bufio.Writer, io.Reader, int) (int64, error)
		sized bool
	}{{"readslice", writeMessageRef, false}, {"new", nil, false}, {"new-sized", nil, true}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			size := int64(-1)
			if bc.sized {
				size = int64(len(msg))
			}
			r := bytes.NewReader(msg)
			for i := 0; i < b.N; i++ {
				r.Reset(msg)
				var err error
				if bc.fn != nil {
					_, err = bc.fn(w, r, -1)
				} else {
					_, err = writeMessage(w, r, -1, size)
				}
				if err != nil {
					b.Fatal(err)
				}
				w.Flush()
			}
		})
	}
}

// BenchmarkRetr: one RETR of bench/pop3.sh's download, end to end through
// a session on loopback TCP: the command read, the message file opened,
// read and converted (or taken from the read-ahead), the reply written
// and read by a client that waits for each reply. The Maildir holds 1,000
// 10 KB messages; RETR goes round them. "one-session" is the inetd mode
// (waitConn: the wait in ppoll), "daemon" the poller's wait. Allocations
// are the server's and this client's (which allocates nothing per reply).
// Run with go test -run X -bench Retr -benchmem ./pkg/pop3.
func BenchmarkRetr(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "Maildir")
	if err := maildir.Create(dir); err != nil {
		b.Fatal(err)
	}
	var sb strings.Builder
	sb.WriteString("From: sender@example.org\nTo: bench@example.test\nSubject: message\n\n")
	for i := 0; sb.Len() < 10240; i++ {
		if i%20 == 0 {
			sb.WriteString(".a line starting with a dot\n")
		}
		sb.WriteString(strings.Repeat("The quick brown fox jumps over the lazy dog. ", 2)[:71] + "\n")
	}
	const msgs = 1000
	for i := 0; i < msgs; i++ {
		name := fmt.Sprintf("%d.M%dP1Q%d.bench", 1700000000+i, i, i)
		if err := os.WriteFile(filepath.Join(dir, "cur", name), []byte(sb.String()), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	for _, one := range []bool{true, false} {
		name := "daemon"
		if one {
			name = "one-session"
		}
		b.Run(name, func(b *testing.B) {
			drop, err := OpenMaildir(dir, false)
			if err != nil {
				b.Fatal(err)
			}
			srv := New(Config{Backend: &dropBackend{d: drop}, AuthFailureDelay: -1, SwitchProcess: one})
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan struct{})
			go func() { srv.Serve(l, false); close(done) }()
			defer func() { srv.Shutdown(time.Second); <-done }()
			conn, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			r := bufio.NewReaderSize(conn, 64*1024)
			cmd := func(s string) {
				io.WriteString(conn, s)
				if l, err := r.ReadSlice('\n'); err != nil || l[0] != '+' {
					b.Fatalf("%q: %q %v", s, l, err)
				}
			}
			cmd("") // the greeting
			cmd("USER alice@example.test\r\n")
			cmd("PASS secret pw\r\n")
			var line []byte
			b.ReportAllocs()
			b.SetBytes(int64(sb.Len()))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				line = strconv.AppendInt(append(line[:0], "RETR "...), int64(i%msgs+1), 10)
				cmd(string(append(line, '\r', '\n')))
				for {
					l, err := r.ReadSlice('\n')
					if err != nil {
						b.Fatal(err)
					}
					if len(l) == 3 && l[0] == '.' {
						break
					}
				}
			}
			b.StopTimer()
			cmd("QUIT\r\n")
		})
	}
}

// dropBackend is fakeBackend's login with a real maildrop.
type dropBackend struct {
	fakeBackend
	d Maildrop
}

func (b *dropBackend) Open(Location) (Maildrop, error) { return b.d, nil }
