// Package users reads and writes the users file: Dovecot's passwd-file format
// (user@domain:{SCHEME}hash:uid:gid:gecos:home:shell:extra), and verifies
// passwords in the schemes Dovecot's `doveadm pw` makes, with the hashing
// code of package passwd, which a program that authenticates imports.
//
// Names are full addresses. Lookups ignore ASCII case in the whole address
// (local part and domain), because that is what admins and senders expect
// (Bob@Example.test reaches bob@example.test); the file keeps the spelling it
// was given, and two names that differ only in case are duplicates.
//
// A DB loaded from a file notices when the file changes (a stat on each
// lookup, comparing size, mtime and inode), so long-running servers see
// mailuser's edits without a restart.
//
// CONTRACT: exported names below are used by smtpd, pop3d, imapd, route and
// mailuser; add to them, don't change them.
package users

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"letterbox/pkg/address"
)

// ErrAuth is returned for a bad password or unknown user alike.
var ErrAuth = errors.New("authentication failed")

// User is one line of the users file.
type User struct {
	Name     string // full address, domain lower-cased
	Password string // {SCHEME}hash
	UID, GID string
	Gecos    string
	Home     string
	Shell    string
	Extra    map[string]string // key=value fields of the extra column (mail=…, userdb_mail=…)
}

// Mailbox is where a user's mail lives.
type Mailbox struct {
	Kind string // "maildir" or "mbox"
	Path string
}

// DB is a loaded users file.
type DB struct {
	path string // "" for a DB not backed by a file (Parse)

	mu      sync.RWMutex
	users   map[string]*User // by Key(name)
	names   []string         // in file order
	decoy   string           // a stored hash verified for unknown users
	stamp   fileStamp
	lastErr error // the last reload's error; the previous contents stay in force
}

type fileStamp struct {
	exists bool
	size   int64
	mtime  time.Time
	ino    uint64
	dev    uint64
}

func stampOf(fi os.FileInfo) fileStamp {
	s := fileStamp{exists: true, size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino, s.dev = uint64(st.Ino), uint64(st.Dev)
	}
	return s
}

// Load reads the users file at path. A missing file is an empty DB.
func Load(path string) (*DB, error) {
	db := &DB{path: path}
	if err := db.reload(); err != nil {
		return nil, err
	}
	return db, nil
}

// Parse reads a users file from r; the DB does not reload.
func Parse(r io.Reader) (*DB, error) {
	users, names, err := parseAll(r, "users")
	if err != nil {
		return nil, err
	}
	return &DB{users: users, names: names, decoy: pickDecoy(users, names)}, nil
}

// Path is the file the DB was loaded from ("" if none).
func (db *DB) Path() string { return db.path }

// Err returns the error of the last failed reload, or nil; while it is set,
// the DB keeps serving the contents of the last good read.
func (db *DB) Err() error {
	if db == nil {
		return nil
	}
	db.mu.RLock()
	defer db.mu.RUnlock()
	return db.lastErr
}

// reload reads the file again if it changed since the last read.
func (db *DB) reload() error {
	var st fileStamp
	fi, err := os.Stat(db.path)
	switch {
	case err == nil:
		st = stampOf(fi)
	case errors.Is(err, os.ErrNotExist):
	default:
		return fmt.Errorf("users: %w", err)
	}
	db.mu.RLock()
	same := db.users != nil && st == db.stamp
	db.mu.RUnlock()
	if same {
		return nil
	}
	users, names := map[string]*User{}, []string(nil)
	if st.exists {
		f, err := os.Open(db.path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				st = fileStamp{} // removed between stat and open
			} else {
				return fmt.Errorf("users: %w", err)
			}
		} else {
			users, names, err = parseAll(f, db.path)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
	decoy := pickDecoy(users, names)
	db.mu.Lock()
	db.users, db.names, db.stamp, db.lastErr, db.decoy = users, names, st, nil, decoy
	db.mu.Unlock()
	return nil
}

// refresh reloads a file-backed DB when its file changed; a failed reload
// keeps the old contents (a half-edited file must not lock everyone out).
func (db *DB) refresh() {
	if db.path == "" {
		return
	}
	if err := db.reload(); err != nil {
		db.mu.Lock()
		db.lastErr = err
		db.mu.Unlock()
	}
}

func parseAll(r io.Reader, name string) (map[string]*User, []string, error) {
	users := map[string]*User{}
	var names []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		u, err := ParseLine(sc.Text())
		if err != nil {
			return nil, nil, fmt.Errorf("users: %s:%d: %w", name, n, err)
		}
		if u == nil {
			continue
		}
		k := Key(u.Name)
		if _, dup := users[k]; dup {
			return nil, nil, fmt.Errorf("users: %s:%d: duplicate user %s", name, n, u.Name)
		}
		users[k] = u
		names = append(names, u.Name)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("users: %s: %w", name, err)
	}
	return users, names, nil
}

