package smtpd

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"letterbox/pkg/spool"
)

// The per-message paths of a session, without the network and the disk
// (bench/smtpd.sh measures those beside Postfix): the command loop, the
// dot reader and checker, the Received header, the hand-over to the
// queue. Run with go test -bench . -benchmem ./pkg/smtpd.

// benchMessage is 10 KB of mail as smtp-source sends it: a short header
// and lines of 78 octets.
var benchMessage = "From: <sender@remote.test>\r\nTo: <joe@example.test>\r\nSubject: bench\r\n" +
	"Message-ID: <bench@remote.test>\r\nDate: Tue, 1 Jan 2030 00:00:00 +0000\r\n\r\n" +
	strings.Repeat(strings.Repeat("b", 78)+"\r\n", 128)

// memConn is a net.Conn that reads a script and throws the replies away.
type memConn struct {
	r *bytes.Reader
}

func (c *memConn) Read(p []byte) (int, error)         { return c.r.Read(p) }
func (c *memConn) Write(p []byte) (int, error)        { return len(p), nil }
func (c *memConn) Close() error                       { return nil }
func (c *memConn) LocalAddr() net.Addr                { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 25} }
func (c *memConn) RemoteAddr() net.Addr               { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000} }
func (c *memConn) SetDeadline(t time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(t time.Time) error { return nil }

// discardQueue reads the message as the spool does (into a 32 KB buffer,
// the size of the spool's copy) and keeps nothing.
type discardQueue struct {
	n   int
	buf []byte
}

func (q *discardQueue) Submit(env *spool.Envelope, r io.Reader) (string, error) {
	for {
		_, err := r.Read(q.buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
	}
	q.n++
	return env.ID, nil
}

func (q *discardQueue) NewID() string { return spool.NewID() }

func benchServer() (*Server, *discardQueue) {
	q := &discardQueue{buf: make([]byte, 32<<10)}
	srv := &Server{
		Config:     testConfig(),
		Queue:      q,
		Recipients: fakeRcpts{"joe@example.test": true},
	}
	srv.Defaults()
	return srv, q
}

const benchTx = "MAIL FROM:<sender@remote.test>\r\nRCPT TO:<joe@example.test>\r\nDATA\r\n"

// BenchmarkSession: one message per iteration, through the whole command
// loop: on a session that stays open (reused: MAIL, RCPT, DATA), and on a
// new session per message (greeting, EHLO, MAIL, RCPT, DATA, QUIT).
func BenchmarkSession(b *testing.B) {
	b.Run("reused", func(b *testing.B) {
		srv, q := benchServer()
		var script bytes.Buffer
		script.WriteString("EHLO client.test\r\n")
		for i := 0; i < b.N; i++ {
			script.WriteString(benchTx + benchMessage + ".\r\n")
		}
		script.WriteString("QUIT\r\n")
		b.SetBytes(int64(len(benchMessage)))
		b.ReportAllocs()
		b.ResetTimer()
		srv.ServeConn(&memConn{r: bytes.NewReader(script.Bytes())}, ModeSMTP)
		b.StopTimer()
		if q.n != b.N {
			b.Fatalf("%d messages queued, want %d", q.n, b.N)
		}
	})
	b.Run("new", func(b *testing.B) {
		srv, q := benchServer()
		script := []byte("EHLO client.test\r\n" + benchTx + benchMessage + ".\r\nQUIT\r\n")
		b.SetBytes(int64(len(benchMessage)))
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			srv.ServeConn(&memConn{r: bytes.NewReader(script)}, ModeSMTP)
		}
		b.StopTimer()
		if q.n != b.N {
			b.Fatalf("%d messages queued, want %d", q.n, b.N)
		}
	})
}

// BenchmarkDotReader: DATA's reader and the checker on a 10 KB message,
// read as the spool reads it.
func BenchmarkDotReader(b *testing.B) {
	data := []byte(benchMessage + ".\r\n")
	buf := make([]byte, 32<<10)
	src := bytes.NewReader(data)
	br := bufio.NewReaderSize(src, readBufSize)
	b.SetBytes(int64(len(benchMessage)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		src.Reset(data)
		br.Reset(src)
		dr := &dotReader{r: br}
		chk := newChecker(35<<20, maxTextLine, 100)
		r := &checkedReader{r: dr, c: chk}
		n := 0
		for {
			m, err := r.Read(buf)
			n += m
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		if n != len(benchMessage) || chk.err != nil {
			b.Fatalf("read %d octets (%v), want %d", n, chk.err, len(benchMessage))
		}
	}
}
