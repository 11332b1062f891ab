// Package passwd is the password half of pkg/users: it verifies the schemes
// Dovecot's `doveadm pw` makes ({BLF-CRYPT}, {SHA512-CRYPT}, {SHA256-CRYPT},
// {MD5-CRYPT}, {ARGON2ID}, {ARGON2I}, {PLAIN}) and hashes new passwords.
//
// It lives apart from pkg/users so that programs that only look users up
// (deliver, started once per message) don't link bcrypt, argon2 and the SHA
// code. Importing it registers it with pkg/users, whose DB.Authenticate,
// Verify and Hash use it: every program that authenticates imports it.
package passwd

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"letterbox/pkg/users"
)

func init() { users.RegisterPasswords(scheme{}) }

// scheme is this package as users.Passwords.
type scheme struct{}

func (scheme) Verify(stored, password string) bool          { return Verify(stored, password) }
func (scheme) Hash(scheme, password string) (string, error) { return Hash(scheme, password) }
func (scheme) WellFormed(stored string) bool                { return WellFormed(stored) }

// bcryptCost is the cost of hashes we make. doveadm uses 5, which is too
// cheap today; 10 is x/crypto's default and still ~50 ms.
const bcryptCost = 10

// Argon2 parameters of hashes we make: doveadm pw's defaults.
const (
	argonTime    = 3
	argonMemory  = 65536 // KiB
	argonThreads = 1
	argonKeyLen  = 32
	argonSaltLen = 16
)

// Limits on stored parameters, so that a crafted users file can't make one
// login cost gigabytes or minutes.
const (
	argonMaxMemory = 1 << 21 // KiB = 2 GiB
	argonMaxTime   = 64
)

// Verify reports whether password matches stored ({SCHEME}hash). Unknown
// schemes and malformed hashes never match.
func Verify(stored, password string) bool {
	ok, _ := verify(stored, password)
	return ok
}

func verify(stored, password string) (bool, error) {
	scheme, value := users.SplitScheme(stored)
	switch scheme {
	case "PLAIN", "CLEAR":
		return subtle.ConstantTimeCompare([]byte(value), []byte(password)) == 1, nil
	case "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "MD5-CRYPT", "CRYPT":
		// Dovecot hands all of these to crypt(3), which picks the algorithm
		// from the $id$ prefix; so do we.
		return verifyCrypt(value, password)
	case "ARGON2ID", "ARGON2I":
		return verifyArgon2(value, password)
	case "":
		return false, fmt.Errorf("%w: no {SCHEME} and not a crypt string", users.ErrScheme)
	}
	return false, fmt.Errorf("%w %q", users.ErrScheme, scheme)
}

// WellFormed reports, without hashing, whether stored looks verifiable: a
// known scheme whose value has the right shape.
func WellFormed(stored string) bool {
	scheme, value := users.SplitScheme(stored)
	switch scheme {
	case "PLAIN", "CLEAR":
		return true
	case "ARGON2ID", "ARGON2I":
		_, err := parseArgon2(value)
		return err == nil
	case "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "MD5-CRYPT", "CRYPT":
		if strings.HasPrefix(value, "$argon2") {
			_, err := parseArgon2(value)
			return err == nil
		}
		for _, p := range []string{"$2a$", "$2b$", "$2y$", "$2x$"} {
			if strings.HasPrefix(value, p) {
				return len(value) == 60
			}
		}
		// The encoded digest after the last $ has a fixed length.
		want := map[string]int{"$1$": 22, "$5$": 43, "$6$": 86}[value[:min(3, len(value))]]
		i := strings.LastIndexByte(value, '$')
		return want > 0 && strings.Count(value, "$") >= 3 && len(value)-i-1 == want
	}
	return false
}

func verifyCrypt(value, password string) (bool, error) {
	switch {
	case strings.HasPrefix(value, "$2a$"), strings.HasPrefix(value, "$2b$"),
		strings.HasPrefix(value, "$2y$"), strings.HasPrefix(value, "$2x$"):
		err := bcrypt.CompareHashAndPassword([]byte(value), []byte(password))
		if err == nil {
			return true, nil
		}
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return false, nil
		}
		return false, err
	case strings.HasPrefix(value, "$5$"), strings.HasPrefix(value, "$6$"):
		return verifySHACrypt(value, password), nil
	case strings.HasPrefix(value, "$1$"):
		return verifyMD5Crypt(value, password), nil
	case strings.HasPrefix(value, "$argon2"):
		return verifyArgon2(value, password)
	}
	return false, fmt.Errorf("%w: crypt string %.4q…", users.ErrScheme, value)
}

