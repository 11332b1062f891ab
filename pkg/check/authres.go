package check

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-msgauth/authres"
)

// authResultsField formats our Authentication-Results field (RFC 8601)
// with hostname as authserv-id, one result a line.
func authResultsField(hostname string, results []authres.Result) Field {
	var b strings.Builder
	b.WriteString("Authentication-Results: ")
	b.WriteString(hostname)
	if len(results) == 0 {
		b.WriteString("; none")
	}
	for _, r := range results {
		b.WriteString(";\r\n\t")
		b.WriteString(formatResult(r))
	}
	b.WriteString("\r\n")
	return Field{Name: "Authentication-Results", Raw: []byte(b.String())}
}

// formatResult returns authres.Format's text for r alone, without the
// "; " before it: "method=value", the reason, then the other properties
// by name, empty ones left out, values quoted as authres quotes them.
// The same text without authres's map lookup for every character, its
// concatenations and its sort of a new key list (a field's formatting
// was about a tenth of what our checks cost a message outside
// go-msgauth); FuzzFormatResult compares the two. Types we do not make
// go to authres.Format.
func formatResult(r authres.Result) string {
	var method, reason string
	var value authres.ResultValue
	var props [][2]string // name, value, in the order of the names
	switch r := r.(type) {
	case *authres.SPFResult:
		method, value, reason = "spf", r.Value, r.Reason
		props = [][2]string{{"smtp.helo", r.Helo}, {"smtp.mailfrom", r.From}}
	case *authres.DMARCResult:
		method, value, reason = "dmarc", r.Value, r.Reason
		props = [][2]string{{"header.from", r.From}}
	case *authres.GenericResult:
		method, value, reason = r.Method, r.Value, r.Params["reason"]
		props = make([][2]string, 0, len(r.Params))
		for k, v := range r.Params {
			if k != "reason" {
				props = append(props, [2]string{k, v})
			}
		}
		slices.SortFunc(props, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	default:
		return strings.TrimSpace(strings.TrimPrefix(authres.Format("", []authres.Result{r}), "; "))
	}
	var b strings.Builder
	b.WriteString(method)
	b.WriteByte('=')
	b.WriteString(string(value))
	b.WriteByte(' ')
	first := true
	add := func(k, v string, quote func(string) bool) {
		if v == "" {
			return
		}
		if !first {
			b.WriteByte(' ')
		}
		first = false
		b.WriteString(k)
		b.WriteByte('=')
		if !quote(v) {
			b.WriteString(v)
			return
		}
		b.WriteByte('"')
		b.WriteString(strings.ReplaceAll(v, `"`, `\"`))
		b.WriteByte('"')
	}
	add("reason", reason, needsQuotes)
	for _, p := range props {
		add(p[0], p[1], pvalueNeedsQuotes)
	}
	return strings.TrimSpace(b.String())
}

// needsQuotes reports whether authres quotes a value (RFC 2045's value:
// a token, or else a quoted-string): when it has a space, a control
// character or a tspecial. Octets of UTF-8 sequences are none of these.
func needsQuotes(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '(', ')', '<', '>', '@', ',', ';', ':', '\\', '"', '/', '[', ']', '?', '=':
			return true
		default:
			if c <= ' ' {
				return true
			}
		}
	}
	return false
}

// pvalueNeedsQuotes is needsQuotes for a property's value, which authres
// leaves as it is when it looks like an address: letters, digits (any
// script's) and most ASCII punctuation.
func pvalueNeedsQuotes(s string) bool {
	for _, r := range s {
		switch {
		case r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'):
		case strings.ContainsRune("#$%&'*+,./-@[]\\^_`{|}~", r):
		case r >= utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r)):
		default:
			return needsQuotes(s)
		}
	}
	return false
}

// authservID returns the authserv-id an Authentication-Results field's
// value claims: its first token, after any comments, before the optional
// version and the first semicolon.
func authservID(value string) string {
	v := stripComments(value)
	if i := strings.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	f := strings.Fields(v)
	if len(f) == 0 {
		return ""
	}
	return strings.Trim(f[0], `"`)
}

// stripComments removes RFC 5322 comments (nested parentheses, with
// quoted pairs) from s.
func stripComments(s string) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// forgedAuthResults reports whether f is an Authentication-Results field
// that claims to come from us (RFC 8601 § 5: such fields arriving from
// outside MUST be removed or renamed).
func forgedAuthResults(f Field, hostname string) bool {
	return f.Is("Authentication-Results") && strings.EqualFold(strings.TrimSuffix(authservID(f.Value()), "."), strings.TrimSuffix(hostname, "."))
}
