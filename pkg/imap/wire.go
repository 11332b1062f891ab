package imap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// The command reader: lines and literals as RFC 9051 § 4.3 and § 7.5 have
// them. A literal's end is its octet count and nothing else (a CRLF
// inside it is data, never the end of a command: the smuggling class of
// issue 11); a command continues on the line after each literal.

// syntaxError is answered BAD; the rest of the command is skipped.
type syntaxError struct{ msg string }

func (e *syntaxError) Error() string { return e.msg }

func errSyntax(format string, args ...any) error {
	return &syntaxError{fmt.Sprintf(format, args...)}
}

// tooLongError: the command is over the command size limit. The session
// ends (BYE): the client does not expect its command to be cut short.
type tooLongError struct{ limit int }

func (e *tooLongError) Error() string {
	return fmt.Sprintf("command longer than %d octets", e.limit)
}

// literalError: a literal over its limit. A synchronizing one was not sent
// (no "+" was given), so the command is just refused; a non-synchronizing
// one is on its way and is read and dropped, or the session ends when it
// is too big to drop (or comes before login).
type literalError struct {
	size  int64
	limit int64
	sync  bool
}

func (e *literalError) Error() string {
	return fmt.Sprintf("literal of %d octets over the limit of %d", e.size, e.limit)
}

// reader reads commands from a client.
type reader struct {
	br *bufio.Reader
	// cont asks the client for a synchronizing literal ("+ …").
	cont func() error
	// maxCmd bounds a command's lines and the literals held in memory.
	maxCmd int
	// maxLiteral bounds one literal held in memory (4 KiB before login).
	maxLiteral int64

	line []byte // the current line of the command, without its CRLF
	pos  int    // parse position in line
	size int    // octets of this command so far
	buf  []byte // backing store for line
	// utf8 names: mailbox names are UTF-8 on the wire (IMAP4rev2 or
	// UTF8=ACCEPT enabled), not modified UTF-7.
	utf8 bool
	// check refuses a command (wrong state) before its arguments are read.
	check func(*command) error
}

func newReader(br *bufio.Reader, cont func() error) *reader {
	return &reader{br: br, cont: cont, maxCmd: 64 << 10, maxLiteral: 4096}
}

// begin reads the first line of a command.
func (r *reader) begin() error {
	r.size = 0
	if cap(r.buf) > 16<<10 {
		r.buf = nil // don't keep a big buffer for an idle session
	}
	return r.readLine()
}

