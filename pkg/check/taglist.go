package check

import (
	"strings"
	"unicode/utf8"
)

// Tag is one tag=value pair of a tag list.
type Tag struct {
	Name, Value string
}

// ParseTagList parses a tag list (RFC 6376 § 3.2: DKIM-Signature fields and
// key records; DMARC records use the same syntax): tag=value pairs
// separated by semicolons, white space (folding included) around names,
// values and the equals sign ignored, a trailing semicolon allowed. Names
// must be ALPHA *(ALPHA / DIGIT / "_"), and a name given twice makes the
// whole list invalid (§ 3.2: "MUST be treated as an error"). ok is false
// for any such error; the tags parsed so far are returned anyway.
func ParseTagList(s string) (tags []Tag, ok bool) {
	ok = true
	// One allocation for the list (a DKIM-Signature has about ten tags),
	// none for the parts: this runs for every signature of every message.
	tags = make([]Tag, 0, strings.Count(s, ";")+1)
	for rest, more := s, true; more; {
		var part string
		part, rest, more = strings.Cut(rest, ";")
		name, value, found := strings.Cut(part, "=")
		name = strings.Trim(name, " \t\r\n")
		if !found {
			if name != "" {
				ok = false
			}
			continue
		}
		if !validTagName(name) {
			ok = false
			continue
		}
		for _, t := range tags {
			if t.Name == name {
				ok = false
			}
		}
		tags = append(tags, Tag{Name: name, Value: strings.Trim(value, " \t\r\n")})
	}
	return tags, ok
}

func validTagName(n string) bool {
	if n == "" || !isAlpha(n[0]) {
		return false
	}
	for i := 1; i < len(n); i++ {
		c := n[i]
		if !isAlpha(c) && !(c >= '0' && c <= '9') && c != '_' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// tagValue returns the value of the first tag named name.
func tagValue(tags []Tag, name string) string {
	for _, t := range tags {
		if t.Name == name {
			return t.Value
		}
	}
	return ""
}

// stripFWS removes the folding white space a tag value may contain
// (base64 values are folded across lines). An invalid UTF-8 sequence
// becomes U+FFFD, as strings.Map makes it.
func stripFWS(s string) string {
	if !isASCII(s) {
		return strings.Map(func(r rune) rune {
			switch r {
			case ' ', '\t', '\r', '\n':
				return -1
			}
			return r
		}, s)
	}
	if !strings.ContainsAny(s, " \t\r\n") {
		return s // most values: no copy
	}
	return stripFWSPrefix(s, len(s))
}

// stripFWSPrefix returns the first n octets of the ASCII string s
// without its folding white space, copying no more of s than that.
func stripFWSPrefix(s string, n int) string {
	b := make([]byte, 0, min(n, len(s)))
	for i := 0; i < len(s) && len(b) < n; i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\r', '\n':
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

// bPrefix returns the first 8 octets of a signature's b= value without
// its folding white space (RFC 6008's header.b), as stripFWS and a
// slice would, without copying the whole value.
func bPrefix(v string) string {
	if !isASCII(v) {
		b := stripFWS(v)
		return b[:min(len(b), 8)]
	}
	return stripFWSPrefix(v, 8)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
