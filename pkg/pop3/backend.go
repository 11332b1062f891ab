package pop3

import (
	"crypto/md5"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

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

func (b *UsersBackend) Open(name string) (Maildrop, error) {
	u := b.DB.Lookup(name)
	if u == nil {
		return nil, &PermError{fmt.Errorf("pop3: user %s vanished from the users file", name)}
	}
	mb := u.Mailbox(b.MailRoot)
	switch mb.Kind {
	case "maildir":
		return OpenMaildir(mb.Path, b.FlagUpdates)
	case "mbox":
		b.mu.Lock()
		if b.open == nil {
			b.open = map[string]bool{}
		}
		if b.open[mb.Path] {
			b.mu.Unlock()
			return nil, ErrInUse
		}
		b.open[mb.Path] = true
		b.mu.Unlock()
		timeout := b.MboxLockTimeout
		if timeout <= 0 {
			timeout = 2 * time.Second
		}
		d, err := OpenMbox(mb.Path, timeout)
		if err != nil {
			b.release(mb.Path)
			return nil, err
		}
		return &releaseDrop{Maildrop: d, release: func() { b.release(mb.Path) }}, nil
	}
	return nil, &PermError{fmt.Errorf("pop3: user %s: mailbox kind %q", name, mb.Kind)}
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
