package users

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// seedLines adds every line of the fixture files as a seed.
func seedLines(f *testing.F, paths ...string) {
	for _, p := range paths {
		fh, err := os.Open(p)
		if err != nil {
			f.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			f.Add(sc.Text())
		}
		fh.Close()
	}
}

func FuzzParseLine(f *testing.F) {
	seedLines(f, "../../testdata/users/doveadm.users", "../../testdata/users/forms.users")
	f.Fuzz(func(t *testing.T, line string) {
		u, err := ParseLine(line)
		if err != nil || u == nil {
			return
		}
		if CheckName(u.Name) != nil {
			t.Fatalf("accepted name %q fails CheckName", u.Name)
		}
		// The default mailbox never leaves the mail root.
		root := "/var/mail/lb"
		u2 := *u
		u2.Home, u2.Extra = "", nil
		mb := u2.Mailbox(root)
		rel, err := filepath.Rel(root, mb.Path)
		if err != nil || rel == "." || strings.HasPrefix(rel, "..") || strings.Count(rel, "/") != 1 {
			t.Fatalf("name %q: mailbox %q escapes or is not <domain>/<local> under %s", u.Name, mb.Path, root)
		}
		u.Mailbox(root)
		// What we write, we read back the same.
		if !strings.ContainsAny(u.Password, ":") {
			back, err := ParseLine(FormatLine(u))
			if err != nil || back == nil || back.Name != u.Name || back.Password != u.Password {
				t.Fatalf("round trip of %q: %+v %v", line, back, err)
			}
		}
		SplitScheme(u.Password) // not Verify: a fuzzed argon2 m= could allocate gigabytes
	})
}
