package mailstore

import (
	"encoding/base64"
	"errors"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Modified UTF-7 (RFC 3501 § 5.1.3): how Dovecot names folder directories
// and writes the subscriptions file. Printable ASCII but '&' stands for
// itself, "&-" is '&', anything else is UTF-16BE in base64 with ',' for
// '/', between '&' and '-'. go-imap keeps its codec internal, so this is ours.

var mutf7 = base64.NewEncoding("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,").WithPadding(base64.NoPadding)

var errUTF7 = errors.New("mailstore: invalid modified UTF-7")

func isDirectUTF7(c rune) bool { return c >= 0x20 && c <= 0x7e }

// encodeUTF7 returns s (valid UTF-8) in modified UTF-7.
func encodeUTF7(s string) string {
	simple := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '&' {
			simple = false
			break
		}
	}
	if simple {
		return s
	}
	var b strings.Builder
	var run []uint16
	flush := func() {
		if len(run) == 0 {
			return
		}
		raw := make([]byte, 2*len(run))
		for i, u := range run {
			raw[2*i], raw[2*i+1] = byte(u>>8), byte(u)
		}
		b.WriteByte('&')
		b.WriteString(mutf7.EncodeToString(raw))
		b.WriteByte('-')
		run = run[:0]
	}
	for _, r := range s {
		switch {
		case r == '&':
			flush()
			b.WriteString("&-")
		case isDirectUTF7(r):
			flush()
			b.WriteRune(r)
		default:
			run = utf16.AppendRune(run, r)
		}
	}
	flush()
	return b.String()
}

// decodeUTF7 returns s decoded to UTF-8. Only the canonical encoding is
// accepted (what encodeUTF7 gives back), so that a name has one spelling
// on disk.
func decodeUTF7(s string) (string, error) {
	if strings.IndexByte(s, '&') < 0 {
		for i := 0; i < len(s); i++ {
			if !isDirectUTF7(rune(s[i])) {
				return "", errUTF7
			}
		}
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '&' {
			if !isDirectUTF7(rune(c)) {
				return "", errUTF7
			}
			b.WriteByte(c)
			continue
		}
		j := strings.IndexByte(s[i+1:], '-')
		if j < 0 {
			return "", errUTF7
		}
		enc := s[i+1 : i+1+j]
		i += j + 1
		if enc == "" {
			b.WriteByte('&')
			continue
		}
		raw, err := mutf7.DecodeString(enc)
		if err != nil || len(raw)%2 != 0 || len(raw) == 0 {
			return "", errUTF7
		}
		u := make([]uint16, len(raw)/2)
		for k := range u {
			u[k] = uint16(raw[2*k])<<8 | uint16(raw[2*k+1])
		}
		for _, r := range utf16.Decode(u) {
			if r == utf8.RuneError || isDirectUTF7(r) {
				return "", errUTF7
			}
			b.WriteRune(r)
		}
		// Two encoded runs in a row are one run spelled badly.
		if i+1 < len(s) && s[i+1] == '&' && i+2 < len(s) && s[i+2] != '-' {
			return "", errUTF7
		}
	}
	out := b.String()
	if encodeUTF7(out) != s {
		return "", errUTF7
	}
	return out, nil
}
