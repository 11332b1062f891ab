package mbox

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

type streamed struct{ from, body string }

// readStream reads data as a pipe would give it (no Content-Length
// checks); readStreamFile as a file (io.ReaderAt).
func readStream(t testing.TB, data string, f Format) ([]streamed, error) {
	t.Helper()
	return readFrom(t, struct{ io.Reader }{strings.NewReader(data)}, f)
}

func readStreamFile(t testing.TB, data string, f Format) ([]streamed, error) {
	t.Helper()
	return readFrom(t, strings.NewReader(data), f)
}

func readFrom(t testing.TB, r io.Reader, f Format) ([]streamed, error) {
	t.Helper()
	s, err := NewStream(r, f)
	if err != nil {
		t.Fatal(err)
	}
	var out []streamed
	for {
		from, r, err := s.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		b, err := io.ReadAll(r)
		out = append(out, streamed{from, string(b)})
		if err != nil {
			return out, err
		}
	}
}

// TestStreamQuoting: the two dialects differ in what a '>' before From
// means and in where a message starts.
func TestStreamQuoting(t *testing.T) {
	data := "From a@x Mon Nov 23 12:00:00 2026\nSubject: one\n\n>From quoted once\n>>From quoted twice\n> From not a From_ line\nFrom unquoted, no blank line before\n\n" +
		"From b@x Mon Nov 23 12:00:01 2026\r\nSubject: two\r\n\r\nbody\r\n\r\n"
	rd, err := readStream(t, data, Mboxrd)
	if err != nil {
		t.Fatal(err)
	}
	want := []streamed{
		{"From a@x Mon Nov 23 12:00:00 2026", "Subject: one\n\nFrom quoted once\n>From quoted twice\n> From not a From_ line\nFrom unquoted, no blank line before\n"},
		{"From b@x Mon Nov 23 12:00:01 2026", "Subject: two\n\nbody\n"},
	}
	if len(rd) != len(want) || rd[0] != want[0] || rd[1] != want[1] {
		t.Errorf("mboxrd:\n%q\nwant\n%q", rd, want)
	}
	o, err := readStream(t, data, Mboxo)
	if err != nil {
		t.Fatal(err)
	}
	wantO := []streamed{
		{"From a@x Mon Nov 23 12:00:00 2026", "Subject: one\n\nFrom quoted once\n>>From quoted twice\n> From not a From_ line\n"},
		{"From unquoted, no blank line before", ""},
		{"From b@x Mon Nov 23 12:00:01 2026", "Subject: two\n\nbody\n"},
	}
	if len(o) != len(wantO) || o[0] != wantO[0] || o[1] != wantO[1] || o[2] != wantO[2] {
		t.Errorf("mboxo:\n%q\nwant\n%q", o, wantO)
	}
}

// TestStreamContentLength: mutt and Dovecot write a Content-Length field
// and leave From_ lines in bodies unquoted; read from a file, a length the
// file bears out keeps such a body whole and as it is, and a length that
// does not fit is not trusted.
func TestStreamContentLength(t *testing.T) {
	body := "quoted? >From not by mutt\n\nFrom the body, unquoted\n"
	data := "From a@x Wed Jun  7 08:09:10 2023\nSubject: one\nContent-Length: " + strconv.Itoa(len(body)) + "\n\n" + body + "\n" +
		"From b@x Wed Jun  7 08:09:10 2023\nSubject: two\nContent-length: 0\n\n\n" +
		"From c@x Wed Jun  7 08:09:10 2023\nSubject: wrong\nContent-Length: 3\n\nlonger than 3\n\n" +
		"From d@x Wed Jun  7 08:09:10 2023\nSubject: last\nContent-Length: 4\n\nend\n"
	got, err := readStreamFile(t, data, Mboxrd)
	want := []streamed{
		{"From a@x Wed Jun  7 08:09:10 2023", "Subject: one\nContent-Length: " + strconv.Itoa(len(body)) + "\n\n" + body},
		{"From b@x Wed Jun  7 08:09:10 2023", "Subject: two\nContent-length: 0\n\n"},
		{"From c@x Wed Jun  7 08:09:10 2023", "Subject: wrong\nContent-Length: 3\n\nlonger than 3\n"},
		{"From d@x Wed Jun  7 08:09:10 2023", "Subject: last\nContent-Length: 4\n\nend\n"},
	}
	if err != nil || len(got) != len(want) {
		t.Fatalf("%d messages %v: %q", len(got), err, got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("#%d: %q, want %q", i, got[i], want[i])
		}
	}
	// Without the file (a pipe), lengths are not checked, so not used.
	if got, _ := readStream(t, data, Mboxrd); len(got) != 5 {
		t.Errorf("from a pipe: %d messages, want 5 (the unquoted From_ line splits)", len(got))
	}
}

