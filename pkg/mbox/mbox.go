// Package mbox appends to and reads mbox files: mboxrd From_ quoting (as
// mutt, Dovecot and getmail), fcntl + dotlock locking (as Postfix local and
// procmail), and never a file left truncated or half-written on error.
//
// CONTRACT: exported names below are used by delivery and pop3; add to them,
// don't change them.
package mbox

import (
	"io"
	"time"
)

// Lock is a held mbox lock (fcntl on the file and path.lock).
type Lock struct{}

// LockFile takes both locks on path, waiting up to timeout.
func LockFile(path string, timeout time.Duration) (*Lock, error) { panic("mbox: not implemented") }

// Unlock releases both locks.
func (l *Lock) Unlock() error { panic("mbox: not implemented") }

// Append adds one message to path under lock: a From_ line with sender
// (MAILER-DAEMON when empty) and date, the message with mboxrd quoting and
// LF line ends, a blank line; fsynced; on any error the file is truncated back
// to its old length.
func Append(path, sender string, date time.Time, r io.Reader) error {
	panic("mbox: not implemented")
}
