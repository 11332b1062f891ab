package smtpd

import (
	"errors"
	"strings"
)

// errParams: MAIL or RCPT parameters that are not ESMTP's syntax.
var errParams = errors.New("syntax error in parameters")

// parseParams parses ESMTP parameters " KEY[=VALUE] …" into upper-case keys.
func parseParams(s string) (map[string]string, error) {
	for i := 0; i < len(s); i++ {
		if s[i] < 32 && s[i] != ' ' || s[i] == 127 {
			return nil, errParams
		}
	}
	out := map[string]string{}
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		if k == "" {
			return nil, errParams
		}
		for i := 0; i < len(k); i++ {
			c := k[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' && i > 0) {
				return nil, errParams
			}
		}
		for i := 0; i < len(v); i++ {
			if v[i] < 33 || v[i] == '=' || v[i] == 127 {
				return nil, errParams
			}
		}
		out[strings.ToUpper(k)] = v
	}
	return out, nil
}
