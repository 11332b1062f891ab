package mime

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strconv"
)

// uuDecodeLine decodes one uuencoded line (length character, then groups
// of four characters for three bytes; ' ' and '`' both mean 0) into out,
// which must hold 64 bytes. ok is false when the line is shorter than its
// length character says (what it has is still decoded).
func uuDecodeLine(out []byte, l []byte) (int, bool) {
	if len(l) == 0 {
		return 0, false
	}
	n := int((l[0] - ' ') & 63)
	l = l[1:]
	need := (n + 2) / 3 * 4
	ok := true
	if len(l) < need {
		ok = false
		// a trailing space stripped by a mailer is the usual cause
		pad := need - len(l)
		if pad <= 2 {
			l = append(append([]byte(nil), l...), bytes.Repeat([]byte{'`'}, pad)...)
			ok = true
		} else {
			n = len(l) / 4 * 3
		}
	}
	o := 0
	for i := 0; o < n && i+3 < len(l); i += 4 {
		c0, c1, c2, c3 := (l[i]-' ')&63, (l[i+1]-' ')&63, (l[i+2]-' ')&63, (l[i+3]-' ')&63
		b := [3]byte{c0<<2 | c1>>4, c1<<4 | c2>>2, c2<<6 | c3}
		for j := 0; j < 3 && o < n; j++ {
			out[o] = b[j]
			o++
		}
	}
	return o, ok
}

func uuChar(v byte) byte {
	if v == 0 {
		return '`'
	}
	return v + ' '
}

// UUEncode writes r as a uuencoded block named name with mode (the format
// of sharutils' uuencode: 45 bytes per line, '`' for zero, a "`" line
// before "end"). With b64 it writes the "begin-base64" form (uuencode -m).
func UUEncode(w io.Writer, r io.Reader, name string, mode os.FileMode, b64 bool) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	if b64 {
		fmt.Fprintf(bw, "begin-base64 %o %s\n", mode.Perm(), name)
		if _, err := WriteBase64LineLen(bw, r, 60); err != nil {
			return err
		}
		bw.WriteString("====\n")
		return bw.Flush()
	}
	fmt.Fprintf(bw, "begin %o %s\n", mode.Perm(), name)
	in := make([]byte, 45*1024)
	line := make([]byte, 0, 62)
	for {
		n, err := io.ReadFull(r, in)
		for off := 0; off < n; off += 45 {
			end := off + 45
			if end > n {
				end = n
			}
			chunk := in[off:end]
			line = append(line[:0], uuChar(byte(len(chunk))))
			for i := 0; i < len(chunk); i += 3 {
				var t [3]byte
				copy(t[:], chunk[i:])
				line = append(line, uuChar(t[0]>>2), uuChar((t[0]<<4|t[1]>>4)&63),
					uuChar((t[1]<<2|t[2]>>6)&63), uuChar(t[2]&63))
			}
			line = append(line, '\n')
			bw.Write(line)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return err
		}
	}
	bw.WriteString("`\nend\n")
	return bw.Flush()
}