// Key is the lookup key of an address: ASCII lower case, without a trailing
// dot in the domain.
func Key(addr string) string {
	addr = address.LowerASCII(addr)
	return strings.TrimSuffix(addr, ".")
}

// ParseLine parses one line of a users file. Blank lines and # comments
// return (nil, nil). Fields after the name may be missing, as Dovecot allows;
// the extra column is the rest of the line (it may contain colons, as in
// mail=maildir:~/Maildir).
func ParseLine(line string) (*User, error) {
	line = strings.TrimSuffix(line, "\r")
	t := strings.TrimSpace(line)
	if t == "" || strings.HasPrefix(t, "#") {
		return nil, nil
	}
	f := strings.SplitN(line, ":", 8)
	for len(f) < 8 {
		f = append(f, "")
	}
	name := f[0]
	if err := CheckName(name); err != nil {
		return nil, err
	}
	local, domain, _ := strings.Cut(name, "@")
	u := &User{
		Name:     local + "@" + strings.TrimSuffix(address.LowerASCII(domain), "."),
		Password: f[1],
		UID:      f[2], GID: f[3], Gecos: f[4], Home: f[5], Shell: f[6],
		Extra: map[string]string{},
	}
	if u.Password != "" {
		if scheme, _ := SplitScheme(u.Password); scheme == "" {
			return nil, fmt.Errorf("user %s: password has no {SCHEME} and is not a crypt string", name)
		}
	}
	for _, kv := range strings.Fields(f[7]) {
		k, v, _ := strings.Cut(kv, "=")
		u.Extra[k] = v
	}
	return u, nil
}

// CheckName checks that name can be a users-file name: local@domain, neither
// empty, no colon, whitespace, control character or slash (a name becomes a
// directory under the mail root), and not "." or "..".
func CheckName(name string) error {
	if name == "" {
		return errors.New("empty user name")
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c == 0x7f || c == ':' || c == '/' || c == '\\' {
			return fmt.Errorf("user name %q: contains %q", name, c)
		}
	}
	local, domain, ok := strings.Cut(name, "@")
	if !ok {
		return fmt.Errorf("user name %q: not a full address (local@domain)", name)
	}
	if local == "" || domain == "" || strings.Contains(domain, "@") {
		return fmt.Errorf("user name %q: not a full address (local@domain)", name)
	}
	if local == "." || local == ".." || strings.HasPrefix(domain, ".") || strings.Contains(domain, "..") {
		return fmt.Errorf("user name %q: malformed", name)
	}
	return nil
}

// Lookup finds the user with address addr, or nil. The whole address is
// compared without regard to ASCII case (the local part too; see the
// package comment), and a trailing dot of the domain is ignored.
func (db *DB) Lookup(addr string) *User {
	if db == nil {
		return nil
	}
	db.refresh()
	db.mu.RLock()
	defer db.mu.RUnlock()
	return db.users[Key(addr)]
}

// Names returns the user names in file order.
func (db *DB) Names() []string {
	if db == nil {
		return nil
	}
	db.refresh()
	db.mu.RLock()
	defer db.mu.RUnlock()
	return append([]string(nil), db.names...)
}

var (
	dummyOnce sync.Once
	dummyHash string
)

// dummy is a hash of the default scheme, verified for unknown users so that
// an unknown name costs as long as a wrong password.
func dummy() string {
	dummyOnce.Do(func() {
		h, err := Hash(DefaultScheme, "letterbox dummy password")
		if err != nil {
			panic(err)
		}
		dummyHash = h
	})
	return dummyHash
}

// pickDecoy returns the first hashed password of the file: verifying it for
// an unknown user costs what a real user's check costs, in the scheme and
// parameters this installation actually uses.
func pickDecoy(users map[string]*User, names []string) string {
	for _, n := range names {
		u := users[Key(n)]
		switch u.Scheme() {
		case "", "PLAIN", "CLEAR":
			continue
		}
		if wellFormed(u.Password) {
			return u.Password
		}
	}
	return ""
}

