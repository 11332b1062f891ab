package users

import (
	"errors"
	"strings"
	"sync"
)

// Schemes that Hash can make (mailuser --scheme). Verify knows more.
const (
	SchemeBlowfish = "BLF-CRYPT"
	SchemeArgon2ID = "ARGON2ID"
	SchemeSHA512   = "SHA512-CRYPT"
	DefaultScheme  = SchemeBlowfish
)

// ErrScheme is returned for a password scheme we do not know.
var ErrScheme = errors.New("unknown password scheme")

// ErrNoPasswords: the program did not link the password code. Every program
// that authenticates or hashes imports letterbox/pkg/users/passwd.
var ErrNoPasswords = errors.New("users: password hashing not linked (import letterbox/pkg/users/passwd)")

// Passwords verifies and makes password hashes. Package passwd implements it
// and registers itself when imported; it is kept out of this package so that
// programs that only look users up (deliver) don't link bcrypt, argon2 and
// the SHA code, which they would pay for at every start.
type Passwords interface {
	Verify(stored, password string) bool
	Hash(scheme, password string) (string, error)
	// WellFormed reports, without hashing, whether stored looks verifiable.
	WellFormed(stored string) bool
}

var (
	passwordsMu sync.RWMutex
	passwords   Passwords
)

// RegisterPasswords installs the password code (package passwd does, in its
// init).
func RegisterPasswords(p Passwords) {
	passwordsMu.Lock()
	passwords = p
	passwordsMu.Unlock()
}

func registered() Passwords {
	passwordsMu.RLock()
	defer passwordsMu.RUnlock()
	return passwords
}

// SplitScheme splits "{SCHEME}value" into upper-cased SCHEME and value. A
// value without a scheme that looks like a crypt(3) string ($id$…) is CRYPT;
// anything else has scheme "".
func SplitScheme(stored string) (scheme, value string) {
	if strings.HasPrefix(stored, "{") {
		if i := strings.IndexByte(stored, '}'); i > 0 {
			return strings.ToUpper(stored[1:i]), stored[i+1:]
		}
	}
	if strings.HasPrefix(stored, "$") && strings.Count(stored, "$") >= 3 {
		return "CRYPT", stored
	}
	return "", stored
}

// Verify reports whether password matches stored ({SCHEME}hash). Unknown
// schemes and malformed hashes never match, nor does anything when the
// password code is not linked.
func Verify(stored, password string) bool {
	p := registered()
	return p != nil && p.Verify(stored, password)
}

// Hash returns password hashed in scheme as "{SCHEME}hash", the way doveadm
// pw writes it.
func Hash(scheme, password string) (string, error) {
	p := registered()
	if p == nil {
		return "", ErrNoPasswords
	}
	return p.Hash(scheme, password)
}

func wellFormed(stored string) bool {
	p := registered()
	return p != nil && p.WellFormed(stored)
}
