package passwd

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"letterbox/pkg/users"
)

// Vectors from Drepper's "Unix crypt using SHA-256 and SHA-512", section
// "Test vectors" (each checked against glibc crypt(3) and `openssl passwd`).
var shaCryptVectors = []struct{ setting, password, want string }{
	{"$5$saltstring", "Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"},
	{"$5$rounds=10000$saltstringsaltstring", "Hello world!", "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"},
	{"$5$rounds=5000$toolongsaltstring", "This is just a test", "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5"},
	{"$5$rounds=1400$anotherlongsaltstring", "a very much longer text to encrypt.  This one even stretches over morethan one line.", "$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1"},
	{"$5$rounds=77777$short", "we have a short salt string but not a short password", "$5$rounds=77777$short$JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/"},
	{"$5$rounds=123456$asaltof16chars..", "a short string", "$5$rounds=123456$asaltof16chars..$gP3VQ/6X7UUEW3HkBn2w1/Ptq2jxPyzV/cZKmF/wJvD"},
	{"$5$rounds=10$roundstoolow", "the minimum number is still observed", "$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC"},
	{"$6$saltstring", "Hello world!", "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"},
	{"$6$rounds=10000$saltstringsaltstring", "Hello world!", "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."},
	{"$6$rounds=5000$toolongsaltstring", "This is just a test", "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"},
	{"$6$rounds=1400$anotherlongsaltstring", "a very much longer text to encrypt.  This one even stretches over morethan one line.", "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1"},
	{"$6$rounds=77777$short", "we have a short salt string but not a short password", "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0"},
	{"$6$rounds=123456$asaltof16chars..", "a short string", "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1"},
	{"$6$rounds=10$roundstoolow", "the minimum number is still observed", "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX."},
}

// MD5-crypt vectors made with `openssl passwd -1 -salt SALT PASSWORD`.
func TestMD5Crypt(t *testing.T) {
	for _, v := range [][2]string{
		{"correct horse", "$1$k7jQOzt.$SM9PU491D/IkgLQyd4VuZ0"},
		{"", "$1$k7jQOzt.$7FGelnU1r3XVCjp8CYYWP1"},
		{"a", "$1$k7jQOzt.$pMOHUHsqL.yaPd6XJnBL.."},
		{"a much longer password than sixteen bytes", "$1$k7jQOzt.$XPZt6mAJuj9nqWmoqMoLO0"},
		{"x", "$1$longersa$OJGtX8WlEwXkx64HRiVY6/"},
	} {
		if got, ok := md5Crypt(v[0], v[1]); !ok || got != v[1] {
			t.Errorf("md5Crypt(%q) = %s, want %s", v[0], got, v[1])
		}
		if !Verify("{MD5-CRYPT}"+v[1], v[0]) || Verify("{MD5-CRYPT}"+v[1], v[0]+"x") {
			t.Errorf("Verify {MD5-CRYPT}%s wrong", v[1])
		}
	}
}

func TestSHACryptSpecVectors(t *testing.T) {
	for _, v := range shaCryptVectors {
		got, err := shaCrypt(v.password, v.setting)
		if err != nil {
			t.Fatalf("%s: %v", v.setting, err)
		}
		if got != v.want {
			t.Errorf("shaCrypt(%q, %q)\n got %s\nwant %s", v.password, v.setting, got, v.want)
		}
		if !verifySHACrypt(v.want, v.password) {
			t.Errorf("verify %s failed", v.want)
		}
		if verifySHACrypt(v.want, v.password+"x") {
			t.Errorf("verify %s accepted a wrong password", v.want)
		}
	}
}

// fixturePasswords are the passwords given to doveadm pw for each user of
// testdata/users/doveadm.users.
var fixturePasswords = map[string]string{
	"unicode@example.test":    "pässwörd ✓",
	"unicodeblf@example.test": "pässwörd ✓",
	"long@example.test":       "a very long password that is longer than thirty-two bytes and even longer than sixty-four bytes for sure",
}

func fixtureDB(t testing.TB) *users.DB {
	t.Helper()
	db, err := users.Load("../../../testdata/users/doveadm.users")
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestDoveadmFixtures(t *testing.T) {
	db := fixtureDB(t)
	names := db.Names()
	if len(names) < 12 {
		t.Fatalf("fixture has %d users: %v", len(names), names)
	}
	schemes := map[string]bool{}
	for _, name := range names {
		pw, ok := fixturePasswords[name]
		if !ok {
			pw = "correct horse"
		}
		u, err := db.Authenticate(name, pw)
		if err != nil {
			t.Errorf("%s: good password refused: %v", name, err)
			continue
		}
		schemes[u.Scheme()] = true
		if !WellFormed(u.Password) {
			t.Errorf("%s: wellFormed false for a verifiable hash", name)
		}
		for _, bad := range []string{"", pw + " ", pw[:len(pw)-1]} {
			if _, err := db.Authenticate(name, bad); err != users.ErrAuth {
				t.Errorf("%s: bad password %q: got %v, want ErrAuth", name, bad, err)
			}
		}
	}
	for _, s := range []string{"BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "ARGON2ID", "ARGON2I", "PLAIN", "CLEAR", "CRYPT", "MD5-CRYPT"} {
		if !schemes[s] {
			t.Errorf("scheme %s not covered by the fixtures", s)
		}
	}
}

func TestHashRoundTrip(t *testing.T) {
	for _, s := range []string{"BLF-CRYPT", "argon2id", "SHA512-CRYPT"} {
		h, err := Hash(s, "s3cret pw")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h, "{"+strings.ToUpper(s)+"}") {
			t.Errorf("Hash(%s) = %s", s, h)
		}
		if !Verify(h, "s3cret pw") || Verify(h, "s3cret pW") {
			t.Errorf("Hash(%s) does not verify properly: %s", s, h)
		}
		h2, _ := Hash(s, "s3cret pw")
		if h == h2 {
			t.Errorf("Hash(%s) is not salted", s)
		}
	}
	if _, err := Hash("MD5", "x"); err == nil {
		t.Error("Hash accepted an unknown scheme")
	}
	if _, err := Hash("BLF-CRYPT", strings.Repeat("x", 73)); err == nil {
		t.Error("BLF-CRYPT accepted a password bcrypt would truncate")
	}
}

