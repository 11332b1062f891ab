package imap

import (
	"bufio"
	"bytes"
	"io"
	"strings"

	"letterbox/pkg/mime"
)

// Messages go out with CRLF line ends whatever the Maildir file has (LF,
// as deliver writes, or CRLF): RFC822.SIZE and every offset below are
// counted in that form, as mailstore.Msg.Size is.

// crlfReader turns bare LF into CRLF (and, for BODY, NUL into 0x80:
// literals carry no NUL, RFC 9051 § 4.3).
type crlfReader struct {
	src    io.Reader
	buf    []byte
	pend   []byte
	prevCR bool
	lfDue  bool
	noNUL  bool
	nul    bool // pend may hold a NUL (noNUL only): looked for per line
	err    error
}

func newCRLFReader(r io.Reader, noNUL bool) *crlfReader {
	return &crlfReader{src: r, buf: make([]byte, 32<<10), noNUL: noNUL}
}

// reset makes c read r from its start, keeping its buffer (one reader
// per session serves every message of a FETCH).
func (c *crlfReader) reset(r io.Reader, noNUL bool) *crlfReader {
	*c = crlfReader{src: r, buf: c.buf, noNUL: noNUL}
	return c
}

func (c *crlfReader) Read(p []byte) (int, error) {
	n := 0
	if c.lfDue && len(p) > 0 {
		p[0] = '\n'
		n = 1
		c.lfDue, c.prevCR = false, false
	}
	for n < len(p) {
		if len(c.pend) == 0 {
			if c.err != nil {
				break
			}
			if n > 0 {
				// Give what we have rather than block for more.
				break
			}
			m, err := c.src.Read(c.buf)
			c.pend, c.err = c.buf[:m], err
			// One look for NUL in what was read (there is none in
			// almost every message) rather than one per line.
			c.nul = c.noNUL && bytes.IndexByte(c.pend, 0) >= 0
			continue
		}
		// Copy the run up to the next LF (or NUL) in one go.
		run := c.pend
		var i int
		if c.nul {
			i = indexLFNUL(run, true)
		} else {
			i = bytes.IndexByte(run, '\n')
		}
		if i >= 0 {
			run = run[:i]
		}
		if len(run) > len(p)-n {
			run = run[:len(p)-n]
		}
		if len(run) > 0 {
			copy(p[n:], run)
			n += len(run)
			c.prevCR = run[len(run)-1] == '\r'
			c.pend = c.pend[len(run):]
			if n == len(p) {
				break
			}
		}
		if len(c.pend) == 0 {
			continue
		}
		switch c.pend[0] {
		case '\n':
			switch {
			case c.prevCR:
				p[n] = '\n'
				n++
			case n+1 < len(p):
				p[n], p[n+1] = '\r', '\n'
				n += 2
			default:
				p[n] = '\r'
				n++
				c.lfDue = true
			}
		default: // NUL
			p[n] = 0x80
			n++
		}
		c.prevCR = false
		c.pend = c.pend[1:]
		if c.lfDue {
			break
		}
	}
	if n == 0 && c.err != nil && !c.lfDue {
		return 0, c.err
	}
	return n, nil
}

// indexLFNUL finds the first LF (or NUL, with nul), looking for NUL only
// before the LF so that each byte is scanned once.
func indexLFNUL(b []byte, nul bool) int {
	i := bytes.IndexByte(b, '\n')
	if !nul {
		return i
	}
	upto := b
	if i >= 0 {
		upto = b[:i]
	}
	if j := bytes.IndexByte(upto, 0); j >= 0 {
		return j
	}
	return i
}

// part is one entity of a message as IMAP numbers them.
type part struct {
	*mime.Part
	children []*part // multipart: its parts; message/rfc822: the message inside
}

func (p *part) isMultipart() bool {
	return p.Container && strings.HasPrefix(p.Type, "multipart/")
}

func (p *part) isMessage() bool {
	return p.Container && (p.Type == "message/rfc822" || p.Type == "message/global") && len(p.children) == 1
}

// subparts are the parts numbered under p: a multipart's parts; under a
// message/rfc822, the parts of the message inside (itself when it is not
// multipart).
func (p *part) subparts() []*part {
	switch {
	case p.isMultipart():
		return p.children
	case p.isMessage():
		m := p.children[0]
		if m.isMultipart() {
			return m.children
		}
		return []*part{m}
	}
	return nil
}

// structureLimits are Dovecot's (max_nested_mime_parts 100,
// max_total_mime_parts 10000), so that deep messages get the same
// structure from both.
var structureLimits = mime.Limits{MaxDepth: 100, MaxParts: 10000,
	MaxHeaderBytes: mime.DefaultLimits.MaxHeaderBytes, MaxHeaderLines: mime.DefaultLimits.MaxHeaderLines}

// structure is a parsed message.
type structure struct {
	root *part
	size int64
}