// TestStreamMatchesScan: on the mbox files of testdata/, the mboxrd stream
// reads what Scan and Open (pop3d's reader) read.
func TestStreamMatchesScan(t *testing.T) {
	ents, err := os.ReadDir("../../testdata/mbox")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join("../../testdata/mbox", e.Name()))
		msgs, serr := Scan(bytes.NewReader(b))
		got, err := readStream(t, string(b), Mboxrd)
		if serr != nil {
			if !errors.Is(err, ErrNotMbox) {
				t.Errorf("%s: Scan %v, Stream %v", e.Name(), serr, err)
			}
			continue
		}
		if errors.Is(err, ErrTruncated) && b[len(b)-1] != '\n' {
			// Scan takes a last line without its line end; an import
			// must not (its reader gives what there is, then the error).
			err = nil
		}
		if err != nil || len(got) != len(msgs) {
			t.Fatalf("%s: %d messages %v, Scan %d", e.Name(), len(got), err, len(msgs))
		}
		for i, m := range msgs {
			body, _ := io.ReadAll(Open(bytes.NewReader(b), m))
			if got[i].from != m.From || got[i].body != string(body) {
				t.Errorf("%s #%d: %q %q, Scan %q %q", e.Name(), i, got[i].from, got[i].body, m.From, body)
			}
		}
	}
}

func TestStreamBadInput(t *testing.T) {
	for _, f := range []Format{Mboxo, Mboxrd} {
		if got, err := readStream(t, "", f); err != nil || len(got) != 0 {
			t.Errorf("%s: empty: %v %v", f, got, err)
		}
		if _, err := readStream(t, "Subject: not an mbox\n\nhello\n", f); !errors.Is(err, ErrNotMbox) {
			t.Errorf("%s: not an mbox: %v", f, err)
		}
		if _, err := readStream(t, "\x1f\x8b\x08\x00gzip", f); !errors.Is(err, ErrNotMbox) {
			t.Errorf("%s: binary: %v", f, err)
		}
		for _, cut := range []string{
			"From a Mon Nov 23 12:00:00 2026\nSubject: x\n\nbody cut he",
			"From a Mon Nov 23 12:00:00 2026\nSubject: x\n\nbody\n\nFrom b Mon Nov 23 12:00:00 2026\n",
			"From a Mon Nov 23 12:00:00 2026\nSubject: x\n\nbody\n\nFrom b Mon Nov 23 12:0",
		} {
			got, err := readStream(t, cut, f)
			if !errors.Is(err, ErrTruncated) {
				t.Errorf("%s: %q: %v %q", f, cut, err, got)
			}
		}
	}
	if _, err := NewStream(strings.NewReader(""), "mmdf"); err == nil {
		t.Error("unknown format accepted")
	}
}

// TestStreamManySmall: go-mbox reads ahead; every message still gets its
// own From_ line.
func TestStreamManySmall(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 3000; i++ {
		WriteMessage(&b, "s"+strings.Repeat("x", i%7)+"@x", time.Unix(int64(i), 0), strings.NewReader("S: "+strings.Repeat("y", i%50)+"\n"))
	}
	for _, f := range []Format{Mboxo, Mboxrd} {
		got, err := readStream(t, b.String(), f)
		if err != nil || len(got) != 3000 {
			t.Fatalf("%s: %d %v", f, len(got), err)
		}
		for i, m := range got {
			want := FromLine("s"+strings.Repeat("x", i%7)+"@x", time.Unix(int64(i), 0))
			if m.from != want || m.body != "S: "+strings.Repeat("y", i%50)+"\n" {
				t.Fatalf("%s #%d: %q %q", f, i, m.from, m.body)
			}
		}
	}
}

// bigMessage generates an mbox of one message with a body of n lines of
// 1000 bytes, without holding it.
type bigMessage struct {
	head []byte
	line []byte
	n    int
}

func (g *bigMessage) Read(p []byte) (int, error) {
	if len(g.head) > 0 {
		k := copy(p, g.head)
		g.head = g.head[k:]
		return k, nil
	}
	if g.n == 0 {
		return 0, io.EOF
	}
	k := 0
	for g.n > 0 && len(p)-k >= len(g.line) {
		k += copy(p[k:], g.line)
		g.n--
	}
	if k == 0 {
		k = copy(p, g.line[:len(p)])
		g.line = append(g.line[k:], g.line[:k]...) // rotate: the rest comes next
	}
	return k, nil
}

