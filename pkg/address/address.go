// Package address is the one parser and formatter of mail addresses in
// letterbox: the syntax of RFC 5321 (envelope paths) and RFC 5322 (the
// addr-spec), with SMTPUTF8 (RFC 6531: UTF-8 local parts, U-labels in
// domains). smtpd, sendmail, submission, route, aliases and mailuser all
// read addresses here, because relay safety depends on every part reading
// an address the same way: the mailbox the relay check sees must be the
// mailbox that is queued and the one the router resolves.
//
// What is a policy rather than syntax stays with the caller: whether an
// address literal names us (route refuses them), whether a lone local part
// is complete (only postmaster, RFC 5321 §4.1.1.3), and which limits to
// enforce (CheckLimits: the RFC's 64/254 octets, which the router applies
// to its own mailboxes while smtpd accepts longer senders as Postfix does).
//
// No form makes a local-looking address remote: user%other@local and
// other!user@local are local parts like any other, "user@other"@local is
// the local part user@other at local, and a source route (@a,@b:) is
// parsed and dropped (RFC 5321 §3.3: SHOULD ignore).
//
// This package imports nothing of letterbox, nor any network code (deliver
// links it through users and aliases, and must start fast): it is the
// ground floor. Reading a display name ("Joe <joe@host>") is
// submission.ParseAddress's, with net/mail.
package address

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits of RFC 5321 §4.5.3.1 (CheckLimits).
const (
	MaxLocal   = 64  // octets of a local part
	MaxDomain  = 255 // octets of a domain
	MaxAddress = 254 // octets of local@domain (the path's 256 less the brackets)
)

// maxParsedLocal bounds what the parser takes as a local part: generous
// (UTF-8 takes more octets, and real senders exceed 64), still bounded.
const maxParsedLocal = 4 * MaxLocal

// Errors; test them with errors.Is. Errors from Parse, ParsePath and
// CheckDomain wrap one of them with the reason.
var (
	ErrSyntax   = errors.New("syntax error in mailbox")
	ErrNoDomain = errors.New("address needs a domain")
	ErrNeedUTF8 = errors.New("non-ASCII address without SMTPUTF8")
)

// Address is a parsed mailbox.
type Address struct {
	Local   string // unquoted local part, case preserved
	Domain  string // ASCII lower case, no trailing dot; "[…]" for an address literal; "" when none was given
	Literal bool   // Domain is an address literal
}

// String returns the address in its canonical form: the local part quoted
// only when it must be (Format).
func (a Address) String() string {
	if a.Local == "" && a.Domain == "" {
		return ""
	}
	return QuoteLocal(a.Local) + "@" + a.Domain
}

// CheckLimits reports an address over the limits of RFC 5321 §4.5.3.1: a
// local part of more than 64 octets, a whole address of more than 254.
func (a Address) CheckLimits() error {
	if len(a.Local) > MaxLocal {
		return fmt.Errorf("%w: local part longer than %d octets", ErrSyntax, MaxLocal)
	}
	if a.Domain != "" && len(a.Local)+1+len(a.Domain) > MaxAddress {
		return fmt.Errorf("%w: longer than %d octets", ErrSyntax, MaxAddress)
	}
	return nil
}

// Format joins local and domain, quoting the local part when it is not a
// dot-atom; an empty domain gives the local part alone.
func Format(local, domain string) string {
	if domain == "" {
		return QuoteLocal(local)
	}
	return QuoteLocal(local) + "@" + domain
}

// QuoteLocal returns local as a dot-atom when it is one (UTF-8 allowed),
// else as a quoted string.
func QuoteLocal(local string) string {
	if IsDotAtom(local) {
		return local
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(local); i++ {
		if c := local[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(local[i])
	}
	b.WriteByte('"')
	return b.String()
}

// IsAtext reports whether c is atext of RFC 5322 (ASCII only; UTF-8 is
// allowed by the callers that allow SMTPUTF8).
func IsAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// IsDotAtom reports whether s is a dot-atom: atext or UTF-8 (RFC 6531)
// separated by single dots.
func IsDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '.' && c < 0x80 && !IsAtext(c) {
			return false
		}
	}
	return utf8.ValidString(s)
}