func TestVerifyRefuses(t *testing.T) {
	for _, stored := range []string{
		"",
		"correct horse",           // no scheme, not crypt: refused, not compared as plain
		"{MD4}whatever",           // unknown scheme
		"{SHA512-CRYPT}",          // empty hash
		"{SHA512-CRYPT}$6$",       // truncated
		"{BLF-CRYPT}$2y$05$short", // truncated bcrypt
		"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdHNhbHQ$",
		"{ARGON2ID}$argon2id$v=16$m=65536,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
		"{ARGON2ID}$argon2id$v=19$m=99999999,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2g", // memory bomb
		"{ARGON2ID}$argon2id$v=19$t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
		"{CRYPT}$1$abc$def",    // MD5-crypt, truncated
		"{CRYPT}abcdefghijklm", // DES crypt: not supported
		"{SHA512-CRYPT}$6$rounds=4000000000$salt$hash",
		"{PLAIN}correct horsf",
	} {
		if Verify(stored, "correct horse") {
			t.Errorf("Verify(%q) accepted", stored)
		}
		if stored != "{PLAIN}correct horsf" && WellFormed(stored) && !strings.HasPrefix(stored, "{SHA512-CRYPT}$6$") {
			t.Errorf("WellFormed(%q) = true", stored)
		}
	}
	// A scheme-less crypt string is CRYPT (Dovecot's default scheme).
	if !Verify("$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1", "Hello world!") {
		t.Error("scheme-less $6$ hash not verified as CRYPT")
	}
	if !Verify("{plain}x", "x") {
		t.Error("scheme names are case-insensitive in Dovecot")
	}
}

func TestMain(m *testing.M) { os.Exit(m.Run()) }

func TestAuthenticate(t *testing.T) {
	db, _ := users.Parse(strings.NewReader("a@b.test:{PLAIN}pw\nnopw@b.test:\n"))
	if u, err := db.Authenticate("A@B.TEST", "pw"); err != nil || u.Name != "a@b.test" {
		t.Errorf("good: %v %v", u, err)
	}
	for _, c := range [][2]string{{"a@b.test", "pW"}, {"a@b.test", ""}, {"x@b.test", "pw"}, {"nopw@b.test", ""}, {"nopw@b.test", "x"}} {
		if u, err := db.Authenticate(c[0], c[1]); err != users.ErrAuth || u != nil {
			t.Errorf("Authenticate(%q, %q) = %v, %v", c[0], c[1], u, err)
		}
	}
	f := fixtureDB(t)
	if _, ok := f.Lookup("blf_crypt@example.test").Plaintext(); ok {
		t.Error("a hashed password has no plaintext")
	}
	if pw, ok := f.Lookup("clear@example.test").Plaintext(); !ok || pw != "correct horse" {
		t.Error("{CLEAR} is {PLAIN}")
	}
}

// TestDefaultSchemeCost: the hash verified for unknown users (users'
// dummy, made with users.Hash in the default scheme) costs what the hashes
// we make cost.
func TestDefaultSchemeCost(t *testing.T) {
	d, err := users.Hash(users.DefaultScheme, "letterbox dummy password")
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := users.SplitScheme(d); s != users.DefaultScheme {
		t.Fatalf("hash scheme %s, want the default %s", s, users.DefaultScheme)
	}
	if !strings.HasPrefix(strings.TrimPrefix(d, "{BLF-CRYPT}"), fmt.Sprintf("$2a$%02d$", bcryptCost)) {
		t.Errorf("hash %s does not have the cost of the hashes we make", d)
	}
}

// BenchmarkAuthenticate compares a wrong password with an unknown user; run
// with: go test -bench Authenticate ./pkg/users/passwd/
func BenchmarkAuthenticate(b *testing.B) {
	db := fixtureDB(b)
	for _, c := range []struct{ name, user string }{
		{"wrong-password", "blf_crypt@example.test"},
		{"unknown-user", "nobody@example.test"},
	} {
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				db.Authenticate(c.user, "wrong")
			}
		})
	}
}
