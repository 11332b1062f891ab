package check

import (
	"bytes"
	"fmt"
	"strings"
)

// Field is one header field as the message has it: Raw holds every line of
// it, folding and line ends included, so that a field nobody changes is
// written back byte for byte (DKIM signatures depend on it).
type Field struct {
	Name string // as written, without the colon and white space before it
	Raw  []byte
}

// Is reports whether the field is named name (case-insensitive).
func (f Field) Is(name string) bool { return strings.EqualFold(f.Name, name) }

// Value returns the field's body: what follows the colon, folding kept,
// line ends as LF and without the last one — what milters get (Sendmail
// and Postfix send LF line ends).
func (f Field) Value() string {
	i := bytes.IndexByte(f.Raw, ':')
	v := string(f.Raw[i+1:])
	v = strings.ReplaceAll(v, "\r\n", "\n")
	return strings.TrimSuffix(v, "\n")
}

// rawValue returns what follows the colon as the message has it, line
// ends and all.
func (f Field) rawValue() string {
	return string(f.Raw[bytes.IndexByte(f.Raw, ':')+1:])
}

// newField builds a field from a name and a value given by a milter (or
// ourselves): line ends become CRLF, a line that would start a new field
// is indented so the value cannot inject one, and a value without leading
// white space gets one space after the colon.
func newField(name, value string) Field {
	value = strings.ReplaceAll(value, "\r\n", "\n")
	value = strings.ReplaceAll(value, "\r", "")
	value = strings.ReplaceAll(value, "\x00", "")
	lines := strings.Split(value, "\n")
	var b strings.Builder
	b.WriteString(name)
	b.WriteString(":")
	for i, l := range lines {
		if i == 0 {
			if l != "" && l[0] != ' ' && l[0] != '\t' {
				b.WriteByte(' ')
			}
		} else {
			if strings.TrimSpace(l) == "" {
				continue // an empty line would end the header
			}
			b.WriteString("\r\n")
			if l[0] != ' ' && l[0] != '\t' {
				b.WriteByte('\t')
			}
		}
		b.WriteString(l)
	}
	b.WriteString("\r\n")
	return Field{Name: name, Raw: []byte(b.String())}
}

// HeaderLimits bound what the checks hold in memory of a message's header:
// a message over them is refused (552 5.3.4), since neither a DKIM
// verifier nor a milter can read it whole.
type HeaderLimits struct {
	MaxFields int
	MaxBytes  int
}

// DefaultHeaderLimits: 1,000 fields, 1 MiB. Real mail has a few dozen
// fields; Postfix keeps 100 KB of header (header_size_limit).
var DefaultHeaderLimits = HeaderLimits{MaxFields: 1000, MaxBytes: 1 << 20}

// errHeaderTooLarge is the reply to a header over the limits.
type errHeaderTooLarge struct{ lim HeaderLimits }

func (e errHeaderTooLarge) Error() string {
	return fmt.Sprintf("message header too large (more than %d fields or %d octets)", e.lim.MaxFields, e.lim.MaxBytes)
}

// headerParser collects the header section of a message as the message
// streams by, in pieces of any size, and finds where the header ends: at
// the empty line, or at the first line that is neither a field nor the
// continuation of one (a message whose body starts without the empty line;
// smtpd's header fixer decides the same way).
type headerParser struct {
	lim     HeaderLimits
	fields  []Field
	line    []byte // the line being read
	size    int    // octets of header seen
	done    bool
	sepOff  int64 // offset of the empty line (or the first body line)
	bodyOff int64 // offset of the body: after the empty line
	err     error
}

// feed takes the next bytes of the message, which start at offset off. It
// returns how many of them belong to the header (all of them until the
// header ends).
func (h *headerParser) feed(p []byte, off int64) int {
	n := 0
	for n < len(p) && !h.done && h.err == nil {
		i := bytes.IndexByte(p[n:], '\n')
		if i < 0 {
			h.line = append(h.line, p[n:]...)
			h.size += len(p) - n
			n = len(p)
			if h.size > h.lim.MaxBytes {
				h.err = errHeaderTooLarge{h.lim}
			}
			break
		}
		h.line = append(h.line, p[n:n+i+1]...)
		h.size += i + 1
		lineStart := off + int64(n) + int64(i+1) - int64(len(h.line))
		n += i + 1
		h.takeLine(lineStart)
	}
	return n
}

// takeLine classifies the complete line in h.line, which starts at offset
// start.
func (h *headerParser) takeLine(start int64) {
	l := h.line
	switch {
	case len(bytes.TrimRight(l, "\r\n")) == 0:
		h.end(start, start+int64(len(l)))
		return
	case len(h.fields) > 0 && (l[0] == ' ' || l[0] == '\t'):
		last := &h.fields[len(h.fields)-1]
		last.Raw = append(last.Raw, l...)
	default:
		name := fieldName(l)
		if name == "" {
			h.end(start, start)
			return
		}
		if len(h.fields) >= h.lim.MaxFields {
			h.err = errHeaderTooLarge{h.lim}
			return
		}
		h.fields = append(h.fields, Field{Name: name, Raw: append([]byte(nil), l...)})
	}
	if h.size > h.lim.MaxBytes {
		h.err = errHeaderTooLarge{h.lim}
	}
	h.line = h.line[:0]
}

func (h *headerParser) end(sep, body int64) {
	h.done, h.sepOff, h.bodyOff = true, sep, body
	h.line = nil
}

// finish ends a message that ended inside its header, size octets long: a
// last line without a line end (BDAT allows it) is kept as a field with
// CRLF added when it is one, and is the body otherwise.
func (h *headerParser) finish(size int64) {
	if h.done || h.err != nil {
		return
	}
	l := h.line
	start := size - int64(len(l))
	switch {
	case len(l) == 0:
		h.end(size, size)
	case len(h.fields) > 0 && (l[0] == ' ' || l[0] == '\t'):
		last := &h.fields[len(h.fields)-1]
		last.Raw = append(append(last.Raw, l...), "\r\n"...)
		h.end(size, size)
	case fieldName(l) != "" && len(h.fields) < h.lim.MaxFields:
		h.fields = append(h.fields, Field{Name: fieldName(l), Raw: append(append([]byte(nil), l...), "\r\n"...)})
		h.end(size, size)
	default:
		h.end(start, start)
	}
}

// fieldName returns the name of the field that line l starts, or "" when
// l starts none: a name is printable ASCII without a colon, followed by a
// colon; white space between the name and the colon is RFC 5322's
// obsolete syntax (§ 4.5.3), still accepted.
func fieldName(l []byte) string {
	i := bytes.IndexByte(l, ':')
	if i <= 0 {
		return ""
	}
	name := bytes.TrimRight(l[:i], " \t")
	if len(name) == 0 {
		return ""
	}
	for _, c := range name {
		if c <= 32 || c >= 127 {
			return ""
		}
	}
	return string(name)
}
