// Package route decides where a recipient address goes: a local Maildir or
// mbox, a pipe command, or a remote address, after the users file and the
// aliases (recursively, with loop protection). It is the one place that knows
// local domains, postmaster, +detail and catch-alls.
//
// CONTRACT (shared by smtpd, deliver, queue-runner): the exported names
// below are relied on by other packages; add to them, don't change them.
package route

import (
	"errors"

	"letterbox/pkg/aliases"
	"letterbox/pkg/users"
)

// Kind is what a Destination is.
type Kind int

const (
	Maildir Kind = iota + 1 // Path is a Maildir directory (Folder: a Maildir++ folder name for +detail, "" = INBOX)
	Mbox                    // Path is an mbox file
	Pipe                    // Command is run with the message on stdin
	Remote                  // Address is delivered by SMTP
)

// Destination is one place a message for a recipient must go.
type Destination struct {
	Kind     Kind
	Path     string // Maildir or mbox
	Folder   string // Maildir++ folder (without the leading dot), when +detail named an existing one
	Command  string // Pipe
	Address  string // the final address: Delivered-To for local kinds, RCPT TO for Remote
	Original string // the address the sender used (ORIGINAL_RECIPIENT)
	User     *users.User
}

// Errors Resolve returns; test them with errors.Is.
var (
	ErrNoSuchUser = errors.New("no such user")      // permanent: 550 5.1.1
	ErrLoop       = errors.New("alias loop")        // permanent: 5.4.6
	ErrBadAddress = errors.New("malformed address") // permanent: 501 5.1.3
)

// Router resolves addresses.
type Router struct {
	Domains    []string // local domains, lower case
	MailRoot   string
	Postmaster string // config key `postmaster`
	Users      *users.DB
	Aliases    *aliases.Table
	// AllowPipes allows |command and /file targets (only from the aliases
	// file, never from a user-controlled source).
	AllowPipes bool
}

// IsLocal reports whether domain is a local domain (case-insensitive, a
// trailing dot ignored).
func (r *Router) IsLocal(domain string) bool { panic("route: not implemented") }

// Resolve returns the destinations of addr, after aliases. A remote addr
// resolves to one Remote destination.
func (r *Router) Resolve(addr string) ([]Destination, error) { panic("route: not implemented") }
