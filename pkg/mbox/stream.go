package mbox

// Streaming readers and a writer of whole mbox files, for moving mail
// between an mbox and a Maildir (mailuser import and export): one message
// after another, none of them held in memory, whatever the file's size.
//
// Two dialects are read. mboxo is read with github.com/emersion/go-mbox,
// the project's choice for it: a line starting "From " starts a message
// and one '>' is taken from ">From " lines only. mboxrd (getmail, our
// Append) is read here, beside it, because go-mbox cannot read it: mboxrd
// takes one '>' from every line matching ^>+From , so that a body holding
// ">From " survives the round trip, and a From_ line starts a message only
// after a blank line. go-mbox also drops the From_ line, whose date an
// import keeps; the mboxo reader watches the bytes go-mbox reads to
// recover it.
//
// mutt and Dovecot write neither exactly: they leave From_ lines in
// bodies unquoted and write a Content-Length field, which their readers
// trust when the file bears it out (the body ends at a blank line and a
// From_ line, or at the end of the file). The mboxrd reader does the same
// when it reads a file it can check (an io.ReaderAt); go-mbox cannot.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	gombox "github.com/emersion/go-mbox"
)

// Format is an mbox dialect.
type Format string

// The dialects Stream reads.
const (
	Mboxo  Format = "mboxo"
	Mboxrd Format = "mboxrd"
)

// ErrTruncated is the error of a message cut short: the file ends in the
// middle of a line, or right after a From_ line.
var ErrTruncated = errors.New("mbox: truncated (the file ends in the middle of a message)")

// maxFromLine is how much of a From_ line a Stream keeps.
const maxFromLine = 1024

// Stream reads the messages of an mbox in order, holding none of them.
type Stream interface {
	// Next returns the next message's From_ line (without its line end)
	// and a reader of the message: LF line ends, From_ quoting undone.
	// The reader is valid until the next call of Next. After the last
	// message Next returns io.EOF; a file that is not an mbox gives
	// ErrNotMbox at the first call, a message cut short ErrTruncated from
	// its reader.
	Next() (from string, msg io.Reader, err error)
}

// NewStream returns a Stream of the mbox r in format f.
func NewStream(r io.Reader, f Format) (Stream, error) {
	switch f {
	case Mboxrd:
		ra, _ := r.(io.ReaderAt)
		return &rdStream{br: bufio.NewReaderSize(r, 64<<10), ra: ra}, nil
	case Mboxo:
		sn := &fromSniffer{r: r, atLineStart: true}
		return &oStream{sn: sn, r: gombox.NewReader(sn)}, nil
	}
	return nil, fmt.Errorf("mbox: unknown format %q (mboxo or mboxrd)", f)
}

// rdStream reads mboxrd.
type rdStream struct {
	br       *bufio.Reader
	ra       io.ReaderAt // the same file, to check Content-Length fields (nil: not checked, not used)
	off      int64       // bytes read from br
	started  bool
	cur      *rdMessage
	nextFrom []byte // the From_ line that ended the previous message (maybe partial)
}

func (s *rdStream) Next() (string, io.Reader, error) {
	var first []byte
	if s.cur != nil {
		if _, err := io.Copy(io.Discard, s.cur); err != nil {
			return "", nil, err
		}
		if s.cur.atEOF {
			return "", nil, io.EOF
		}
		first = s.nextFrom
	} else if s.started {
		return "", nil, io.EOF
	} else {
		s.started = true
		// Blank lines before the first From_ line are skipped, as go-mbox does.
		for {
			line, err := s.readSlice()
			if len(line) == 0 && err == io.EOF {
				return "", nil, io.EOF // an empty mbox
			}
			if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
				return "", nil, fmt.Errorf("mbox: read: %w", err)
			}
			if isBlank(line) {
				continue
			}
			if !bytes.HasPrefix(line, []byte(fromPrefix)) {
				return "", nil, ErrNotMbox
			}
			first = append([]byte(nil), line...)
			break
		}
	}
	from, err := s.restOfLine(first)
	if err != nil {
		return "", nil, err
	}
	s.cur = &rdMessage{s: s, x: &xform{delta: -1}, atLineStart: true, inHeader: true, cl: -1}
	s.cur.x.w = &s.cur.out
	return from, s.cur, nil
}

