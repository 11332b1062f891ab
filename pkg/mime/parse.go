package mime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Limits bound what a hostile message can make the parser hold or do.
type Limits struct {
	MaxDepth       int // nesting of multiparts and message/rfc822
	MaxParts       int // entities in the whole message
	MaxHeaderBytes int // per header section
	MaxHeaderLines int // fields per header section
}

// DefaultLimits are generous for real mail and small for memory.
var DefaultLimits = Limits{MaxDepth: 32, MaxParts: 10000, MaxHeaderBytes: 64 << 10, MaxHeaderLines: 1000}

// Part is one entity of the MIME tree.
type Part struct {
	ID          string            `json:"part"` // 1, 1.2, 1.2.1 …: the root is 1
	Type        string            `json:"type"` // lower-case type/subtype
	Params      map[string]string `json:"-"`
	Disposition string            `json:"disposition,omitempty"`
	Encoding    string            `json:"encoding,omitempty"`
	Charset     string            `json:"charset,omitempty"`
	Name        string            `json:"name,omitempty"` // decoded file name, as sent (not sanitized)
	Size        int64             `json:"size"`           // encoded size of the body
	DecodedSize int64             `json:"decoded_size"`   // size after transfer decoding
	Depth       int               `json:"depth"`
	Container   bool              `json:"container,omitempty"` // multipart or message/rfc822 parsed further
	Header      *Header           `json:"-"`
	Warnings    []string          `json:"warnings,omitempty"`

	// Where the part lies in the input, for IMAP's BODY[section] and
	// BODYSTRUCTURE: its header starts at Offset, its body at BodyOffset
	// and ends at End (exclusive; the line break before a boundary belongs
	// to the boundary, RFC 2046 § 5.1.1, so it is not in the body). Lines
	// counts the line breaks inside the body.
	Offset, BodyOffset, End int64 `json:"-"`
	Lines                   int64 `json:"-"`
}

// IsAttachment reports whether a leaf is a file rather than message text:
// declared an attachment, or named, or not text at all.
func (p *Part) IsAttachment() bool {
	if p.Container {
		return false
	}
	if p.Disposition == "attachment" || p.Name != "" {
		return true
	}
	return !strings.HasPrefix(p.Type, "text/") && p.Type != "message/delivery-status"
}

// Handler receives the parts of a message in order.
type Handler struct {
	// Begin is called after a part's header; for a leaf it returns where
	// the decoded body goes (nil discards it).
	Begin func(p *Part) io.Writer
	// End is called when the part's body is over, with sizes and warnings.
	End func(p *Part)
	// Warn receives problems not tied to one part's content.
	Warn func(msg string)
}

// ErrEmpty is returned when the input holds nothing that looks like a
// message.
var ErrEmpty = errors.New("no message found (empty input)")

type parser struct {
	r      *bufio.Reader
	lim    Limits
	h      Handler
	parts  int
	pos    int64
	start  bool   // next fragment starts a line
	back   []byte // a line pushed back (with its terminator)
	eof    bool
	err    error
	capped bool
	raw    []*rawCopy // message/rfc822 parts being copied verbatim

	// The last piece returned by next: where it began, the length of the
	// line break before it and the number of line breaks before it. A
	// boundary found on that line ends the entities it closes there.
	lineStart, eolBefore, nlBefore int64
	lastEOL                        int64 // line break of the last piece (0: none)
	nl                             int64 // line breaks read so far
}

// rawCopy copies the lines of an encapsulated message to a writer. A line
// is held back until the next one is read, so that the boundary line that
// ends the message is never copied.
type rawCopy struct {
	s       *sink
	pending []byte
}

// term says what ended an entity: -1 the end of input, else the index in
// the boundary stack of the delimiter found, close for a "--b--" one.
type term struct {
	idx   int
	close bool
}

var atEOF = term{idx: -1}

