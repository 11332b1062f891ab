package address

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	// The router's forms are in route's TestParseAddress; these are the
	// others.
	cases := []struct{ in, local, domain string }{
		{"  user%other@X.test ", "user%other", "x.test"},
		{"\"user@remote.test\"@example.test", "user@remote.test", "example.test"},
		{"bob@[127.0.0.1]", "bob", "[127.0.0.1]"},
		{"<@a.test:Ünï@Bücher.TEST>", "Ünï", "bücher.test"},
		{"\"\\\\x\"", "\\x", ""},
	}
	for _, c := range cases {
		a, err := Parse(c.in)
		if err != nil || a.Local != c.local || a.Domain != c.domain {
			t.Errorf("Parse(%q) = %+v %v", c.in, a, err)
		}
	}
	for _, in := range []string{"", "<>", "bob@", "@example.test", "bob@@example.test",
		"bob@remote.test@example.test", "bob@example..test", "bob@.example.test", "bob@example.test..",
		"bob smith@example.test", ".bob@example.test", "bob.@example.test", "bo..b@example.test",
		"\"bob@example.test", "<bob@example.test", "bob@example.test>", "bob@exa mple.test",
		"bob@-example.test", "@relay.test:", "@relay.test", "@bad..route:bob@example.test",
		"bob\x00@example.test", "\"a\x01\"@example.test", "a\xff@example.test", "a@b\xff.test",
		"\"\"@example.test", "bob@example.test (comment)", "bob@example.test,x@y.test"} {
		if a, err := Parse(in); !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) = %+v, %v; want ErrSyntax", in, a, err)
		}
	}
}

func TestCheckLimits(t *testing.T) {
	ok := Address{Local: strings.Repeat("a", 64), Domain: "x.test"}
	if err := ok.CheckLimits(); err != nil {
		t.Error(err)
	}
	for _, a := range []Address{
		{Local: strings.Repeat("a", 65), Domain: "x.test"},
		{Local: "a", Domain: strings.Repeat("b.", 126) + "test"},
	} {
		if err := a.CheckLimits(); !errors.Is(err, ErrSyntax) {
			t.Errorf("%d octets: %v", len(a.Local)+len(a.Domain), err)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, c := range [][3]string{{"a b", "x.test", "\"a b\"@x.test"}, {"a\"b", "x.test", "\"a\\\"b\"@x.test"},
		{"a.b", "x.test", "a.b@x.test"}, {"ünï", "x.test", "ünï@x.test"}, {".a", "x.test", "\".a\"@x.test"},
		{"postmaster", "", "postmaster"}} {
		if got := Format(c[0], c[1]); got != c[2] {
			t.Errorf("Format(%q, %q) = %q", c[0], c[1], got)
		}
	}
}

func TestParsePath(t *testing.T) {
	cases := []struct {
		in     string
		want   Address
		null   bool
		rest   string
		utf8OK bool
	}{
		{in: "<joe@Example.Test.>", want: Address{Local: "joe", Domain: "example.test"}},
		{in: "<>", null: true},
		{in: "<> SIZE=1", null: true, rest: " SIZE=1"},
		{in: "<@a.test,@b.test:joe@x.test> BODY=8BITMIME", want: Address{Local: "joe", Domain: "x.test"}, rest: " BODY=8BITMIME"},
		{in: "<Postmaster>", want: Address{Local: "postmaster"}},
		{in: "<joe@[IPv6:::1]>", want: Address{Local: "joe", Domain: "[ipv6:::1]", Literal: true}},
		{in: "joe@x.test", want: Address{Local: "joe", Domain: "x.test"}},
		{in: "<ü@bücher.test> SMTPUTF8", want: Address{Local: "ü", Domain: "bücher.test"}, rest: " SMTPUTF8", utf8OK: true},
	}
	for _, c := range cases {
		a, null, rest, err := ParsePath(c.in, c.utf8OK)
		if err != nil || a != c.want || null != c.null || rest != c.rest {
			t.Errorf("ParsePath(%q) = %+v %v %q %v", c.in, a, null, rest, err)
		}
	}
	if _, _, _, err := ParsePath("<ü@x.test>", false); !errors.Is(err, ErrNeedUTF8) {
		t.Errorf("UTF-8 without SMTPUTF8: %v", err)
	}
	if _, _, _, err := ParsePath("<joe@bücher.test>", false); !errors.Is(err, ErrNeedUTF8) {
		t.Errorf("U-label without SMTPUTF8: %v", err)
	}
	for _, in := range []string{"<joe>", "<joe@x.test>SIZE=1", "<joe@x.test", "<joe@[]>", "<joe@[a]b]>", "<@>", "<@:joe@x>", ""} {
		if a, _, _, err := ParsePath(in, true); err == nil {
			t.Errorf("ParsePath(%q) = %+v, want an error", in, a)
		}
	}
}

// FuzzRoundTrip: never panics; what parses is canonical, and parse →
// format → parse gives the same mailbox, for the plain form (Parse,
// Format) and for SMTP paths (ParsePath, String): the address the relay
// check sees is the address that is queued and routed. The corpus holds the
// address forms of the router's and of smtpd's old parsers.
func FuzzRoundTrip(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		if a, err := Parse(s); err == nil {
			if a.Domain != LowerASCII(a.Domain) || strings.HasSuffix(a.Domain, ".") {
				t.Fatalf("Parse(%q): domain %q not canonical", s, a.Domain)
			}
			f := Format(a.Local, a.Domain)
			b, err := Parse(f)
			if err != nil || b != a {
				t.Fatalf("Parse(%q) = %+v → %q → %+v %v", s, a, f, b, err)
			}
			if Format(b.Local, b.Domain) != f {
				t.Fatalf("%q: Format not stable", s)
			}
		} else if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrNeedUTF8) {
			t.Fatalf("Parse(%q): error %v is none of ours", s, err)
		}
		for _, utf8OK := range []bool{true, false} {
			a, null, rest, err := ParsePath(s, utf8OK)
			if err != nil || null {
				continue
			}
			if a.Domain == "" {
				if !strings.EqualFold(a.Local, "postmaster") {
					t.Fatalf("%q: no domain for %q", s, a.Local)
				}
				continue
			}
			b, null2, rest2, err := ParsePath("<"+a.String()+">", utf8OK)
			if err != nil || null2 || rest2 != "" || b != a {
				t.Fatalf("%q -> %q -> %+v %v (rest %q)", s, a.String(), b, err, rest)
			}
		}
	})
}