// restOfLine reads the rest of a line of which start was read, keeping
// maxFromLine bytes of it.
func (s *rdStream) restOfLine(start []byte) (string, error) {
	line := start
	if len(line) > maxFromLine {
		line = line[:maxFromLine]
	}
	for len(start) == 0 || start[len(start)-1] != '\n' {
		chunk, err := s.readSlice()
		if len(line) < maxFromLine {
			line = append(line, chunk[:min(len(chunk), maxFromLine-len(line))]...)
		}
		start = chunk
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			if len(chunk) == 0 || chunk[len(chunk)-1] != '\n' {
				return "", ErrTruncated
			}
			break
		}
		if err != nil {
			return "", fmt.Errorf("mbox: read: %w", err)
		}
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

// readSlice is br.ReadSlice('\n'), counted.
func (s *rdStream) readSlice() ([]byte, error) {
	line, err := s.br.ReadSlice('\n')
	s.off += int64(len(line))
	return line, err
}

func isBlank(line []byte) bool {
	return len(line) == 1 && line[0] == '\n' || len(line) == 2 && line[0] == '\r' && line[1] == '\n'
}

// rdMessage reads one message of an rdStream.
type rdMessage struct {
	s           *rdStream
	x           *xform
	out         bytes.Buffer
	held        []byte // a blank line: the separator if a From_ line follows
	atLineStart bool
	done, atEOF bool
	err         error
	// The header, watched for a Content-Length field (mutt and Dovecot
	// write one and do not quote From_ lines): when the file shows it
	// right, the body is taken by its length, as they read it.
	inHeader bool
	cl       int64 // the Content-Length value, -1 when none
	inCL     bool  // the current header field is Content-Length
	rawMode  bool  // the body is taken by length
	rawLeft  int64 // body bytes still to take by length
	raw      *xform
	buf      []byte
}

func (m *rdMessage) Read(p []byte) (int, error) {
	for m.out.Len() == 0 {
		if m.err != nil {
			return 0, m.err
		}
		if m.done {
			return 0, io.EOF
		}
		m.fill()
	}
	return m.out.Read(p)
}

// fill reads one line (or a piece of a long one) into out.
func (m *rdMessage) fill() {
	if m.rawMode {
		m.fillRaw()
		return
	}
	line, err := m.s.readSlice()
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		m.err = fmt.Errorf("mbox: read: %w", err)
		return
	}
	if len(line) > 0 && m.inHeader && m.atLineStart {
		m.header(line)
		if m.rawMode {
			m.x.Write(line) // the blank line ending the header
			m.atLineStart = true
			return
		}
	}
	if len(line) > 0 {
		if m.atLineStart {
			if m.held != nil {
				if bytes.HasPrefix(line, []byte(fromPrefix)) {
					m.s.nextFrom = append(m.s.nextFrom[:0], line...)
					m.end()
					return
				}
				m.x.Write(m.held)
				m.held = nil
			}
			if isBlank(line) {
				m.held = append(m.held[:0], line...)
				return
			}
		}
		m.x.Write(line)
		m.atLineStart = line[len(line)-1] == '\n'
	}
	if err == io.EOF {
		m.atEOF = true
		if !m.atLineStart {
			m.err = ErrTruncated
			return
		}
		m.end()
	}
}

// header looks at a header line: a Content-Length field is noted; at the
// blank line that ends the header, a Content-Length the file bears out
// (the body ends where it says, at a From_ line or the end of the file)
// makes the body be taken by length.
func (m *rdMessage) header(line []byte) {
	if isBlank(line) {
		m.inHeader = false
		if m.cl < 0 || m.s.ra == nil || !m.lengthFits(m.s.off, m.cl) {
			return
		}
		m.rawMode, m.rawLeft = true, m.cl
		m.raw = &xform{w: &m.out}
		m.buf = make([]byte, 32<<10)
		return
	}
	if line[0] == ' ' || line[0] == '\t' {
		if m.inCL {
			m.cl = -1 // a folded Content-Length: not one we trust
		}
		return
	}
	m.inCL = false
	name, value, ok := bytes.Cut(line, []byte(":"))
	if ok && strings.EqualFold(string(bytes.TrimSpace(name)), "Content-Length") {
		m.inCL = true
		m.cl = -1
		if n, err := strconv.ParseInt(string(bytes.TrimSpace(value)), 10, 64); err == nil && n >= 0 {
			m.cl = n
		}
	}
}