// Walk parses the message in r and reports its parts to h. It returns
// ErrEmpty when there was nothing to read, or a read error; everything
// else is a warning.
func Walk(r io.Reader, lim Limits, h Handler) error {
	if h.Warn == nil {
		h.Warn = func(string) {}
	}
	p := &parser{r: bufio.NewReaderSize(r, 64<<10), lim: lim, h: h, start: true}
	// An mbox "From " line before the header is not part of the message.
	if b, _ := p.r.Peek(5); string(b) == "From " {
		l, _ := p.r.ReadSlice('\n')
		p.pos = int64(len(l)) // offsets stay those of the input
	}
	if b, err := p.r.Peek(1); len(b) == 0 {
		if err != nil && err != io.EOF {
			return fmt.Errorf("read: %w", err)
		}
		return ErrEmpty
	}
	p.entity("1", 0, nil, "text/plain")
	if p.err != nil {
		return fmt.Errorf("read: %w", p.err)
	}
	return nil
}

// next returns the next piece of input: a whole line without its
// terminator (eol), or, for lines longer than the buffer, a piece of one
// (eol nil, and the following piece has start false).
func (p *parser) next() (b, eol []byte, start bool, ok bool) {
	start = p.start
	if p.back != nil {
		b, p.back = p.back, nil
	} else {
		if p.eof {
			return nil, nil, start, false
		}
		var err error
		b, err = p.r.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			p.eof = true
			if err != io.EOF {
				p.err = err
			}
			if len(b) == 0 {
				return nil, nil, start, false
			}
		}
	}
	p.lineStart, p.eolBefore, p.nlBefore = p.pos, p.lastEOL, p.nl
	p.pos += int64(len(b))
	for _, rc := range p.raw {
		if rc.pending != nil {
			rc.s.write(rc.pending)
		}
		rc.pending = append(rc.pending[:0], b...)
	}
	if n := len(b); n > 0 && b[n-1] == '\n' {
		if n > 1 && b[n-2] == '\r' {
			b, eol = b[:n-2], crlf
		} else {
			b, eol = b[:n-1], nl
		}
		p.start = true
	} else {
		p.start = p.eof
		if p.eof {
			eol = nil
		}
	}
	p.lastEOL = int64(len(eol))
	if eol != nil {
		p.nl++
	}
	return b, eol, start, true
}

var crlf = []byte("\r\n")

// unread pushes back the line just returned by next (whole lines only).
func (p *parser) unread(b, eol []byte) {
	p.back = append(append(make([]byte, 0, len(b)+len(eol)), b...), eol...)
	for _, rc := range p.raw {
		rc.pending = rc.pending[:0] // read again by next
	}
	p.pos -= int64(len(p.back))
	p.lastEOL, p.nl = p.eolBefore, p.nlBefore
	p.start = true
}

// bounds sets where pt's body ends and its line count, once the entity
// is over: at the boundary line just read (t.idx >= 0), less the line
// break before it, or at the end of input.
func (p *parser) bounds(pt *Part, t term, nlStart int64) {
	end, lines := p.pos, p.nl-nlStart
	if t.idx >= 0 {
		end, lines = p.lineStart-p.eolBefore, p.nlBefore-nlStart
		if p.eolBefore > 0 {
			lines--
		}
	}
	if end < pt.Offset {
		end = pt.Offset
	}
	if pt.BodyOffset > end {
		pt.BodyOffset = end
	}
	if lines < 0 {
		lines = 0
	}
	pt.End, pt.Lines = end, lines
}

// isBoundary matches a line against the boundary stack, innermost first.
func isBoundary(line []byte, stack []string) (term, bool) {
	if len(line) < 3 || line[0] != '-' || line[1] != '-' {
		return term{}, false
	}
	for i := len(stack) - 1; i >= 0; i-- {
		b := stack[i]
		if !bytes.HasPrefix(line[2:], []byte(b)) {
			continue
		}
		rest := line[2+len(b):]
		cl := bytes.HasPrefix(rest, []byte("--"))
		if cl {
			rest = rest[2:]
		}
		if len(bytes.Trim(rest, " \t")) == 0 {
			return term{idx: i, close: cl}, true
		}
	}
	return term{}, false
}

