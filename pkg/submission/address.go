package submission

import (
	"errors"
	"net/mail"
	"strings"
	"unicode/utf8"
)

// Address is a parsed envelope mailbox (RFC 5321 § 4.1.2).
type Address struct {
	Local   string // unquoted local part, case preserved
	Domain  string // lower case, trailing dot removed; "[…]" for an address literal
	Literal bool   // Domain is an address literal
}

// String returns the address in its canonical form: the local part quoted
// only when it must be, the domain lower case.
func (a Address) String() string {
	if a.Local == "" && a.Domain == "" {
		return ""
	}
	return quoteLocal(a.Local) + "@" + a.Domain
}

// Errors from address parsing.
var (
	errSyntax   = errors.New("syntax error in mailbox")
	errNoDomain = errors.New("address needs a domain")
	errNeedUTF8 = errors.New("non-ASCII address without SMTPUTF8")
)

// ParsePath parses "<[@route,…:]local@domain>" (or a bare address, as
// lenient servers accept) at the start of s and returns the mailbox and the
// text after it (the ESMTP parameters). "<>" gives a zero Address and
// null=true. A source route is parsed and dropped (RFC 5321 § 3.3: SHOULD
// ignore): relaying decisions only ever look at the final mailbox, so
// "@a,@b:user@c" is user@c and can't smuggle a relay through a local name.
// The local part is never interpreted: "user%other" and "host!user" are
// just names that the router will not know.
func ParsePath(s string, utf8OK bool) (addr Address, null bool, rest string, err error) {
	s = strings.TrimLeft(s, " ")
	if s == "" {
		return addr, false, "", errSyntax
	}
	bracket := s[0] == '<'
	if bracket {
		s = s[1:]
		if strings.HasPrefix(s, ">") {
			return addr, true, s[1:], nil
		}
		if strings.HasPrefix(s, "@") {
			// Source route: @dom,@dom:mailbox
			i := strings.IndexByte(s, ':')
			if i < 0 {
				return addr, false, "", errSyntax
			}
			for _, hop := range strings.Split(s[:i], ",") {
				if !strings.HasPrefix(hop, "@") || !validDomain(hop[1:], utf8OK) {
					return addr, false, "", errSyntax
				}
			}
			s = s[i+1:]
		}
	}
	addr, s, err = parseMailbox(s, utf8OK)
	if err == errNoDomain && strings.EqualFold(addr.Local, "postmaster") {
		// RFC 5321 § 4.1.1.3: <Postmaster> with no domain must be accepted;
		// the caller gives it the primary domain.
		addr.Local, err = "postmaster", nil
	}
	if err != nil {
		return addr, false, "", err
	}
	if bracket {
		if !strings.HasPrefix(s, ">") {
			return addr, false, "", errSyntax
		}
		s = s[1:]
	}
	if s != "" && s[0] != ' ' {
		return addr, false, "", errSyntax
	}
	return addr, false, s, nil
}

