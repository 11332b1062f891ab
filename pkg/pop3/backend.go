package pop3

import (
	"crypto/md5"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"letterbox/pkg/privsep"
	"letterbox/pkg/users"
)

// UsersBackend is the Backend over the users file: passwords verified by
// pkg/users, maildrops where (*users.User).Mailbox says.
type UsersBackend struct {
	DB       *users.DB
	MailRoot string
	// FlagUpdates marks retrieved Maildir messages seen at QUIT.
	FlagUpdates bool
	// MboxLockTimeout is how long Open waits for an mbox lock held by a
	// delivery before answering [IN-USE] (default 2s).
	MboxLockTimeout time.Duration
	// MailUser owns the virtual mailboxes (config key mail-user; "" =
	// this process), for privsep.MailboxOwner.
	MailUser string

	// open guards against two sessions of one process on the same mbox:
	// fcntl locks are per process, and the dotlock may be unavailable.
	mu   sync.Mutex
	open map[string]bool

	// apop caches HasAPOP for a few seconds: it looks at every user, and
	// is asked at every connection.
	apopMu   sync.Mutex
	apopAt   time.Time
	apopHave bool
}

func (b *UsersBackend) Login(user, password string) (string, error) {
	u, err := b.DB.Authenticate(user, password)
	if err != nil {
		if errors.Is(err, users.ErrAuth) {
			return "", ErrAuth
		}
		return "", fmt.Errorf("%w: %v", ErrAuth, err)
	}
	return u.Name, nil
}

// apopDummy is compared against when the user is unknown or has no
// plaintext secret, so that those cases cost what a wrong digest costs.
const apopDummy = "letterbox apop dummy secret"

func (b *UsersBackend) APOP(user, timestamp, digest string) (string, error) {
	u := b.DB.Lookup(user)
	secret, ok := apopDummy, false
	if u != nil {
		if s, has := u.Plaintext(); has {
			secret, ok = s, true
		}
	}
	sum := md5.Sum([]byte(timestamp + secret))
	want := hex.EncodeToString(sum[:])
	match := subtle.ConstantTimeCompare([]byte(want), []byte(digest)) == 1
	if !ok || !match {
		return "", ErrAuth
	}
	return u.Name, nil
}

func (b *UsersBackend) HasAPOP() bool {
	b.apopMu.Lock()
	defer b.apopMu.Unlock()
	if !b.apopAt.IsZero() && time.Since(b.apopAt) < 5*time.Second {
		return b.apopHave
	}
	b.apopHave = false
	for _, n := range b.DB.Names() {
		if u := b.DB.Lookup(n); u != nil {
			if _, ok := u.Plaintext(); ok {
				b.apopHave = true
				break
			}
		}
	}
	b.apopAt = time.Now()
	return b.apopHave
}

func (b *UsersBackend) Locate(name string) (Location, error) {
	u := b.DB.Lookup(name)
	if u == nil {
		return Location{}, &PermError{fmt.Errorf("pop3: user %s vanished from the users file", name)}
	}
	mb := u.Mailbox(b.MailRoot)
	if mb.Kind != "maildir" && mb.Kind != "mbox" {
		return Location{}, &PermError{fmt.Errorf("pop3: user %s: mailbox kind %q", name, mb.Kind)}
	}
	owner, err := privsep.MailboxOwner(privsep.Mailbox{UID: u.UID, GID: u.GID, Home: u.Home, Path: mb.Path, MailUser: b.MailUser})
	if err != nil {
		return Location{}, fmt.Errorf("pop3: user %s: owner of %s: %w", name, mb.Path, err)
	}
	timeout := b.MboxLockTimeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	return Location{User: u.Name, Kind: mb.Kind, Path: mb.Path, Owner: owner, FlagUpdates: b.FlagUpdates, LockTimeout: timeout}, nil
}

// Open opens loc. Two sessions of this process on one mbox are kept apart
// here: fcntl locks are per process, and the dotlock may be unavailable.
func (b *UsersBackend) Open(loc Location) (Maildrop, error) {
	if loc.Kind != "mbox" {
		return OpenLocation(loc)
	}
	b.mu.Lock()
	if b.open == nil {
		b.open = map[string]bool{}
	}
	if b.open[loc.Path] {
		b.mu.Unlock()
		return nil, ErrInUse
	}
	b.open[loc.Path] = true
	b.mu.Unlock()
	d, err := OpenLocation(loc)
	if err != nil {
		b.release(loc.Path)
		return nil, err
	}
	return &releaseDrop{Maildrop: d, release: func() { b.release(loc.Path) }}, nil
}

// OpenLocation locks and reads the maildrop at loc; the calling process
// runs as loc.Owner.
func OpenLocation(loc Location) (Maildrop, error) {
	switch loc.Kind {
	case "maildir":
		return OpenMaildir(loc.Path, loc.FlagUpdates)
	case "mbox":
		return OpenMbox(loc.Path, loc.Owner.UID, loc.LockTimeout)
	}
	return nil, &PermError{fmt.Errorf("pop3: %s: mailbox kind %q", loc.Path, loc.Kind)}
}

func (b *UsersBackend) release(path string) {
	b.mu.Lock()
	delete(b.open, path)
	b.mu.Unlock()
}

type releaseDrop struct {
	Maildrop
	release func()
	once    sync.Once
}

func (d *releaseDrop) Close() error {
	err := d.Maildrop.Close()
	d.once.Do(d.release)
	return err
}
