package mime

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
)

// A decoder receives a part's body line by line from the parser: data for
// the bytes of a line (possibly in several pieces for very long lines), eol
// for its line break when the next line is still the body (the last break
// belongs to the boundary), close at the end. It writes decoded bytes to w.
type decoder interface {
	data(b []byte)
	eol(term []byte)
	close() []string // warnings
}

// sink counts and buffers decoded output and remembers the first write
// error (writing stops after it; parsing goes on).
type sink struct {
	w   io.Writer
	buf []byte
	n   int64
	err error
}

func newSink(w io.Writer) *sink {
	if w == nil {
		w = io.Discard
	}
	// the buffer grows with use: a message of many small parts should not
	// cost a 64 KiB allocation per part
	return &sink{w: w}
}

const sinkMax = 64 << 10

func (s *sink) write(b []byte) {
	s.n += int64(len(b))
	if len(s.buf)+len(b) > sinkMax {
		s.flush()
		if len(b) > sinkMax {
			if s.err == nil {
				_, s.err = s.w.Write(b)
			}
			return
		}
	}
	s.buf = append(s.buf, b...)
}

func (s *sink) flush() {
	if len(s.buf) > 0 && s.err == nil {
		_, s.err = s.w.Write(s.buf)
	}
	s.buf = s.buf[:0]
}

func newDecoder(cte string, s *sink) decoder {
	switch cte {
	case "base64":
		return &b64Decoder{s: s}
	case "quoted-printable":
		return &qpDecoder{s: s}
	case "x-uuencode", "uuencode", "x-uue":
		return &uuBodyDecoder{s: s}
	case "binary":
		return &rawDecoder{s: s, keepEOL: true}
	}
	return &rawDecoder{s: s}
}

// rawDecoder passes 7bit/8bit text through with local (LF) line ends;
// binary keeps the line ends it had.
type rawDecoder struct {
	s       *sink
	keepEOL bool
}

func (d *rawDecoder) data(b []byte) { d.s.write(b) }
func (d *rawDecoder) eol(t []byte) {
	if d.keepEOL {
		d.s.write(t)
	} else {
		d.s.write(nl)
	}
}
func (d *rawDecoder) close() []string { return nil }

var nl = []byte{'\n'}

var b64val [256]byte

func init() {
	for i := range b64val {
		b64val[i] = 0xff
	}
	const a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := 0; i < len(a); i++ {
		b64val[a[i]] = byte(i)
	}
}

// b64Decoder decodes whole well-formed lines with encoding/base64 (the fast
// path) and anything else character by character, skipping what is not
// base64 and counting it.
type b64Decoder struct {
	s    *sink
	q    [4]byte
	nq   int
	bad  int64
	out  []byte // allocated on first use
	done bool   // padding seen: the rest is ignored, as munpack does
	tail int64
}

func (d *b64Decoder) data(b []byte) {
	if d.out == nil {
		d.out = make([]byte, 12<<10)
	}
	if d.done {
		for _, c := range b {
			if b64val[c] != 0xff {
				d.tail++
			}
		}
		return
	}
	if d.nq == 0 && len(b)%4 == 0 && len(b) <= len(d.out)/3*4 {
		if n, err := base64.StdEncoding.Decode(d.out, b); err == nil {
			d.s.write(d.out[:n])
			if len(b) > 0 && b[len(b)-1] == '=' {
				d.done = true
			}
			return
		}
	}
	o := 0
	for _, c := range b {
		v := b64val[c]
		if v == 0xff {
			switch c {
			case '=':
				o = d.pad(o)
				if d.done {
					d.s.write(d.out[:o])
					return
				}
			case ' ', '\t', '\r', '\n':
			default:
				d.bad++
			}
			continue
		}
		d.q[d.nq] = v
		d.nq++
		if d.nq == 4 {
			d.out[o] = d.q[0]<<2 | d.q[1]>>4
			d.out[o+1] = d.q[1]<<4 | d.q[2]>>2
			d.out[o+2] = d.q[2]<<6 | d.q[3]
			o += 3
			d.nq = 0
			if o+3 > len(d.out) {
				d.s.write(d.out[:o])
				o = 0
			}
		}
	}
	d.s.write(d.out[:o])
}

