package imap

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"letterbox/pkg/mailstore"
)

// parseAll parses one command from input; conts counts the "+" asked.
func parseOne(t *testing.T, input string, preauth bool) (*command, *reader, int, error) {
	t.Helper()
	conts := 0
	r := newReader(bufio.NewReader(strings.NewReader(input)), func() error { conts++; return nil })
	if !preauth {
		r.maxLiteral = 64 << 10
	}
	if err := r.begin(); err != nil {
		return nil, r, conts, err
	}
	c, err := parseCommand(r)
	return c, r, conts, err
}

func mustParse(t *testing.T, input string) *command {
	t.Helper()
	c, _, _, err := parseOne(t, input, false)
	if err != nil {
		t.Fatalf("%q: %v", input, err)
	}
	return c
}

func TestParseCommands(t *testing.T) {
	for _, tc := range []struct {
		in   string
		name string
		uid  bool
		args any
	}{
		{"a1 CAPABILITY\r\n", "CAPABILITY", false, nil},
		{"a1 noop\n", "NOOP", false, nil},
		{"x.y LOGIN alice \"pass word\"\r\n", "LOGIN", false, loginArgs{"alice", "pass word"}},
		{"a LOGIN \"a\\\"b\" c\\\r\n", "LOGIN", false, nil}, // syntax error below
		{"a AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n", "AUTHENTICATE", false, authArgs{mech: "PLAIN", initial: []byte("AGFsaWNlAHB3"), hasIR: true}},
		{"a AUTHENTICATE plain =\r\n", "AUTHENTICATE", false, authArgs{mech: "PLAIN", hasIR: true}},
		{"a ENABLE CONDSTORE qresync\r\n", "ENABLE", false, enableArgs{[]string{"CONDSTORE", "QRESYNC"}}},
		{"a SELECT inbox\r\n", "SELECT", false, selectArgs{name: "INBOX"}},
		{"a EXAMINE \"Entw&APw-rfe\" (CONDSTORE)\r\n", "EXAMINE", false, selectArgs{name: "Entwürfe", condstore: true}},
		{"a CREATE Archive.2024 (USE (\\Archive))\r\n", "CREATE", false, createArgs{"Archive.2024", `\Archive`}},
		{"a RENAME a b\r\n", "RENAME", false, renameArgs{"a", "b"}},
		{"a STATUS INBOX (MESSAGES UIDNEXT SIZE)\r\n", "STATUS", false, statusArgs{"INBOX", []string{"MESSAGES", "UIDNEXT", "SIZE"}}},
		{"a UID EXPUNGE 1:3,7\r\n", "EXPUNGE", true, nil},
		{"a COPY 1:* Trash\r\n", "COPY", false, copyArgs{seqSet{ranges: []seqRange{{1, star}}}, "Trash"}},
		{"a UID MOVE $ Trash\r\n", "MOVE", true, copyArgs{seqSet{saved: true}, "Trash"}},
		{"a ID NIL\r\n", "ID", false, idArgs{}},
		{"a ID (\"name\" \"mutt\" \"version\" NIL)\r\n", "ID", false, idArgs{[]string{"name", "mutt", "version", ""}}},
		{"a UID THREAD REFERENCES UTF-8 ALL\r\n", "THREAD", true, threadArgs{"REFERENCES", "UTF-8", &searchKey{op: "ALL"}}},
	} {
		c, _, _, err := parseOne(t, tc.in, false)
		if tc.args == nil && tc.name == "LOGIN" {
			if err == nil {
				t.Errorf("%q: parsed, want a syntax error", tc.in)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if c.name != tc.name || c.uid != tc.uid {
			t.Errorf("%q: name %s uid %v", tc.in, c.name, c.uid)
		}
		if tc.args != nil && !reflect.DeepEqual(c.args, tc.args) {
			t.Errorf("%q: args %#v, want %#v", tc.in, c.args, tc.args)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{
		"\r\n",
		"a\r\n",
		"+x NOOP\r\n",
		"a FOO\r\n",
		"a UID NOOP\r\n",
		"a NOOP extra\r\n",
		"a LOGIN onlyuser\r\n",
		"a LOGIN \"unterminated\r\n",
		"a SELECT\r\n",
		"a SELECT a  b\r\n",
		"a FETCH 0 FLAGS\r\n",
		"a FETCH 1: FLAGS\r\n",
		"a FETCH 1,,2 FLAGS\r\n",
		"a FETCH x FLAGS\r\n",
		"a FETCH 4294967296 FLAGS\r\n",
		"a FETCH 1 ()\r\n",
		"a FETCH 1 (FLAGS\r\n",
		"a FETCH 1 BODY[1.]\r\n",
		"a FETCH 1 BODY[HEADER.FIELDS ()]\r\n",
		"a FETCH 1 BODY[MIME]\r\n",
		"a FETCH 1 BODY[]<1>\r\n",
		"a FETCH 1 BODY[]<0.0>\r\n",
		"a FETCH 1 BINARY[HEADER]\r\n",
		"a FETCH 1 FLAGS (VANISHED)\r\n",
		"a FETCH 1 NOSUCHITEM\r\n",
		"a STORE 1 FLAGS.LOUD (\\Seen)\r\n",
		"a STORE 1 +FLAGS (\\Recent)\r\n",
		"a SEARCH\r\n",
		"a SEARCH FROM\r\n",
		"a SEARCH BEFORE 32-Jan-2024\r\n",
		"a SEARCH BEFORE 1-Foo-2024\r\n",
		"a SEARCH NOSUCHKEY\r\n",
		"a SEARCH " + strings.Repeat("NOT ", 100) + "ALL\r\n",
		"a SEARCH " + strings.Repeat("(", 100) + "ALL" + strings.Repeat(")", 100) + "\r\n",
		"a SORT () UTF-8 ALL\r\n",
		"a SORT (REVERSE) UTF-8 ALL\r\n",
		"a STATUS INBOX ()\r\n",
		"a STATUS INBOX (BOGUS)\r\n",
		"a APPEND INBOX (\\Seen) \"bad date\" {3}\r\n",
		"a APPEND INBOX {3} x\r\n",
		"a SELECT INBOX (QRESYNC (0 1))\r\n",
		"a LIST (BOGUS) \"\" *\r\n",
		"a LIST \"\" * RETURN (BOGUS)\r\n",
		"a NOOP\x00\r\n",
		"a SELECT \"&Jjo\"\r\n", // unterminated modified UTF-7
		"a SELECT &AGE-\r\n",    // "a" encoded: not canonical
		"a LOGIN {3x}\r\n",
	} {
		_, _, _, err := parseOne(t, in, false)
		var se *syntaxError
		if !errors.As(err, &se) {
			t.Errorf("%q: got %v, want a syntax error", in, err)
		}
	}
}

func TestParseSearch(t *testing.T) {
	c := mustParse(t, "a UID SEARCH RETURN (MIN COUNT SAVE) CHARSET utf-8 OR (FROM \"x y\" SEEN) NOT UID 5:* LARGER 10 HEADER X-Spam \"\" SINCE 1-Feb-2024 MODSEQ \"/flags/\\\\draft\" all 5 1,3 $\r\n")
	a := c.args.(searchArgs)
	if !a.esearch || !reflect.DeepEqual(a.ret, []string{"MIN", "COUNT", "SAVE"}) || a.charset != "UTF-8" {
		t.Fatalf("args %+v", a)
	}
	var ops []string
	var walk func(k *searchKey)
	walk = func(k *searchKey) {
		ops = append(ops, k.op)
		for _, s := range k.sub {
			walk(s)
		}
	}
	walk(a.key)
	want := "AND OR AND FROM SEEN NOT UID LARGER HEADER SINCE MODSEQ SEQ SEQ"
	if got := strings.Join(ops, " "); got != want {
		t.Fatalf("ops %s, want %s", got, want)
	}
	k := a.key.sub[2]
	if k.fld != "X-Spam" || k.str != "" {
		t.Fatalf("HEADER %+v", k)
	}
	if d := a.key.sub[3].date; !d.Equal(time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("date %v", d)
	}
}

func TestParseFetch(t *testing.T) {
	c := mustParse(t, "a UID FETCH 1:*,7 (FLAGS BODY.PEEK[1.2.HEADER.FIELDS.NOT (From \"X-A\")]<10.200> BINARY.SIZE[1] BODY RFC822.SIZE) (CHANGEDSINCE 12 VANISHED)\r\n")
	a := c.args.(fetchArgs)
	if len(a.items) != 5 || a.changedSince != 12 || !a.vanished {
		t.Fatalf("%+v", a)
	}
	it := a.items[1]
	if it.name != "BODY" || !it.peek || !it.partial || it.offset != 10 || it.count != 200 ||
		it.sec.String() != "1.2.HEADER.FIELDS.NOT (FROM X-A)" {
		t.Fatalf("item %+v %s", it, it.sec)
	}
	if a.items[3].bracket || a.items[3].name != "BODY" {
		t.Fatalf("BODY item %+v", a.items[3])
	}
	c = mustParse(t, "a FETCH 2 ALL\r\n")
	if n := len(c.args.(fetchArgs).items); n != 4 {
		t.Fatalf("ALL: %d items", n)
	}
}

func TestParseStoreAndSelect(t *testing.T) {
	c := mustParse(t, "a STORE 1:2 (UNCHANGEDSINCE 7) -FLAGS.SILENT \\seen $Junk \\seen\r\n")
	a := c.args.(storeArgs)
	if a.op != mailstore.StoreRemove || !a.silent || !a.hasUnchanged || a.unchangedSince != 7 ||
		!reflect.DeepEqual(a.flags, []string{`\Seen`, "$Junk"}) {
		t.Fatalf("%+v", a)
	}
	c = mustParse(t, "a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541 (1:2 41,43)))\r\n")
	q := c.args.(selectArgs).qresync
	if q == nil || q.uidValidity != 67890007 || q.modSeq != 20050715194045000 || q.knownUIDs.String() != "41,43:211,214:541" || q.seqMatch[1].String() != "41,43" {
		t.Fatalf("%+v", q)
	}
	c = mustParse(t, "a LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (\"*\" \"%\") RETURN (CHILDREN STATUS (MESSAGES))\r\n")
	l := c.args.(listArgs)
	if !l.selSubscr || !l.selRecurse || len(l.patterns) != 2 || !l.retChild || !reflect.DeepEqual(l.retStatus, []string{"MESSAGES"}) {
		t.Fatalf("%+v", l)
	}
	c = mustParse(t, "a APPEND Sent (\\Seen) \" 5-Mar-2024 10:00:00 +0100\" {12+}\r\n")
	ap := c.args.(appendArgs)
	if ap.name != "Sent" || ap.size != 12 || ap.sync || ap.date.Day() != 5 {
		t.Fatalf("%+v", ap)
	}
	c = mustParse(t, "a APPEND Sent UTF8 (~{3}\r\n")
	if ap := c.args.(appendArgs); !ap.utf8 || ap.size != 3 || !ap.sync {
		t.Fatalf("%+v", ap)
	}
}

// TestLiterals: a literal ends at its octet count; "+" is asked only for
// synchronizing literals; the command goes on after it.
func TestLiterals(t *testing.T) {
	in := "a LOGIN {12}\r\nal\r\nb LOGOUT {6+}\r\npw\r\n\r\n\r\nc NOOP\r\n"
	c, r, conts, err := parseOne(t, in, true)
	if err != nil {
		t.Fatal(err)
	}
	if a := c.args.(loginArgs); a.user != "al\r\nb LOGOUT" || a.password != "pw\r\n\r\n" || conts != 1 {
		t.Fatalf("%q %q conts %d", a.user, a.password, conts)
	}
	if err := r.begin(); err != nil {
		t.Fatal(err)
	}
	if c, err := parseCommand(r); err != nil || c.tag != "c" || c.name != "NOOP" {
		t.Fatalf("next command %+v %v", c, err)
	}
	// Before login, 4 KiB at most; a refused synchronizing literal is
	// not sent, so nothing is skipped.
	_, _, conts, err = parseOne(t, fmt.Sprintf("a LOGIN {%d}\r\n", 4097), true)
	var le *literalError
	if !errors.As(err, &le) || !le.sync || conts != 0 {
		t.Fatalf("preauth literal: %v, conts %d", err, conts)
	}
	// After a syntax error, a non-synchronizing literal is skipped by its
	// count, CRLFs in it and all.
	_, r, _, err = parseOne(t, "a BOGUS {9+}\r\nx\r\nc LIST\r\nd NOOP\r\n", false)
	if err == nil {
		t.Fatal("BOGUS parsed")
	}
	if err := r.skip(); err != nil {
		t.Fatal(err)
	}
	if err := r.begin(); err != nil {
		t.Fatal(err)
	}
	if c, err := parseCommand(r); err != nil || c.tag != "d" {
		t.Fatalf("after skip: %+v %v", c, err)
	}
	// Too long a command line.
	_, _, _, err = parseOne(t, "a NOOP "+strings.Repeat("x", 70<<10)+"\r\n", false)
	var tl *tooLongError
	if !errors.As(err, &tl) {
		t.Fatalf("long line: %v", err)
	}
	// A literal longer than the input: the read fails, nothing is made up.
	_, _, _, err = parseOne(t, "a LOGIN {10}\r\nshort", false)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short literal: %v", err)
	}
}

func TestUTF7(t *testing.T) {
	for _, tc := range []struct{ utf8, utf7 string }{
		{"INBOX", "INBOX"},
		{"Entwürfe", "Entw&APw-rfe"},
		{"a&b", "a&-b"},
		{"日本語", "&ZeVnLIqe-"},
		{"Ü.€.x", "&ANw-.&IKw-.x"},
		{"😀", "&2D3eAA-"},
		{"~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"},
	} {
		if got := encodeUTF7(tc.utf8); got != tc.utf7 {
			t.Errorf("encode %q = %q, want %q", tc.utf8, got, tc.utf7)
		}
		if got, err := decodeUTF7(tc.utf7); err != nil || got != tc.utf8 {
			t.Errorf("decode %q = %q, %v", tc.utf7, got, err)
		}
	}
	for _, bad := range []string{"&", "&Jjo", "&AGE-", "&ZeVnLIqe-&ZeVnLIqe-", "a\x80", "&ZeVnLIq-", "&2D0-"} {
		if got, err := decodeUTF7(bad); err == nil {
			t.Errorf("decode %q = %q, want an error", bad, got)
		}
	}
}

func TestSeqSet(t *testing.T) {
	c := mustParse(t, "a FETCH 7:*,1,3:2,5 FLAGS\r\n")
	s := c.args.(fetchArgs).set
	if got := s.resolve(10).String(); got != "1:3,5,7:10" {
		t.Fatalf("resolve: %s", got)
	}
	if got := s.String(); got != "7:*,1,3:2,5" {
		t.Fatalf("String: %s", got)
	}
	if n := (seqSet{ranges: []seqRange{{559, star}}}).resolve(100); !n.contains(100) || n.contains(99) {
		t.Fatalf("559:* with max 100: %v", n)
	}
	if got := setOf([]uint32{1, 2, 3, 5, 9, 10}).String(); got != "1:3,5,9:10" {
		t.Fatalf("setOf: %s", got)
	}
}
