package mailstore

import (
	"sort"
	"strings"
)

// The subscriptions file at the root of the Maildir, as Dovecot 2.3 writes
// it: a "V\t2" line and an empty line, then one name per line, its
// hierarchy levels separated by tabs, each level in modified UTF-7 and
// tab-escaped (\001 before '1', 't', 'r', 'n' for \001, tab, CR, LF).
// Version 1 files (no header) hold one name per line with '.' between
// levels; both are read, version 2 is written.
const subscriptionsName = "subscriptions"

// parseSubscriptions returns the UTF-8 names in the file (unreadable lines
// skipped; INBOX in any case as INBOX).
func parseSubscriptions(text string) []string {
	lines := strings.Split(text, "\n")
	v2 := len(lines) > 0 && strings.HasPrefix(lines[0], "V\t")
	if v2 {
		// The header ends at the first empty line.
		i := 1
		for i < len(lines) && lines[i] != "" {
			i++
		}
		lines = lines[i:]
	}
	var out []string
	seen := map[string]bool{}
	for _, line := range lines {
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			continue
		}
		var levels []string
		if v2 {
			levels = strings.Split(line, "\t")
		} else {
			levels = strings.Split(line, ".")
		}
		ok := true
		for i, l := range levels {
			u, err := decodeUTF7(tabUnescape(l))
			if err != nil {
				ok = false
				break
			}
			levels[i] = u
		}
		if !ok {
			continue
		}
		name, err := canonName(strings.Join(levels, "."))
		if err != nil || seen[name] {
			continue
		}
		seen[name] = true
		out = append(out, name)
	}
	return out
}

func formatSubscriptions(names []string) []byte {
	names = append([]string(nil), names...)
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("V\t2\n\n")
	for _, n := range names {
		for i, l := range strings.Split(n, ".") {
			if i > 0 {
				b.WriteByte('\t')
			}
			b.WriteString(tabEscape(encodeUTF7(l)))
		}
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

var (
	tabEscaper   = strings.NewReplacer("\x01", "\x011", "\t", "\x01t", "\r", "\x01r", "\n", "\x01n")
	tabUnescaper = strings.NewReplacer("\x011", "\x01", "\x01t", "\t", "\x01r", "\r", "\x01n", "\n")
)

func tabEscape(s string) string { return tabEscaper.Replace(s) }

func tabUnescape(s string) string {
	if strings.IndexByte(s, 1) < 0 {
		return s
	}
	return tabUnescaper.Replace(s)
}
