package submission

import (
	"errors"
	"fmt"
	"net/mail"
	"strings"

	"letterbox/pkg/address"
)

// ParseAddress parses one address as a user types it on a command line or in
// a header ("joe", "joe@host", "<joe@host>", "Joe <joe@host>", RFC 5322's
// name-addr read by net/mail) and returns it canonical (address.Address.String); a
// lone local part gets domain.
func ParseAddress(s, domain string) (string, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "<") && !strings.HasPrefix(s, "<") {
		a, err := mail.ParseAddress(s)
		if err != nil {
			return "", err
		}
		s = a.Address
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
	a, rest, err := address.ParseMailbox(s, true)
	if errors.Is(err, address.ErrNoDomain) && rest == "" {
		a.Domain, err = address.LowerASCII(domain), nil
	}
	if err != nil {
		return "", err
	}
	if rest != "" {
		return "", fmt.Errorf("%w: junk after the address", address.ErrSyntax)
	}
	return a.String(), nil
}
