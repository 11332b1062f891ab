package pop3

import (
	"bufio"
	"bytes"
	"testing"
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
		sent, err := writeMessage(w, bytes.NewReader(in), -1)
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
