package passwd

import (
	"crypto/md5"
	"crypto/subtle"
	"strings"
)

// MD5-crypt ($1$), Poul-Henning Kamp's algorithm: Dovecot's MD5-CRYPT and
// the default of many older passwd-files. We verify it so that such files
// keep working; we never write it (it is too cheap to brute-force).
func md5Crypt(password, setting string) (string, bool) {
	if !strings.HasPrefix(setting, "$1$") {
		return "", false
	}
	salt := setting[3:]
	if i := strings.IndexByte(salt, '$'); i >= 0 {
		salt = salt[:i]
	}
	if len(salt) > 8 {
		salt = salt[:8]
	}
	p, s := []byte(password), []byte(salt)

	alt := md5.New()
	alt.Write(p)
	alt.Write(s)
	alt.Write(p)
	altSum := alt.Sum(nil)

	ctx := md5.New()
	ctx.Write(p)
	ctx.Write([]byte("$1$"))
	ctx.Write(s)
	for n := len(p); n > 0; n -= 16 {
		ctx.Write(altSum[:min(n, 16)])
	}
	for i := len(p); i > 0; i >>= 1 {
		if i&1 != 0 {
			ctx.Write([]byte{0})
		} else {
			ctx.Write(p[:1])
		}
	}
	final := ctx.Sum(nil)
	for i := 0; i < 1000; i++ {
		c := md5.New()
		if i&1 != 0 {
			c.Write(p)
		} else {
			c.Write(final)
		}
		if i%3 != 0 {
			c.Write(s)
		}
		if i%7 != 0 {
			c.Write(p)
		}
		if i&1 != 0 {
			c.Write(final)
		} else {
			c.Write(p)
		}
		final = c.Sum(final[:0])
	}
	var b strings.Builder
	b.WriteString("$1$")
	b.WriteString(salt)
	b.WriteByte('$')
	for _, o := range [][3]int{{0, 6, 12}, {1, 7, 13}, {2, 8, 14}, {3, 9, 15}, {4, 10, 5}} {
		b64From24(&b, final[o[0]], final[o[1]], final[o[2]], 4)
	}
	b64From24(&b, 0, 0, final[11], 2)
	return b.String(), true
}

func verifyMD5Crypt(stored, password string) bool {
	got, ok := md5Crypt(password, stored)
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(stored)) == 1
}