// header reads a header section. A boundary inside it ends the entity
// (t, true); a line that is not a field ends the header and is left for
// the body (a header without its blank line).
func (p *parser) header(stack []string, id string) (*Header, term, bool) {
	h := &Header{}
	var cur []byte
	size, dropped := 0, false
	flush := func() {
		if cur == nil {
			return
		}
		if i := bytes.IndexByte(cur, ':'); i > 0 {
			if len(h.Fields) < p.lim.MaxHeaderLines {
				h.Fields = append(h.Fields, [2]string{strings.ToLower(strings.TrimSpace(string(cur[:i]))), strings.TrimSpace(string(cur[i+1:]))})
			} else {
				dropped = true
			}
		}
		cur = nil
	}
	defer func() {
		if dropped {
			p.h.Warn(fmt.Sprintf("part %s: header over the limits (%d bytes, %d fields): the rest ignored", id, p.lim.MaxHeaderBytes, p.lim.MaxHeaderLines))
		}
	}()
	for {
		b, eol, start, ok := p.next()
		if !ok {
			flush()
			return h, atEOF, true
		}
		if !start {
			continue // the rest of an over-long line: dropped
		}
		if t, isB := isBoundary(b, stack); isB {
			flush()
			return h, t, true
		}
		if len(b) == 0 {
			flush()
			return h, term{}, false
		}
		if b[0] == ' ' || b[0] == '\t' {
			if cur != nil && size+len(b) <= p.lim.MaxHeaderBytes {
				cur = append(cur, ' ')
				cur = append(cur, bytes.TrimLeft(b, " \t")...)
				size += len(b)
			} else if cur != nil {
				dropped = true
			}
			continue
		}
		colon := bytes.IndexByte(b, ':')
		if colon <= 0 || bytes.ContainsAny(b[:colon], " \t") && !bytes.HasPrefix(b, []byte("From ")) {
			// not a header field: the body starts here
			flush()
			if len(h.Fields) > 0 || id != "1" {
				p.h.Warn(fmt.Sprintf("part %s: no blank line after the header", id))
			}
			p.unread(b, eol)
			return h, term{}, false
		}
		flush()
		if size+len(b) > p.lim.MaxHeaderBytes {
			dropped = true
			continue
		}
		size += len(b)
		cur = append([]byte(nil), b...)
	}
}

func (p *parser) newPart(id string, depth int, h *Header, defType string) *Part {
	pt := &Part{ID: id, Depth: depth, Header: h}
	ct := h.Get("content-type")
	t, params := ParseParams(ct)
	if t == "" || !strings.Contains(t, "/") {
		if ct != "" {
			pt.Warnings = append(pt.Warnings, fmt.Sprintf("bad Content-Type %q: read as %s", trunc(ct), defType))
		}
		t = defType
		if ct == "" {
			params = map[string]string{}
		}
	}
	pt.Type, pt.Params = t, params
	pt.Charset = strings.ToLower(params["charset"])
	disp, dparams := ParseParams(h.Get("content-disposition"))
	pt.Disposition = disp
	pt.Encoding = strings.ToLower(strings.TrimSpace(h.Get("content-transfer-encoding")))
	name := dparams["filename"]
	if name == "" {
		name = params["name"]
	}
	if !utf8.ValidString(name) {
		// raw 8-bit in a header: Latin-1 is the usual culprit
		name = latin1([]byte(name), true)
	}
	pt.Name = DecodeWords(name)
	return pt
}

