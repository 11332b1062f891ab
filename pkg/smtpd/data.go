package smtpd

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

// Reply is an SMTP reply; as an error it is what the client is told.
type Reply struct {
	Code int
	Enh  string // enhanced status code (RFC 3463), "" for none
	Text string
}

func (r *Reply) Error() string {
	if r.Enh == "" {
		return fmt.Sprintf("%d %s", r.Code, r.Text)
	}
	return fmt.Sprintf("%d %s %s", r.Code, r.Enh, r.Text)
}

func reply(code int, enh, format string, args ...any) *Reply {
	return &Reply{Code: code, Enh: enh, Text: fmt.Sprintf(format, args...)}
}

// checker inspects message data as it streams by (DATA after dot-unstuffing,
// or BDAT chunks as they are) and records the first rule it breaks. It never
// needs the whole message in memory. The rules are the guarantees of
// DESIGN.md: no bare CR or LF (SMTP smuggling), no NUL (we offer 8BITMIME,
// not BINARYMIME), text lines of at most 1000 octets with CRLF, a size limit
// and a limit on Received headers (mail loops).
type checker struct {
	maxSize     int64
	maxLine     int // octets including CRLF
	maxReceived int

	size     int64
	lineLen  int // octets of the current line so far, CR included
	cr       bool
	body     bool // past the empty line that ends the header
	prefix   [9]byte
	received int
	err      *Reply
}

const receivedPrefix = "received:"

func newChecker(maxSize int64, maxLine, maxReceived int) *checker {
	return &checker{maxSize: maxSize, maxLine: maxLine, maxReceived: maxReceived}
}

// write looks at the next bytes of the message. Body lines that end in
// CRLF, hold no other CR and no NUL and are short enough are passed over a
// line at a time with the vectorised bytes.IndexByte; anything else (the
// header, a broken or unfinished line) goes through scan byte by byte,
// which decides every rule, so the verdict is the same however the data
// is cut (FuzzChecker).
func (c *checker) write(p []byte) {
	if c.err != nil {
		return
	}
	c.size += int64(len(p))
	if c.maxSize > 0 && c.size > c.maxSize {
		c.err = reply(552, "5.3.4", "Message exceeds the maximum size of %d octets", c.maxSize)
		return
	}
	clean := len(p) // p[:clean] holds no NUL
	if i := bytes.IndexByte(p, 0); i >= 0 {
		clean = i
	}
	for len(p) > 0 && c.err == nil {
		lf := bytes.IndexByte(p, '\n')
		if lf < 0 {
			c.scan(p)
			return
		}
		if c.body && !c.cr && lf >= 1 && lf < clean && p[lf-1] == '\r' &&
			(c.maxLine <= 0 || c.lineLen+lf <= c.maxLine-1) &&
			bytes.IndexByte(p[:lf-1], '\r') < 0 {
			c.lineLen = 0
		} else {
			c.scan(p[:lf+1])
		}
		p, clean = p[lf+1:], clean-lf-1
	}
}

// scan applies every rule to p, one byte at a time.
func (c *checker) scan(p []byte) {
	for _, b := range p {
		if b == 0 {
			c.err = reply(554, "5.6.0", "NUL byte in message data (only 8BITMIME text is accepted, not BINARYMIME)")
			return
		}
		if c.cr && b != '\n' {
			c.err = reply(550, "5.6.11", "Bare CR in message data: lines must end with CRLF (SMTP smuggling protection)")
			return
		}
		if b == '\n' {
			if !c.cr {
				c.err = reply(550, "5.6.11", "Bare LF in message data: lines must end with CRLF (SMTP smuggling protection)")
				return
			}
			if !c.body {
				if c.lineLen == 1 {
					c.body = true
				} else if c.lineLen >= len(receivedPrefix) && isReceived(c.prefix[:]) {
					c.received++
					if c.maxReceived > 0 && c.received > c.maxReceived {
						c.err = reply(554, "5.4.6", "Too many Received headers (more than %d): mail loop?", c.maxReceived)
						return
					}
				}
			}
			c.lineLen, c.cr = 0, false
			continue
		}
		if b == '\r' {
			c.cr = true
		} else if !c.body && c.lineLen < len(c.prefix) {
			c.prefix[c.lineLen] = b
		}
		c.lineLen++
		if c.maxLine > 0 && c.lineLen > c.maxLine-1 {
			c.err = reply(500, "5.5.2", "Line in message data longer than %d octets (RFC 5321 § 4.5.3.1.6)", c.maxLine)
			return
		}
	}
}

// finish checks the end of the message: it must end with a complete line.
// A chunked (BDAT) message may end without CRLF; DATA always does.
func (c *checker) finish() {
	if c.err == nil && c.cr {
		c.err = reply(550, "5.6.11", "Bare CR at end of message data")
	}
}

func isReceived(p []byte) bool {
	for i := 0; i < len(receivedPrefix); i++ {
		b := p[i]
		if b >= 'A' && b <= 'Z' {
			b += 'a' - 'A'
		}
		if b != receivedPrefix[i] {
			return false
		}
	}
	return true
}

// dotReader reads DATA content up to the terminating "CRLF.CRLF", removing
// the dot stuffing (RFC 5321 § 4.5.2). Lines are what CRLF ends: only a line
// that is exactly ".\r\n" and follows a CRLF (or opens the data) ends the
// message, and only such a line loses a leading dot. A dot after a bare LF
// or a bare CR is data: "\n.\r\n", "\n.\n", "\r.\r\n" and the other
// variants of the SMTP smuggling research (December 2023) never end the
// message early, so the bytes after them are never read as commands, and the
// checker then rejects the bare LF or CR once the real end has been read.
//
// With normalize (bare-newline = normalize, Postfix 3.9's meaning) a bare LF
// ends a line too: it is passed on as CRLF and a dot after it is unstuffed,
// but a dot line after it still does not end the data.
type dotReader struct {
	r         *bufio.Reader
	normalize bool
	midLine   bool // the next byte does not begin a line (zero value: it does)
	afterLF   bool // the previous line ended with a bare LF (normalize only)
	prevCR    bool // the last byte read was a CR (CRLF split across two reads)
	pending   []byte
	crlf      []byte // normalize: a bare-LF line rewritten with CRLF
	done      bool
	err       error // sticky read error from the connection
}

