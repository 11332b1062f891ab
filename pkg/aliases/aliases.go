// Package aliases reads sendmail aliases(5) files: keys are local parts (any
// local domain), full addresses, or @domain catch-alls; targets are
// addresses, /mbox paths, /maildir/ paths and |commands.
//
// Syntax: "key: target, target, …"; a line starting with a space or tab
// continues the previous one; # starts a comment line; a target may be
// double-quoted ("|/usr/bin/cmd with spaces"), with \ escaping the next
// character inside the quotes; ":include:/path" reads more targets from a
// file (one or more per line, # comments) when that file is safe (see
// readInclude). Keys are compared without regard to ASCII case.
//
// A bad :include: file (unsafe, missing, unreadable, malformed) disables
// only the alias that names it: looking that alias up gives an error that
// wraps ErrBadInclude (temporary: the mail waits until the file is fixed),
// the rest of the table works, and the reason is logged when the table is
// loaded.
//
// Each target keeps the uid of the file it was read from (the aliases file
// or the :include: file): whoever owns that file decides what its |command
// and /file targets do, so they run with that owner's rights.
//
// A Table loaded from a file notices when the file or one of its :include:
// files changes (a stat of each on each lookup), so servers see edits
// without a restart.
package aliases

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"letterbox/pkg/address"
)

// ErrBadInclude marks the error of an alias disabled by a bad :include:
// file: refused as unsafe, missing, unreadable or malformed. It is
// temporary (4.3.0): the mail waits until the administrator fixes the file.
var ErrBadInclude = errors.New("alias disabled by a bad :include: file")

// Target is one target of an alias and the uid of the file it was read
// from.
type Target struct {
	Value string
	Owner int // uid of the aliases file or :include: file; -1 unknown (a Parse table)
}

// Alias is what a key of the table holds.
type Alias struct {
	Targets []Target
	// Err is non-nil when the alias is disabled (it wraps ErrBadInclude);
	// Targets is then empty.
	Err error
}

// Table is a loaded aliases file.
type Table struct {
	path string
	log  *slog.Logger

	mu       sync.RWMutex
	m        map[string]Alias
	keys     []string
	stamp    stamp
	includes map[string]stamp // each :include: file as it was read (or found missing)
	loaded   bool
	lastErr  error
}

// stamp is what tells that a file changed: a chmod or chown (which the
// administrator does to fix a refused :include: file) changes ctime.
type stamp struct {
	exists       bool
	size         int64
	mtime, ctime time.Time
	ino, dev     uint64
	mode         os.FileMode
	uid          int
}

// stampOf stats path (following a symlink: this is only change detection).
func stampOf(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return stamp{}, nil
		}
		return stamp{}, err
	}
	st := stamp{exists: true, size: fi.Size(), mtime: fi.ModTime(), mode: fi.Mode(), uid: -1}
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino, st.dev, st.uid = uint64(s.Ino), uint64(s.Dev), int(s.Uid)
		st.ctime = time.Unix(s.Ctim.Unix())
	}
	return st, nil
}

// Load reads the aliases file at path. A missing file is an empty table.
// Disabled aliases are logged to slog.Default().
func Load(path string) (*Table, error) {
	return LoadLog(path, nil)
}

