package mailstore

import (
	"strconv"
	"strings"
)

// dovecot-keywords maps IMAP keywords to the letters a–z that stand for
// them after ":2," in a folder's file names: one "<index> <keyword>" line
// each, index 0 being 'a'. Dovecot skips lines it cannot read and a
// keyword listed twice (compared without case); so do we. Changed only
// under dovecot-keywords.lock, as the uidlist.
const (
	keywordsName = "dovecot-keywords"
	maxKeywords  = 26
)

type keywords [maxKeywords]string

func parseKeywords(text string) keywords {
	var k keywords
	for _, line := range strings.Split(text, "\n") {
		idx, name, ok := strings.Cut(line, " ")
		if !ok || name == "" {
			continue
		}
		i, err := strconv.Atoi(idx)
		if err != nil || i < 0 || i >= maxKeywords || idx != strconv.Itoa(i) || k[i] != "" || k.index(name) >= 0 {
			continue
		}
		k[i] = name
	}
	return k
}

func (k *keywords) format() []byte {
	var b []byte
	for i, name := range k {
		if name != "" {
			b = strconv.AppendInt(b, int64(i), 10)
			b = append(b, ' ')
			b = append(b, name...)
			b = append(b, '\n')
		}
	}
	return b
}

// index returns the index of keyword name (compared without case), or -1.
func (k *keywords) index(name string) int {
	for i, n := range k {
		if n != "" && strings.EqualFold(n, name) {
			return i
		}
	}
	return -1
}

// free returns the first unused index, or -1.
func (k *keywords) free() int {
	for i, n := range k {
		if n == "" {
			return i
		}
	}
	return -1
}

func (k *keywords) list() []string {
	var out []string
	for _, n := range k {
		if n != "" {
			out = append(out, n)
		}
	}
	return out
}

// validKeyword: an IMAP atom (RFC 3501 flag-keyword) that is not a system
// flag.
func validKeyword(s string) bool {
	if s == "" || len(s) > 100 || s[0] == '\\' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`(){%*"\]`, c) >= 0 {
			return false
		}
	}
	return true
}
