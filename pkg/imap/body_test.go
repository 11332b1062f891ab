package imap

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
)

// crlfRef is what crlfReader must give: every LF not after a CR becomes
// CRLF, and with noNUL every NUL becomes 0x80.
func crlfRef(in []byte, noNUL bool) []byte {
	var out []byte
	prevCR := false
	for _, c := range in {
		switch {
		case c == '\n' && !prevCR:
			out = append(out, '\r', '\n')
		case c == 0 && noNUL:
			out = append(out, 0x80)
		default:
			out = append(out, c)
		}
		prevCR = c == '\r'
	}
	return out
}

// readAllSizes reads r to its end with reads of the sizes given in turn.
func readAllSizes(r io.Reader, sizes []int) ([]byte, error) {
	var out []byte
	for k := 0; ; k++ {
		p := make([]byte, sizes[k%len(sizes)])
		n, err := r.Read(p)
		out = append(out, p[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

func checkCRLF(t *testing.T, in []byte, sizes []int) {
	t.Helper()
	for _, noNUL := range []bool{false, true} {
		want := crlfRef(in, noNUL)
		srcs := map[string]io.Reader{
			"whole":    bytes.NewReader(in),
			"one-byte": iotest.OneByteReader(bytes.NewReader(in)),
			"half":     iotest.HalfReader(bytes.NewReader(in)),
		}
		for name, src := range srcs {
			c := newCRLFReader(src, noNUL)
			c.buf = c.buf[:7] // small reads of the file: runs cut anywhere
			got, err := readAllSizes(c, sizes)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("noNUL %v, %s source, reads %v: %q (%v), want %q", noNUL, name, sizes, got, err, want)
			}
		}
	}
}

// TestCRLFReader: the bodies FETCH sends are the stored messages with CRLF
// line ends (and no NUL), whatever sizes the reads have: one octet at a
// time, exactly around a CR LF pair, larger than the message.
func TestCRLFReader(t *testing.T) {
	cases := []string{"", "\n", "\r\n", "\r", "a\nb\r\nc\n\n\r\r\n", "x\x00y\n\x00\n", "\n\n\n\r\n\r", "no line end"}
	for _, in := range cases {
		for _, sizes := range [][]int{{1}, {2}, {3}, {1, 2}, {5, 1}, {64 << 10}} {
			checkCRLF(t, []byte(in), sizes)
		}
	}
	rng := rand.New(rand.NewSource(1))
	alphabet := []byte("ab\r\n\x00")
	for k := 0; k < 300; k++ {
		in := make([]byte, rng.Intn(200))
		for i := range in {
			in[i] = alphabet[rng.Intn(len(alphabet))]
		}
		checkCRLF(t, in, []int{1 + rng.Intn(9), 1 + rng.Intn(3), 1 + rng.Intn(300)})
	}
}

// FuzzCRLFReader: crlfReader gives crlfRef's octets for any input and any
// read sizes.
func FuzzCRLFReader(f *testing.F) {
	f.Add([]byte("a\nb\r\nc\x00\n"), uint8(1), uint8(2))
	f.Add([]byte("\r\n\n\r"), uint8(3), uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, a, b uint8) {
		checkCRLF(t, in, []int{1 + int(a), 1 + int(b)})
	})
}

// BenchmarkCRLFReader: a 10 KB message of 70-octet LF lines, as deliver
// stores them, read as FETCH BODY[] sends it.
func BenchmarkCRLFReader(b *testing.B) {
	line := bytes.Repeat([]byte("x"), 69)
	var msg []byte
	for len(msg) < 10000 {
		msg = append(append(msg, line...), '\n')
	}
	c := newCRLFReader(nil, true)
	p := make([]byte, 64<<10)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c.reset(bytes.NewReader(msg), true)
		for {
			_, err := c.Read(p)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// writeCounter counts the writes on the connections a listener accepts.
type writeCounter struct {
	net.Listener
	writes atomic.Int64
}

func (l *writeCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, n: &l.writes}, nil
}

type countedConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countedConn) Write(p []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(p)
}

// TestFetchBodiesBuffered: FETCH sends the bodies of many messages in
// 64 KiB writes (not two or three writes a message), with every octet as
// before, and the session's small writer back after the command.
func TestFetchBodiesBuffered(t *testing.T) {
	ts := startServer(t, nil)
	// A second listener on the same server, counting its writes.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wc := &writeCounter{Listener: l}
	go ts.srv.Serve(wc, false)
	ts.addr = l.Addr().String()

	const n = 60
	body := strings.Repeat("a line of the body, LF-terminated as deliver stores it\n", 50)
	for i := 0; i < n; i++ {
		ts.put(t, "INBOX", testMsg(fmt.Sprintf("m%d", i), body))
	}
	c := ts.login(t)
	c.ok("SELECT INBOX")
	before := wc.writes.Load()
	un := c.ok("FETCH 1:* (BODY.PEEK[])")
	writes := wc.writes.Load() - before
	if len(un) != n {
		t.Fatalf("%d responses, want %d", len(un), n)
	}
	total := 0
	for i, l := range un {
		want := string(crlf([]byte(testMsg(fmt.Sprintf("m%d", i), body))))
		if !strings.HasSuffix(l, fmt.Sprintf("BODY[] {%d}\r\n%s)", len(want), want)) {
			t.Fatalf("response %d: %q", i+1, l)
		}
		total += len(l)
	}
	// Responses and the tagged OK: one write per 64 KiB, one for the rest.
	if max := int64(total/fetchBufSize + 2); writes > max {
		t.Fatalf("%d writes for %d octets of responses, want at most %d", writes, total, max)
	}
	if total < 2*fetchBufSize {
		t.Fatalf("only %d octets: the test needs several buffers' worth", total)
	}
	// After the FETCH the session writes through its own writer again:
	// a short command's answer comes at once, whole.
	c.ok("NOOP")
}
