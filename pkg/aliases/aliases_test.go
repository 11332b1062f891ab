package aliases

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSample(t *testing.T) {
	tb, err := Load("../../testdata/aliases/sample.aliases")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		local, domain string
		want          []string
	}{
		{"postmaster", "example.test", []string{"root"}},
		{"ROOT", "Example.Test", []string{"admin@example.test"}},
		{"sales", "any.test", []string{"alice", "bob", "carol"}},
		{"support", "example.test", []string{"helpdesk@remote.test"}},
		{"archive", "example.test", []string{"/var/mail/archive", "/srv/mail/archive/"}},
		{"filter", "example.test", []string{"|/usr/bin/filter --flag 'a b'", `\bob`}},
		{"quoted", "example.test", []string{"|cmd with, comma", "/path with spaces/box"}},
		{"whoever", "other.test", []string{"catchall"}},
	}
	for _, c := range cases {
		got, ok := tb.Lookup(c.local, c.domain)
		if !ok || !reflect.DeepEqual(got, c.want) {
			t.Errorf("Lookup(%s, %s) = %q %v, want %q", c.local, c.domain, got, ok, c.want)
		}
	}
	if _, ok := tb.Lookup("support", "elsewhere.test"); ok {
		t.Error("a full-address key matched another domain")
	}
	if _, ok := tb.LookupExact("whoever", "other.test"); ok {
		t.Error("LookupExact used the catch-all")
	}
	if _, ok := tb.Lookup("nobody", "example.test"); ok {
		t.Error("nobody found")
	}
	want := []string{"postmaster", "root", "sales", "support@example.test", "archive", "filter", "quoted", "@other.test"}
	if got := tb.Keys(); !reflect.DeepEqual(got, want) {
		t.Errorf("Keys = %q", got)
	}
}

func TestClassify(t *testing.T) {
	cases := map[string]struct {
		k TargetKind
		v string
	}{
		"|/bin/cmd a":     {Command, "/bin/cmd a"},
		"/var/mail/x":     {File, "/var/mail/x"},
		"/var/mail/x/":    {Dir, "/var/mail/x/"},
		`\bob`:            {Local, "bob"},
		"bob":             {Address, "bob"},
		"bob@remote.test": {Address, "bob@remote.test"},
	}
	for in, w := range cases {
		k, v := Classify(in)
		if k != w.k || v != w.v {
			t.Errorf("Classify(%q) = %v %q", in, k, v)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, src := range []string{
		"nocolon\n",
		": target\n",
		"key:\n",
		"key: a,,b\n",
		"key: a,\n",
		"  continuation first\n",
		"key: \"unterminated\n",
		"a: x\nA: y\n", // duplicate (case-insensitive)
		"a@b@c: x\n",
		"a@: x\n",
		"key: :include:/etc/passwd\n", // Parse has no owner to check
		"key: a\x01b\n",
		"key: bob\n  alice\n", // missing comma
	} {
		if tb, err := Parse(strings.NewReader(src)); err == nil {
			t.Errorf("%q: accepted: %q", src, tb.Keys())
		}
	}
	_, err := Parse(strings.NewReader("ok: x\n\nbad line\n"))
	if err == nil || !strings.Contains(err.Error(), ":3:") {
		t.Errorf("error does not name line 3: %v", err)
	}
}

func TestParseForms(t *testing.T) {
	tb, err := Parse(strings.NewReader("# c\r\na: b\r\n\n\t\nc :  d ,e,\n \n  f\n\"g h\": i\nj: \"k\"@example.test, \"l\\\"m\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string][]string{"a": {"b"}, "c": {"d", "e", "f"}, "g h": {"i"}, "j": {`"k"@example.test`, `l"m`}} {
		if got, _ := tb.Lookup(k, "x.test"); !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

func TestIncludeAndReload(t *testing.T) {
	dir := t.TempDir()
	inc := filepath.Join(dir, "list")
	os.WriteFile(inc, []byte("# members\nann, ben\ncid@remote.test\n"), 0o644)
	p := filepath.Join(dir, "aliases")
	os.WriteFile(p, []byte("list: :include:"+inc+", dan\n"), 0o644)
	tb, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := tb.Lookup("list", "x.test"); !reflect.DeepEqual(got, []string{"ann", "ben", "cid@remote.test", "dan"}) {
		t.Errorf("include: %q", got)
	}
	// World-writable include files are refused: anyone could add |commands.
	os.Chmod(inc, 0o666)
	if a, ok := mustLoad(t, p).FindExact("list", "x.test"); !ok || !errors.Is(a.Err, ErrBadInclude) || len(a.Targets) != 0 {
		t.Errorf("world-writable include accepted: %+v", a)
	}
	os.Chmod(inc, 0o644)
	os.WriteFile(p, []byte("list: :include:relative\n"), 0o644)
	if a, _ := mustLoad(t, p).FindExact("list", "x.test"); !errors.Is(a.Err, ErrBadInclude) {
		t.Errorf("relative include accepted: %+v", a)
	}

	os.WriteFile(p, []byte("a: b\n"), 0o644)
	tb, _ = Load(p)
	os.WriteFile(p, []byte("a: c\nnew: d\n"), 0o644)
	later := time.Now().Add(2 * time.Second)
	os.Chtimes(p, later, later)
	if got, _ := tb.Lookup("a", "x.test"); !reflect.DeepEqual(got, []string{"c"}) {
		t.Errorf("reload: a = %q", got)
	}
	os.WriteFile(p, []byte("broken\n"), 0o644)
	os.Chtimes(p, later.Add(time.Second), later.Add(time.Second))
	if got, _ := tb.Lookup("new", "x.test"); !reflect.DeepEqual(got, []string{"d"}) || tb.Err() == nil {
		t.Errorf("a broken edit must keep the last table and report: %q %v", got, tb.Err())
	}
	if tb2, err := Load(filepath.Join(dir, "absent")); err != nil || len(tb2.Keys()) != 0 {
		t.Errorf("missing file: %v", err)
	}
}