// argon2Params is a parsed "$argon2id$v=19$m=…,t=…,p=…$salt$hash".
type argon2Params struct {
	variant    string
	memory     uint32
	time       uint32
	threads    uint8
	salt, hash []byte
}

func parseArgon2(value string) (*argon2Params, error) {
	f := strings.Split(value, "$")
	// "", variant, v=19, params, salt, hash; the version may be absent in
	// very old hashes (then it is 0x10, which we don't support).
	if len(f) != 6 || f[0] != "" {
		return nil, errors.New("malformed argon2 hash")
	}
	p := &argon2Params{variant: f[1]}
	if p.variant != "argon2id" && p.variant != "argon2i" {
		return nil, fmt.Errorf("argon2 variant %q not supported", p.variant)
	}
	if f[2] != "v=19" {
		return nil, fmt.Errorf("argon2 version %q not supported", f[2])
	}
	for _, kv := range strings.Split(f[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, errors.New("malformed argon2 parameters")
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, errors.New("malformed argon2 parameters")
		}
		switch k {
		case "m":
			p.memory = uint32(n)
		case "t":
			p.time = uint32(n)
		case "p":
			if n > 255 {
				return nil, errors.New("argon2 parallelism too large")
			}
			p.threads = uint8(n)
		default:
			return nil, fmt.Errorf("unknown argon2 parameter %q", k)
		}
	}
	if p.memory == 0 || p.time == 0 || p.threads == 0 {
		return nil, errors.New("argon2 parameters missing")
	}
	if p.memory > argonMaxMemory || p.time > argonMaxTime {
		return nil, errors.New("argon2 parameters too large")
	}
	var err error
	if p.salt, err = b64Raw(f[4]); err != nil {
		return nil, fmt.Errorf("argon2 salt: %w", err)
	}
	if p.hash, err = b64Raw(f[5]); err != nil {
		return nil, fmt.Errorf("argon2 hash: %w", err)
	}
	if len(p.hash) < 4 || len(p.hash) > 1024 {
		return nil, errors.New("argon2 hash length out of range")
	}
	return p, nil
}

// b64Raw decodes standard base64 with or without padding (libargon2 writes
// none; other tools sometimes pad).
func b64Raw(s string) ([]byte, error) {
	return base64.RawStdEncoding.Strict().DecodeString(strings.TrimRight(s, "="))
}

func verifyArgon2(value, password string) (bool, error) {
	p, err := parseArgon2(value)
	if err != nil {
		return false, err
	}
	var got []byte
	if p.variant == "argon2id" {
		got = argon2.IDKey([]byte(password), p.salt, p.time, p.memory, p.threads, uint32(len(p.hash)))
	} else {
		got = argon2.Key([]byte(password), p.salt, p.time, p.memory, p.threads, uint32(len(p.hash)))
	}
	return subtle.ConstantTimeCompare(got, p.hash) == 1, nil
}

// Hash returns password hashed in scheme as "{SCHEME}hash", the way doveadm
// pw writes it.
func Hash(scheme, password string) (string, error) {
	switch strings.ToUpper(scheme) {
	case users.SchemeBlowfish:
		if len(password) > 72 {
			return "", errors.New("BLF-CRYPT: password longer than 72 bytes (bcrypt would ignore the rest); use ARGON2ID")
		}
		h, err := bcrypt.GenerateFromPassword([]byte(password), bcryptCost)
		if err != nil {
			return "", fmt.Errorf("BLF-CRYPT: %w", err)
		}
		return "{BLF-CRYPT}" + string(h), nil
	case users.SchemeArgon2ID:
		salt := make([]byte, argonSaltLen)
		if _, err := rand.Read(salt); err != nil {
			return "", fmt.Errorf("ARGON2ID: salt: %w", err)
		}
		key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
		return fmt.Sprintf("{ARGON2ID}$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", argonMemory, argonTime, argonThreads,
			base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
	case users.SchemeSHA512:
		raw := make([]byte, 12)
		if _, err := rand.Read(raw); err != nil {
			return "", fmt.Errorf("SHA512-CRYPT: salt: %w", err)
		}
		var salt strings.Builder
		for _, c := range raw {
			salt.WriteByte(itoa64[c&0x3f])
		}
		h, err := shaCrypt(password, "$6$"+salt.String())
		if err != nil {
			return "", fmt.Errorf("SHA512-CRYPT: %w", err)
		}
		return "{SHA512-CRYPT}" + h, nil
	}
	return "", fmt.Errorf("%w %q: want BLF-CRYPT, ARGON2ID or SHA512-CRYPT", users.ErrScheme, scheme)
}