// parseStructure parses a message (in its CRLF form) into its part tree.
func parseStructure(r io.Reader) (*structure, error) {
	byID := map[string]*part{}
	var root *part
	cr := &countReader{r: r}
	err := mime.Walk(cr, structureLimits, mime.Handler{Begin: func(mp *mime.Part) io.Writer {
		p := &part{Part: mp}
		byID[mp.ID] = p
		if i := strings.LastIndexByte(mp.ID, '.'); i >= 0 {
			if parent := byID[mp.ID[:i]]; parent != nil {
				parent.children = append(parent.children, p)
			}
		} else {
			root = p
		}
		return nil
	}})
	if err == mime.ErrEmpty {
		empty := &mime.Part{ID: "1", Type: "text/plain", Params: map[string]string{}, Header: &mime.Header{}}
		return &structure{root: &part{Part: empty}}, nil
	}
	if err != nil {
		return nil, err
	}
	root.Offset = 0 // an mbox "From " line that pkg/mime skipped is in the header
	return &structure{root: root, size: cr.n}, nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// find returns the part a section's numbers name, or nil.
func (st *structure) find(nums []uint32) *part {
	parts := []*part{st.root}
	if st.root.isMultipart() {
		parts = st.root.children
	}
	var cur *part
	for i, n := range nums {
		if i > 0 {
			parts = cur.subparts()
			if parts == nil && n == 1 && cur != st.root {
				continue // part 1 of a leaf part is itself, as Dovecot has it
			}
		}
		if int(n) > len(parts) {
			return nil
		}
		cur = parts[n-1]
	}
	return cur
}

// span is a byte range of the message, or text computed from it (header
// fields).
type span struct {
	start, end int64
	text       []byte // when not nil, the content itself
	nilValue   bool   // the section does not exist
}

// sectionSpan finds a section in a parsed message.
func (st *structure) sectionSpan(sec section) span {
	msg := st.root // the message whose HEADER/TEXT is meant
	var p *part
	if len(sec.part) > 0 {
		p = st.find(sec.part)
		if p == nil {
			return span{}
		}
		switch sec.spec {
		case "":
			return span{start: p.BodyOffset, end: p.End}
		case "MIME":
			return span{start: p.Offset, end: p.BodyOffset}
		}
		if !p.isMessage() {
			return span{}
		}
		msg = p.children[0]
	}
	switch sec.spec {
	case "":
		return span{start: 0, end: st.size}
	case "TEXT":
		return span{start: msg.BodyOffset, end: msg.End}
	}
	return span{start: msg.Offset, end: msg.BodyOffset} // HEADER, HEADER.FIELDS[.NOT]
}

// readHeader scans a message's header (CRLF form) the way pkg/mime does:
// to the blank line, or to the first line that is neither a field nor a
// continuation. An mbox "From " line first is part of it (pkg/mime skips
// it; BODY[HEADER] holds it, as in Dovecot). It returns where the header
// ends (blank line included) and its text.
func readHeader(r *bufio.Reader) (end int64, hdr []byte, err error) {
	var n int64
	for {
		line, err := readFullLine(r)
		if len(line) == 0 {
			if err == io.EOF {
				err = nil
			}
			return n, hdr, err
		}
		body := bytes.TrimRight(line, "\r\n")
		switch {
		case len(body) == 0:
			hdr = append(hdr, line...)
			return n + int64(len(line)), hdr, nil
		case !isFieldLine(body):
			return n, hdr, nil
		default:
			hdr = append(hdr, line...)
		}
		n += int64(len(line))
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return n, hdr, err
		}
	}
}

// readFullLine reads a line of any length (with its LF).
func readFullLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err != bufio.ErrBufferFull {
		return line, err
	}
	long := append([]byte(nil), line...)
	for err == bufio.ErrBufferFull {
		line, err = r.ReadSlice('\n')
		long = append(long, line...)
	}
	return long, err
}

// isFieldLine: a header field or a continuation line, as pkg/mime reads
// them.
func isFieldLine(b []byte) bool {
	if b[0] == ' ' || b[0] == '\t' {
		return true
	}
	colon := bytes.IndexByte(b, ':')
	if colon <= 0 {
		return false
	}
	return !bytes.ContainsAny(b[:colon], " \t") || bytes.HasPrefix(b, []byte("From "))
}

// headerFields returns the header lines (with continuations) whose field
// names are (or, with not, are not) in names, then a blank line, as
// HEADER.FIELDS wants them.
func headerFields(hdr []byte, names []string, not bool) []byte {
	want := func(line []byte) bool {
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return not
		}
		name := string(bytes.TrimRight(line[:colon], " \t"))
		for _, n := range names {
			if strings.EqualFold(n, name) {
				return !not
			}
		}
		return not
	}
	var out []byte
	keep := false
	for len(hdr) > 0 {
		i := bytes.IndexByte(hdr, '\n')
		var line []byte
		if i < 0 {
			line, hdr = hdr, nil
		} else {
			line, hdr = hdr[:i+1], hdr[i+1:]
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
		if line[0] != ' ' && line[0] != '\t' {
			keep = want(line)
		}
		if keep {
			out = append(out, line...)
			if !bytes.HasSuffix(line, []byte("\n")) {
				out = append(out, '\r', '\n')
			}
		}
	}
	return append(out, '\r', '\n')
}

// fields parses a header block into unfolded (name, value) pairs: names
// lower-cased, values unfolded by dropping the line breaks only and
// without their leading space, as Dovecot's ENVELOPE has them.
func fields(hdr []byte) *mime.Header {
	h := &mime.Header{}
	var cur []byte
	flush := func() {
		if cur == nil {
			return
		}
		if i := bytes.IndexByte(cur, ':'); i > 0 {
			h.Fields = append(h.Fields, [2]string{strings.ToLower(strings.TrimSpace(string(cur[:i]))), strings.TrimLeft(string(cur[i+1:]), " \t")})
		}
		cur = nil
	}
	for len(hdr) > 0 {
		i := bytes.IndexByte(hdr, '\n')
		var line []byte
		if i < 0 {
			line, hdr = hdr, nil
		} else {
			line, hdr = hdr[:i], hdr[i+1:]
		}
		line = bytes.TrimRight(line, "\r")
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			if cur != nil && len(cur) < 64<<10 {
				cur = append(cur, line...)
			}
			continue
		}
		flush()
		cur = append([]byte(nil), line...)
	}
	flush()
	return h
}
