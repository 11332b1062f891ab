package pop3

import (
	"bufio"
	"bytes"
	"io"
	"sync"
)

// Message content on disk has LF (Maildir, mbox) or CRLF line ends; POP3
// sends CRLF. The size a client sees in LIST, STAT and "+OK n octets" must be
// the size of what RETR sends, so CRLFSize and writeMessage apply the same
// rule: every LF not preceded by CR counts (and is sent) as CRLF, and a last
// line without a line end gets one. Byte-stuffing is not counted (RFC 1939
// counts the message, not its transmission).

var blockPool = sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

// CRLFSize returns the size of r's content as POP3 sends it.
func CRLFSize(r io.Reader) (int64, error) {
	buf := make([]byte, 32*1024)
	var n int64
	prevCR := false
	last := byte('\n')
	for {
		k, err := r.Read(buf)
		for _, c := range buf[:k] {
			if c == '\n' && !prevCR {
				n++
			}
			prevCR = c == '\r'
		}
		if k > 0 {
			last = buf[k-1]
			n += int64(k)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	if last != '\n' {
		if last == '\r' {
			n++ // a trailing CR becomes CRLF
		} else {
			n += 2
		}
	}
	return n, nil
}

// writeMessage sends r as a POP3 multi-line response body: CRLF line ends,
// lines starting with "." byte-stuffed, then the terminating ".". With
// bodyLines >= 0 (TOP) it stops after the header, the blank line and
// bodyLines lines of body. It returns the octets of content sent (without
// stuffing or the terminator).
//
// It reads r in 32 KiB blocks and finds line ends with bytes.IndexByte,
// writing each line's content as one run (a ReadSlice per line through a
// bufio.Reader took about twice as long: BenchmarkWriteMessage). With
// size >= 0 (a message file's size from the fstat at open) it reads that
// many octets and stops, without the read(2) that would return
// end-of-file; size < 0 reads to the end.
func writeMessage(w *bufio.Writer, r io.Reader, bodyLines int, size int64) (int64, error) {
	bp := blockPool.Get().(*[]byte)
	defer blockPool.Put(bp)
	buf := *bp

	left := size // octets still to read, when known
	var sent int64
	atStart := true   // the next byte begins a line
	pendCR := false   // a CR ended the previous block
	inBody := false   // the blank line after the header was sent
	lineEmpty := true // the current line has no content so far
	body := 0
	for {
		if left == 0 {
			break
		}
		k, err := r.Read(buf)
		if left > 0 {
			left -= int64(k)
			if left < 0 {
				left = 0 // grew since opened: what it had then is sent
				k += int(left)
			}
		}
		b := buf[:k]
		for len(b) > 0 {
			if bodyLines >= 0 && inBody && body >= bodyLines {
				_, err := w.WriteString(".\r\n")
				return sent, err
			}
			if pendCR {
				pendCR = false
				if b[0] != '\n' {
					w.WriteByte('\r')
					sent++
					lineEmpty = false
				}
			}
			if atStart && b[0] == '.' {
				w.WriteByte('.')
			}
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				// The block ends inside a line; a CR at its end may be
				// half of a CRLF.
				seg := b
				if seg[len(seg)-1] == '\r' {
					seg = seg[:len(seg)-1]
					pendCR = true
				}
				w.Write(seg)
				sent += int64(len(seg))
				if len(seg) > 0 {
					lineEmpty = false
				}
				atStart = false
				break
			}
			content := b[:i]
			if i > 0 && content[i-1] == '\r' {
				content = content[:i-1]
			}
			w.Write(content)
			w.WriteString("\r\n")
			sent += int64(len(content)) + 2
			if len(content) > 0 {
				lineEmpty = false
			}
			if inBody {
				body++
			} else if lineEmpty {
				inBody = true
			}
			atStart, lineEmpty = true, true
			b = b[i+1:]
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return sent, err
		}
	}
	if bodyLines < 0 || !inBody || body < bodyLines {
		if pendCR || !atStart {
			w.WriteString("\r\n")
			sent += 2
		}
	}
	_, err := w.WriteString(".\r\n")
	return sent, err
}