// TestStreamLargeMessage: a message of 64 MiB streams through either
// reader with a few hundred KiB allocated in all: no reader holds a
// message.
func TestStreamLargeMessage(t *testing.T) {
	const lines = 64 << 10 // of 1000 bytes (plus one of 24)
	for _, f := range []Format{Mboxo, Mboxrd} {
		line := []byte(strings.Repeat("z", 999) + "\n")
		g := &bigMessage{head: []byte("From a Mon Nov 23 12:00:00 2026\nSubject: big\n\n"), line: line, n: lines}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		s, _ := NewStream(g, f)
		_, r, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, r)
		runtime.ReadMemStats(&after)
		if err != nil || n != int64(lines*1000+len("Subject: big\n\n")) {
			t.Fatalf("%s: read %d %v", f, n, err)
		}
		if _, _, err := s.Next(); err != io.EOF {
			t.Errorf("%s: after the message: %v", f, err)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 2<<20 {
			t.Errorf("%s: %d bytes allocated to stream a message of %d", f, alloc, n)
		}
	}
}

func TestParseFromLine(t *testing.T) {
	local := func(y int, mo time.Month, d, h, mi, s int) time.Time {
		return time.Date(y, mo, d, h, mi, s, 0, time.Local)
	}
	for line, want := range map[string]time.Time{
		"From MAILER-DAEMON Fri Dec  4 20:31:59 2026":      local(2026, 12, 4, 20, 31, 59),
		"From a@b Mon Nov 23 12:00:00 2026":                local(2026, 11, 23, 12, 0, 0),
		"From a@b  Sat Jan  1 00:00:00 2000 +0100":         time.Date(2000, 1, 1, 0, 0, 0, 0, time.FixedZone("", 3600)),
		"From a@b Sat Jan  1 00:00:00 +0100 2000":          time.Date(2000, 1, 1, 0, 0, 0, 0, time.FixedZone("", 3600)),
		"From a@b Sat Jan 1 00:00 2000":                    local(2000, 1, 1, 0, 0, 0),
		"From a@b Sat, 1 Jan 2000 00:00:00 +0000":          time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		FromLine("x y@z", local(1999, 12, 31, 23, 59, 58)): local(1999, 12, 31, 23, 59, 58),
	} {
		_, got, ok := ParseFromLine(line)
		if !ok || !got.Equal(want) {
			t.Errorf("%q: %v %v, want %v", line, got, ok, want)
		}
	}
	for _, line := range []string{"From a@b", "From a@b yesterday", "Subject: x", "From "} {
		if _, _, ok := ParseFromLine(line); ok {
			t.Errorf("%q parsed", line)
		}
	}
}

// FuzzStream: neither reader panics on any input; an mbox written by
// WriteMessage reads back (mboxrd) as the bodies written, with LF line
// ends; and the mboxrd stream reads what Scan and Open read.
func FuzzStream(f *testing.F) {
	ents, _ := os.ReadDir("../../testdata/mbox")
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join("../../testdata/mbox", e.Name()))
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, fm := range []Format{Mboxo, Mboxrd} {
			readStream(t, string(data), fm)
			readStreamFile(t, string(data), fm) // Content-Length checked and used
		}
		if msgs, err := Scan(bytes.NewReader(data)); err == nil && len(msgs) > 0 && data[len(data)-1] == '\n' {
			got, err := readStream(t, string(data), Mboxrd)
			if err == nil {
				if len(got) != len(msgs) {
					t.Fatalf("%d messages, Scan %d", len(got), len(msgs))
				}
				for i, m := range msgs {
					body, _ := io.ReadAll(Open(bytes.NewReader(data), m))
					// Scan keeps a little more of a long From_ line.
					if !strings.HasPrefix(m.From, got[i].from) || got[i].body != string(body) {
						t.Fatalf("#%d: %q %q, Scan %q %q", i, got[i].from, got[i].body, m.From, body)
					}
				}
			}
		}
		if bytes.IndexByte(data, '\r') >= 0 || len(data) == 0 {
			return
		}
		var b bytes.Buffer
		for i := 0; i < 2; i++ {
			if err := WriteMessage(&b, "s@x", time.Unix(0, 0), bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
		}
		got, err := readStream(t, b.String(), Mboxrd)
		want := string(data)
		if !strings.HasSuffix(want, "\n") {
			want += "\n"
		}
		if err != nil || len(got) != 2 || got[0].body != want || got[1].body != want {
			t.Fatalf("round trip of %q: %q %v", data, got, err)
		}
	})
}
