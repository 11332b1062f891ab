package mime

import (
	"encoding/base64"
	"io"
)

// lineLen is the number of base64 characters per line: 76, the RFC 2045
// maximum, i.e. 57 input bytes per line.
const (
	lineLen   = 76
	lineBytes = lineLen / 4 * 3
	// linesPerChunk input lines are encoded per read: big enough that the
	// syscall cost vanishes, small enough for a constant, small footprint.
	linesPerChunk = 2048
)

// WriteBase64 streams r to w as base64 in 76-column lines ending in nl,
// reading and writing in fixed-size chunks: memory does not grow with the
// size of r. It returns the number of input bytes.
func WriteBase64(w io.Writer, r io.Reader, nl string) (int64, error) {
	in := make([]byte, lineBytes*linesPerChunk)
	out := make([]byte, 0, (lineLen+len(nl))*linesPerChunk)
	var total int64
	for {
		n, err := io.ReadFull(r, in)
		if n > 0 {
			total += int64(n)
			out = out[:0]
			for off := 0; off < n; off += lineBytes {
				end := off + lineBytes
				if end > n {
					end = n
				}
				l := len(out)
				out = out[:l+base64.StdEncoding.EncodedLen(end-off)]
				base64.StdEncoding.Encode(out[l:], in[off:end])
				out = append(out, nl...)
			}
			if _, werr := w.Write(out); werr != nil {
				return total, werr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

const hexUpper = "0123456789ABCDEF"

// qpWriter encodes quoted-printable (RFC 2045 §6.7) so that decoding gives
// back the exact bytes: LF is the line break (written as nl), a CR is
// always =0D (so CRLF text survives), whitespace before a break or at the
// end is encoded, lines are soft-broken before 76 columns, and a line
// starting with "From " or "." is protected for mbox and SMTP.
type qpWriter struct {
	w    io.Writer
	nl   string
	line []byte // the current output line, without its break
	out  []byte // pending output
	ws   byte   // a held-back trailing space or tab (0 if none)
}

func newQPWriter(w io.Writer, nl string) *qpWriter {
	return &qpWriter{w: w, nl: nl, line: make([]byte, 0, 80), out: make([]byte, 0, 64<<10)}
}

func (q *qpWriter) emit(s []byte) {
	// soft break: keep each line at most 75 chars plus "=".
	if len(q.line)+len(s) > lineLen-1 {
		q.out = append(q.out, q.line...)
		q.out = append(q.out, '=')
		q.out = append(q.out, q.nl...)
		q.line = q.line[:0]
	}
	if len(q.line) == 0 && len(s) == 1 && (s[0] == '.' || s[0] == 'F') {
		q.line = append(q.line, '=', hexUpper[s[0]>>4], hexUpper[s[0]&15])
		return
	}
	q.line = append(q.line, s...)
}

func (q *qpWriter) flushWS(encode bool) {
	if q.ws == 0 {
		return
	}
	c := q.ws
	q.ws = 0
	if encode {
		q.emit([]byte{'=', hexUpper[c>>4], hexUpper[c&15]})
	} else {
		q.emit([]byte{c})
	}
}

func (q *qpWriter) Write(p []byte) (int, error) {
	var one [3]byte
	for _, c := range p {
		switch {
		case c == '\n':
			q.flushWS(true)
			q.out = append(q.out, q.line...)
			q.out = append(q.out, q.nl...)
			q.line = q.line[:0]
		case c == ' ' || c == '\t':
			q.flushWS(false)
			q.ws = c
		case c >= 33 && c <= 126 && c != '=':
			q.flushWS(false)
			one[0] = c
			q.emit(one[:1])
		default:
			q.flushWS(false)
			one[0], one[1], one[2] = '=', hexUpper[c>>4], hexUpper[c&15]
			q.emit(one[:3])
		}
		if len(q.out) > 60<<10 {
			if _, err := q.w.Write(q.out); err != nil {
				return 0, err
			}
			q.out = q.out[:0]
		}
	}
	return len(p), nil
}

// Close writes what is pending. The last line gets no break: the line
// break that starts the next boundary delimiter ends it (RFC 2046 §5.1.1),
// so content without a final newline comes back without one.
func (q *qpWriter) Close() error {
	q.flushWS(true)
	q.out = append(q.out, q.line...)
	q.line = q.line[:0]
	_, err := q.w.Write(q.out)
	q.out = q.out[:0]
	return err
}
