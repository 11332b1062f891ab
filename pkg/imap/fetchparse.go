package imap

import (
	"strconv"
	"strings"
)

// fetchItem is one FETCH data item.
type fetchItem struct {
	name    string // FLAGS UID INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE MODSEQ RFC822 RFC822.HEADER RFC822.TEXT BODY[] BINARY[] BINARY.SIZE[]
	peek    bool
	sec     section
	bracket bool // a section was given: BODY[…], not BODY
	partial bool
	offset  uint32
	count   uint32
}

// section is a body section: part numbers, then HEADER, HEADER.FIELDS,
// HEADER.FIELDS.NOT, TEXT, MIME or nothing.
type section struct {
	part   []uint32
	spec   string
	fields []string
}

// String writes the section as it goes back in the response.
func (s section) String() string {
	var b strings.Builder
	for i, p := range s.part {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(strconv.FormatUint(uint64(p), 10))
	}
	if s.spec != "" {
		if len(s.part) > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s.spec)
	}
	if s.spec == "HEADER.FIELDS" || s.spec == "HEADER.FIELDS.NOT" {
		b.WriteString(" (")
		for i, f := range s.fields {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(f)
		}
		b.WriteByte(')')
	}
	return b.String()
}

func parseFetch(r *reader, c *command) (any, error) {
	var a fetchArgs
	var err error
	if err = r.sp(); err != nil {
		return nil, err
	}
	if a.set, err = r.seqSet(); err != nil {
		return nil, err
	}
	if err = r.sp(); err != nil {
		return nil, err
	}
	if r.peek() == '(' {
		err = r.list(func() error {
			it, err := fetchAtt(r)
			a.items = append(a.items, it...)
			return err
		})
		if err == nil && len(a.items) == 0 {
			err = errSyntax("FETCH needs at least one item")
		}
	} else {
		a.items, err = fetchAtt(r)
	}
	if err != nil {
		return nil, err
	}
	if r.maybe(' ') {
		err = r.list(func() error {
			k, err := r.keyword()
			if err != nil {
				return err
			}
			switch k {
			case "CHANGEDSINCE":
				if err := r.sp(); err != nil {
					return err
				}
				a.changedSince, err = r.number64()
				if err == nil && a.changedSince == 0 {
					err = errSyntax("CHANGEDSINCE must be positive")
				}
				return err
			case "VANISHED":
				a.vanished = true
				return nil
			}
			return errSyntax("unknown FETCH modifier %s", clip(k))
		})
		if err != nil {
			return nil, err
		}
		if a.vanished && (!c.uid || a.changedSince == 0) {
			return nil, errSyntax("VANISHED needs UID FETCH and CHANGEDSINCE")
		}
	}
	return a, nil
}

// fetchAtt reads one fetch-att (or a macro: ALL, FAST, FULL).
func fetchAtt(r *reader) ([]fetchItem, error) {
	start := r.pos
	for r.pos < len(r.line) && (isAtomChar(r.line[r.pos]) && r.line[r.pos] != '[' && r.line[r.pos] != '<') {
		r.pos++
	}
	name := strings.ToUpper(string(r.line[start:r.pos]))
	switch name {
	case "ALL":
		return []fetchItem{{name: "FLAGS"}, {name: "INTERNALDATE"}, {name: "RFC822.SIZE"}, {name: "ENVELOPE"}}, nil
	case "FAST":
		return []fetchItem{{name: "FLAGS"}, {name: "INTERNALDATE"}, {name: "RFC822.SIZE"}}, nil
	case "FULL":
		return []fetchItem{{name: "FLAGS"}, {name: "INTERNALDATE"}, {name: "RFC822.SIZE"}, {name: "ENVELOPE"}, {name: "BODY"}}, nil
	case "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
		"RFC822.TEXT", "BODYSTRUCTURE", "UID", "MODSEQ":
		return []fetchItem{{name: name}}, nil
	case "BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE":
	default:
		if name == "" {
			return nil, errSyntax("missing FETCH item")
		}
		return nil, errSyntax("unknown FETCH item %s", clip(name))
	}
	if name == "BODY" && r.peek() != '[' {
		return []fetchItem{{name: "BODY"}}, nil
	}
	it := fetchItem{name: name, bracket: true}
	if strings.HasSuffix(name, ".PEEK") {
		it.name, it.peek = strings.TrimSuffix(name, ".PEEK"), true
	}
	if err := r.char('['); err != nil {
		return nil, err
	}
	binary := it.name != "BODY"
	var err error
	if it.sec, err = parseSection(r, binary); err != nil {
		return nil, err
	}
	if err := r.char(']'); err != nil {
		return nil, err
	}
	if r.peek() == '<' && it.name != "BINARY.SIZE" {
		r.pos++
		if it.offset, err = r.number(); err != nil {
			return nil, err
		}
		if err := r.char('.'); err != nil {
			return nil, err
		}
		if it.count, err = r.nzNumber(); err != nil {
			return nil, err
		}
		if err := r.char('>'); err != nil {
			return nil, err
		}
		it.partial = true
	}
	return []fetchItem{it}, nil
}

// parseSection reads section-spec (BINARY: section-binary, part numbers
// only).
func parseSection(r *reader, binary bool) (section, error) {
	var s section
	for r.peek() >= '1' && r.peek() <= '9' {
		n, err := r.nzNumber()
		if err != nil {
			return s, err
		}
		s.part = append(s.part, n)
		if len(s.part) > 100 {
			return s, errSyntax("section too deep")
		}
		if !r.maybe('.') {
			return s, nil
		}
		if binary && !(r.peek() >= '1' && r.peek() <= '9') {
			return s, errSyntax("BINARY takes part numbers only")
		}
	}
	if r.peek() == ']' {
		if len(s.part) > 0 {
			return s, errSyntax("section ends with a dot")
		}
		return s, nil
	}
	if binary {
		return s, errSyntax("BINARY takes part numbers only")
	}
	start := r.pos
	for r.pos < len(r.line) && (r.line[r.pos] >= 'A' && r.line[r.pos] <= 'Z' || r.line[r.pos] >= 'a' && r.line[r.pos] <= 'z' || r.line[r.pos] == '.') {
		r.pos++
	}
	s.spec = strings.ToUpper(string(r.line[start:r.pos]))
	switch s.spec {
	case "HEADER", "TEXT":
	case "MIME":
		if len(s.part) == 0 {
			return s, errSyntax("MIME needs a part number")
		}
	case "HEADER.FIELDS", "HEADER.FIELDS.NOT":
		if err := r.sp(); err != nil {
			return s, err
		}
		err := r.list(func() error {
			f, err := r.astring()
			if err == nil && !validFieldName(f) {
				err = errSyntax("bad header field name %q", clip(f))
			}
			s.fields = append(s.fields, strings.ToUpper(f))
			return err
		})
		if err == nil && len(s.fields) == 0 {
			err = errSyntax("HEADER.FIELDS needs a field name")
		}
		if err != nil {
			return s, err
		}
	default:
		return s, errSyntax("unknown section %s", clip(s.spec))
	}
	return s, nil
}

func validFieldName(f string) bool {
	if f == "" {
		return false
	}
	for i := 0; i < len(f); i++ {
		if c := f[i]; c <= 0x20 || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}
