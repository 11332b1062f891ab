package submission

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"
)

// This file is the one place that decides what a header field line is and
// which fields letterbox adds to a message from one of our own users
// (sendmail, and smtpd sessions that authenticated): RFC 5322 § 3.6 makes
// Date and Message-ID mandatory (SHOULD for Message-ID), and a submission
// server is where RFC 6409 § 8.2 and 8.3 say to add them.

// IsFieldLine reports whether l (without its line end) starts a header
// field: a name of printable ASCII, then a colon. White space between the
// name and the colon is RFC 5322's obsolete syntax (§ 4.5.3), still found
// in old mail; taking such a line for the start of the body would put a
// blank line into the header.
func IsFieldLine(l string) bool {
	i := strings.IndexByte(l, ':')
	if i <= 0 {
		return false
	}
	name := strings.TrimRight(l[:i], " \t")
	if name == "" {
		return false
	}
	for j := 0; j < len(name); j++ {
		if name[j] <= 32 || name[j] >= 127 {
			return false
		}
	}
	return true
}

// FieldName returns the lower-case name of the field that line l starts;
// l must satisfy IsFieldLine.
func FieldName(l string) string {
	name, _, _ := strings.Cut(l, ":")
	return strings.ToLower(strings.TrimSpace(name))
}

// IsContinuation: a folded field goes on in a line starting with white
// space (RFC 5322 § 2.2.3).
func IsContinuation(l string) bool {
	return l != "" && (l[0] == ' ' || l[0] == '\t')
}

// MissingFields returns the Date and Message-ID lines (CRLF-terminated) that
// a header lacking them needs; has is keyed by FieldName.
func MissingFields(has map[string]bool, hostname string, now time.Time) string {
	var b strings.Builder
	if !has["date"] {
		b.WriteString("Date: " + now.Format(time.RFC1123Z) + "\r\n")
	}
	if !has["message-id"] {
		var rnd [8]byte
		rand.Read(rnd[:])
		fmt.Fprintf(&b, "Message-ID: <%s.%s@%s>\r\n", now.UTC().Format("20060102150405"), hex.EncodeToString(rnd[:]), hostname)
	}
	return b.String()
}

// maxHeaderLine bounds what HeaderFixer holds while it looks for the end of
// a header line. smtpd's checker refuses lines over 1000 octets before they
// get here; the bound keeps the fixer safe on its own too: a longer line is
// no header field, so the header ends there.
const maxHeaderLine = 4096

// HeaderFixer streams a message (CRLF lines, as the checker passes them)
// and adds the fields MissingFields names at the end of its header section,
// without holding more than one header line in memory. Everything the
// client sent is passed on unchanged and in order; only the missing fields
// are inserted. The header ends at the empty line; a line that is neither a
// field nor a continuation ends it too (the body started without the empty
// line), and then an empty line is inserted after the added fields so the
// body stays the body, as sendmail's PrepareMessage and Postfix's cleanup do.
type HeaderFixer struct {
	r        io.Reader
	hostname string
	now      func() time.Time

	has     map[string]bool
	line    []byte // the header line being read, not passed on yet
	inBody  bool   // past the header: pass everything through
	out     []byte // ready to be returned
	err     error  // from r, returned once out is drained
	started bool   // at least one field seen (a continuation needs one)
}

func NewHeaderFixer(r io.Reader, hostname string, now func() time.Time) *HeaderFixer {
	if now == nil {
		now = time.Now
	}
	return &HeaderFixer{r: r, hostname: hostname, now: now, has: map[string]bool{}}
}

func (h *HeaderFixer) Read(p []byte) (int, error) {
	for len(h.out) == 0 {
		if h.err != nil {
			return 0, h.err
		}
		if h.inBody {
			return h.r.Read(p)
		}
		// p is free to read into: scan copies what it keeps.
		n, err := h.r.Read(p)
		h.scan(p[:n])
		if err == io.EOF {
			h.finish()
		}
		h.err = err
	}
	n := copy(p, h.out)
	h.out = h.out[n:]
	return n, nil
}

// scan takes the next bytes of the header section.
func (h *HeaderFixer) scan(b []byte) {
	for len(b) > 0 {
		if h.inBody {
			h.out = append(h.out, b...)
			return
		}
		i := indexLF(b)
		if i < 0 {
			h.line = append(h.line, b...)
			if len(h.line) > maxHeaderLine {
				h.endHeader(true)
			}
			return
		}
		h.line = append(h.line, b[:i+1]...)
		b = b[i+1:]
		h.headerLine()
	}
}

func indexLF(b []byte) int {
	for i, c := range b {
		if c == '\n' {
			return i
		}
	}
	return -1
}

// headerLine handles the complete line in h.line.
func (h *HeaderFixer) headerLine() {
	l := strings.TrimRight(string(h.line), "\r\n")
	switch {
	case len(h.line) > maxHeaderLine:
		// As scan decides for a long line still unfinished, so that the
		// result does not depend on how the data was cut into reads.
		h.endHeader(true)
	case l == "":
		h.endHeader(false)
	case h.started && IsContinuation(l):
		h.passLine()
	case IsFieldLine(l):
		h.started = true
		h.has[FieldName(l)] = true
		h.passLine()
	default:
		h.endHeader(true)
	}
}

func (h *HeaderFixer) passLine() {
	h.out = append(h.out, h.line...)
	h.line = h.line[:0]
}

// endHeader inserts the missing fields before h.line (the empty line, or
// the first body line when sep is set, which then gets an empty line
// before it) and passes the rest through.
func (h *HeaderFixer) endHeader(sep bool) {
	h.out = append(h.out, MissingFields(h.has, h.hostname, h.now())...)
	if sep {
		h.out = append(h.out, "\r\n"...)
	}
	h.out = append(h.out, h.line...)
	h.line = nil
	h.inBody = true
}

// finish ends a message that ended inside its header: no empty line and no
// body. A last line without CRLF (BDAT allows it) is completed first if it
// is a field, so the added fields don't run into it.
func (h *HeaderFixer) finish() {
	if h.inBody {
		return
	}
	if len(h.line) == 0 {
		h.endHeader(false)
		return
	}
	l := string(h.line)
	if h.started && IsContinuation(l) || IsFieldLine(l) {
		if IsFieldLine(l) {
			h.has[FieldName(l)] = true
		}
		h.line = append(h.line, "\r\n"...)
		h.passLine()
		h.endHeader(false)
		return
	}
	h.endHeader(true)
}