// LowerASCII lower-cases the ASCII letters of s, and only those: the case
// folding of domains and lookup keys everywhere in letterbox.
func LowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// CheckDomain checks a domain name (sub-domain *("." sub-domain), one
// trailing dot allowed) and returns it canonical: ASCII lower case, no
// trailing dot. Labels are letters, digits, '-' (not first or last) and
// '_' (as Postfix accepts them); U-labels (UTF-8) only with utf8OK.
// Address literals are ParseMailbox's business, not this one's.
func CheckDomain(d string, utf8OK bool) (string, error) {
	bad := func(why string) (string, error) { return "", fmt.Errorf("%w: %s", ErrSyntax, why) }
	d = strings.TrimSuffix(d, ".")
	switch {
	case d == "":
		return bad("empty domain")
	case len(d) > MaxDomain:
		return bad("domain longer than 255 octets")
	case !utf8.ValidString(d):
		return bad("domain is not UTF-8")
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return bad("empty or overlong domain label")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return bad("domain label starts or ends with '-'")
		}
		for i := 0; i < len(label); i++ {
			switch c := label[i]; {
			case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			case c >= 0x80:
				if !utf8OK {
					return "", ErrNeedUTF8
				}
			default:
				return bad(fmt.Sprintf("character %q in domain", c))
			}
		}
	}
	return LowerASCII(d), nil
}

// ParseMailbox parses Local-part "@" (Domain / address-literal) at the
// start of s (RFC 5321 §4.1.2) and returns the text after it, which starts
// at the first '>' or ' ' after the domain. A local part without '@'
// returns ErrNoDomain with the Address's Local set and rest the text after
// the local part (the caller decides: only postmaster may stand alone).
// UTF-8 is accepted only with utf8OK (SMTPUTF8); else ErrNeedUTF8.
func ParseMailbox(s string, utf8OK bool) (Address, string, error) {
	var a Address
	bad := func(why string) (Address, string, error) { return a, "", fmt.Errorf("%w: %s", ErrSyntax, why) }
	local, i, err := parseLocal(s, utf8OK)
	if err != nil {
		return a, "", err
	}
	a.Local = local
	if len(a.Local) > maxParsedLocal {
		return bad("local part too long")
	}
	if i >= len(s) || s[i] != '@' {
		return a, s[i:], ErrNoDomain
	}
	i++
	if i < len(s) && s[i] == '[' {
		j := strings.IndexByte(s[i:], ']')
		if j < 0 {
			return bad("unterminated address literal")
		}
		lit := s[i : i+j+1]
		if len(lit) <= 2 {
			return bad("empty address literal")
		}
		for k := 1; k < len(lit)-1; k++ {
			if c := lit[k]; c < 33 || c > 126 || c == '[' || c == '\\' {
				return bad("character in address literal")
			}
		}
		a.Domain, a.Literal = LowerASCII(lit), true
		return a, s[i+j+1:], nil
	}
	start := i
	for i < len(s) && s[i] != '>' && s[i] != ' ' {
		i++
	}
	d, err := CheckDomain(s[start:i], utf8OK)
	if err != nil {
		return a, "", err
	}
	a.Domain = d
	return a, s[i:], nil
}

