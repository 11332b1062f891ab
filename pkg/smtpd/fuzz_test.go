package smtpd

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Seeds live in testdata/smtpd/ at the top of the module and run as normal
// tests; `go test -fuzz` explores from them.

// FuzzParseParams: never panics, and parameters with control characters
// are refused (they would reach the envelope).
func FuzzParseParams(f *testing.F) {
	for _, seed := range []string{"", " SIZE=100 BODY=8BITMIME", " SMTPUTF8", " =x", " A=b=c", " X=\x00", " X=\r\nRCPT"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parseParams(s)
		if err != nil {
			return
		}
		if strings.ContainsAny(s, "\r\n\x00") {
			t.Fatalf("%q: params with control characters accepted: %v", s, p)
		}
		for k := range p {
			if k != strings.ToUpper(k) || k == "" {
				t.Fatalf("%q: key %q", s, k)
			}
		}
	})
}

// refDot is the reference for dotReader, RFC 5321 § 4.5.2 read literally:
// lines end with CRLF and nothing else; the data ends at the first line that
// is exactly ".\r\n", and every other line loses a leading dot. It returns
// the unstuffed data and the rest of the input after the end.
func refDot(in []byte) (data, rest []byte, ok bool) {
	var out []byte
	for len(in) > 0 {
		i := bytes.Index(in, []byte("\r\n"))
		if i < 0 {
			return nil, nil, false
		}
		line := in[:i+2]
		in = in[i+2:]
		if string(line) == ".\r\n" {
			return out, in, true
		}
		if line[0] == '.' {
			line = line[1:]
		}
		out = append(out, line...)
	}
	return nil, nil, false
}

// refNormalize is what bare-newline = normalize makes of the data that
// refDot found: lines end at every LF, a bare LF is stored as CRLF, and a
// leading dot is removed from every line (only the end is tied to CRLF).
func refNormalize(in []byte) []byte {
	var out []byte
	for len(in) > 0 {
		i := bytes.IndexByte(in, '\n')
		line := in
		if i >= 0 {
			line, in = in[:i+1], in[i+1:]
		} else {
			in = nil
		}
		if line[0] == '.' {
			line = line[1:]
		}
		if n := len(line); n > 0 && line[n-1] == '\n' && (n == 1 || line[n-2] != '\r') {
			out = append(append(out, line[:n-1]...), '\r', '\n')
			continue
		}
		out = append(out, line...)
	}
	return out
}

// FuzzDotReader: the data ends exactly where the reference says, whatever
// bare CRs and LFs surround it and in both bare-newline modes, so the
// dialog stays in step; and when the checker accepts, the result has only
// CRLF line ends and no NUL.
func FuzzDotReader(f *testing.F) {
	files, _ := filepath.Glob("../../testdata/smtpd/data/*")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, 16, false)
		f.Add(b, 16, true)
	}
	f.Fuzz(func(t *testing.T, in []byte, bufSize int, normalize bool) {
		if bufSize < 16 || bufSize > 4096 {
			bufSize = 16
		}
		br := bufio.NewReaderSize(bytes.NewReader(in), bufSize)
		dr := &dotReader{r: br, normalize: normalize}
		chk := newChecker(1<<20, maxTextLine, 3)
		got, err := io.ReadAll(&checkedReader{r: dr, c: chk})
		derr := dr.drain()
		want, rest, ok := refDot(in)
		if !ok {
			if derr == nil {
				t.Fatalf("%q: end of data found where there is none", in)
			}
			return
		}
		if derr != nil {
			t.Fatalf("%q: %v", in, derr)
		}
		left, _ := io.ReadAll(br)
		if !bytes.Equal(left, rest) {
			t.Fatalf("%q: left %q, want %q", in, left, rest)
		}
		if normalize {
			// The data before the end, as a normalizing server stores it.
			want = refNormalize(in[:len(in)-len(rest)-3])
		}
		if err == nil {
			if !bytes.Equal(got, want) {
				t.Fatalf("%q: data %q, want %q", in, got, want)
			}
			if bytes.IndexByte(got, 0) >= 0 || bytes.Count(got, []byte("\n")) != bytes.Count(got, []byte("\r\n")) || bytes.Count(got, []byte("\r")) != bytes.Count(got, []byte("\r\n")) {
				t.Fatalf("%q: checker let %q through", in, got)
			}
		}
	})
}

// FuzzLFNormalizer: BDAT's normalizer gives the same bytes however the
// chunks are cut.
func FuzzLFNormalizer(f *testing.F) {
	f.Add([]byte("a\nb\r\nc\rd\n"), 1)
	f.Add([]byte("\r\n\n\r"), 2)
	f.Fuzz(func(t *testing.T, in []byte, cut int) {
		var whole lfNormalizer
		want := append([]byte(nil), whole.normalize(in)...)
		if cut < 0 || cut > len(in) {
			cut = len(in) / 2
		}
		var z lfNormalizer
		got := append([]byte(nil), z.normalize(in[:cut])...)
		got = append(got, z.normalize(in[cut:])...)
		if !bytes.Equal(got, want) {
			t.Fatalf("%q cut at %d: %q, want %q", in, cut, got, want)
		}
		if bytes.Count(want, []byte("\n")) != bytes.Count(want, []byte("\r\n")) {
			t.Fatalf("%q: bare LF left in %q", in, want)
		}
	})
}

// FuzzChecker: the checker's verdict on data cut into writes anywhere is
// the verdict of its byte-by-byte rules on the whole (write's line-at-a-time
// fast path decides nothing scan would decide otherwise).
func FuzzChecker(f *testing.F) {
	files, _ := filepath.Glob("../../testdata/smtpd/data/*")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, 7, 40)
	}
	f.Add([]byte("Received: x\r\nReceived: y\r\n\r\nbody\r\nline\r\n"), 3, 1)
	f.Add([]byte("a: b\r\n\r\nok\r\nbare\rcr\r\n"), 10, 0)
	f.Add([]byte("a: b\r\n\r\n"+strings.Repeat("x", 40)+"\r\nnul\x00\r\n"), 9, 30)
	f.Fuzz(func(t *testing.T, in []byte, cut1, cut2 int) {
		const maxLine, maxReceived = 32, 2 // small, so the fuzzer reaches them
		ref := newChecker(1<<20, maxLine, maxReceived)
		ref.size = int64(len(in))
		ref.scan(in)
		ref.finish()
		if cut1 < 0 || cut1 > len(in) {
			cut1 = len(in) / 3
		}
		if cut2 < cut1 || cut2 > len(in) {
			cut2 = cut1 + (len(in)-cut1)/2
		}
		c := newChecker(1<<20, maxLine, maxReceived)
		c.write(in[:cut1])
		c.write(in[cut1:cut2])
		c.write(in[cut2:])
		c.finish()
		if (c.err == nil) != (ref.err == nil) || c.err != nil && *c.err != *ref.err {
			t.Fatalf("%q cut at %d, %d: %v, want %v", in, cut1, cut2, c.err, ref.err)
		}
		if c.err == nil && (c.body != ref.body || c.received != ref.received || c.lineLen != ref.lineLen || c.cr != ref.cr) {
			t.Fatalf("%q cut at %d, %d: state %+v, want %+v", in, cut1, cut2, *c, *ref)
		}
	})
}
