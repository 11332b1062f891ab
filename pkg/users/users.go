// Package users reads and writes the users file: Dovecot's passwd-file format
// (user@domain:{SCHEME}hash:uid:gid:gecos:home:shell:extra), and verifies
// passwords in the schemes Dovecot's `doveadm pw` makes.
//
// CONTRACT: exported names below are used by smtpd, pop3d, imapd, route and
// mailuser; add to them, don't change them.
package users

import "errors"

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
type DB struct{}

// Load reads the users file at path. A missing file is an empty DB.
func Load(path string) (*DB, error) { panic("users: not implemented") }

// Lookup finds the user with address addr (local part exact, domain
// case-insensitive), or nil.
func (db *DB) Lookup(addr string) *User { panic("users: not implemented") }

// Authenticate checks addr's password in constant-ish time whether or not the
// user exists; it returns ErrAuth on any mismatch.
func (db *DB) Authenticate(addr, password string) (*User, error) {
	panic("users: not implemented")
}

// Mailbox returns where u's mail lives: mail=/userdb_mail= extra field, else
// <home>/Maildir/, else <mailRoot>/<domain>/<local>/.
func (u *User) Mailbox(mailRoot string) Mailbox { panic("users: not implemented") }