// lengthFits reports whether a body of n bytes from start ends where the
// file has the end of a message: its end, or a blank line and a From_ line.
func (m *rdMessage) lengthFits(start, n int64) bool {
	var b [7]byte
	k, err := m.s.ra.ReadAt(b[:], start+n)
	if err != nil && err != io.EOF {
		return false
	}
	switch {
	case k == 0:
		return err == io.EOF
	case k == 1 && b[0] == '\n':
		return true
	}
	return bytes.HasPrefix(b[:k], []byte("\n"+fromPrefix))
}

// fillRaw takes body bytes by length, then the separator after them.
func (m *rdMessage) fillRaw() {
	if m.rawLeft > 0 {
		n, err := m.s.br.Read(m.buf[:min(int64(len(m.buf)), m.rawLeft)])
		m.s.off += int64(n)
		m.rawLeft -= int64(n)
		m.raw.Write(m.buf[:n])
		if m.rawLeft > 0 || n == 0 {
			if err == io.EOF {
				m.err = ErrTruncated
			} else if err != nil {
				m.err = fmt.Errorf("mbox: read: %w", err)
			}
			return
		}
	}
	m.raw.flush()
	// The separator: a blank line, then the next From_ line or the end.
	line, err := m.s.readSlice()
	if len(line) == 0 && err == io.EOF {
		m.atEOF, m.done = true, true
		return
	}
	if isBlank(line) {
		line, err = m.s.readSlice()
	}
	switch {
	case len(line) == 0 && err == io.EOF:
		m.atEOF, m.done = true, true
	case bytes.HasPrefix(line, []byte(fromPrefix)):
		m.s.nextFrom = append(m.s.nextFrom[:0], line...)
		m.done = true
	case err != nil && err != io.EOF && err != bufio.ErrBufferFull:
		m.err = fmt.Errorf("mbox: read: %w", err)
	default:
		m.err = fmt.Errorf("mbox: the file changed while it was read (no From_ line after a Content-Length body)")
	}
}

// end finishes the message: the held blank line was the separator.
func (m *rdMessage) end() {
	m.x.flush()
	m.done = true
	if m.x.n == 0 && m.held == nil {
		m.err = ErrTruncated // a From_ line and nothing else
	}
}

// oStream reads mboxo with go-mbox.
type oStream struct {
	sn *fromSniffer
	r  *gombox.Reader
	n  int // messages returned
}

func (s *oStream) Next() (string, io.Reader, error) {
	msg, err := s.r.NextMessage()
	if errors.Is(err, gombox.ErrInvalidFormat) {
		return "", nil, ErrNotMbox
	}
	if err != nil {
		if err != io.EOF {
			err = fmt.Errorf("mbox: read: %w", err)
		}
		return "", nil, err
	}
	s.n++
	from := ""
	if len(s.sn.froms) > 0 {
		from, s.sn.froms = s.sn.froms[0], s.sn.froms[1:]
	}
	om := &oMessage{s: s, index: s.n, src: msg, x: &xform{}}
	om.x.w = &om.out
	return from, om, nil
}

// oMessage is a go-mbox message with its CRLF line ends made LF again
// (xform with no change to quoting) and a cut-off end reported.
type oMessage struct {
	s     *oStream
	index int
	src   io.Reader
	x     *xform
	out   bytes.Buffer
	buf   [32 << 10]byte
	done  bool
	err   error
}

func (m *oMessage) Read(p []byte) (int, error) {
	for m.out.Len() == 0 {
		if m.err != nil {
			return 0, m.err
		}
		if m.done {
			return 0, io.EOF
		}
		n, err := m.src.Read(m.buf[:])
		m.x.Write(m.buf[:n])
		if err == io.EOF {
			m.x.flush()
			m.done = true
			sn := m.s.sn
			last := sn.eof && sn.seen == m.index
			if last && (sn.partial || m.x.n == 0) {
				m.err = ErrTruncated
			}
		} else if err != nil {
			m.err = fmt.Errorf("mbox: read: %w", err)
		}
	}
	return m.out.Read(p)
}

