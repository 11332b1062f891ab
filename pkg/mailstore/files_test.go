package mailstore

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseUIDList(t *testing.T) {
	for _, c := range []struct {
		file  string
		uv    uint32
		next  uint32
		guid  string
		recs  string // uid:ext:name …
		bad   int
		hdrEx string
	}{
		{"dovecot-inbox", 1796406154, 9, "820299308afb126bb71a000083ecc375",
			"1::1796406154.M814040P6839.vm,S=20,W=23 2::1796406155.M160378P6862.vm,S=27,W=30 3::1796406155.M473005P6877.vm,S=33,W=37 4::1796406155.M901061P6887.vm,S=22,W=25 7::1796406160.M239739P7038.vm,S=40,W=43 8:W35:1700000000.M1P1.handmade", 0, ""},
		// Dovecot appends records without changing N: the next UID is
		// after the last record.
		{"dovecot-w-s-ext", 1796404835, 6, "479dc30e63f6126bf535000083ecc375",
			"1:W34 S30:160000001.M1P1.host 5:W18:1700000000.M5P5.host,S=15", 0, ""},
		{"dovecot-guid-ext", 1796404836, 2, "1cf418036bf6126ba536000083ecc375",
			"1:G160000001.M1P1.host:1796404843.M91227P13990.vm,W=34", 0, ""},
		{"version1", 1234567890, 5, "", "1::1234.host1 2::1235.host2 4::1236.host3", 0, ""},
		// Out of order, bad, zero and torn records skipped; a name met
		// twice is the later UID's (dedupe), other header fields kept.
		{"appended-broken-torn", 1796404835, 11, "479dc30e63f6126bf535000083ecc375",
			"1::160000001.M1P1.host 2:W34 S30 G160000002.M1P1.host:160000002.M1P1.host 9::160000003.M1P1.host 10::160000001.M1P1.host", 4, "P%u X9"},
	} {
		t.Run(c.file, func(t *testing.T) {
			ul, err := parseUIDList(readFile(t, filepath.Join("testdata/uidlist", c.file)))
			must(t, err)
			var recs []string
			for _, r := range ul.recs {
				recs = append(recs, fmt.Sprintf("%d:%s:%s", r.uid, r.ext, r.name))
			}
			if ul.uidValidity != c.uv || ul.nextUID != c.next || ul.guid != c.guid || ul.bad != c.bad || ul.hdrExt != c.hdrEx || strings.Join(recs, " ") != c.recs {
				t.Errorf("got V%d N%d G%s bad %d hdr %q\n%s", ul.uidValidity, ul.nextUID, ul.guid, ul.bad, ul.hdrExt, strings.Join(recs, " "))
			}
			// What we write reads back the same (and is version 3).
			ul.dedupe()
			again, err := parseUIDList(string(ul.format()))
			must(t, err)
			again.bad = ul.bad
			if !reflect.DeepEqual(ul, again) {
				t.Errorf("round trip:\n%+v\n%+v", ul, again)
			}
		})
	}
	ul, _ := parseUIDList(readFile(t, "testdata/uidlist/appended-broken-torn"))
	ul.dedupe()
	if len(ul.recs) != 3 || ul.recs[2].uid != 10 {
		t.Errorf("dedupe kept %+v", ul.recs)
	}
	if r := ul.recs[0]; r.extField('W') != "34" || r.extField('G') != "160000002.M1P1.host" || r.extField('P') != "" {
		t.Errorf("ext fields of %+v", r)
	}
	for _, bad := range []string{"", "3 V1 N2", "2 V1 N1\n", "3 N5\n", "3 V0 N1\n", "3 Vx N1\n", "3 V1 Nx\n", "1 5\n", "3 V1 N1 lower\n", "3 V4294967295 N1\n"} {
		if _, err := parseUIDList(bad); err == nil {
			t.Errorf("header %q accepted", bad)
		}
	}
	if got := string(newUIDList(7).format()); !strings.HasPrefix(got, "3 V7 N1 G") || len(got) != len("3 V7 N1 G")+32+1 {
		t.Errorf("new uidlist %q", got)
	}
}

