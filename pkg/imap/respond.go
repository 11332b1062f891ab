package imap

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// appendString appends str as a quoted string when it can be one, else as
// a literal. 8-bit text is quoted only after the client enabled UTF-8
// (RFC 6855, RFC 9051); before, it goes out as a literal.
func appendString(b []byte, str string, utf8OK bool) []byte {
	if quotable(str, utf8OK) {
		return appendQuoted(b, str)
	}
	b = append(b, '{')
	b = strconv.AppendInt(b, int64(len(str)), 10)
	b = append(b, "}\r\n"...)
	for i := 0; i < len(str); i++ {
		if str[i] == 0 {
			b = append(b, 0x80) // no NUL outside literal8
		} else {
			b = append(b, str[i])
		}
	}
	return b
}

func quotable(str string, utf8OK bool) bool {
	for i := 0; i < len(str); i++ {
		c := str[i]
		// A quote goes in a literal, a backslash is escaped, as Dovecot
		// writes them (some clients get escaped quotes wrong).
		if c == '\r' || c == '\n' || c == 0 || c == '"' {
			return false
		}
		if c >= 0x80 && !utf8OK {
			return false
		}
	}
	return !utf8OK || utf8.ValidString(str)
}

func appendQuoted(b []byte, str string) []byte {
	b = append(b, '"')
	for i := 0; i < len(str); i++ {
		if c := str[i]; c == '"' || c == '\\' {
			b = append(b, '\\')
		}
		b = append(b, str[i])
	}
	return append(b, '"')
}

// appendNString appends NIL for "" and the string otherwise.
func appendNString(b []byte, str string, utf8OK bool) []byte {
	if str == "" {
		return append(b, "NIL"...)
	}
	return appendString(b, str, utf8OK)
}

// appendMailbox appends a mailbox name as the client reads them: modified
// UTF-7 unless it enabled UTF-8.
func (s *session) appendMailbox(b []byte, name string) []byte {
	if !s.utf8Names() {
		name = encodeUTF7(name)
	}
	return appendAString(b, name, s.utf8Names())
}

// appendAString appends an atom when str can be one (as Dovecot writes
// mailbox names), else a string.
func appendAString(b []byte, str string, utf8OK bool) []byte {
	if str == "" || strings.EqualFold(str, "NIL") {
		return appendString(b, str, utf8OK)
	}
	for i := 0; i < len(str); i++ {
		if c := str[i]; !isAtomChar(c) && c != ']' {
			return appendString(b, str, utf8OK)
		}
	}
	return append(b, str...)
}

// mailboxString is appendMailbox as a string.
func (s *session) mailboxString(name string) string {
	return string(s.appendMailbox(nil, name))
}

// appendFlags appends "(" flags ")": system flags, \Recent when recent,
// then keywords, as Dovecot orders them.
func appendFlags(b []byte, flags []string, recent bool) []byte {
	b = append(b, '(')
	n := 0
	add := func(f string) {
		if n > 0 {
			b = append(b, ' ')
		}
		b = append(b, f...)
		n++
	}
	for _, f := range flags {
		if strings.HasPrefix(f, `\`) {
			add(f)
		}
	}
	if recent {
		add(`\Recent`)
	}
	for _, f := range flags {
		if !strings.HasPrefix(f, `\`) {
			add(f)
		}
	}
	return append(b, ')')
}

// appendDateTime appends an INTERNALDATE: "dd-Mon-yyyy hh:mm:ss +zzzz".
func appendDateTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, "02-Jan-2006 15:04:05 -0700")
	return append(b, '"')
}
