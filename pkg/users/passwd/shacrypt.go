package passwd

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"hash"
	"strconv"
	"strings"
)

// SHA-crypt ($5$ and $6$), as specified by Ulrich Drepper in "Unix crypt
// using SHA-256 and SHA-512" (the algorithm glibc's crypt(3) and Dovecot's
// SHA256-CRYPT/SHA512-CRYPT use). x/crypto has no implementation, and the
// algorithm is short enough to carry; the tests check it against the spec's
// vectors and against doveadm's output.

const (
	shaCryptDefaultRounds = 5000
	shaCryptMinRounds     = 1000
	shaCryptMaxRounds     = 999999999
	shaCryptMaxSalt       = 16
	// Refusing absurd round counts keeps a crafted users file from turning
	// one login into minutes of CPU.
	shaCryptVerifyMaxRounds = 10000000
)

const itoa64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

var errBadSHACrypt = errors.New("malformed SHA-crypt hash")

// shaCrypt computes the crypt string of password for setting, which is
// "$5$[rounds=N$]salt[$…]" or "$6$[rounds=N$]salt[$…]".
func shaCrypt(password, setting string) (string, error) {
	var newHash func() hash.Hash
	var prefix string
	switch {
	case strings.HasPrefix(setting, "$5$"):
		newHash, prefix = sha256.New, "$5$"
	case strings.HasPrefix(setting, "$6$"):
		newHash, prefix = sha512.New, "$6$"
	default:
		return "", errBadSHACrypt
	}
	rest := setting[3:]
	rounds := shaCryptDefaultRounds
	explicitRounds := false
	if strings.HasPrefix(rest, "rounds=") {
		i := strings.IndexByte(rest, '$')
		if i < 0 {
			return "", errBadSHACrypt
		}
		n, err := strconv.ParseUint(rest[len("rounds="):i], 10, 64)
		if err != nil {
			return "", errBadSHACrypt
		}
		if n > shaCryptVerifyMaxRounds {
			return "", errors.New("SHA-crypt rounds too large")
		}
		rounds = int(n)
		if rounds < shaCryptMinRounds {
			rounds = shaCryptMinRounds
		}
		if rounds > shaCryptMaxRounds {
			rounds = shaCryptMaxRounds
		}
		explicitRounds = true
		rest = rest[i+1:]
	}
	salt := rest
	if i := strings.IndexByte(salt, '$'); i >= 0 {
		salt = salt[:i]
	}
	if len(salt) > shaCryptMaxSalt {
		salt = salt[:shaCryptMaxSalt]
	}
	sum := shaCryptSum(newHash, []byte(password), []byte(salt), rounds)

	var b strings.Builder
	b.WriteString(prefix)
	if explicitRounds {
		b.WriteString("rounds=")
		b.WriteString(strconv.Itoa(rounds))
		b.WriteByte('$')
	}
	b.WriteString(salt)
	b.WriteByte('$')
	if prefix == "$6$" {
		shaCryptEncode512(&b, sum)
	} else {
		shaCryptEncode256(&b, sum)
	}
	return b.String(), nil
}

func shaCryptSum(newHash func() hash.Hash, p, s []byte, rounds int) []byte {
	// Steps numbered as in the specification.
	b := newHash()
	b.Write(p)
	b.Write(s)
	b.Write(p)
	sumB := b.Sum(nil)
	size := len(sumB)

	a := newHash()
	a.Write(p)
	a.Write(s)
	for n := len(p); n > 0; n -= size {
		a.Write(sumB[:min(n, size)])
	}
	for n := len(p); n > 0; n >>= 1 {
		if n&1 != 0 {
			a.Write(sumB)
		} else {
			a.Write(p)
		}
	}
	sumA := a.Sum(nil)

	dp := newHash()
	for i := 0; i < len(p); i++ {
		dp.Write(p)
	}
	sumDP := dp.Sum(nil)
	pp := make([]byte, 0, len(p))
	for n := len(p); n > 0; n -= size {
		pp = append(pp, sumDP[:min(n, size)]...)
	}

	ds := newHash()
	for i := 0; i < 16+int(sumA[0]); i++ {
		ds.Write(s)
	}
	sumDS := ds.Sum(nil)
	sp := make([]byte, 0, len(s))
	for n := len(s); n > 0; n -= size {
		sp = append(sp, sumDS[:min(n, size)]...)
	}

	c := sumA
	h := newHash()
	for i := 0; i < rounds; i++ {
		h.Reset()
		if i&1 != 0 {
			h.Write(pp)
		} else {
			h.Write(c)
		}
		if i%3 != 0 {
			h.Write(sp)
		}
		if i%7 != 0 {
			h.Write(pp)
		}
		if i&1 != 0 {
			h.Write(c)
		} else {
			h.Write(pp)
		}
		c = h.Sum(c[:0])
	}
	return c
}

func b64From24(b *strings.Builder, b2, b1, b0 byte, n int) {
	w := uint(b2)<<16 | uint(b1)<<8 | uint(b0)
	for ; n > 0; n-- {
		b.WriteByte(itoa64[w&0x3f])
		w >>= 6
	}
}

func shaCryptEncode512(b *strings.Builder, c []byte) {
	order := [][3]int{
		{0, 21, 42}, {22, 43, 1}, {44, 2, 23}, {3, 24, 45}, {25, 46, 4},
		{47, 5, 26}, {6, 27, 48}, {28, 49, 7}, {50, 8, 29}, {9, 30, 51},
		{31, 52, 10}, {53, 11, 32}, {12, 33, 54}, {34, 55, 13}, {56, 14, 35},
		{15, 36, 57}, {37, 58, 16}, {59, 17, 38}, {18, 39, 60}, {40, 61, 19},
		{62, 20, 41},
	}
	for _, o := range order {
		b64From24(b, c[o[0]], c[o[1]], c[o[2]], 4)
	}
	b64From24(b, 0, 0, c[63], 2)
}

func shaCryptEncode256(b *strings.Builder, c []byte) {
	order := [][3]int{
		{0, 10, 20}, {21, 1, 11}, {12, 22, 2}, {3, 13, 23}, {24, 4, 14},
		{15, 25, 5}, {6, 16, 26}, {27, 7, 17}, {18, 28, 8}, {9, 19, 29},
	}
	for _, o := range order {
		b64From24(b, c[o[0]], c[o[1]], c[o[2]], 4)
	}
	b64From24(b, 0, c[31], c[30], 3)
}

// verifySHACrypt reports whether password matches the crypt string stored.
func verifySHACrypt(stored, password string) bool {
	got, err := shaCrypt(password, stored)
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(stored)) == 1
}
