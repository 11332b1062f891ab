package route

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"letterbox/pkg/address"
	"letterbox/pkg/aliases"
	"letterbox/pkg/internal/testwait"
	"letterbox/pkg/users"
)

const testUsers = `bob@example.test:{PLAIN}x
Alice@example.test:{PLAIN}x
carol@example.test:{PLAIN}x::::::mail=mbox:/var/mail/carol
dave@other.test:{PLAIN}x
postmaster@other.test:{PLAIN}x
sales+eu@example.test:{PLAIN}x
loopuser@example.test:{PLAIN}x
`

const testAliases = `root: bob
admin@example.test: alice
team: bob, alice, BOB@Example.Test, carol
fwd: someone@remote.test
mixed: \bob, someone@remote.test, root
self: self, bob
bob2: bob, bob+x
loopuser: loopuser, root
a: b
b: c
c: a
direct: direct
chain1: chain2
chain2: chain3
chain3: bob
pipe: "|/usr/bin/handler --x", /var/mail/archive, /srv/box/
sales: dave@other.test
ghost: nobody
@catch.test: bob
@loopy.test: nobody@loopy.test
`

func newRouter(t *testing.T, allowPipes bool) *Router {
	t.Helper()
	db, err := users.Parse(strings.NewReader(testUsers))
	if err != nil {
		t.Fatal(err)
	}
	al, err := aliases.Parse(strings.NewReader(testAliases))
	if err != nil {
		t.Fatal(err)
	}
	return &Router{
		Domains:  []string{"example.test", "other.test", "catch.test", "loopy.test"},
		MailRoot: t.TempDir(), Users: db, Aliases: al, AllowPipes: allowPipes,
	}
}