// parseMailbox parses Local-part "@" (Domain / address-literal), or a lone
// local part (only "postmaster" is valid that way; the caller decides).
func parseMailbox(s string, utf8OK bool) (Address, string, error) {
	var a Address
	var local strings.Builder
	i := 0
	if strings.HasPrefix(s, `"`) {
		i = 1
		closed := false
		for i < len(s) {
			c := s[i]
			if c == '"' {
				i++
				closed = true
				break
			}
			if c == '\\' {
				if i+1 >= len(s) || s[i+1] < 32 || s[i+1] > 126 {
					return a, "", errSyntax
				}
				local.WriteByte(s[i+1])
				i += 2
				continue
			}
			if c >= 0x80 {
				if !utf8OK {
					return a, "", errNeedUTF8
				}
				r, n := utf8.DecodeRuneInString(s[i:])
				if r == utf8.RuneError {
					return a, "", errSyntax
				}
				local.WriteString(s[i : i+n])
				i += n
				continue
			}
			if c < 32 || c > 126 {
				return a, "", errSyntax
			}
			local.WriteByte(c)
			i++
		}
		if !closed {
			return a, "", errSyntax
		}
	} else {
		start := i
		for i < len(s) && s[i] != '@' && s[i] != '>' && s[i] != ' ' {
			c := s[i]
			if c >= 0x80 {
				if !utf8OK {
					return a, "", errNeedUTF8
				}
				r, n := utf8.DecodeRuneInString(s[i:])
				if r == utf8.RuneError {
					return a, "", errSyntax
				}
				i += n
				continue
			}
			if !isAtext(c) && c != '.' {
				return a, "", errSyntax
			}
			i++
		}
		dot := s[start:i]
		if dot == "" || strings.HasPrefix(dot, ".") || strings.HasSuffix(dot, ".") || strings.Contains(dot, "..") {
			return a, "", errSyntax
		}
		local.WriteString(dot)
	}
	a.Local = local.String()
	if len(a.Local) > 64*4 { // generous: RFC says 64 octets; UTF-8 may take more
		return a, "", errSyntax
	}
	if i >= len(s) || s[i] != '@' {
		return a, s[i:], errNoDomain
	}
	i++
	start := i
	if i < len(s) && s[i] == '[' {
		j := strings.IndexByte(s[i:], ']')
		if j < 0 {
			return a, "", errSyntax
		}
		lit := s[i : i+j+1]
		for k := 1; k < len(lit)-1; k++ {
			c := lit[k]
			if c < 33 || c > 126 || c == '[' || c == '\\' {
				return a, "", errSyntax
			}
		}
		if len(lit) <= 2 {
			return a, "", errSyntax
		}
		a.Domain = strings.ToLower(lit)
		a.Literal = true
		return a, s[i+j+1:], nil
	}
	for i < len(s) && s[i] != '>' && s[i] != ' ' {
		i++
	}
	d := s[start:i]
	if !validDomain(d, utf8OK) {
		return a, "", errSyntax
	}
	a.Domain = strings.TrimSuffix(strings.ToLower(d), ".")
	return a, s[i:], nil
}

// validDomain checks sub-domain *("." sub-domain), one trailing dot allowed
// (it is the same host; callers strip it).
func validDomain(d string, utf8OK bool) bool {
	d = strings.TrimSuffix(d, ".")
	if d == "" || len(d) > 255 {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
			case c >= 0x80 && utf8OK:
			default:
				return false
			}
		}
		if !utf8.ValidString(label) {
			return false
		}
	}
	return true
}

func isAtext(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// quoteLocal returns local as a Dot-string when it is one, else quoted.
func quoteLocal(local string) string {
	ok := local != "" && !strings.HasPrefix(local, ".") && !strings.HasSuffix(local, ".") && !strings.Contains(local, "..")
	for i := 0; ok && i < len(local); i++ {
		c := local[i]
		if !isAtext(c) && c != '.' && c < 0x80 {
			ok = false
		}
	}
	if ok {
		return local
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(local); i++ {
		if local[i] == '"' || local[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(local[i])
	}
	b.WriteByte('"')
	return b.String()
}

// ParseAddress parses one envelope address as a user types it ("joe",
// "joe@host", "<joe@host>", "Joe <joe@host>") and returns it canonical; a
// bare local part gets domain.
func ParseAddress(s, domain string) (string, error) {
	s = strings.TrimSpace(s)
	if strings.ContainsAny(s, "<") && !strings.HasPrefix(s, "<") {
		a, err := mail.ParseAddress(s)
		if err != nil {
			return "", err
		}
		s = a.Address
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
	a, rest, err := parseMailbox(s, true)
	if err == errNoDomain && rest == "" {
		a.Domain, err = strings.ToLower(domain), nil
	}
	if err != nil {
		return "", err
	}
	if rest != "" {
		return "", errSyntax
	}
	return a.String(), nil
}