// WriteBase64LineLen is WriteBase64 with another line length (a multiple
// of 4) and "\n" line ends.
func WriteBase64LineLen(w io.Writer, r io.Reader, ll int) (int64, error) {
	per := ll / 4 * 3
	in := make([]byte, per*1024)
	out := make([]byte, 0, (ll+1)*1024)
	var total int64
	for {
		n, err := io.ReadFull(r, in)
		out = out[:0]
		for off := 0; off < n; off += per {
			end := off + per
			if end > n {
				end = n
			}
			l := len(out)
			out = out[:l+base64.StdEncoding.EncodedLen(end-off)]
			base64.StdEncoding.Encode(out[l:], in[off:end])
			out = append(out, '\n')
		}
		total += int64(n)
		if _, werr := w.Write(out); werr != nil {
			return total, werr
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Opener creates the file for a decoded block named name (as found in the
// input, not yet sanitized) with the given mode.
type Opener func(name string, mode os.FileMode) (io.WriteCloser, error)

// UUScanner finds uuencoded ("begin MODE NAME" … "end") and begin-base64
// blocks in text written to it and decodes each through Open. Lines of
// other text pass by. Warn receives problems (truncated blocks, write
// errors). Close ends a block left open.
type UUScanner struct {
	Open  Opener
	Warn  func(string)
	Found int // blocks found

	line    []byte
	long    bool // current line is too long to be interesting
	w       io.WriteCloser
	s       *sink
	name    string
	b64     *b64Decoder
	bad     int
	started bool
}

func (u *UUScanner) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if !u.long {
			if len(u.line)+len(chunk) > 4096 {
				u.long = true
				u.line = u.line[:0]
			} else {
				u.line = append(u.line, chunk...)
			}
		}
		if i < 0 {
			break
		}
		if !u.long {
			u.handle(bytes.TrimRight(u.line, "\r"))
		} else if u.w != nil {
			u.bad++
		}
		u.line, u.long = u.line[:0], false
		p = p[i+1:]
	}
	return total, nil
}

// parseBegin parses "begin 644 name" / "begin-base64 644 name".
func parseBegin(l []byte) (name string, mode os.FileMode, b64, ok bool) {
	var rest []byte
	switch {
	case bytes.HasPrefix(l, []byte("begin-base64 ")):
		rest, b64 = l[13:], true
	case bytes.HasPrefix(l, []byte("begin ")):
		rest = l[6:]
	default:
		return "", 0, false, false
	}
	sp := bytes.IndexByte(rest, ' ')
	if sp < 1 || sp > 6 {
		return "", 0, false, false
	}
	m, err := strconv.ParseUint(string(rest[:sp]), 8, 32)
	if err != nil {
		return "", 0, false, false
	}
	name = string(rest[sp+1:])
	if name == "" {
		return "", 0, false, false
	}
	return name, os.FileMode(m) & 0o777, b64, true
}

func (u *UUScanner) handle(l []byte) {
	if u.w == nil {
		name, mode, b64, ok := parseBegin(l)
		if !ok {
			return
		}
		u.Found++
		w, err := u.Open(name, mode)
		if err != nil {
			u.warn(fmt.Sprintf("uuencoded %q: %v", name, err))
			w = nopWC{io.Discard}
		}
		u.w, u.name, u.s, u.bad = w, name, newSink(w), 0
		u.b64 = nil
		if b64 {
			u.b64 = &b64Decoder{s: u.s}
		}
		return
	}
	if u.b64 != nil {
		if bytes.Equal(l, []byte("====")) {
			u.finish(true)
			return
		}
		u.b64.data(l)
		return
	}
	if bytes.Equal(bytes.TrimRight(l, " "), []byte("end")) {
		u.finish(true)
		return
	}
	if len(l) == 0 {
		return // blank lines (mailers add them) carry nothing
	}
	var out [64]byte
	n, ok := uuDecodeLine(out[:], l)
	if !ok {
		u.bad++
	}
	u.s.write(out[:n])
}

func (u *UUScanner) warn(s string) {
	if u.Warn != nil {
		u.Warn(s)
	}
}

func (u *UUScanner) finish(complete bool) {
	if u.b64 != nil {
		for _, w := range u.b64.close() {
			u.warn(fmt.Sprintf("uuencoded %q: %s", u.name, w))
		}
	}
	u.s.flush()
	if u.s.err != nil {
		u.warn(fmt.Sprintf("uuencoded %q: write: %v", u.name, u.s.err))
	}
	if err := u.w.Close(); err != nil {
		u.warn(fmt.Sprintf("uuencoded %q: %v", u.name, err))
	}
	if !complete {
		u.warn(fmt.Sprintf("uuencoded %q: no \"end\" line: the file may be truncated", u.name))
	}
	if u.bad > 0 {
		u.warn(fmt.Sprintf("uuencoded %q: %d malformed lines", u.name, u.bad))
	}
	u.w, u.b64 = nil, nil
}

// Close ends a block still open at the end of the text.
func (u *UUScanner) Close() error {
	if len(u.line) > 0 && !u.long {
		u.handle(bytes.TrimRight(u.line, "\r"))
		u.line = u.line[:0]
	}
	if u.w != nil {
		u.finish(false)
	}
	return nil
}

type nopWC struct{ io.Writer }

func (nopWC) Close() error { return nil }