func TestKeywordsFile(t *testing.T) {
	k := parseKeywords(readFile(t, "testdata/keywords/dovecot"))
	if got := strings.Join(k.list(), " "); got != "$Label1 work later" || k.index("WORK") != 1 || k.index("nope") != -1 || k.free() != 3 {
		t.Errorf("Dovecot's file: %q", got)
	}
	if string(k.format()) != readFile(t, "testdata/keywords/dovecot") {
		t.Errorf("format %q", k.format())
	}
	k = parseKeywords(readFile(t, "testdata/keywords/broken"))
	// 26 is beyond z, "FOO" is kept (Dovecot's names are kept as they
	// are), a second index 1 and a duplicate name are skipped.
	if got := string(k.format()); got != "0 $Label1\n1 foo\n4 FOO\n5 ok\n" && got != "0 $Label1\n1 foo\n5 ok\n" {
		t.Errorf("broken file read as %q", got)
	}
	for _, kw := range []string{"", `\Seen`, "a b", "a(b", "a]b", "é", strings.Repeat("x", 101), "a\x00"} {
		if validKeyword(kw) {
			t.Errorf("keyword %q accepted", kw)
		}
	}
	for _, kw := range []string{"$Label1", "Junk", "$MDNSent", "x.y-z_1"} {
		if !validKeyword(kw) {
			t.Errorf("keyword %q refused", kw)
		}
	}
}

func TestSubscriptionsFile(t *testing.T) {
	got := parseSubscriptions(readFile(t, "testdata/subscriptions/dovecot-v2"))
	if strings.Join(got, "|") != "Sent|Work.Proj|Ünïcode & more|INBOX" {
		t.Errorf("Dovecot's file: %q", got)
	}
	got = parseSubscriptions(readFile(t, "testdata/subscriptions/version1"))
	if strings.Join(got, "|") != "INBOX|Lists.go|Ünïcode" {
		t.Errorf("version 1: %q", got)
	}
	if got := formatSubscriptions([]string{"a b.c", "INBOX", "Ü"}); string(got) != "V\t2\n\nINBOX\na b\tc\n&ANw-\n" {
		t.Errorf("written as %q", got)
	}
	// Levels are tab-escaped (Dovecot's str_tabescape); names with
	// control characters are never valid, so they are dropped.
	if got := parseSubscriptions("V\t2\n\nx\x01ty\tz\nok\n"); strings.Join(got, "|") != "ok" {
		t.Errorf("escaped tab: %q", got)
	}
	if tabUnescape(tabEscape("a\x01b\tc\rd\ne")) != "a\x01b\tc\rd\ne" {
		t.Error("tab escaping does not round-trip")
	}
}

func TestUTF7(t *testing.T) {
	for utf, enc := range map[string]string{
		"INBOX": "INBOX", "a&b": "a&-b", "&": "&-", "Ünïcode & more": "&ANw-n&AO8-code &- more",
		"~peter/mail/台北/日本語": "~peter/mail/&U,BTFw-/&ZeVnLIqe-", "😀": "&2D3eAA-", "": "",
	} {
		if got := encodeUTF7(utf); got != enc {
			t.Errorf("encode %q = %q, want %q", utf, got, enc)
		}
		if got, err := decodeUTF7(enc); err != nil || got != utf {
			t.Errorf("decode %q = %q %v, want %q", enc, got, err, utf)
		}
	}
	for _, bad := range []string{"&", "&AGE-", "&Jjo", "&Jjo!-", "&2D0-", "\x01", "é", "&AOk-&AOk-", "&AOkA-", "&U,BTF2-"} {
		if got, err := decodeUTF7(bad); err == nil {
			t.Errorf("decode %q = %q, want an error", bad, got)
		}
	}
}

func TestNames(t *testing.T) {
	for in, want := range map[string]string{"inbox": "INBOX", "Inbox.x": "INBOX.x", "a.": "a", "Sent": "Sent", "a.b": "a.b"} {
		if got, err := canonName(in); err != nil || got != want {
			t.Errorf("canonName(%q) = %q %v, want %q", in, got, err, want)
		}
	}
	for entry, want := range map[string]string{".Sent": "Sent", ".a.b": "a.b", ".&ANw-": "Ü", "..DOVECOT-TRASHED": "", ".": "", "cur": "", ".a..b": "", ".&-x": "&x", ".&AGE-": "", ".#x": "", ".INBOX": "", ".INBOX.x": "INBOX.x"} {
		got, ok := nameOfDir(entry)
		if ok != (want != "") || got != want {
			t.Errorf("nameOfDir(%q) = %q %v, want %q", entry, got, ok, want)
		}
	}
}

// Fuzz targets. Their seeds are the files under testdata/ (and whatever
// go test -fuzz saved under testdata/fuzz/); make test runs them.

func addSeeds(f *testing.F, dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
}

