// Package aliases reads sendmail aliases(5) files: keys are local parts (any
// local domain), full addresses, or @domain catch-alls; targets are
// addresses, /mbox paths, /maildir/ paths and |commands.
//
// Syntax: "key: target, target, …"; a line starting with a space or tab
// continues the previous one; # starts a comment line; a target may be
// double-quoted ("|/usr/bin/cmd with spaces"), with \ escaping the next
// character inside the quotes; ":include:/path" reads more targets from a
// file (one or more per line, # comments), only if that file is owned by root
// or by the aliases file's owner. Keys are compared without regard to ASCII
// case.
//
// A Table loaded from a file notices when the file changes (a stat on each
// lookup), so servers see edits without a restart; included files are read
// at load time.
package aliases

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"letterbox/pkg/address"
)

// Table is a loaded aliases file.
type Table struct {
	path  string
	owner int // uid of the aliases file, -1 unknown

	mu      sync.RWMutex
	m       map[string][]string
	keys    []string
	stamp   stamp
	loaded  bool
	lastErr error
}

type stamp struct {
	exists   bool
	size     int64
	mtime    time.Time
	ino, dev uint64
}

// Load reads the aliases file at path. A missing file is an empty table.
func Load(path string) (*Table, error) {
	t := &Table{path: path, owner: -1}
	if err := t.reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Parse reads an aliases file from r. :include: is refused (there is no file
// owner to compare with); the table does not reload.
func Parse(r io.Reader) (*Table, error) {
	t := &Table{owner: -1, loaded: true}
	m, keys, err := parse(r, "aliases", nil)
	if err != nil {
		return nil, err
	}
	t.m, t.keys = m, keys
	return t, nil
}

// Err returns the error of the last failed reload (the table keeps serving
// what it read last), or nil.
func (t *Table) Err() error {
	if t == nil {
		return nil
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.lastErr
}

func (t *Table) reload() error {
	var st stamp
	fi, err := os.Stat(t.path)
	owner := -1
	switch {
	case err == nil:
		st = stamp{exists: true, size: fi.Size(), mtime: fi.ModTime()}
		if s, ok := fi.Sys().(*syscall.Stat_t); ok {
			st.ino, st.dev = uint64(s.Ino), uint64(s.Dev)
			owner = int(s.Uid)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return fmt.Errorf("aliases: %w", err)
	}
	t.mu.RLock()
	same := t.loaded && st == t.stamp
	t.mu.RUnlock()
	if same {
		return nil
	}
	m, keys := map[string][]string{}, []string(nil)
	if st.exists {
		f, err := os.Open(t.path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("aliases: %w", err)
		}
		if err == nil {
			m, keys, err = parse(f, t.path, func(p string) ([]string, error) { return readInclude(p, owner) })
			f.Close()
			if err != nil {
				return err
			}
		}
	}
	t.mu.Lock()
	t.m, t.keys, t.stamp, t.loaded, t.owner, t.lastErr = m, keys, st, true, owner, nil
	t.mu.Unlock()
	return nil
}

func (t *Table) refresh() {
	if t.path == "" {
		return
	}
	if err := t.reload(); err != nil {
		t.mu.Lock()
		t.lastErr = err
		t.mu.Unlock()
	}
}

// readInclude reads the targets of an :include: file, which must be owned by
// root or by the aliases file's owner: anyone else could otherwise add pipe
// targets that run as the mail system.
func readInclude(path string, owner int) ([]string, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf(":include:%s: not an absolute path", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf(":include:%s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf(":include:%s: %w", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || !fi.Mode().IsRegular() || (st.Uid != 0 && int(st.Uid) != owner) {
		return nil, fmt.Errorf(":include:%s: not a regular file owned by root or the aliases file's owner", path)
	}
	if fi.Mode().Perm()&0o002 != 0 {
		return nil, fmt.Errorf(":include:%s: world-writable", path)
	}
	var out []string
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		ts, err := SplitTargets(l)
		if err != nil {
			return nil, fmt.Errorf(":include:%s:%d: %w", path, n, err)
		}
		for _, tg := range ts {
			if strings.HasPrefix(tg, ":include:") {
				return nil, fmt.Errorf(":include:%s:%d: nested :include: not supported", path, n)
			}
		}
		out = append(out, ts...)
	}
	return out, sc.Err()
}

// ErrSyntax marks parse errors.
var ErrSyntax = errors.New("syntax error")

// parse reads entries; include expands :include: targets (nil refuses them).
func parse(r io.Reader, name string, include func(string) ([]string, error)) (map[string][]string, []string, error) {
	m := map[string][]string{}
	var keys []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	var entry string
	entryLine, n := 0, 0
	flush := func() error {
		if entry == "" {
			return nil
		}
		k, targets, err := ParseEntry(entry)
		if err != nil {
			return fmt.Errorf("aliases: %s:%d: %w", name, entryLine, err)
		}
		var out []string
		for _, tg := range targets {
			if p, ok := strings.CutPrefix(tg, ":include:"); ok {
				if include == nil {
					return fmt.Errorf("aliases: %s:%d: :include: not allowed here", name, entryLine)
				}
				more, err := include(strings.TrimSpace(p))
				if err != nil {
					return fmt.Errorf("aliases: %s:%d: %w", name, entryLine, err)
				}
				out = append(out, more...)
				continue
			}
			out = append(out, tg)
		}
		if _, dup := m[k]; dup {
			return fmt.Errorf("aliases: %s:%d: duplicate key %q", name, entryLine, k)
		}
		m[k] = out
		keys = append(keys, k)
		entry = ""
		return nil
	}
	for sc.Scan() {
		n++
		l := strings.TrimSuffix(sc.Text(), "\r")
		if strings.HasPrefix(l, "#") {
			continue
		}
		if l != "" && (l[0] == ' ' || l[0] == '\t') {
			if strings.TrimSpace(l) == "" {
				continue
			}
			if entry == "" {
				return nil, nil, fmt.Errorf("aliases: %s:%d: %w: continuation line without an entry", name, n, ErrSyntax)
			}
			entry += " " + strings.TrimSpace(l)
			continue
		}
		if err := flush(); err != nil {
			return nil, nil, err
		}
		if strings.TrimSpace(l) == "" {
			continue
		}
		entry, entryLine = l, n
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("aliases: %s: %w", name, err)
	}
	if err := flush(); err != nil {
		return nil, nil, err
	}
	return m, keys, nil
}

// ParseEntry parses one logical entry "key: targets" (continuations already
// joined) into its normalised key and its targets, unquoted.
func ParseEntry(entry string) (key string, targets []string, err error) {
	k, rest, ok := cutUnquoted(entry, ':')
	if !ok {
		return "", nil, fmt.Errorf("%w: no ':' after the key", ErrSyntax)
	}
	k = strings.TrimSpace(k)
	if uq, err := unquote(k); err == nil {
		k = uq
	} else {
		return "", nil, err
	}
	if k == "" {
		return "", nil, fmt.Errorf("%w: empty key", ErrSyntax)
	}
	if strings.ContainsFunc(k, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return "", nil, fmt.Errorf("%w: control character in key", ErrSyntax)
	}
	if strings.Count(k, "@") > 1 || strings.HasSuffix(k, "@") {
		return "", nil, fmt.Errorf("%w: key %q: not a local part, address or @domain", ErrSyntax, k)
	}
	targets, err = SplitTargets(rest)
	if err != nil {
		return "", nil, err
	}
	if len(targets) == 0 {
		return "", nil, fmt.Errorf("%w: key %q has no targets", ErrSyntax, k)
	}
	return normKey(k), targets, nil
}

// normKey lower-cases a key (ASCII) and drops a trailing dot of its domain.
func normKey(k string) string {
	k = address.LowerASCII(k)
	if strings.Contains(k, "@") {
		k = strings.TrimSuffix(k, ".")
	}
	return k
}

// SplitTargets splits a comma-separated target list, honouring double
// quotes, and unquotes each target. Empty items are errors.
func SplitTargets(s string) ([]string, error) {
	var out []string
	for {
		item, rest, more := cutUnquoted(s, ',')
		item = strings.TrimSpace(item)
		if item == "" {
			if !more && len(out) == 0 {
				return nil, nil
			}
			return nil, fmt.Errorf("%w: empty target", ErrSyntax)
		}
		uq, err := unquote(item)
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(uq) == "" {
			return nil, fmt.Errorf("%w: empty target", ErrSyntax)
		}
		if uq == item && !strings.HasPrefix(item, "|") && !strings.HasPrefix(item, "/") &&
			!strings.HasPrefix(item, "\"") && strings.ContainsAny(item, " \t") {
			// "bob alice": most likely a forgotten comma.
			return nil, fmt.Errorf("%w: %q: whitespace in an address (missing comma?)", ErrSyntax, item)
		}
		if strings.ContainsFunc(uq, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
			return nil, fmt.Errorf("%w: control character in target", ErrSyntax)
		}
		out = append(out, uq)
		if !more {
			return out, nil
		}
		s = rest
	}
}

// cutUnquoted is strings.Cut at the first sep outside double quotes.
func cutUnquoted(s string, sep byte) (before, after string, found bool) {
	inq := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && inq:
			i++
		case c == '"':
			inq = !inq
		case c == sep && !inq:
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// unquote removes the double quotes of a fully quoted item ("|cmd with
// spaces" → |cmd with spaces); an item that merely starts with a quoted part
// ("john doe"@example.org, a quoted local part) is kept as it is, for the
// address parser.
func unquote(s string) (string, error) {
	if !strings.HasPrefix(s, "\"") {
		if strings.Count(s, "\"")%2 != 0 {
			return "", fmt.Errorf("%w: unbalanced quote in %q", ErrSyntax, s)
		}
		return s, nil
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\\':
			if i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			}
		case '"':
			if i != len(s)-1 {
				// "local part"@domain: an address with a quoted local
				// part; keep it for the address parser.
				if strings.Count(s, "\"")%2 != 0 {
					return "", fmt.Errorf("%w: unbalanced quote in %q", ErrSyntax, s)
				}
				return s, nil
			}
			return b.String(), nil
		default:
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("%w: unterminated quote in %q", ErrSyntax, s)
}

// Lookup returns the raw targets for local@domain: the full address key
// first, then the local part, then @domain. ok is false when nothing matches.
func (t *Table) Lookup(local, domain string) (targets []string, ok bool) {
	if targets, ok = t.LookupExact(local, domain); ok {
		return targets, ok
	}
	return t.CatchAll(domain)
}

// LookupExact is Lookup without the @domain catch-all: the full address key,
// then the local part.
func (t *Table) LookupExact(local, domain string) ([]string, bool) {
	if t == nil {
		return nil, false
	}
	t.refresh()
	t.mu.RLock()
	defer t.mu.RUnlock()
	if v, ok := t.m[normKey(local+"@"+domain)]; ok {
		return append([]string(nil), v...), true
	}
	if v, ok := t.m[normKey(local)]; ok {
		return append([]string(nil), v...), true
	}
	return nil, false
}

// CatchAll returns the targets of the @domain key.
func (t *Table) CatchAll(domain string) ([]string, bool) {
	if t == nil {
		return nil, false
	}
	t.refresh()
	t.mu.RLock()
	defer t.mu.RUnlock()
	v, ok := t.m[normKey("@"+domain)]
	return append([]string(nil), v...), ok
}

// Keys returns the keys in file order, normalised.
func (t *Table) Keys() []string {
	if t == nil {
		return nil
	}
	t.refresh()
	t.mu.RLock()
	defer t.mu.RUnlock()
	return append([]string(nil), t.keys...)
}

// TargetKind classifies a target.
type TargetKind int

const (
	Address TargetKind = iota + 1 // an address or a bare local name
	File                          // /path: append to an mbox
	Dir                           // /path/: deliver into a Maildir
	Command                       // |command
	Local                         // \name: the user's own mailbox, no further aliasing
)

// Classify returns the kind of a target and its value (the path, the
// command without the '|', the name without the '\').
func Classify(target string) (TargetKind, string) {
	switch {
	case strings.HasPrefix(target, "|"):
		return Command, strings.TrimSpace(target[1:])
	case strings.HasPrefix(target, "/"):
		if strings.HasSuffix(target, "/") {
			return Dir, target
		}
		return File, target
	case strings.HasPrefix(target, "\\"):
		return Local, target[1:]
	}
	return Address, target
}
