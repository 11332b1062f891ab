package check

import (
	"strings"

	"github.com/emersion/go-msgauth/authres"
)

// authResultsField formats our Authentication-Results field (RFC 8601)
// with hostname as authserv-id, one result a line.
func authResultsField(hostname string, results []authres.Result) Field {
	// Built in the field's own bytes, sized for a few results: no
	// builder's growth and final copy.
	b := make([]byte, 0, 64+len(hostname)+len(results)*96)
	b = append(b, "Authentication-Results: "...)
	b = append(b, hostname...)
	if len(results) == 0 {
		b = append(b, "; none"...)
	}
	one := make([]authres.Result, 1)
	for _, r := range results {
		// Format with an empty identity gives "; method=value params".
		one[0] = r
		s := strings.TrimPrefix(authres.Format("", one), "; ")
		b = append(b, ";\r\n\t"...)
		b = append(b, strings.TrimSpace(s)...)
	}
	b = append(b, "\r\n"...)
	return Field{Name: "Authentication-Results", Raw: b}
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
