package submission

import (
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"letterbox/pkg/aliases"
	"letterbox/pkg/route"
	"letterbox/pkg/users"
)

var fixedNow = time.Date(2026, 11, 23, 14, 5, 6, 0, time.FixedZone("", 3600))

const (
	fixedDate = "Date: Mon, 23 Nov 2026 14:05:06 +0100\r\n"
)

// msgIDLine matches the Message-ID HeaderFixer makes with fixedNow.
var msgIDLine = regexp.MustCompile(`Message-ID: <20261123130506\.[0-9a-f]{16}@mx\.example\.test>\r\n`)

// fix runs in through a HeaderFixer and replaces the random part of the
// Message-ID with a placeholder. With oneByte the fixer gets its input one
// byte at a time, so line ends and field names fall across reads; psize is
// the size of the reads made from the fixer.
func fix(t *testing.T, in string, oneByte bool, psize int) string {
	t.Helper()
	var r io.Reader = strings.NewReader(in)
	if oneByte {
		r = iotest.OneByteReader(r)
	}
	h := NewHeaderFixer(r, "mx.example.test", func() time.Time { return fixedNow })
	var out []byte
	buf := make([]byte, psize)
	for {
		n, err := h.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
	}
	return msgIDLine.ReplaceAllString(string(out), "Message-ID: <ID>\r\n")
}

func TestHeaderFixer(t *testing.T) {
	const id = "Message-ID: <ID>\r\n"
	cases := []struct{ name, in, want string }{
		{"both missing", "Subject: hi\r\nTo: a@b.test\r\n\r\nbody\r\nDate: not a header\r\n",
			"Subject: hi\r\nTo: a@b.test\r\n" + fixedDate + id + "\r\nbody\r\nDate: not a header\r\n"},
		{"both present, any case, kept as sent", "DATE:  Tue, 1 Jan 2030 00:00:00 GMT\r\nmessage-ID:<x@y>\r\n\r\nb\r\n",
			"DATE:  Tue, 1 Jan 2030 00:00:00 GMT\r\nmessage-ID:<x@y>\r\n\r\nb\r\n"},
		{"only Date missing", "Message-Id: <keep@me>\r\n\r\nb\r\n", "Message-Id: <keep@me>\r\n" + fixedDate + "\r\nb\r\n"},
		{"only Message-ID missing, folded Date", "Date:\r\n Tue, 1 Jan 2030\r\n\t00:00:00 GMT\r\nSubject: a\r\n  folded\r\n\r\nb\r\n",
			"Date:\r\n Tue, 1 Jan 2030\r\n\t00:00:00 GMT\r\nSubject: a\r\n  folded\r\n" + id + "\r\nb\r\n"},
		{"obsolete space before colon", "Date : Tue, 1 Jan 2030 00:00:00 GMT\r\nMessage-ID\t: <x@y>\r\n\r\nb\r\n",
			"Date : Tue, 1 Jan 2030 00:00:00 GMT\r\nMessage-ID\t: <x@y>\r\n\r\nb\r\n"},
		{"X-Date is not Date", "X-Date: x\r\nX-Message-ID: y\r\n\r\nb\r\n", "X-Date: x\r\nX-Message-ID: y\r\n" + fixedDate + id + "\r\nb\r\n"},
		{"header only, no separator", "Subject: hi\r\n", "Subject: hi\r\n" + fixedDate + id},
		{"header only, last line without CRLF", "Subject: hi", "Subject: hi\r\n" + fixedDate + id},
		{"no header, body only", "just text\r\nDate: in the body\r\n", fixedDate + id + "\r\njust text\r\nDate: in the body\r\n"},
		{"body starts without empty line", "Subject: hi\r\nno colon here\r\n", "Subject: hi\r\n" + fixedDate + id + "\r\nno colon here\r\n"},
		{"continuation as first line is body", " indented\r\n", fixedDate + id + "\r\n indented\r\n"},
		{"mbox From line is body", "From joe Mon Nov 23 14:05:06 2026\r\n", fixedDate + id + "\r\nFrom joe Mon Nov 23 14:05:06 2026\r\n"},
		{"empty message", "", fixedDate + id},
		{"empty header", "\r\nbody\r\n", fixedDate + id + "\r\nbody\r\n"},
		{"body without CRLF at end", "Subject: x\r\n\r\nno end", "Subject: x\r\n" + fixedDate + id + "\r\nno end"},
	}
	for _, tc := range cases {
		for _, rd := range []struct {
			oneByte bool
			psize   int
		}{{false, 32 << 10}, {false, 1}, {true, 1}, {true, 3}, {true, 32 << 10}} {
			if got := fix(t, tc.in, rd.oneByte, rd.psize); got != tc.want {
				t.Errorf("%s (%+v): got\n%q\nwant\n%q", tc.name, rd, got, tc.want)
			}
		}
	}
}

// A read error (the checker's verdict, a dropped client) reaches the spool
// so that nothing is committed, in the header and in the body alike.
func TestHeaderFixerPassesErrors(t *testing.T) {
	boom := errors.New("boom")
	for _, in := range []string{"Subject: x\r\nTo", "Subject: x\r\n\r\nbody"} {
		h := NewHeaderFixer(io.MultiReader(strings.NewReader(in), iotest.ErrReader(boom)), "h", nil)
		if _, err := io.ReadAll(h); !errors.Is(err, boom) {
			t.Errorf("%q: error %v, want boom", in, err)
		}
	}
}

