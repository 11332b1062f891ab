package route

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits of RFC 5321 §4.5.3.1.
const (
	maxLocal   = 64
	maxDomain  = 255
	maxAddress = 254
)

// ParseAddress parses a mailbox address as it appears in RCPT TO, on a
// command line or in an alias: an optional pair of angle brackets, an
// optional source route (@a,@b:), which RFC 5321 says to accept and ignore,
// then local@domain. The local part is a dot-atom or a quoted string; it is
// returned unquoted and otherwise as given. The domain is returned in ASCII
// lower case without a trailing dot. Domain literals ([192.0.2.1]) are
// refused: we cannot tell whether one names this host, and guessing wrong
// would make a local-looking address remote or the reverse.
//
// No form makes a local-looking address remote: user%other@local and
// other!user@local are local parts like any other, and "user@other"@local
// is the local part user@other at local.
func ParseAddress(addr string) (local, domain string, err error) {
	bad := func(why string) (string, string, error) {
		return "", "", fmt.Errorf("%w: %q: %s", ErrBadAddress, addr, why)
	}
	s := strings.TrimSpace(addr)
	if strings.HasPrefix(s, "<") {
		if !strings.HasSuffix(s, ">") {
			return bad("unbalanced <")
		}
		s = s[1 : len(s)-1]
	} else if strings.HasSuffix(s, ">") {
		return bad("unbalanced >")
	}
	if strings.HasPrefix(s, "@") {
		// Source route: @hop,@hop:mailbox. Its hops are checked as domains
		// so that junk is not waved through, then dropped.
		i := strings.IndexByte(s, ':')
		if i < 0 {
			return bad("source route without ':'")
		}
		for _, hop := range strings.Split(s[:i], ",") {
			if !strings.HasPrefix(hop, "@") {
				return bad("malformed source route")
			}
			if _, err := checkDomain(hop[1:]); err != nil {
				return bad("source route: " + err.Error())
			}
		}
		s = s[i+1:]
	}
	if s == "" {
		return bad("empty")
	}
	var rest string
	if s[0] == '"' {
		var b strings.Builder
		i := 1
		closed := false
		for ; i < len(s); i++ {
			c := s[i]
			if c == '\\' {
				i++
				if i == len(s) {
					return bad("unterminated quoted local part")
				}
				c = s[i]
				if c < ' ' && c != '\t' || c == 0x7f {
					return bad("control character in local part")
				}
				b.WriteByte(c)
				continue
			}
			if c == '"' {
				closed = true
				break
			}
			if c < ' ' || c == 0x7f {
				return bad("control character in local part")
			}
			b.WriteByte(c)
		}
		if !closed {
			return bad("unterminated quoted local part")
		}
		local = b.String()
		rest = s[i+1:]
		if local == "" {
			return bad("empty local part")
		}
	} else {
		i := strings.IndexByte(s, '@')
		if i < 0 {
			local, rest = s, ""
		} else {
			local, rest = s[:i], s[i:]
		}
		if err := checkDotAtom(local); err != nil {
			return bad("local part: " + err.Error())
		}
	}
	if !utf8.ValidString(local) {
		return bad("local part is not UTF-8")
	}
	if len(local) > maxLocal {
		return bad("local part longer than 64 octets")
	}
	if rest == "" {
		return local, "", nil // the caller decides (bare postmaster)
	}
	if rest[0] != '@' {
		return bad("junk after the local part")
	}
	domain, err = checkDomain(rest[1:])
	if err != nil {
		return bad(err.Error())
	}
	if len(local)+1+len(domain) > maxAddress {
		return bad("longer than 254 octets")
	}
	return local, domain, nil
}

// atext of RFC 5322, plus UTF-8 (RFC 6531).
func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c >= 0x80:
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

func checkDotAtom(s string) error {
	if s == "" {
		return fmt.Errorf("empty")
	}
	if s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return fmt.Errorf("misplaced dot")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '.' && !isAtext(c) {
			return fmt.Errorf("character %q needs quoting", c)
		}
	}
	return nil
}

// checkDomain validates a domain name and returns it lower-cased without a
// trailing dot.
func checkDomain(d string) (string, error) {
	d = strings.TrimSuffix(d, ".")
	if d == "" {
		return "", fmt.Errorf("empty domain")
	}
	if d[0] == '[' {
		return "", fmt.Errorf("domain literals are not accepted")
	}
	if len(d) > maxDomain {
		return "", fmt.Errorf("domain longer than 255 octets")
	}
	if !utf8.ValidString(d) {
		return "", fmt.Errorf("domain is not UTF-8")
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("empty or overlong domain label")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return "", fmt.Errorf("domain label starts or ends with '-'")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c >= 0x80
			if !ok {
				return "", fmt.Errorf("character %q in domain", c)
			}
		}
	}
	return lowerASCII(d), nil
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// FormatAddress joins local and domain, quoting the local part when it is
// not a dot-atom.
func FormatAddress(local, domain string) string {
	if checkDotAtom(local) != nil {
		var b strings.Builder
		b.WriteByte('"')
		for i := 0; i < len(local); i++ {
			if c := local[i]; c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(local[i])
		}
		b.WriteByte('"')
		local = b.String()
	}
	if domain == "" {
		return local
	}
	return local + "@" + domain
}