// parseLocal parses a Dot-string or a Quoted-string (RFC 5321 §4.1.2, with
// RFC 6531's UTF-8) at the start of s and returns it unquoted with the
// index after it. A Dot-string ends at '@', '>' or ' '.
func parseLocal(s string, utf8OK bool) (string, int, error) {
	bad := func(why string) (string, int, error) { return "", 0, fmt.Errorf("%w: %s", ErrSyntax, why) }
	// utf8At checks the UTF-8 sequence at s[i] and returns its length.
	utf8At := func(i int) (int, error) {
		if !utf8OK {
			return 0, ErrNeedUTF8
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n <= 1 {
			return 0, fmt.Errorf("%w: local part is not UTF-8", ErrSyntax)
		}
		return n, nil
	}
	if !strings.HasPrefix(s, `"`) {
		i := 0
		for i < len(s) && s[i] != '@' && s[i] != '>' && s[i] != ' ' {
			c := s[i]
			if c >= 0x80 {
				n, err := utf8At(i)
				if err != nil {
					return "", 0, err
				}
				i += n
				continue
			}
			if c != '.' && !IsAtext(c) {
				return bad(fmt.Sprintf("character %q in local part needs quoting", c))
			}
			i++
		}
		if !IsDotAtom(s[:i]) {
			return bad("empty local part or misplaced dot")
		}
		return s[:i], i, nil
	}
	var b strings.Builder
	for i := 1; i < len(s); {
		c := s[i]
		switch {
		case c == '"':
			if b.Len() == 0 {
				return bad("empty local part")
			}
			return b.String(), i + 1, nil
		case c == '\\':
			// quoted-pairSMTP: %d92 %d32-126
			if i+1 >= len(s) || s[i+1] < 32 || s[i+1] > 126 {
				return bad("bad quoted pair in local part")
			}
			b.WriteByte(s[i+1])
			i += 2
		case c >= 0x80:
			n, err := utf8At(i)
			if err != nil {
				return "", 0, err
			}
			b.WriteString(s[i : i+n])
			i += n
		case c < 32 || c > 126:
			return bad("control character in local part")
		default:
			b.WriteByte(c)
			i++
		}
	}
	return bad("unterminated quoted local part")
}

// ParsePath parses an SMTP path "<[@route,…:]local@domain>" (or a bare
// address, as lenient servers accept) at the start of s and returns the
// mailbox and the text after it (the ESMTP parameters). "<>" gives a zero
// Address and null=true. A source route is checked and dropped. "<Postmaster>"
// without a domain is accepted (RFC 5321 §4.1.1.3) with Domain "": the
// caller gives it its primary domain.
func ParsePath(s string, utf8OK bool) (addr Address, null bool, rest string, err error) {
	bad := func(why string) (Address, bool, string, error) {
		return Address{}, false, "", fmt.Errorf("%w: %s", ErrSyntax, why)
	}
	s = strings.TrimLeft(s, " ")
	if s == "" {
		return bad("empty path")
	}
	bracket := s[0] == '<'
	if bracket {
		s = s[1:]
		if strings.HasPrefix(s, ">") {
			return addr, true, s[1:], nil
		}
		if strings.HasPrefix(s, "@") {
			if s, err = dropRoute(s, utf8OK); err != nil {
				return Address{}, false, "", err
			}
		}
	}
	addr, s, err = ParseMailbox(s, utf8OK)
	if errors.Is(err, ErrNoDomain) && strings.EqualFold(addr.Local, "postmaster") {
		addr.Local, err = "postmaster", nil
	}
	if err != nil {
		return Address{}, false, "", err
	}
	if bracket {
		if !strings.HasPrefix(s, ">") {
			return bad("missing '>'")
		}
		s = s[1:]
	}
	if s != "" && s[0] != ' ' {
		return bad("junk after the path")
	}
	return addr, false, s, nil
}

// dropRoute checks the source route "@hop,@hop:" at the start of s and
// returns what follows it.
func dropRoute(s string, utf8OK bool) (string, error) {
	i := strings.IndexByte(s, ':')
	if i < 0 {
		return "", fmt.Errorf("%w: source route without ':'", ErrSyntax)
	}
	for _, hop := range strings.Split(s[:i], ",") {
		if !strings.HasPrefix(hop, "@") {
			return "", fmt.Errorf("%w: malformed source route", ErrSyntax)
		}
		if _, err := CheckDomain(hop[1:], utf8OK); err != nil {
			return "", fmt.Errorf("source route: %w", err)
		}
	}
	return s[i+1:], nil
}

// Parse parses one address as written in configuration, on a command line
// or in an alias: surrounding white space, an optional pair of angle
// brackets, an optional source route, then local@domain or a lone local
// part (Domain ""), and nothing else. UTF-8 is allowed. Errors wrap
// ErrSyntax (or ErrNeedUTF8, never here) with the reason.
func Parse(s string) (Address, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "<") {
		if !strings.HasSuffix(s, ">") {
			return Address{}, fmt.Errorf("%w: unbalanced <", ErrSyntax)
		}
		s = s[1 : len(s)-1]
	} else if strings.HasSuffix(s, ">") {
		return Address{}, fmt.Errorf("%w: unbalanced >", ErrSyntax)
	}
	if strings.HasPrefix(s, "@") {
		var err error
		if s, err = dropRoute(s, true); err != nil {
			return Address{}, err
		}
	}
	if s == "" {
		return Address{}, fmt.Errorf("%w: empty", ErrSyntax)
	}
	a, rest, err := ParseMailbox(s, true)
	if errors.Is(err, ErrNoDomain) {
		err = nil
	}
	if err != nil {
		return Address{}, err
	}
	if rest != "" {
		return Address{}, fmt.Errorf("%w: junk after the address", ErrSyntax)
	}
	return a, nil
}
