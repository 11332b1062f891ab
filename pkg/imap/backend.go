package imap

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"letterbox/pkg/mailstore"
	"letterbox/pkg/privsep"
	"letterbox/pkg/users"
)

// Store is what the protocol needs of one user's mailboxes: the method set
// of *mailstore.Store (through mailstoreStore, because its Select returns
// the concrete *mailstore.View). Tests use an in-memory store.
type Store interface {
	List() ([]mailstore.MailboxInfo, error)
	EnsureSpecialUse() error
	Create(name, specialUse string) error
	Delete(name string) error
	Rename(oldName, newName string) error
	SetSubscribed(name string, on bool) error
	Status(name string) (mailstore.Status, error)
	Append(name string, flags []string, date time.Time, r io.Reader) (mailstore.AppendResult, error)
	Select(name string, readOnly bool) (View, error)
	Close() error
}

// View is one session's selected folder: *mailstore.View's method set.
type View interface {
	Sync() (mailstore.Snapshot, error)
	ReadOnly() bool
	Open(uid uint32) (io.ReadSeekCloser, error)
	// InternalDates reads the dates a snapshot's messages lack (zero
	// InternalDate); zero for a message expunged meanwhile.
	InternalDates(uids []uint32) ([]time.Time, error)
	Store(uids []uint32, op mailstore.StoreOp, flags []string, unchangedSince uint64) (changed []mailstore.Msg, failed []uint32, err error)
	Expunge(uids []uint32) ([]uint32, error)
	Copy(uids []uint32, dest string) (mailstore.CopyResult, error)
	Move(uids []uint32, dest string) (mailstore.CopyResult, error)
	Vanished(modseq uint64) (uids []uint32, exact bool)
	Watch() (changed <-chan struct{}, stop func())
	Close() error
}

var _ View = (*mailstore.View)(nil)

// mailstoreStore is *mailstore.Store as a Store.
type mailstoreStore struct{ *mailstore.Store }

func (s mailstoreStore) Select(name string, readOnly bool) (View, error) {
	v, err := s.Store.Select(name, readOnly)
	if err != nil {
		return nil, err
	}
	return v, nil
}

// Backend checks passwords and opens a user's store.
type Backend interface {
	// Login returns the user's canonical name, or an error wrapping
	// ErrAuth for a wrong password and an unknown user alike.
	Login(user, password string) (string, error)
	// Locate says where a user's mail is and who owns it.
	Locate(name string) (Location, error)
	// Open opens the store at loc; the calling process runs as loc.Owner.
	Open(loc Location) (Store, error)
}

// Location is a user's Maildir and its owner, whom the session runs as
// (DESIGN.md § Guarantees: mailboxes are touched only as their owner).
type Location struct {
	User  string
	Root  string // the INBOX Maildir
	Owner privsep.Cred
}

// ErrAuth is a failed login.
var ErrAuth = errors.New("authentication failed")

// errUnavailable: the login cannot be checked or the mailbox not opened
// now (NO [UNAVAILABLE]).
var errUnavailable = errors.New("temporarily unavailable")

// UsersBackend is the Backend over the users file (pkg/users) and
// Maildirs (pkg/mailstore).
type UsersBackend struct {
	DB       *users.DB
	MailRoot string
	// MailUser owns the virtual mailboxes (config key mail-user; "" =
	// this process), for privsep.MailboxOwner.
	MailUser       string
	Hostname       string
	MaxMessageSize int64
	PollInterval   time.Duration
	Log            *slog.Logger
}

func (b *UsersBackend) Login(user, password string) (string, error) {
	u, err := b.DB.Authenticate(user, password)
	if err != nil {
		if errors.Is(err, users.ErrNoPasswords) {
			// Not the user's fault: say so loudly, never as a wrong
			// password.
			return "", fmt.Errorf("%w: %v", errUnavailable, err)
		}
		return "", fmt.Errorf("%w: %v", ErrAuth, err)
	}
	return u.Name, nil
}

func (b *UsersBackend) Locate(name string) (Location, error) {
	u := b.DB.Lookup(name)
	if u == nil {
		return Location{}, fmt.Errorf("imap: user %s vanished from the users file", name)
	}
	mb := u.Mailbox(b.MailRoot)
	if mb.Kind != "maildir" {
		return Location{}, fmt.Errorf("imap: user %s: %s mailboxes are served by pop3d only, not over IMAP", name, mb.Kind)
	}
	owner, err := privsep.MailboxOwner(privsep.Mailbox{UID: u.UID, GID: u.GID, Home: u.Home, Path: mb.Path, MailUser: b.MailUser})
	if err != nil {
		return Location{}, fmt.Errorf("imap: user %s: owner of %s: %w", name, mb.Path, err)
	}
	return Location{User: u.Name, Root: mb.Path, Owner: owner}, nil
}

func (b *UsersBackend) Open(loc Location) (Store, error) {
	return openStore(loc, b.Hostname, b.MaxMessageSize, b.PollInterval, b.Log)
}

func openStore(loc Location, hostname string, maxSize int64, poll time.Duration, log *slog.Logger) (Store, error) {
	st, err := mailstore.Open(mailstore.Options{Root: loc.Root, Hostname: hostname,
		MaxMessageSize: maxSize, PollInterval: poll, Log: log})
	if err != nil {
		return nil, err
	}
	return mailstoreStore{st}, nil
}