func TestHeaderFixerLongLine(t *testing.T) {
	// A "line" longer than any header line can be is the body (smtpd's
	// checker never lets one through; the fixer must not hold it all).
	long := strings.Repeat("x", maxHeaderLine+10)
	got := fix(t, "Subject: a\r\n"+long+"\r\n", true, 7)
	want := "Subject: a\r\n" + fixedDate + "Message-ID: <ID>\r\n\r\n" + long + "\r\n"
	if got != want {
		t.Fatalf("got %.200q", got)
	}
}

func TestIsFieldLine(t *testing.T) {
	for l, want := range map[string]bool{
		"Subject: x": true, "X-A:": true, "Date :x": true, "Date\t: x": true,
		": x": false, " Date: x": false, "no colon": false, "two words: x": false,
		"Sübject: x": false, " : x": false, "": false,
	} {
		if got := IsFieldLine(l); got != want {
			t.Errorf("IsFieldLine(%q) = %v", l, got)
		}
	}
}

func testRouter(t testing.TB) *route.Router {
	t.Helper()
	db, err := users.Parse(strings.NewReader("joe@example.test:{PLAIN}secret\nbob@example.test:{PLAIN}bob\nCarol@Example.TEST:{PLAIN}c\n"))
	if err != nil {
		t.Fatal(err)
	}
	al, err := aliases.Parse(strings.NewReader(`postmaster: joe
sales: joe, bob
webmaster: sales
abuse: bob
archive: joe, /var/mail/archive, |/usr/bin/true
loop1: loop2
loop2: loop1
remote: friend@remote.test
info@example.org: joe
`))
	if err != nil {
		t.Fatal(err)
	}
	return &route.Router{Domains: []string{"example.test", "example.org"}, MailRoot: t.TempDir(),
		Users: db, Aliases: al}
}

func TestRouterSendersOwns(t *testing.T) {
	rt := testRouter(t)
	s := NewRouterSenders(rt)
	if rt.AllowPipes || !s.Router.AllowPipes {
		t.Fatal("NewRouterSenders must allow pipes in its own copy only")
	}
	for _, tc := range []struct {
		user, addr string
		want       bool
	}{
		{"joe@example.test", "joe@example.test", true},
		{"joe@example.test", "joe@EXAMPLE.Test", true},
		{"JOE@example.TEST", "joe@example.test", true}, // AUTH name in any case
		{"joe@example.test", "joe+lists@example.test", true},
		{"joe@example.test", "joe+@example.test", true},
		{"joe@example.test", "\"joe\"@example.test", true},
		{"joe@example.test", "postmaster@example.test", true}, // alias to joe
		{"joe@example.test", "Postmaster@example.test", true},
		{"joe@example.test", "sales@example.test", true},       // one of its targets
		{"joe@example.test", "sales+q4@example.test", true},    // +detail of an owned alias
		{"joe@example.test", "webmaster@example.test", true},   // nested
		{"joe@example.test", "archive@example.test", true},     // with file and pipe targets
		{"joe@example.test", "info@example.org", true},         // full-address alias key
		{"joe@example.test", "joe@example.org", false},         // another local domain, no alias
		{"joe@example.test", "JOE@example.test", false},        // local part as the users file has it
		{"joe@example.test", "Joe+x@example.test", false},      //
		{"joe@example.test", "joey@example.test", false},       // a prefix is not +detail
		{"joe@example.test", "bob@example.test", false},        // someone else
		{"joe@example.test", "abuse@example.test", false},      // someone else's alias
		{"joe@example.test", "nobody@example.test", false},     // no such address
		{"joe@example.test", "loop1@example.test", false},      // broken alias
		{"joe@example.test", "remote@example.test", false},     // alias to a remote address
		{"joe@example.test", "joe@remote.test", false},         // not our domain
		{"joe@example.test", "joe@example.test.evil", false},   //
		{"joe@example.test", "joe@[127.0.0.1]", false},         // literal
		{"bob@example.test", "sales@example.test", true},       //
		{"bob@example.test", "postmaster@example.test", false}, //
		{"carol@example.test", "Carol@example.test", true},     // the file's spelling
		{"carol@example.test", "carol@example.test", false},    //
		{"ghost@example.test", "ghost@example.test", true},     // authenticated elsewhere: its own address only
		{"ghost@example.test", "sales@example.test", false},
	} {
		got, err := s.Owns(tc.user, tc.addr)
		if err != nil || got != tc.want {
			t.Errorf("Owns(%q, %q) = %v, %v; want %v", tc.user, tc.addr, got, err, tc.want)
		}
	}
}

// BenchmarkHeaderFixer: the cost of the fixer on a 10 KB message (header
// of 8 fields), against reading the same message as it is.
func BenchmarkHeaderFixer(b *testing.B) {
	msg := strings.Repeat("X-Field: some value of a header\r\n", 8) + "\r\n" + strings.Repeat(strings.Repeat("b", 78)+"\r\n", 128)
	buf := make([]byte, 32<<10)
	for _, fixed := range []bool{false, true} {
		b.Run(fmt.Sprintf("fixer=%v", fixed), func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			for i := 0; i < b.N; i++ {
				var r io.Reader = strings.NewReader(msg)
				if fixed {
					r = NewHeaderFixer(r, "mx.example.test", nil)
				}
				for {
					if _, err := r.Read(buf); err != nil {
						break
					}
				}
			}
		})
	}
}

// BenchmarkSenderOwns: MAIL FROM checks, the user's own address and an
// alias that needs the router.
func BenchmarkSenderOwns(b *testing.B) {
	s := NewRouterSenders(testRouter(b))
	for _, addr := range []string{"joe+x@example.test", "webmaster@example.test"} {
		b.Run(addr, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if ok, err := s.Owns("joe@example.test", addr); !ok || err != nil {
					b.Fatal(ok, err)
				}
			}
		})
	}
}