// FuzzUIDList: any input parses or fails without panicking; what parses,
// written out and read again, is the same.
func FuzzUIDList(f *testing.F) {
	addSeeds(f, "testdata/uidlist")
	f.Fuzz(func(t *testing.T, in string) {
		ul, err := parseUIDList(in)
		if err != nil {
			return
		}
		ul.dedupe()
		for i := 1; i < len(ul.recs); i++ {
			if ul.recs[i].uid <= ul.recs[i-1].uid {
				t.Fatalf("records out of order: %+v", ul.recs)
			}
		}
		if n := len(ul.recs); n > 0 && ul.nextUID <= ul.recs[n-1].uid {
			t.Fatalf("next UID %d not above %d", ul.nextUID, ul.recs[n-1].uid)
		}
		again, err := parseUIDList(string(ul.format()))
		if err != nil {
			t.Fatalf("our own uidlist does not parse: %v\n%q", err, ul.format())
		}
		again.bad = ul.bad
		if !reflect.DeepEqual(ul, again) {
			t.Fatalf("round trip:\n%+v\n%+v", ul, again)
		}
	})
}

// FuzzKeywords: the keywords file's reader never panics and what it
// writes reads back the same.
func FuzzKeywords(f *testing.F) {
	addSeeds(f, "testdata/keywords")
	f.Fuzz(func(t *testing.T, in string) {
		k := parseKeywords(in)
		if again := parseKeywords(string(k.format())); again != k {
			t.Fatalf("round trip: %q\n%q", k, again)
		}
	})
}

// FuzzSubscriptions: the same for the subscriptions file.
func FuzzSubscriptions(f *testing.F) {
	addSeeds(f, "testdata/subscriptions")
	f.Fuzz(func(t *testing.T, in string) {
		subs := parseSubscriptions(in)
		again := parseSubscriptions(string(formatSubscriptions(subs)))
		if len(again) != len(subs) {
			t.Fatalf("round trip: %q\n%q", subs, again)
		}
		seen := map[string]bool{}
		for _, s := range again {
			seen[s] = true
		}
		for _, s := range subs {
			if !seen[s] {
				t.Fatalf("%q lost in %q", s, again)
			}
		}
	})
}

// FuzzUTF7: decoding accepts only what encoding gives back; encoding any
// UTF-8 decodes to it.
func FuzzUTF7(f *testing.F) {
	for _, s := range []string{"&ANw-n&AO8-code &- more", "~peter/mail/&U,BTFw-/&ZeVnLIqe-", "a&-b", "&2D3eAA-", "台北"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if u, err := decodeUTF7(in); err == nil {
			if encodeUTF7(u) != in {
				t.Fatalf("decode(%q) = %q encodes to %q", in, u, encodeUTF7(u))
			}
		}
		if !strings.ContainsRune(in, '\uFFFD') && strings.ToValidUTF8(in, "") == in {
			enc := encodeUTF7(in)
			if u, err := decodeUTF7(enc); err != nil || u != in {
				t.Fatalf("%q encodes to %q, decodes to %q %v", in, enc, u, err)
			}
		}
	})
}

// FuzzCache: any cache file parses or fails without panicking, and a
// parsed one written again reads back the same.
func FuzzCache(f *testing.F) {
	addSeeds(f, "testdata/cache")
	f.Fuzz(func(t *testing.T, in string) {
		s, err := parseCache([]byte(in))
		if err != nil {
			return
		}
		again, err := parseCache(formatCache(&s))
		if err != nil {
			t.Fatalf("our own cache does not parse: %v", err)
		}
		if !reflect.DeepEqual(s, again) {
			t.Fatalf("round trip:\n%+v\n%+v", s, again)
		}
	})
}

// TestCacheSeeds: the cache seeds (written by this package from real
// folders: messages, flags, keywords, expunges, \Recent taken; an empty
// folder; a truncated file) still parse, so that FuzzCache starts from
// valid files. After a format change, write them again.
func TestCacheSeeds(t *testing.T) {
	ents, err := os.ReadDir("testdata/cache")
	must(t, err)
	if len(ents) < 2 {
		t.Fatal("testdata/cache holds no seeds")
	}
	for _, e := range ents {
		if _, err := parseCache([]byte(readFile(t, filepath.Join("testdata/cache", e.Name())))); err != nil && !strings.HasPrefix(e.Name(), "bad-") {
			t.Errorf("seed %s: %v (the format changed: regenerate the seeds)", e.Name(), err)
		}
	}
}
