package pop3

import (
	"bufio"
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

// FuzzWriteMessage checks RETR's framing on any content: every line ends in
// CRLF, no line is a lone ".", un-stuffing gives back the content with CRLF
// line ends, and the octets sent are what CRLFSize (LIST, STAT) announced.
// Seeds: testdata/fuzz/FuzzWriteMessage.
func FuzzWriteMessage(f *testing.F) {
	f.Add([]byte("Subject: x\n\nbody\n.\n..\n"))
	f.Add([]byte("a\r\r\n\rb\r"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		sent, err := writeMessage(w, bytes.NewReader(in), -1, -1)
		if err != nil {
			t.Fatal(err)
		}
		w.Flush()
		size, _ := CRLFSize(bytes.NewReader(in))
		if sent != size {
			t.Fatalf("sent %d, CRLFSize %d", sent, size)
		}
		b := out.Bytes()
		if !bytes.HasSuffix(b, []byte(".\r\n")) {
			t.Fatalf("no terminator: %q", b)
		}
		body := b[:len(b)-3]
		var unstuffed []byte
		for len(body) > 0 {
			i := bytes.Index(body, []byte("\r\n"))
			if i < 0 {
				t.Fatalf("line without CRLF in %q", b)
			}
			line := body[:i]
			if bytes.Equal(line, []byte(".")) {
				t.Fatalf("lone dot inside the message: %q", b)
			}
			if len(line) > 0 && line[0] == '.' {
				line = line[1:]
			}
			unstuffed = append(append(unstuffed, line...), '\r', '\n')
			body = body[i+2:]
		}
		if int64(len(unstuffed)) != size {
			t.Fatalf("unstuffed %d octets, announced %d", len(unstuffed), size)
		}
	})
}

// FuzzWriteMessageSame: writeMessage sends, for RETR and TOP, exactly the
// bytes the ReadSlice loop before it sent (writeMessageRef), whatever the
// content, however the reads split it, and whether or not the reader knows
// its size. The first input byte picks TOP's line count (or RETR) and how
// reads are split.
func FuzzWriteMessageSame(f *testing.F) {
	f.Add([]byte("\x00Subject: x\n\nbody\n.\n..\n"))
	f.Add([]byte("\x02a\r\r\n\rb\r"))
	f.Add([]byte("\x13H: 1\r\n\r\n.a\r\nb\nc"))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		mode, content := in[0], in[1:]
		lines := int(mode%5) - 1
		send := func(name string, fn func(*bufio.Writer, io.Reader, int) (int64, error), r io.Reader) (string, int64) {
			var out bytes.Buffer
			w := bufio.NewWriter(&out)
			n, err := fn(w, r, lines)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			w.Flush()
			return out.String(), n
		}
		split := func(r io.Reader) io.Reader {
			switch mode / 5 % 3 {
			case 1:
				return iotest.OneByteReader(r)
			case 2:
				return iotest.HalfReader(r)
			}
			return r
		}
		want, wantN := send("ref", writeMessageRef, split(bytes.NewReader(content)))
		for _, size := range []int64{-1, int64(len(content))} {
			got, n := send("new", func(w *bufio.Writer, r io.Reader, lines int) (int64, error) {
				return writeMessage(w, r, lines, size)
			}, split(bytes.NewReader(content)))
			if got != want || n != wantN {
				t.Fatalf("size=%d lines=%d: sent %q (%d), before %q (%d)", size, lines, got, n, want, wantN)
			}
		}
	})
}
