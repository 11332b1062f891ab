// Package pop3 is letterbox's POP3 server (RFC 1939, RFC 2449 CAPA and
// response codes, RFC 2595 STLS, RFC 5034 AUTH PLAIN) over Maildir and mbox
// maildrops.
//
// The protocol engine (Server, session) knows nothing about mailboxes: it
// talks to a Backend that authenticates users and opens a Maildrop, a
// snapshot of the user's messages taken and locked at login. Deletions are
// only remembered during the session and handed to Maildrop.Commit at QUIT
// (the UPDATE state), so a session that ends any other way — a dropped
// connection, a timeout, SIGTERM or SIGKILL — changes nothing.
package pop3

import (
	"errors"
	"io"
	"time"

	"letterbox/pkg/privsep"
)

// MessageInfo describes one message of a maildrop snapshot.
type MessageInfo struct {
	// UID is the unique-id listing of UIDL: 1 to 70 octets in 0x21–0x7E,
	// the same for the same message in every session.
	UID string
	// Size is the message's size in octets as RETR sends it: every line
	// ending in CRLF, before byte-stuffing.
	Size int64
}

// Maildrop is one user's messages, locked for the session.
type Maildrop interface {
	// Messages is the snapshot taken at open; message n of the protocol is
	// Messages()[n-1]. Mail arriving later shows in the next session.
	Messages() []MessageInfo
	// Open returns message i's (0-based) content: lines ending in LF or
	// CRLF, as stored (mboxrd quoting already undone).
	Open(i int) (io.ReadCloser, error)
	// Commit is the UPDATE state: remove the messages deleted (indices,
	// 0-based, ascending) and record that those retrieved were seen. It
	// is called at most once, before Close.
	Commit(retrieved, deleted []int) error
	// Close releases the lock; without Commit nothing changes.
	Close() error
}

// Backend authenticates users and opens their maildrops.
type Backend interface {
	// Login checks a password; it returns the canonical user name or an
	// error wrapping ErrAuth (unknown user and bad password alike).
	Login(user, password string) (string, error)
	// APOP checks an RFC 1939 APOP digest (lower-case hex MD5 of
	// timestamp+secret), as Login.
	APOP(user, timestamp, digest string) (string, error)
	// HasAPOP reports whether APOP can succeed for anyone (some user has a
	// plaintext secret); if not, the greeting carries no timestamp.
	HasAPOP() bool
	// Locate says where the user's maildrop is and whom it belongs to.
	// Errors: a *PermError for a permanent problem, anything else is
	// temporary.
	Locate(user string) (Location, error)
	// Open locks and reads the maildrop at loc, in a process running as
	// loc.Owner. Errors: ErrInUse when another session holds it; a
	// *PermError for a permanent problem; anything else is temporary.
	Open(loc Location) (Maildrop, error)
}

// Location is a user's maildrop: where it is, whose it is, and how to open
// it. The session runs as Owner (DESIGN.md § Guarantees: mailboxes are
// touched only as their owner), in this process when it already does,
// else in a process switched to Owner; Location travels to that process
// as it is.
type Location struct {
	User  string // the user as logged in (canonical name)
	Kind  string // "maildir" or "mbox"
	Path  string
	Owner privsep.Cred
	// FlagUpdates marks retrieved Maildir messages seen at QUIT.
	FlagUpdates bool
	// LockTimeout is how long to wait for an mbox lock held by a delivery
	// before ErrInUse.
	LockTimeout time.Duration
}

var (
	// ErrAuth is a failed login: bad name, password or digest.
	ErrAuth = errors.New("pop3: authentication failed")
	// ErrInUse means another session holds the maildrop's lock.
	ErrInUse = errors.New("pop3: maildrop in use")
)

// PermError is a permanent maildrop failure ([SYS/PERM]); other errors from
// Open and Commit are temporary ([SYS/TEMP]).
type PermError struct{ Err error }

func (e *PermError) Error() string { return e.Err.Error() }
func (e *PermError) Unwrap() error { return e.Err }