// summary renders destinations compactly: kind:path[#folder] / pipe:cmd /
// remote:addr, with MailRoot replaced by $R.
func summary(r *Router, ds []Destination) string {
	var out []string
	for _, d := range ds {
		s := d.Kind.String() + ":"
		switch d.Kind {
		case Maildir, Mbox:
			s += strings.Replace(d.Path, r.MailRoot, "$R", 1)
			if d.Folder != "" {
				s += "#" + d.Folder
			}
		case Pipe:
			s += d.Command
		case Remote:
			s += d.Address
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

func TestResolve(t *testing.T) {
	r := newRouter(t, true)
	os.MkdirAll(filepath.Join(r.MailRoot, "example.test/bob/.lists"), 0o700)
	cases := []struct{ addr, want string }{
		{"bob@example.test", "maildir:$R/example.test/bob"},
		{"<bob@example.test>", "maildir:$R/example.test/bob"},
		{"BOB@EXAMPLE.TEST", "maildir:$R/example.test/bob"},
		{"bob@example.test.", "maildir:$R/example.test/bob"},
		{"alice@example.test", "maildir:$R/example.test/Alice"},
		{"carol@example.test", "mbox:/var/mail/carol"},
		{"root@example.test", "maildir:$R/example.test/bob"},
		{"root@other.test", "maildir:$R/example.test/bob"}, // unqualified targets: first local domain
		{"admin@example.test", "maildir:$R/example.test/Alice"},
		{"team@example.test", "maildir:$R/example.test/bob maildir:$R/example.test/Alice mbox:/var/mail/carol"},
		{"fwd@example.test", "remote:someone@remote.test"},
		{"mixed@example.test", "maildir:$R/example.test/bob remote:someone@remote.test"},
		{"self@example.test", ""}, // self is not a user: ErrNoSuchUser, below
		{"bob2@example.test", "maildir:$R/example.test/bob"},
		{"loopuser@example.test", "maildir:$R/example.test/loopuser maildir:$R/example.test/bob"},
		{"chain1@example.test", "maildir:$R/example.test/bob"},
		{"pipe@example.test", "pipe:/usr/bin/handler --x mbox:/var/mail/archive maildir:/srv/box"},
		// +detail: the folder when it exists, else INBOX; aliases see the base.
		{"bob+lists@example.test", "maildir:$R/example.test/bob#lists"},
		{"bob+nofolder@example.test", "maildir:$R/example.test/bob"},
		{"bob+@example.test", "maildir:$R/example.test/bob"},
		{"\"bob+../../etc\"@example.test", "maildir:$R/example.test/bob"},
		{"bob+a/b@example.test", "maildir:$R/example.test/bob"},
		{"bob+.hidden@example.test", "maildir:$R/example.test/bob"},
		{"root+x@example.test", "maildir:$R/example.test/bob"},
		{"fwd+x@example.test", "remote:someone@remote.test"},
		// A user whose name has a + wins over the alias of its base.
		{"sales+eu@example.test", "maildir:$R/example.test/sales+eu"},
		{"sales+us@example.test", "maildir:$R/other.test/dave"},
		// Catch-all: users and aliases first.
		{"anything@catch.test", "maildir:$R/example.test/bob"},
		// Remote.
		{"someone@Remote.Test.", "remote:someone@remote.test"},
		{"\"john doe\"@remote.test", "remote:\"john doe\"@remote.test"},
		{"@relay.test,@x.test:user@remote.test", "remote:user@remote.test"},
	}
	for _, c := range cases {
		if c.want == "" {
			continue
		}
		ds, err := r.Resolve(c.addr)
		if err != nil {
			t.Errorf("Resolve(%q): %v", c.addr, err)
			continue
		}
		if got := summary(r, ds); got != c.want {
			t.Errorf("Resolve(%q) =\n  %s\nwant\n  %s", c.addr, got, c.want)
		}
		for _, d := range ds {
			if d.Original != c.addr {
				t.Errorf("Resolve(%q): Original = %q", c.addr, d.Original)
			}
		}
	}
}

func TestResolveAddressFields(t *testing.T) {
	r := newRouter(t, true)
	os.MkdirAll(filepath.Join(r.MailRoot, "example.test/bob/.lists"), 0o700)
	ds, err := r.Resolve("ROOT@Example.Test")
	if err != nil || len(ds) != 1 {
		t.Fatal(ds, err)
	}
	if ds[0].Address != "bob@example.test" || ds[0].Original != "ROOT@Example.Test" || ds[0].User == nil || ds[0].User.Name != "bob@example.test" {
		t.Errorf("%+v", ds[0])
	}
	ds, _ = r.Resolve("bob+lists@example.test")
	if ds[0].Address != "bob+lists@example.test" || ds[0].Folder != "lists" {
		t.Errorf("%+v", ds[0])
	}
}

func TestResolveErrors(t *testing.T) {
	r := newRouter(t, true)
	cases := []struct {
		addr string
		want error
	}{
		{"nobody@example.test", ErrNoSuchUser},
		{"self@example.test", ErrNoSuchUser}, // self: self, bob — self is no user
		{"ghost@example.test", ErrNoSuchUser},
		{"a@example.test", ErrLoop},
		{"direct@example.test", ErrNoSuchUser}, // direct: direct — its own mailbox, which is missing
		{"x@loopy.test", ErrLoop},
		{"dave@example.test", ErrNoSuchUser}, // users are per domain
		{"", ErrBadAddress},
		{"<>", ErrBadAddress},
		{"bob", ErrBadAddress},
		{"bob@", ErrBadAddress},
		{"@example.test", ErrBadAddress},
		{"bob@@example.test", ErrBadAddress},
		{"bob@remote.test@example.test", ErrBadAddress},
		{"bob@example..test", ErrBadAddress},
		{"bob@.example.test", ErrBadAddress},
		{"bob@example.test..", ErrBadAddress},
		{"bob@[127.0.0.1]", ErrBadAddress},
		{"bob smith@example.test", ErrBadAddress},
		{".bob@example.test", ErrBadAddress},
		{"bob.@example.test", ErrBadAddress},
		{"bo..b@example.test", ErrBadAddress},
		{"\"bob@example.test", ErrBadAddress},
		{"<bob@example.test", ErrBadAddress},
		{"bob@example.test>", ErrBadAddress},
		{"bob@exa mple.test", ErrBadAddress},
		{"bob@-example.test", ErrBadAddress},
		{"@relay.test:", ErrBadAddress},
		{"@relay.test", ErrBadAddress},
		{"@bad..route:bob@example.test", ErrBadAddress},
		{"bob\x00@example.test", ErrBadAddress},
		{"\"a\x01\"@example.test", ErrBadAddress},
		{strings.Repeat("a", 65) + "@example.test", ErrBadAddress},
		{"a@" + strings.Repeat("b", 64) + ".test", ErrBadAddress},
	}
	for _, c := range cases {
		ds, err := r.Resolve(c.addr)
		if !errors.Is(err, c.want) {
			t.Errorf("Resolve(%q) = %v, %v; want %v", c.addr, summary(r, ds), err, c.want)
		}
		if c.want != ErrLoop && !errors.Is(r.Exists(c.addr), c.want) {
			t.Errorf("Exists(%q) = %v, want %v", c.addr, r.Exists(c.addr), c.want)
		}
	}
}

// TestOpenRelayForms: address forms that could smuggle mail through a local
// domain to a remote one resolve locally or are refused, never Remote.
func TestOpenRelayForms(t *testing.T) {
	r := newRouter(t, true)
	for _, addr := range []string{
		"someone%remote.test@example.test",
		"remote.test!someone@example.test",
		"\"someone@remote.test\"@example.test",
		"\"someone@remote.test\"@EXAMPLE.TEST.",
		"@remote.test:someone@example.test",
		"@example.test:someone@example.test",
		"someone@remote.test@example.test",
		"someone@example.test@remote.test",
		"\"bob\"@example.test",
		"\"\\b\\o\\b\"@example.test",
		"bob%remote.test@catch.test",
		"Postmaster",
		"bob@example.test (comment)",
		"bob@example.test,someone@remote.test",
	} {
		ds, err := r.Resolve(addr)
		if err != nil {
			if !errors.Is(err, ErrNoSuchUser) && !errors.Is(err, ErrBadAddress) {
				t.Errorf("Resolve(%q): unexpected error %v", addr, err)
			}
			continue
		}
		for _, d := range ds {
			if d.Kind == Remote {
				t.Errorf("Resolve(%q) went remote: %s", addr, d.Address)
			}
		}
	}
	// Quoted local parts that spell a user are that user.
	for _, addr := range []string{"\"bob\"@example.test", "\"\\b\\o\\b\"@example.test"} {
		ds, err := r.Resolve(addr)
		if err != nil || summary(r, ds) != "maildir:$R/example.test/bob" {
			t.Errorf("Resolve(%q) = %s %v", addr, summary(r, ds), err)
		}
	}
	// The percent hack and a source route to a local address stay local.
	if ds, err := r.Resolve("bob%remote.test@catch.test"); err != nil || summary(r, ds) != "maildir:$R/example.test/bob" {
		t.Errorf("percent hack through the catch-all: %s %v", summary(r, ds), err)
	}
	if ds, err := r.Resolve("@remote.test:bob@example.test"); err != nil || summary(r, ds) != "maildir:$R/example.test/bob" {
		t.Errorf("source route to a local user: %s %v", summary(r, ds), err)
	}
}

func TestPostmaster(t *testing.T) {
	r := newRouter(t, true)
	r.Aliases, _ = aliases.Parse(strings.NewReader("postmaster: alice\n"))
	for _, addr := range []string{"postmaster@example.test", "PostMaster@Example.Test", "Postmaster", "<postmaster>", "postmaster+x@example.test"} {
		ds, err := r.Resolve(addr)
		if err != nil || summary(r, ds) != "maildir:$R/example.test/Alice" {
			t.Errorf("alias: Resolve(%q) = %s %v", addr, summary(r, ds), err)
		}
	}
	// A users file entry for postmaster@other.test wins over the fallbacks,
	// but not over the alias (aliases come first).
	r.Aliases, _ = aliases.Parse(strings.NewReader("postmaster@example.test: bob\n"))
	if ds, _ := r.Resolve("postmaster@other.test"); summary(r, ds) != "maildir:$R/other.test/postmaster" {
		t.Errorf("users entry: %s", summary(r, ds))
	}
	// No alias: config postmaster, local or remote; else <mail-root>/postmaster.
	r.Aliases = nil
	r.Postmaster = "bob@example.test"
	if ds, err := r.Resolve("postmaster@example.test"); err != nil || summary(r, ds) != "maildir:$R/example.test/bob" {
		t.Errorf("config local: %s %v", summary(r, ds), err)
	}
	r.Postmaster = "hostmaster@remote.test"
	if ds, err := r.Resolve("postmaster@catch.test"); err != nil || summary(r, ds) != "remote:hostmaster@remote.test" {
		t.Errorf("config remote: %s %v", summary(r, ds), err)
	}
	r.Postmaster = "postmaster@example.test" // points at itself
	if ds, err := r.Resolve("postmaster@example.test"); err != nil || summary(r, ds) != "maildir:$R/postmaster" {
		t.Errorf("config self: %s %v", summary(r, ds), err)
	}
	r.Postmaster = ""
	for _, addr := range []string{"postmaster@example.test", "postmaster@loopy.test", "Postmaster"} {
		ds, err := r.Resolve(addr)
		if err != nil || summary(r, ds) != "maildir:$R/postmaster" {
			t.Errorf("fallback: Resolve(%q) = %s %v", addr, summary(r, ds), err)
		}
	}
	// postmaster: postmaster with no such user still resolves.
	r.Aliases, _ = aliases.Parse(strings.NewReader("postmaster: postmaster, bob\n"))
	if ds, err := r.Resolve("postmaster@example.test"); err != nil || summary(r, ds) != "maildir:$R/postmaster maildir:$R/example.test/bob" {
		t.Errorf("self alias: %s %v", summary(r, ds), err)
	}
	// Even with no users or aliases at all.
	empty := &Router{Domains: []string{"example.test"}, MailRoot: "/m"}
	if ds, err := empty.Resolve("postmaster@example.test"); err != nil || len(ds) != 1 || ds[0].Path != "/m/postmaster" {
		t.Errorf("empty router: %v %v", ds, err)
	}
}

func TestPipesNotAllowed(t *testing.T) {
	r := newRouter(t, false)
	if _, err := r.Resolve("pipe@example.test"); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("pipe with AllowPipes false: %v", err)
	}
	if err := r.Exists("pipe@example.test"); err != nil {
		t.Errorf("Exists must accept an alias with a pipe: %v", err)
	}
	if _, err := r.Resolve("bob@example.test"); err != nil {
		t.Error(err)
	}
}

func TestIsLocal(t *testing.T) {
	r := &Router{Domains: []string{"example.test", "Other.Test."}}
	for d, want := range map[string]bool{"example.test": true, "EXAMPLE.TEST": true, "example.test.": true,
		"other.test": true, "sub.example.test": false, "": false, ".": false, "test": false} {
		if r.IsLocal(d) != want {
			t.Errorf("IsLocal(%q) != %v", d, want)
		}
	}
}

func TestParseAddress(t *testing.T) {
	cases := []struct{ in, local, domain string }{
		{"a@b.test", "a", "b.test"},
		{"<A.B+c@B.Test.>", "A.B+c", "b.test"},
		{"\"a b\"@x.test", "a b", "x.test"},
		{"\"a\\\"b\"@x.test", "a\"b", "x.test"},
		{"@r1.test,@r2.test:a@x.test", "a", "x.test"},
		{"postmaster", "postmaster", ""},
		{"ünï@bücher.test", "ünï", "bücher.test"},
		{"a_b@x_y.test", "a_b", "x_y.test"},
	}
	for _, c := range cases {
		l, d, err := parseAddress(c.in)
		if err != nil || l != c.local || d != c.domain {
			t.Errorf("parseAddress(%q) = %q %q %v", c.in, l, d, err)
		}
	}
	for _, c := range [][3]string{{"a b", "x.test", "\"a b\"@x.test"}, {"a\"b", "x.test", "\"a\\\"b\"@x.test"}, {"a.b", "x.test", "a.b@x.test"}} {
		if got := address.Format(c[0], c[1]); got != c[2] {
			t.Errorf("address.Format(%q, %q) = %q", c[0], c[1], got)
		}
	}
}

func TestReloadThroughRouter(t *testing.T) {
	dir := t.TempDir()
	up, ap := filepath.Join(dir, "users"), filepath.Join(dir, "aliases")
	os.WriteFile(up, nil, 0o600)
	os.WriteFile(ap, []byte("postmaster: root\n"), 0o600)
	db, _ := users.Load(up)
	al, _ := aliases.Load(ap)
	r := &Router{Domains: []string{"example.test"}, MailRoot: dir, Users: db, Aliases: al}
	if err := r.Exists("new@example.test"); !errors.Is(err, ErrNoSuchUser) {
		t.Fatal(err)
	}
	if err := users.Add(up, &users.User{Name: "new@example.test", Password: "{PLAIN}x"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Exists("new@example.test"); err != nil {
		t.Errorf("a user added to the file is not seen: %v", err)
	}
}

// TestConcurrentResolve: servers share one Router between connections
// while the files change under them (run with -race).
func TestConcurrentResolve(t *testing.T) {
	dir := t.TempDir()
	up, ap := filepath.Join(dir, "users"), filepath.Join(dir, "aliases")
	os.WriteFile(up, []byte("bob@example.test:{PLAIN}x\n"), 0o600)
	os.WriteFile(ap, []byte("root: bob\n"), 0o600)
	db, _ := users.Load(up)
	al, _ := aliases.Load(ap)
	r := &Router{Domains: []string{"example.test"}, MailRoot: dir, Users: db, Aliases: al}
	done := make(chan bool)
	for g := 0; g < 4; g++ {
		go func() {
			for i := 0; i < 200; i++ {
				if ds, err := r.Resolve("root@example.test"); err != nil || len(ds) != 1 {
					t.Errorf("Resolve: %v %v", ds, err)
				}
			}
			done <- true
		}()
	}
	for i := 0; i < 20; i++ {
		users.Add(up, &users.User{Name: "u" + string(rune('a'+i)) + "@example.test", Password: "{PLAIN}x"})
	}
	for g := 0; g < 4; g++ {
		testwait.Recv(t, done, 20*time.Second, "the resolving goroutines to finish")
	}
}