// fromSniffer passes an mbox through to go-mbox and keeps the From_ lines
// it meets (go-mbox reads ahead, so a few may wait in froms), and whether
// the file ends in the middle of a line. go-mbox takes every line starting
// "From " for a From_ line, and so does the sniffer: the nth line it keeps
// is the nth message's.
type fromSniffer struct {
	r           io.Reader
	atLineStart bool
	match       int    // bytes of "From " matched at the start of this line
	inFrom      bool   // within a From_ line
	line        []byte // the From_ line so far
	froms       []string
	seen        int  // From_ lines seen
	eof         bool // r is at its end
	partial     bool // r ended in the middle of a line
}

func (s *fromSniffer) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	b := p[:n]
	for len(b) > 0 {
		switch {
		case s.inFrom:
			i := bytes.IndexByte(b, '\n')
			end := len(b)
			if i >= 0 {
				end = i
			}
			if len(s.line) < maxFromLine {
				s.line = append(s.line, b[:min(end, maxFromLine-len(s.line))]...)
			}
			if i < 0 {
				b = nil
				continue
			}
			s.froms = append(s.froms, strings.TrimRight(string(s.line), "\r"))
			s.seen++
			s.inFrom, s.atLineStart, s.line = false, true, s.line[:0]
			b = b[i+1:]
		case s.atLineStart:
			if b[0] == fromPrefix[s.match] {
				s.match++
				b = b[1:]
				if s.match == len(fromPrefix) {
					s.inFrom, s.atLineStart, s.match = true, false, 0
					s.line = append(s.line[:0], fromPrefix...)
				}
				continue
			}
			s.atLineStart, s.match = false, 0
		default:
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				b = nil
				continue
			}
			s.atLineStart = true
			b = b[i+1:]
		}
	}
	if n > 0 {
		s.partial = p[n-1] != '\n'
	}
	if err == io.EOF {
		s.eof = true
		if s.inFrom {
			// A last From_ line without its line end.
			s.froms = append(s.froms, strings.TrimRight(string(s.line), "\r"))
			s.seen++
			s.inFrom = false
		}
	}
	return n, err
}

// ParseFromLine returns the sender and the date of a From_ line ("From
// sender date"). The date is asctime's (as ctime(3) writes it, local time),
// with or without a time zone after the time or after the year, as mutt,
// Dovecot, Postfix and procmail write it; ok is false when none fits.
func ParseFromLine(line string) (sender string, date time.Time, ok bool) {
	rest, found := strings.CutPrefix(line, fromPrefix)
	if !found {
		return "", time.Time{}, false
	}
	f := strings.Fields(rest)
	if len(f) < 2 {
		return "", time.Time{}, false
	}
	sender = f[0]
	when := strings.Join(f[1:], " ")
	for _, layout := range fromLayouts {
		if t, err := time.ParseInLocation(layout, when, time.Local); err == nil {
			return sender, t, true
		}
	}
	return sender, time.Time{}, false
}

var fromLayouts = []string{
	"Mon Jan 2 15:04:05 2006",
	"Mon Jan 2 15:04:05 2006 -0700",
	"Mon Jan 2 15:04:05 -0700 2006",
	"Mon Jan 2 15:04:05 MST 2006",
	"Mon Jan 2 15:04:05 2006 MST",
	"Mon Jan 2 15:04 2006",
	"Mon, 2 Jan 2006 15:04:05 -0700",
}

// WriteMessage writes one mboxrd record to w: the From_ line for sender and
// date (FromLine), r with LF line ends and ^>*From  lines given one more
// '>', a line end if r lacks a last one, and the blank line that separates
// records. What is written is exactly what Stream (Mboxrd) gives back.
func WriteMessage(w io.Writer, sender string, date time.Time, r io.Reader) error {
	if _, err := io.WriteString(w, FromLine(sender, date)+"\n"); err != nil {
		return err
	}
	q := &xform{w: w, delta: +1, endsNL: true, crEOL: true}
	if _, err := io.Copy(q, r); err != nil {
		return err
	}
	q.flush()
	if q.err != nil {
		return q.err
	}
	end := "\n"
	if !q.endsNL {
		end = "\n\n"
	}
	_, err := io.WriteString(w, end)
	return err
}