// Read returns as many lines as fit in p and are already buffered: one line
// per Read would make one write(2) per line in the spool.
func (d *dotReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(d.pending) == 0 {
			if !d.normalize && !d.done && d.err == nil && d.r.Buffered() > 0 {
				if c := d.copyPlain(p[n:]); c > 0 {
					n += c
					continue
				}
			}
			if n > 0 && (d.done || d.err != nil || d.r.Buffered() == 0) {
				break // deliver what we have; don't block for more
			}
			if err := d.next(); err != nil {
				if n > 0 {
					break // the error comes with the next Read
				}
				return 0, err
			}
		}
		c := copy(p[n:], d.pending)
		d.pending = d.pending[c:]
		n += c
	}
	return n, nil
}

// copyPlain copies into p, without reading from the connection, the
// buffered data up to the next line that begins with a dot (which next
// takes: it may end the data, and loses its dot), and returns how much it
// copied: 0 when the buffered data begins with such a line. It is next's
// line-by-line work done a buffer at a time, for the default mode (a bare
// LF ends no line), and leaves the same state behind.
func (d *dotReader) copyPlain(p []byte) int {
	buf, _ := d.r.Peek(d.r.Buffered())
	if len(buf) > len(p) {
		buf = buf[:len(p)]
	}
	k := len(buf)
	if !d.midLine && len(buf) > 0 && buf[0] == '.' {
		return 0
	}
	// A line begins after CRLF; its CR may have come in the last read.
	for from := 0; ; {
		i := bytes.Index(buf[from:], dotLineStart)
		if i < 0 {
			break
		}
		j := from + i + 1 // the dot
		if j >= 2 && buf[j-2] == '\r' || j == 1 && d.prevCR {
			k = j
			break
		}
		from = j
	}
	if k == 0 {
		return 0
	}
	copy(p, buf[:k])
	d.midLine = !(k >= 2 && buf[k-2] == '\r' && buf[k-1] == '\n' || k == 1 && buf[0] == '\n' && d.prevCR)
	d.prevCR = buf[k-1] == '\r'
	d.afterLF = false
	d.r.Discard(k)
	return k
}

var dotLineStart = []byte("\n.")

// next reads the next line (or piece of a long line) into pending.
func (d *dotReader) next() error {
	for len(d.pending) == 0 {
		if d.done {
			return io.EOF
		}
		if d.err != nil {
			return d.err
		}
		line, err := d.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			err = nil
		} else if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			d.err = err
			if len(line) == 0 {
				return err
			}
		}
		atStart, afterLF := !d.midLine, d.afterLF
		// A piece ends a line only with CRLF; its CR may have ended the
		// piece before (a line longer than the buffer).
		n := len(line)
		endsLF := n > 0 && line[n-1] == '\n'
		endsCRLF := endsLF && (n >= 2 && line[n-2] == '\r' || n == 1 && d.prevCR)
		bareLF := endsLF && !endsCRLF && d.normalize
		d.midLine = !endsCRLF && !bareLF
		d.afterLF = bareLF
		d.prevCR = n > 0 && line[n-1] == '\r'
		if atStart && n > 0 && line[0] == '.' {
			if n == 3 && line[1] == '\r' && line[2] == '\n' && !afterLF {
				d.done = true
				return io.EOF
			}
			line = line[1:]
		}
		if bareLF {
			d.crlf = append(append(d.crlf[:0], line[:len(line)-1]...), '\r', '\n')
			line = d.crlf
		}
		d.pending = line
	}
	return nil
}

// drain reads to the end of the data (or of the connection) so the next
// command is read from the right place; it reports a connection error.
func (d *dotReader) drain() error {
	_, err := io.Copy(io.Discard, d)
	return err
}

// checkedReader passes data through a checker and stops with the checker's
// reply as error at the first broken rule, so the spool never commits it.
type checkedReader struct {
	r io.Reader
	c *checker
}

func (cr *checkedReader) Read(p []byte) (int, error) {
	n, err := cr.r.Read(p)
	cr.c.write(p[:n])
	if cr.c.err != nil {
		return 0, cr.c.err
	}
	if err == io.EOF {
		cr.c.finish()
		if cr.c.err != nil {
			return 0, cr.c.err
		}
	}
	return n, err
}

// lfNormalizer turns every bare LF of a chunked (BDAT) message into CRLF
// for bare-newline = normalize; a CR that ended the previous chunk counts.
type lfNormalizer struct {
	prevCR bool
	out    []byte
}

// normalize returns p with bare LFs made CRLF (p itself when it has none).
func (z *lfNormalizer) normalize(p []byte) []byte {
	prev := z.prevCR
	if len(p) > 0 {
		z.prevCR = p[len(p)-1] == '\r'
	}
	bare := func(i int) bool { return p[i] == '\n' && !(i > 0 && p[i-1] == '\r' || i == 0 && prev) }
	i := 0
	for i < len(p) && !bare(i) {
		i++
	}
	if i == len(p) {
		return p
	}
	z.out = append(z.out[:0], p[:i]...)
	for ; i < len(p); i++ {
		if bare(i) {
			z.out = append(z.out, '\r')
		}
		z.out = append(z.out, p[i])
	}
	return z.out
}