// Authenticate checks addr's password in constant-ish time whether or not the
// user exists; it returns ErrAuth on any mismatch.
//
// For an unknown user it verifies the password against a decoy: the file's
// first hashed password, else a hash of the default scheme, so that the
// answer takes as long as a wrong password would.
func (db *DB) Authenticate(addr, password string) (*User, error) {
	if registered() == nil {
		return nil, fmt.Errorf("%w: %w", ErrAuth, ErrNoPasswords)
	}
	u := db.Lookup(addr)
	if u == nil || u.Password == "" {
		decoy := ""
		if db != nil {
			db.mu.RLock()
			decoy = db.decoy
			db.mu.RUnlock()
		}
		if decoy == "" {
			decoy = dummy()
		}
		Verify(decoy, password)
		return nil, ErrAuth
	}
	if !Verify(u.Password, password) {
		return nil, ErrAuth
	}
	return u, nil
}

// Plaintext returns the user's password in clear when it is stored as
// {PLAIN} or {CLEAR} (APOP and CRAM-MD5 need it), else ok is false.
func (u *User) Plaintext() (password string, ok bool) {
	scheme, v := SplitScheme(u.Password)
	if scheme == "PLAIN" || scheme == "CLEAR" {
		return v, true
	}
	return "", false
}

// Scheme returns the user's password scheme, upper case ("" if none).
func (u *User) Scheme() string {
	s, _ := SplitScheme(u.Password)
	return s
}

// Local and Domain split the user's name.
func (u *User) Local() string {
	l, _, _ := strings.Cut(u.Name, "@")
	return l
}

func (u *User) Domain() string {
	_, d, _ := strings.Cut(u.Name, "@")
	return d
}

// Mailbox returns where u's mail lives: mail=/userdb_mail= extra field, else
// <home>/Maildir/, else <mailRoot>/<domain>/<local>/.
// Only an absolute home counts.
//
// The mail value is Dovecot's mail_location syntax: "maildir:PATH" or
// "mbox:PATH", with ~ for the home directory, %u/%n/%d for the user, local
// part and domain, and :KEY=VALUE options after the path (for mbox, an
// INBOX= option names the inbox file, which is what we deliver to).
func (u *User) Mailbox(mailRoot string) Mailbox {
	mail := u.Extra["userdb_mail"]
	if v, ok := u.Extra["mail"]; ok && v != "" {
		mail = v
	}
	if mail != "" {
		if mb, ok := u.parseMail(mail); ok {
			return mb
		}
	}
	// A relative home would be relative to whatever directory the reading
	// process happens to run in; Dovecot refuses it too.
	if filepath.IsAbs(u.Home) {
		return Mailbox{Kind: "maildir", Path: filepath.Join(u.Home, "Maildir")}
	}
	return Mailbox{Kind: "maildir", Path: filepath.Join(mailRoot, u.Domain(), u.Local())}
}

func (u *User) parseMail(mail string) (Mailbox, bool) {
	kind, rest, ok := strings.Cut(mail, ":")
	kind = strings.ToLower(kind)
	if !ok || (kind != "maildir" && kind != "mbox") {
		return Mailbox{}, false
	}
	parts := strings.Split(rest, ":")
	path := parts[0]
	for _, opt := range parts[1:] {
		if k, v, ok := strings.Cut(opt, "="); ok && kind == "mbox" && strings.EqualFold(k, "INBOX") {
			path = v
		}
	}
	path = u.expand(path)
	if path == "" || !filepath.IsAbs(path) {
		return Mailbox{}, false
	}
	return Mailbox{Kind: kind, Path: filepath.Clean(path)}, true
}

// expand replaces ~ and Dovecot's %u, %n, %d, %h and %% in a mail path.
func (u *User) expand(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if u.Home == "" {
			return ""
		}
		p = u.Home + p[1:]
	}
	if !strings.Contains(p, "%") {
		return p
	}
	var b bytes.Buffer
	for i := 0; i < len(p); i++ {
		if p[i] != '%' || i+1 == len(p) {
			b.WriteByte(p[i])
			continue
		}
		i++
		switch p[i] {
		case 'u':
			b.WriteString(u.Name)
		case 'n':
			b.WriteString(u.Local())
		case 'd':
			b.WriteString(u.Domain())
		case 'h':
			b.WriteString(u.Home)
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(p[i])
		}
	}
	return b.String()
}