func trunc(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

func (p *parser) entity(id string, depth int, stack []string, defType string) term {
	offset := p.pos
	h, t, cut := p.header(stack, id)
	start, nlStart := p.pos, p.nl
	pt := p.newPart(id, depth, h, defType)
	pt.Offset, pt.BodyOffset = offset, start
	p.parts++
	if p.parts > p.lim.MaxParts {
		if !p.capped {
			p.h.Warn(fmt.Sprintf("more than %d parts: the rest is not parsed", p.lim.MaxParts))
			p.capped = true
		}
		return p.skip(stack)
	}
	if cut {
		if p.h.Begin != nil {
			p.h.Begin(pt)
		}
		if t.idx >= 0 && len(h.Fields) > 0 {
			pt.Warnings = append(pt.Warnings, "part has a header but no body")
		}
		p.bounds(pt, t, nlStart)
		p.end(pt)
		return t
	}
	bnd := pt.Params["boundary"]
	switch {
	case strings.HasPrefix(pt.Type, "multipart/") && bnd != "" && len(bnd) <= 200 && depth < p.lim.MaxDepth:
		pt.Container = true
		if p.h.Begin != nil {
			p.h.Begin(pt)
		}
		t := p.multipart(pt, append(stack[:len(stack):len(stack)], bnd))
		pt.Size = p.pos - start
		pt.DecodedSize = pt.Size
		p.bounds(pt, t, nlStart)
		p.end(pt)
		return t
	case strings.HasPrefix(pt.Type, "multipart/") && bnd == "":
		pt.Warnings = append(pt.Warnings, "multipart without a boundary: read as one part")
	case (pt.Type == "message/rfc822" || pt.Type == "message/global") && depth < p.lim.MaxDepth &&
		(pt.Encoding == "" || pt.Encoding == "7bit" || pt.Encoding == "8bit" || pt.Encoding == "binary"):
		pt.Container = true
		var w io.Writer
		if p.h.Begin != nil {
			w = p.h.Begin(pt)
		}
		var rc *rawCopy
		if w != nil {
			// the message is also wanted whole (a forwarded attachment)
			rc = &rawCopy{s: newSink(w), pending: nil}
			p.raw = append(p.raw, rc)
		}
		t := p.entity(id+".1", depth+1, stack, "text/plain")
		pt.Size = p.pos - start
		pt.DecodedSize = pt.Size
		if rc != nil {
			p.raw = p.raw[:len(p.raw)-1]
			if t.idx < 0 && rc.pending != nil {
				rc.s.write(rc.pending)
			}
			rc.s.flush()
			if rc.s.err != nil {
				pt.Warnings = append(pt.Warnings, fmt.Sprintf("write: %v", rc.s.err))
			}
			if c, ok := w.(io.Closer); ok {
				if err := c.Close(); err != nil {
					pt.Warnings = append(pt.Warnings, fmt.Sprintf("close: %v", err))
				}
			}
		}
		p.bounds(pt, t, nlStart)
		p.end(pt)
		return t
	case depth >= p.lim.MaxDepth && (strings.HasPrefix(pt.Type, "multipart/") || strings.HasPrefix(pt.Type, "message/")):
		pt.Warnings = append(pt.Warnings, fmt.Sprintf("nested deeper than %d: not parsed further", p.lim.MaxDepth))
	}
	switch pt.Encoding {
	case "", "7bit", "8bit", "binary", "base64", "quoted-printable", "x-uuencode", "uuencode", "x-uue":
	default:
		pt.Warnings = append(pt.Warnings, fmt.Sprintf("unknown transfer encoding %q: body kept as is", trunc(pt.Encoding)))
	}
	var w io.Writer
	if p.h.Begin != nil {
		w = p.h.Begin(pt)
	}
	s := newSink(w)
	d := newDecoder(pt.Encoding, s)
	var pending []byte
	t = atEOF
	for {
		b, eol, start, ok := p.next()
		if !ok {
			break
		}
		if start {
			if bt, isB := isBoundary(b, stack); isB {
				t = bt
				break
			}
		}
		if pending != nil {
			d.eol(pending)
			pt.Size += int64(len(pending))
		}
		d.data(b)
		pt.Size += int64(len(b))
		pending = eol
	}
	if t.idx < 0 && pending != nil {
		// at the end of input the last line break is the body's own
		d.eol(pending)
		pt.Size += int64(len(pending))
	}
	pt.Warnings = append(pt.Warnings, d.close()...)
	s.flush()
	if s.err != nil {
		pt.Warnings = append(pt.Warnings, fmt.Sprintf("write: %v", s.err))
	}
	pt.DecodedSize = s.n
	if c, ok := w.(io.Closer); ok {
		if err := c.Close(); err != nil {
			pt.Warnings = append(pt.Warnings, fmt.Sprintf("close: %v", err))
		}
	}
	p.bounds(pt, t, nlStart)
	p.end(pt)
	return t
}

func (p *parser) end(pt *Part) {
	if p.h.End != nil {
		p.h.End(pt)
	}
}

// skip reads up to the next boundary of the stack without parsing.
func (p *parser) skip(stack []string) term {
	for {
		b, _, start, ok := p.next()
		if !ok {
			return atEOF
		}
		if start {
			if t, isB := isBoundary(b, stack); isB {
				return t
			}
		}
	}
}

func (p *parser) multipart(pt *Part, stack []string) term {
	own := len(stack) - 1
	def := "text/plain"
	if pt.Type == "multipart/digest" {
		def = "message/rfc822"
	}
	// preamble, kept (up to a point) in case the boundary never comes
	t, pre := p.preamble(stack)
	switch {
	case t.idx < 0:
		pt.Warnings = append(pt.Warnings, "boundary never found: the body is read as one text part")
		p.rescue(pt, pre)
		return t
	case t.idx != own:
		pt.Warnings = append(pt.Warnings, "boundary never found before the enclosing one: no parts")
		return t
	case t.close:
		pt.Warnings = append(pt.Warnings, "no parts (closing boundary first)")
		return p.epilogue(stack)
	}
	for n := 1; ; n++ {
		t = p.entity(fmt.Sprintf("%s.%d", pt.ID, n), pt.Depth+1, stack, def)
		switch {
		case t.idx == own && !t.close:
			continue
		case t.idx == own && t.close:
			return p.epilogue(stack)
		case t.idx < 0:
			pt.Warnings = append(pt.Warnings, "closing boundary missing (message truncated?)")
			return t
		default:
			pt.Warnings = append(pt.Warnings, "closing boundary missing before the enclosing one")
			return t
		}
	}
}

const maxRescue = 1 << 20

// preamble skips to the first boundary, keeping up to maxRescue bytes.
func (p *parser) preamble(stack []string) (term, []byte) {
	var keep []byte
	for {
		b, eol, start, ok := p.next()
		if !ok {
			return atEOF, keep
		}
		if start {
			if t, isB := isBoundary(b, stack); isB {
				return t, nil
			}
		}
		if len(keep)+len(b)+1 <= maxRescue {
			keep = append(keep, b...)
			if eol != nil {
				keep = append(keep, '\n')
			}
		}
	}
}

// rescue reports the body of a multipart whose boundary never came as one
// text part, so that its text is not lost.
func (p *parser) rescue(parent *Part, body []byte) {
	pt := &Part{ID: parent.ID + ".1", Type: "text/plain", Params: map[string]string{}, Depth: parent.Depth + 1, Header: &Header{},
		Offset: parent.BodyOffset, BodyOffset: parent.BodyOffset, End: p.pos}
	if len(body) >= maxRescue {
		pt.Warnings = append(pt.Warnings, "only the first MiB is kept")
	}
	var w io.Writer
	if p.h.Begin != nil {
		w = p.h.Begin(pt)
	}
	s := newSink(w)
	s.write(body)
	s.flush()
	pt.Size, pt.DecodedSize = int64(len(body)), s.n
	pt.Lines = int64(bytes.Count(body, []byte{'\n'}))
	if c, ok := w.(io.Closer); ok {
		c.Close()
	}
	p.end(pt)
}

// epilogue skips text after a closing boundary up to an enclosing
// boundary.
func (p *parser) epilogue(stack []string) term {
	return p.skip(stack[:len(stack)-1])
}