// LoadLog is Load logging each alias a bad :include: file disables to log
// (nil: slog.Default()), once per (re)load.
func LoadLog(path string, log *slog.Logger) (*Table, error) {
	if log == nil {
		log = slog.Default()
	}
	t := &Table{path: path, log: log}
	if err := t.reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Parse reads an aliases file from r. :include: is refused (there is no file
// owner to compare with); the table does not reload. Targets have Owner -1.
func Parse(r io.Reader) (*Table, error) {
	t := &Table{loaded: true}
	m, keys, err := parse(r, "aliases", -1, nil)
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
	st, err := stampOf(t.path)
	if err != nil {
		return fmt.Errorf("aliases: %w", err)
	}
	t.mu.RLock()
	same := t.loaded && st == t.stamp && t.includesUnchanged()
	t.mu.RUnlock()
	if same {
		return nil
	}
	m, keys := map[string]Alias{}, []string(nil)
	includes := map[string]stamp{}
	if st.exists {
		f, err := os.Open(t.path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("aliases: %w", err)
		}
		if err == nil {
			m, keys, err = parse(f, t.path, st.uid, func(p string) ([]string, int, error) {
				// Stamped before reading, so an edit made while it is
				// read is seen at the next lookup.
				if s, err := stampOf(p); err == nil {
					includes[p] = s
				} else {
					includes[p] = stamp{size: -1} // never equal: retried
				}
				return readInclude(p, st.uid)
			})
			f.Close()
			if err != nil {
				return err
			}
		}
	}
	for _, k := range keys {
		if err := m[k].Err; err != nil {
			t.log.Warn("alias disabled: its mail is deferred until the :include: file is fixed", "alias", k, "err", err)
		}
	}
	t.mu.Lock()
	t.m, t.keys, t.stamp, t.includes, t.loaded, t.lastErr = m, keys, st, includes, true, nil
	t.mu.Unlock()
	return nil
}

// includesUnchanged reports whether every :include: file is as it was read
// (t.mu held).
func (t *Table) includesUnchanged() bool {
	for p, was := range t.includes {
		if now, err := stampOf(p); err != nil || now != was {
			return false
		}
	}
	return true
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

// readInclude reads the targets of an :include: file and returns them with
// the file's uid. Its targets may run commands, so the file must be one
// that only root or the aliases file's owner can change (sendmail's
// safefile, Postfix's rules for :include:):
//   - an absolute path, the file itself not a symbolic link, a regular file;
//   - owned by root or by the aliases file's owner;
//   - not writable by its group or by others, whoever owns it (a root:bob
//     0664 file is bob's to edit);
//   - every directory from / down to it (symbolic links in the path
//     resolved) owned by root or by the file's owner, and not writable by
//     group or others unless sticky (/tmp): anyone who may rename entries
//     there could put another file in its place.
//
// Errors wrap ErrBadInclude.
func readInclude(path string, owner int) ([]string, int, error) {
	refuse := func(format string, a ...any) ([]string, int, error) {
		return nil, -1, fmt.Errorf("%w: :include:%s: %s", ErrBadInclude, path, fmt.Sprintf(format, a...))
	}
	failed := func(err error) ([]string, int, error) {
		return nil, -1, fmt.Errorf("%w: :include:%s: %w", ErrBadInclude, path, err)
	}
	if !strings.HasPrefix(path, "/") {
		return refuse("not an absolute path")
	}
	// The directory is resolved once and the file opened through the
	// resolved path, so the directories checked are the ones read from.
	dir, err := filepath.EvalSymlinks(filepath.Dir(path))
	if err != nil {
		return failed(err)
	}
	full := filepath.Join(dir, filepath.Base(path))
	// O_NONBLOCK: a FIFO put there must not hang the loader.
	f, err := os.OpenFile(full, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ELOOP) {
		return refuse("a symbolic link")
	}
	if err != nil {
		return failed(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return failed(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || !fi.Mode().IsRegular() || (st.Uid != 0 && int(st.Uid) != owner) {
		return refuse("not a regular file owned by root or the aliases file's owner")
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return refuse("group- or world-writable (mode %04o)", fi.Mode().Perm())
	}
	if err := safeDirs(dir, st.Uid); err != nil {
		return failed(err)
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
			return refuse("line %d: %v", n, err)
		}
		for _, tg := range ts {
			if strings.HasPrefix(tg, ":include:") {
				return refuse("line %d: nested :include: not supported", n)
			}
		}
		out = append(out, ts...)
	}
	if err := sc.Err(); err != nil {
		return failed(err)
	}
	return out, int(st.Uid), nil
}

// safeDirs checks dir (no symbolic links in it) and each directory above
// it: owned by root or uid, not writable by group or others unless sticky.
func safeDirs(dir string, uid uint32) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Lstat(d)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || !fi.IsDir() {
			return fmt.Errorf("%s: not a directory", d)
		}
		if st.Uid != 0 && st.Uid != uid {
			return fmt.Errorf("directory %s is owned by uid %d, not by root or the file's owner", d, st.Uid)
		}
		if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0 {
			return fmt.Errorf("directory %s is writable by group or others (mode %04o) without the sticky bit", d, fi.Mode().Perm())
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}

// ErrSyntax marks parse errors.
var ErrSyntax = errors.New("syntax error")

// parse reads entries; owner is the uid of the file read (the Owner of its
// targets); include expands :include: targets (nil refuses them). An
// include error disables that entry alone.
func parse(r io.Reader, name string, owner int, include func(string) ([]string, int, error)) (map[string]Alias, []string, error) {
	m := map[string]Alias{}
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
		var a Alias
		for _, tg := range targets {
			if p, ok := strings.CutPrefix(tg, ":include:"); ok {
				if include == nil {
					return fmt.Errorf("aliases: %s:%d: :include: not allowed here", name, entryLine)
				}
				more, uid, err := include(strings.TrimSpace(p))
				if err != nil {
					a = Alias{Err: fmt.Errorf("aliases: %s:%d: alias %s: %w", name, entryLine, k, err)}
					break
				}
				for _, v := range more {
					a.Targets = append(a.Targets, Target{Value: v, Owner: uid})
				}
				continue
			}
			a.Targets = append(a.Targets, Target{Value: tg, Owner: owner})
		}
		if _, dup := m[k]; dup {
			return fmt.Errorf("aliases: %s:%d: duplicate key %q", name, entryLine, k)
		}
		m[k] = a
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
// A disabled alias is found with no targets: FindExact and FindCatchAll
// tell why.
func (t *Table) Lookup(local, domain string) (targets []string, ok bool) {
	if targets, ok = t.LookupExact(local, domain); ok {
		return targets, ok
	}
	return t.CatchAll(domain)
}

// LookupExact is Lookup without the @domain catch-all: the full address key,
// then the local part.
func (t *Table) LookupExact(local, domain string) ([]string, bool) {
	a, ok := t.FindExact(local, domain)
	return a.values(), ok
}

// CatchAll returns the targets of the @domain key.
func (t *Table) CatchAll(domain string) ([]string, bool) {
	a, ok := t.FindCatchAll(domain)
	return a.values(), ok
}

func (a Alias) values() []string {
	var out []string
	for _, tg := range a.Targets {
		out = append(out, tg.Value)
	}
	return out
}

// FindExact returns the alias of local@domain: the full address key, then
// the local part; ok is false when neither is there.
func (t *Table) FindExact(local, domain string) (Alias, bool) {
	if t == nil {
		return Alias{}, false
	}
	t.refresh()
	t.mu.RLock()
	defer t.mu.RUnlock()
	if a, ok := t.m[normKey(local+"@"+domain)]; ok {
		return a.copy(), true
	}
	if a, ok := t.m[normKey(local)]; ok {
		return a.copy(), true
	}
	return Alias{}, false
}

// FindCatchAll returns the alias of the @domain key.
func (t *Table) FindCatchAll(domain string) (Alias, bool) {
	if t == nil {
		return Alias{}, false
	}
	t.refresh()
	t.mu.RLock()
	defer t.mu.RUnlock()
	a, ok := t.m[normKey("@"+domain)]
	return a.copy(), ok
}

func (a Alias) copy() Alias {
	return Alias{Targets: append([]Target(nil), a.Targets...), Err: a.Err}
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
