package mime

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzLimits are small so that the fuzzer reaches them.
var fuzzLimits = Limits{MaxDepth: 6, MaxParts: 40, MaxHeaderBytes: 2048, MaxHeaderLines: 20}

// FuzzWalk: any input parses without panic, within the limits, and the
// unpacked files stay inside the directory under safe names.
func FuzzWalk(f *testing.F) {
	for _, p := range corpus(f) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("Content-Type: multipart/mixed; boundary=a\n\n--a\n--a--"))
	f.Add([]byte("begin 644 x\n#86)C\n`\nend\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		parts, _, err := List(bytes.NewReader(data), fuzzLimits)
		if err != nil && err != ErrEmpty {
			t.Fatalf("List: %v", err)
		}
		if len(parts) > fuzzLimits.MaxParts {
			t.Fatalf("%d parts over the limit %d", len(parts), fuzzLimits.MaxParts)
		}
		for _, p := range parts {
			if p.Depth > fuzzLimits.MaxDepth+1 {
				t.Fatalf("part %s at depth %d", p.ID, p.Depth)
			}
		}
		checkBounds(t, data, parts)
		// os.MkdirTemp, not t.TempDir: cheaper per fuzz iteration
		dir, err := os.MkdirTemp("", "mimefuzz")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		_, err = Unpack(bytes.NewReader(data), UnpackOptions{Dir: dir, All: true, Lim: fuzzLimits,
			Wrote: func(p string) {
				if !strings.HasPrefix(p, dir+"/") || strings.Contains(p[len(dir)+1:], "/") {
					t.Fatalf("wrote %q outside %s", p, dir)
				}
			}})
		if err != nil && err != ErrEmpty {
			t.Fatalf("Unpack: %v", err)
		}
	})
}

// FuzzSafeName: the result is always a harmless base name.
func FuzzSafeName(f *testing.F) {
	for _, s := range []string{"../../etc/passwd", "/abs", "con", "a\x00b", "\n", ".x", "-x", "é\u202e", strings.Repeat("a", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := SafeName(s)
		if n == "" {
			return
		}
		if strings.ContainsAny(n, "/\\") || n == "." || n == ".." || n[0] == '.' || n[0] == '-' ||
			len(n) > MaxNameBytes || !utf8.ValidString(n) || strings.IndexFunc(n, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
			t.Fatalf("SafeName(%q) = %q", s, n)
		}
	})
}

// FuzzRoundTrip: whatever bytes are attached come back identical.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("text\r\nwith CRLF\r\n"), "a.txt")
	f.Add([]byte{0, 1, 2, 255}, "b.bin")
	f.Add([]byte("From x\n.\n=\t \n"), "c")
	f.Add([]byte(""), "ü.txt")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		if SafeName(name) == "" {
			name = "x"
		}
		var msg bytes.Buffer
		if err := Pack(&msg, PackOptions{Attachments: []Attachment{{Name: name, Reader: bytes.NewReader(data)}}}); err != nil {
			t.Fatal(err)
		}
		var got []byte
		n := 0
		err := Walk(bytes.NewReader(msg.Bytes()), DefaultLimits, Handler{Begin: func(p *Part) io.Writer {
			if p.Container {
				return nil
			}
			n++
			if p.Name != strings.ToValidUTF8(name, "\uFFFD") && p.Name != name {
				t.Errorf("name %q came back as %q", name, p.Name)
			}
			return writerFunc(func(b []byte) (int, error) { got = append(got, b...); return len(b), nil })
		}})
		if err != nil || n != 1 || !bytes.Equal(got, data) {
			t.Fatalf("round trip of %q: got %q (%d parts, %v)\n%s", data, got, n, err, msg.String())
		}
	})
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(b []byte) (int, error) { return w(b) }

// checkBounds: every part lies inside the input, its body inside its own
// extent, a leaf's body is exactly its Size, Lines counts its line breaks,
// and a body that ends before the end of input ends at a line break
// followed by a boundary line.
func checkBounds(t *testing.T, data []byte, parts []*Part) {
	t.Helper()
	for _, p := range parts {
		if p.Offset < 0 || p.Offset > p.BodyOffset || p.BodyOffset > p.End || p.End > int64(len(data)) {
			t.Fatalf("part %s: offsets %d %d %d outside 0..%d", p.ID, p.Offset, p.BodyOffset, p.End, len(data))
		}
		body := data[p.BodyOffset:p.End]
		if n := int64(bytes.Count(body, []byte{'\n'})); n != p.Lines {
			t.Fatalf("part %s: Lines %d, body has %d line breaks", p.ID, p.Lines, n)
		}
		if !p.Container && p.Header != nil && len(p.Header.Fields) > 0 && p.End-p.BodyOffset != p.Size && p.End > p.BodyOffset {
			t.Fatalf("part %s: body %d..%d is not its size %d", p.ID, p.BodyOffset, p.End, p.Size)
		}
		if rest := data[p.End:]; len(rest) > 0 && p.End > p.BodyOffset {
			if !bytes.HasPrefix(rest, []byte("\r\n--")) && !bytes.HasPrefix(rest, []byte("\n--")) {
				t.Fatalf("part %s ends at %d before %q, not at a boundary", p.ID, p.End, clipBytes(rest))
			}
		}
	}
}

func clipBytes(b []byte) []byte {
	if len(b) > 20 {
		return b[:20]
	}
	return b
}
