package submission

import (
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// refFix is the reference for HeaderFixer, on the whole message at once:
// the missing fields go where the header ends, with an empty line after
// them when the body starts without one.
func refFix(in string, now time.Time) string {
	has := map[string]bool{}
	fields := func() string { return MissingFields(has, "mx.example.test", now) }
	started := false
	for i := 0; i < len(in); {
		j := strings.Index(in[i:], "\r\n")
		if j < 0 {
			l := in[i:]
			if len(l) <= maxHeaderLine && (started && IsContinuation(l) || IsFieldLine(l)) {
				if IsFieldLine(l) {
					has[FieldName(l)] = true
				}
				return in + "\r\n" + fields()
			}
			return in[:i] + fields() + "\r\n" + in[i:]
		}
		l := in[i : i+j]
		switch {
		case len(l)+2 > maxHeaderLine:
			return in[:i] + fields() + "\r\n" + in[i:]
		case l == "":
			return in[:i] + fields() + in[i:]
		case started && IsContinuation(l):
		case IsFieldLine(l):
			started = true
			has[FieldName(l)] = true
		default:
			return in[:i] + fields() + "\r\n" + in[i:]
		}
		i += j + 2
	}
	return in + fields()
}

// FuzzHeaderFixer: the streaming fixer gives the reference's result
// however its input is cut into reads, on data as the checker passes it
// (CRLF lines, the last one possibly unfinished).
func FuzzHeaderFixer(f *testing.F) {
	for _, s := range []string{
		"Subject: hi\n\nbody\n", "Date: x\nMessage-ID: <a@b>\n\n", "date : x\n folded\n\nDate: body\n",
		"no header\n", "Subject: x", "", "\n", " cont\n", "A: b\nnot a field\nC: d\n",
		"Subject: " + strings.Repeat("x", maxHeaderLine) + "\n\n",
	} {
		f.Add(s, uint8(1))
	}
	f.Fuzz(func(t *testing.T, s string, cut uint8) {
		// CRLF line ends only: the checker refuses anything else first.
		in := strings.ReplaceAll(strings.ReplaceAll(s, "\r", ""), "\n", "\r\n")
		want := msgIDLine.ReplaceAllString(refFix(in, fixedNow), "Message-ID: <ID>\r\n")
		var r io.Reader = strings.NewReader(in)
		if cut%2 == 1 {
			r = iotest.OneByteReader(r)
		}
		h := NewHeaderFixer(r, "mx.example.test", func() time.Time { return fixedNow })
		var out []byte
		buf := make([]byte, int(cut/2)+1)
		for {
			n, err := h.Read(buf)
			out = append(out, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if got := msgIDLine.ReplaceAllString(string(out), "Message-ID: <ID>\r\n"); got != want {
			t.Fatalf("input %q (cut %d):\ngot  %q\nwant %q", in, cut, got, want)
		}
	})
}