// pad ends the data at a '=' (the leftover 2 or 3 characters give 1 or 2
// bytes).
func (d *b64Decoder) pad(o int) int {
	switch d.nq {
	case 0:
		return o // stray or second '='
	case 1:
		d.bad++
	case 2:
		d.out[o] = d.q[0]<<2 | d.q[1]>>4
		o++
	case 3:
		d.out[o] = d.q[0]<<2 | d.q[1]>>4
		d.out[o+1] = d.q[1]<<4 | d.q[2]>>2
		o += 2
	}
	d.nq = 0
	d.done = true
	return o
}

func (d *b64Decoder) eol([]byte) {}

func (d *b64Decoder) close() []string {
	var w []string
	if d.nq > 0 && !d.done {
		if d.out == nil {
			d.out = make([]byte, 4)
		}
		o := d.pad(0)
		d.s.write(d.out[:o])
		w = append(w, "base64 data not padded to a multiple of 4 characters")
	}
	if d.bad > 0 {
		w = append(w, fmt.Sprintf("bad base64: %d invalid characters skipped", d.bad))
	}
	if d.tail > 0 {
		w = append(w, fmt.Sprintf("bad base64: %d characters after the padding ignored", d.tail))
	}
	return w
}

// qpDecoder decodes quoted-printable a line at a time (lines are short;
// a line over 64 KiB is decoded in pieces).
type qpDecoder struct {
	s    *sink
	line []byte
	out  []byte
	bad  int
}

func (d *qpDecoder) data(b []byte) {
	d.line = append(d.line, b...)
	if len(d.line) > 64<<10 {
		// keep a possible "=X" cut at the end for the next piece
		cut := len(d.line) - 2
		if i := bytes.LastIndexByte(d.line[cut:], '='); i >= 0 {
			cut += i
		} else {
			cut = len(d.line)
		}
		d.decode(d.line[:cut])
		d.line = append(d.line[:0], d.line[cut:]...)
	}
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return 0xff
}

func (d *qpDecoder) decode(b []byte) {
	out := d.out[:0]
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c == '=' {
			if i+2 < len(b) {
				h, l := unhex(b[i+1]), unhex(b[i+2])
				if h != 0xff && l != 0xff {
					out = append(out, h<<4|l)
					i += 2
					continue
				}
			}
			d.bad++
		}
		out = append(out, c)
	}
	d.s.write(out)
	d.out = out
}

func (d *qpDecoder) finish(hard bool) {
	l := bytes.TrimRight(d.line, " \t\r")
	soft := len(l) > 0 && l[len(l)-1] == '='
	if soft {
		l = l[:len(l)-1]
	}
	d.decode(l)
	if hard && !soft {
		d.s.write(nl)
	}
	d.line = d.line[:0]
}

func (d *qpDecoder) eol([]byte) { d.finish(true) }

func (d *qpDecoder) close() []string {
	d.finish(false)
	if d.bad > 0 {
		return []string{fmt.Sprintf("bad quoted-printable: %d stray '=' kept as is", d.bad)}
	}
	return nil
}

// uuBodyDecoder decodes a part sent with Content-Transfer-Encoding
// x-uuencode: the begin/end lines are skipped.
type uuBodyDecoder struct {
	s    *sink
	line []byte
	bad  int
	end  bool
}

func (d *uuBodyDecoder) data(b []byte) {
	if len(d.line) < 1024 {
		d.line = append(d.line, b...)
	}
}

func (d *uuBodyDecoder) eol([]byte) {
	l := bytes.TrimRight(d.line, " \r")
	d.line = d.line[:0]
	switch {
	case d.end || len(l) == 0:
	case bytes.HasPrefix(l, []byte("begin ")):
	case bytes.Equal(l, []byte("end")):
		d.end = true
	default:
		var out [64]byte
		n, ok := uuDecodeLine(out[:], l)
		if !ok {
			d.bad++
		}
		d.s.write(out[:n])
	}
}

func (d *uuBodyDecoder) close() []string {
	d.eol(nil)
	if d.bad > 0 {
		return []string{fmt.Sprintf("bad uuencode: %d malformed lines", d.bad)}
	}
	return nil
}
