package check

import (
	"strings"

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
		// Format with an empty identity gives "; method=value params".
		s := strings.TrimPrefix(authres.Format("", []authres.Result{r}), "; ")
		b.WriteString(";\r\n\t")
		b.WriteString(strings.TrimSpace(s))
	}
	b.WriteString("\r\n")
	return Field{Name: "Authentication-Results", Raw: []byte(b.String())}
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
