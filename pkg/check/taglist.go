package check

import "strings"

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
	for _, part := range strings.Split(s, ";") {
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
// (base64 values are folded across lines).
func stripFWS(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, s)
}