// readLine reads the next line of the command into r.line. Bare LF ends a
// command line as CRLF does (as Dovecot allows); NUL never appears in one.
func (r *reader) readLine() error {
	r.buf = r.buf[:0]
	for {
		chunk, err := r.br.ReadSlice('\n')
		if r.size+len(r.buf)+len(chunk) > r.maxCmd {
			return &tooLongError{r.maxCmd}
		}
		r.buf = append(r.buf, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(r.buf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		break
	}
	r.size += len(r.buf)
	l := r.buf[:len(r.buf)-1]
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	r.line, r.pos = l, 0
	if bytes.IndexByte(l, 0) >= 0 {
		return errSyntax("NUL in command line")
	}
	return nil
}

// skip drops the rest of a command after an error: a non-synchronizing
// literal that ends the current line is on its way, so it is read (by its
// octet count) and dropped, and so on for the lines after it; a
// synchronizing one never comes (the client waits for "+").
func (r *reader) skip() error {
	for {
		n, sync, ok := literalAtEnd(r.line)
		if !ok || sync {
			r.line, r.pos = nil, 0
			return nil
		}
		if n > r.discardLimit() {
			return &literalError{size: n, limit: r.discardLimit()}
		}
		if _, err := io.CopyN(io.Discard, r.br, n); err != nil {
			return err
		}
		if err := r.readLine(); err != nil {
			var se *syntaxError
			if errors.As(err, &se) {
				continue
			}
			return err
		}
	}
}

// discardLimit is the largest non-synchronizing literal read and dropped
// rather than ending the session: none before login.
func (r *reader) discardLimit() int64 {
	if r.maxLiteral <= 4096 {
		return r.maxLiteral
	}
	return 1 << 30
}

// literalAtEnd finds "{N}" or "{N+}" (or "~{N}") at the end of a line.
func literalAtEnd(l []byte) (n int64, sync, ok bool) {
	if len(l) < 3 || l[len(l)-1] != '}' {
		return 0, false, false
	}
	i := bytes.LastIndexByte(l, '{')
	if i < 0 {
		return 0, false, false
	}
	num := l[i+1 : len(l)-1]
	sync = true
	if len(num) > 0 && num[len(num)-1] == '+' {
		num, sync = num[:len(num)-1], false
	}
	v, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil || v < 0 || len(num) == 0 || num[0] == '+' {
		return 0, false, false
	}
	return v, sync, true
}

// Tokens.

func (r *reader) atEnd() bool { return r.pos >= len(r.line) }

func (r *reader) peek() byte {
	if r.pos >= len(r.line) {
		return 0
	}
	return r.line[r.pos]
}

// end checks that the command is over.
func (r *reader) end() error {
	if !r.atEnd() {
		return errSyntax("unexpected %q at the end of the command", clip(string(r.line[r.pos:])))
	}
	return nil
}

func (r *reader) sp() error {
	if r.peek() != ' ' {
		if r.atEnd() {
			return errSyntax("missing argument")
		}
		return errSyntax("expected a space before %q", clip(string(r.line[r.pos:])))
	}
	r.pos++
	return nil
}

// char consumes c.
func (r *reader) char(c byte) error {
	if r.peek() != c || r.atEnd() {
		return errSyntax("expected %q", string(c))
	}
	r.pos++
	return nil
}

func (r *reader) maybe(c byte) bool {
	if !r.atEnd() && r.line[r.pos] == c {
		r.pos++
		return true
	}
	return false
}

func isAtomChar(c byte) bool {
	switch c {
	case '(', ')', '{', ' ', '%', '*', '"', '\\', ']':
		return false
	}
	return c > 0x20 && c < 0x7f
}

// isAStringChar: atom chars and "]"; 8-bit too, leniently (UTF-8 names
// and search text from clients that do not quote them).
func isAStringChar(c byte) bool { return isAtomChar(c) || c == ']' || c >= 0x80 }

// listChar: atom chars, list wildcards and "]" (list-mailbox).
func isListChar(c byte) bool { return isAStringChar(c) || c == '%' || c == '*' }

// word reads 1*char.
func (r *reader) word(ok func(byte) bool, what string) (string, error) {
	start := r.pos
	for r.pos < len(r.line) && ok(r.line[r.pos]) {
		r.pos++
	}
	if r.pos == start {
		if r.atEnd() {
			return "", errSyntax("missing %s", what)
		}
		return "", errSyntax("expected %s at %q", what, clip(string(r.line[r.pos:])))
	}
	return string(r.line[start:r.pos]), nil
}

func (r *reader) atom() (string, error) { return r.word(isAtomChar, "an atom") }

// keyword reads an atom and upper-cases it.
func (r *reader) keyword() (string, error) {
	a, err := r.atom()
	return strings.ToUpper(a), err
}

// tag: 1*<ASTRING-CHAR except "+">.
func (r *reader) tag() (string, error) {
	return r.word(func(c byte) bool { return isAStringChar(c) && c != '+' }, "a tag")
}

func (r *reader) number() (uint32, error) {
	v, err := r.number64()
	if err != nil {
		return 0, err
	}
	if v > 0xffffffff {
		return 0, errSyntax("number %d out of range", v)
	}
	return uint32(v), nil
}

func (r *reader) nzNumber() (uint32, error) {
	v, err := r.number()
	if err == nil && v == 0 {
		err = errSyntax("0 where a positive number is needed")
	}
	return v, err
}

// number64 reads a number up to 2^63-1 (mod-sequence-value).
func (r *reader) number64() (uint64, error) {
	start := r.pos
	for r.pos < len(r.line) && r.line[r.pos] >= '0' && r.line[r.pos] <= '9' {
		r.pos++
	}
	if r.pos == start {
		return 0, errSyntax("expected a number")
	}
	v, err := strconv.ParseUint(string(r.line[start:r.pos]), 10, 63)
	if err != nil {
		return 0, errSyntax("number out of range")
	}
	return v, nil
}

// quoted reads a quoted string ('"' already next).
func (r *reader) quoted() (string, error) {
	r.pos++
	var b []byte
	for {
		if r.atEnd() {
			return "", errSyntax("unterminated quoted string")
		}
		c := r.line[r.pos]
		r.pos++
		switch c {
		case '"':
			return string(b), nil
		case '\\':
			if r.atEnd() {
				return "", errSyntax("unterminated quoted string")
			}
			c = r.line[r.pos]
			if c != '"' && c != '\\' {
				return "", errSyntax("bad escape \\%c in quoted string", c)
			}
			r.pos++
		}
		b = append(b, c)
	}
}

// literalHeader reads "{N}", "{N+}" (and "~{N}…" when binary) that must
// end the line.
func (r *reader) literalHeader(binary bool) (n int64, sync bool, err error) {
	if binary {
		if err := r.char('~'); err != nil {
			return 0, false, err
		}
	}
	if err := r.char('{'); err != nil {
		return 0, false, err
	}
	start := r.pos
	for r.pos < len(r.line) && r.line[r.pos] >= '0' && r.line[r.pos] <= '9' {
		r.pos++
	}
	v, perr := strconv.ParseInt(string(r.line[start:r.pos]), 10, 64)
	if r.pos == start || perr != nil {
		return 0, false, errSyntax("bad literal length")
	}
	sync = !r.maybe('+')
	if err := r.char('}'); err != nil {
		return 0, false, err
	}
	if !r.atEnd() {
		return 0, false, errSyntax("literal length not at the end of the line")
	}
	return v, sync, nil
}

// literal reads a literal held in memory (an argument, not an APPEND
// message) and the line after it.
func (r *reader) literal() ([]byte, error) {
	n, sync, err := r.literalHeader(false)
	if err != nil {
		return nil, err
	}
	limit := r.maxLiteral
	if room := int64(r.maxCmd - r.size); room < limit {
		limit = room
	}
	if n > limit {
		return nil, &literalError{size: n, limit: limit, sync: sync}
	}
	if sync {
		if err := r.cont(); err != nil {
			return nil, err
		}
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.br, b); err != nil {
		return nil, err
	}
	r.size += int(n)
	if err := r.readLine(); err != nil {
		return nil, err
	}
	return b, nil
}

// str reads a string: quoted or literal.
func (r *reader) str() (string, error) {
	switch r.peek() {
	case '"':
		return r.quoted()
	case '{':
		b, err := r.literal()
		return string(b), err
	}
	if r.atEnd() {
		return "", errSyntax("missing string")
	}
	return "", errSyntax("expected a string at %q", clip(string(r.line[r.pos:])))
}

// astring: an atom (with "]") or a string.
func (r *reader) astring() (string, error) {
	switch r.peek() {
	case '"', '{':
		return r.str()
	}
	return r.word(isAStringChar, "an argument")
}

// nstring: NIL or a string; ok is false for NIL.
func (r *reader) nstring() (s string, ok bool, err error) {
	if r.peek() == '"' || r.peek() == '{' {
		s, err = r.str()
		return s, true, err
	}
	a, err := r.atom()
	if err != nil {
		return "", false, err
	}
	if !strings.EqualFold(a, "NIL") {
		return "", false, errSyntax("expected a string or NIL")
	}
	return "", false, nil
}

// mailbox reads a mailbox name and decodes it (modified UTF-7, or UTF-8
// once enabled); "INBOX" in any case is INBOX.
func (r *reader) mailbox() (string, error) {
	s, err := r.astring()
	if err != nil {
		return "", err
	}
	return r.decodeName(s)
}

func (r *reader) decodeName(s string) (string, error) {
	if strings.EqualFold(s, "INBOX") {
		return "INBOX", nil
	}
	if r.utf8 {
		if !validUTF8(s) {
			return "", errSyntax("mailbox name is not UTF-8")
		}
		return s, nil
	}
	d, err := decodeUTF7(s)
	if err != nil {
		// An 8-bit name from a client that did not enable UTF-8: take it
		// as UTF-8 if it is (as Dovecot does), else refuse.
		if validUTF8(s) && !isASCII(s) {
			return s, nil
		}
		return "", errSyntax("mailbox name %q is not valid modified UTF-7", clip(s))
	}
	return d, nil
}

// listMailbox reads a LIST pattern: list-chars or a string.
func (r *reader) listMailbox() (string, error) {
	switch r.peek() {
	case '"', '{':
		return r.str()
	}
	return r.word(isListChar, "a mailbox pattern")
}

// flag reads a flag: \System or keyword (and \* when star is allowed).
func (r *reader) flag(star bool) (string, error) {
	if r.maybe('\\') {
		if star && r.maybe('*') {
			return `\*`, nil
		}
		a, err := r.atom()
		if err != nil {
			return "", err
		}
		return canonicalFlag(`\` + a)
	}
	return r.atom()
}

// flagList reads "(" [flag *(SP flag)] ")".
func (r *reader) flagList() ([]string, error) {
	var out []string
	err := r.list(func() error {
		f, err := r.flag(false)
		out = append(out, f)
		return err
	})
	return out, err
}

// list reads "(" [item *(SP item)] ")".
func (r *reader) list(item func() error) error {
	if err := r.char('('); err != nil {
		return err
	}
	if r.maybe(')') {
		return nil
	}
	for {
		if err := item(); err != nil {
			return err
		}
		if r.maybe(')') {
			return nil
		}
		if err := r.sp(); err != nil {
			return err
		}
	}
}

// seqSet reads a sequence-set or "$".
func (r *reader) seqSet() (seqSet, error) {
	if r.maybe('$') {
		return seqSet{saved: true}, nil
	}
	var s seqSet
	num := func() (uint32, error) {
		if r.maybe('*') {
			return star, nil
		}
		v, err := r.number()
		if err == nil && v == 0 {
			err = errSyntax("invalid message sequence number 0")
		}
		return v, err
	}
	for {
		lo, err := num()
		if err != nil {
			return s, errSyntax("invalid sequence set: %v", err)
		}
		hi := lo
		if r.maybe(':') {
			if hi, err = num(); err != nil {
				return s, errSyntax("invalid sequence set: %v", err)
			}
		}
		s.ranges = append(s.ranges, seqRange{lo, hi})
		if !r.maybe(',') {
			break
		}
	}
	if !r.atEnd() && r.peek() != ' ' && r.peek() != ')' {
		return s, errSyntax("invalid sequence set at %q", clip(string(r.line[r.pos:])))
	}
	return s, nil
}

func clip(s string) string {
	if len(s) > 30 {
		s = s[:30] + "…"
	}
	return strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return '?'
		}
		return c
	}, s)
}
