package imap

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestSearchKeys: every SEARCH key, and CHARSET UTF-8 with decoded text.
func TestSearchKeys(t *testing.T) {
	ts := startServer(t, nil)
	ts.put(t, "INBOX", "From: Ann <ann@example.org>\nTo: bob@example.net\nCc: carol@example.com\nBcc: dave@example.com\n"+
		"Subject: =?utf-8?q?Caf=C3=A9_menu?=\nDate: Mon, 4 Mar 2024 09:00:00 +0000\nX-Spam: yes\n\nToday: soup\n", `\Seen`, `\Answered`)
	ts.put(t, "INBOX", "From: bob@example.net\nSubject: Re: lunch\nDate: Wed, 6 Mar 2024 09:00:00 +0000\n"+
		"Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\nCr=E8me br=FBl=E9e\n", `\Flagged`, "$Work")
	ts.put(t, "INBOX", "From: eve@example.org\nSubject: big\n\n"+strings.Repeat("x", 5000)+"\n", `\Deleted`, `\Draft`)
	c := ts.login(t)
	c.ok("SELECT INBOX")
	for _, tc := range []struct{ key, want string }{
		{"ALL", "1 2 3"},
		{"ANSWERED", "1"}, {"UNANSWERED", "2 3"},
		{"DELETED", "3"}, {"UNDELETED", "1 2"},
		{"DRAFT", "3"}, {"UNDRAFT", "1 2"},
		{"FLAGGED", "2"}, {"UNFLAGGED", "1 3"},
		{"SEEN", "1"}, {"UNSEEN", "2 3"},
		{"KEYWORD $Work", "2"}, {"UNKEYWORD $Work", "1 3"},
		{"RECENT", "1 2 3"}, {"NEW", "2 3"}, {"OLD", ""},
		{"FROM ann", "1"}, {"FROM BOB", "2"}, {"TO bob", "1"}, {"CC carol", "1"}, {"BCC dave", "1"},
		{"SUBJECT café", "1"}, {"SUBJECT \"CAFÉ MENU\"", "1"}, {"SUBJECT lunch", "2"},
		{"HEADER X-Spam yes", "1"}, {"HEADER X-Spam \"\"", "1"}, {"HEADER X-Other \"\"", ""},
		{"BODY soup", "1"}, {"BODY \"crème brûlée\"", "2"}, {"TEXT ann", "1"}, {"TEXT soup", "1"},
		{"LARGER 1000", "3"}, {"SMALLER 1000", "1 2"},
		// 3 has no Date: it counts as sent at the epoch, as in Dovecot.
		{"SENTBEFORE 5-Mar-2024", "1 3"}, {"SENTON 6-Mar-2024", "2"}, {"SENTSINCE 5-Mar-2024", "2"},
		{"BEFORE 5-Mar-2024", ""}, {"ON 5-Mar-2024", "1 2 3"}, {"SINCE 6-Mar-2024", ""},
		{"UID 2:*", "2 3"}, {"2,3", "2 3"}, {"*", "3"},
		{"NOT SEEN", "2 3"}, {"OR SEEN FLAGGED", "1 2"}, {"(SEEN ANSWERED)", "1"}, {"SEEN FLAGGED", ""},
		{"CHARSET UTF-8 BODY brûlée", "2"}, {"CHARSET US-ASCII FROM eve", "3"},
		{"MODSEQ 1", "1 2 3"},
	} {
		un := c.ok("SEARCH " + tc.key)
		got := ""
		for _, l := range un {
			if strings.HasPrefix(l, "* SEARCH") {
				got = strings.TrimSpace(strings.TrimPrefix(l, "* SEARCH"))
				if i := strings.Index(got, " (MODSEQ"); i >= 0 {
					got = got[:i]
				}
				if strings.HasPrefix(got, "(MODSEQ") {
					got = ""
				}
			}
		}
		if got != tc.want {
			t.Errorf("SEARCH %s: %q, want %q", tc.key, got, tc.want)
		}
	}
	// ESEARCH and SEARCHRES.
	un := c.ok("SEARCH RETURN (MIN MAX COUNT ALL) UNDELETED")
	has(t, un, `* ESEARCH (TAG "t`)
	has(t, un, `MIN 1 MAX 2 COUNT 2 ALL 1:2`)
	un = c.ok("UID SEARCH RETURN (SAVE) FLAGGED")
	hasNot(t, un, "ESEARCH")
	un = c.ok("FETCH $ (UID)")
	if len(un) != 1 || !strings.HasPrefix(un[0], "* 2 FETCH (UID 2)") {
		t.Fatalf("FETCH $: %q", un)
	}
	un = c.ok("SEARCH RETURN () $")
	has(t, un, "ALL 2")
}

// TestSortThread: RFC 5256's base subject, SORT keys, both THREAD
// algorithms.
func TestSortThread(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Re: hello", "hello"},
		{"RE: Re: [list] Fwd: hello (fwd)", "hello"},
		{"[fwd: Re: hello]", "hello"},
		{"  many   spaces ", "many spaces"},
		{"[blob] only", "only"},
		{"[blob]", "[blob]"},
		{"Fw: x", "x"},
	} {
		if got := baseSubject(tc.in); got != tc.want {
			t.Errorf("baseSubject(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	ts := startServer(t, nil)
	msg := func(subject, from, date, id, refs string, size int) string {
		m := "From: " + from + "\nSubject: " + subject + "\nDate: " + date + "\nMessage-ID: <" + id + ">\n"
		if refs != "" {
			m += "References: " + refs + "\n"
		}
		return m + "\n" + strings.Repeat("x", size) + "\n"
	}
	ts.put(t, "INBOX", msg("b topic", "zed@x", "Mon, 4 Mar 2024 10:00:00 +0000", "1@x", "", 1000))
	ts.put(t, "INBOX", msg("Re: b topic", "amy@x", "Tue, 5 Mar 2024 10:00:00 +0000", "2@x", "<1@x>", 3000))
	ts.put(t, "INBOX", msg("a thing", "\"Bob\" <bob@x>", "Sun, 3 Mar 2024 10:00:00 +0000", "3@x", "", 2000))
	ts.put(t, "INBOX", msg("Re: b topic", "cy@x", "Wed, 6 Mar 2024 10:00:00 +0000", "4@x", "<1@x> <2@x>", 500))
	ts.put(t, "INBOX", msg("Re: lost parent", "di@x", "Thu, 7 Mar 2024 10:00:00 +0000", "5@x", "<gone@x>", 100))
	c := ts.login(t)
	c.ok("SELECT INBOX")
	for _, tc := range []struct{ cmd, want string }{
		{"SORT (SUBJECT) UTF-8 ALL", "* SORT 3 1 2 4 5"},
		{"SORT (REVERSE DATE) UTF-8 ALL", "* SORT 5 4 2 1 3"},
		{"SORT (SIZE) UTF-8 ALL", "* SORT 5 4 1 3 2"},
		{"SORT (FROM) UTF-8 ALL", "* SORT 2 3 4 5 1"},
		{"SORT (DISPLAYFROM) UTF-8 ALL", "* SORT 2 3 4 5 1"},
		{"SORT (ARRIVAL) UTF-8 NOT UID 1", "* SORT 2 3 4 5"},
		{"UID SORT (SUBJECT REVERSE DATE) UTF-8 ALL", "* SORT 3 4 2 1 5"},
		{"THREAD ORDEREDSUBJECT UTF-8 ALL", "* THREAD (3)(1 (2)(4))(5)"},
		{"THREAD REFERENCES UTF-8 ALL", "* THREAD (3)(1 2 4)(5)"},
		{"THREAD REFERENCES UTF-8 SUBJECT nothing", "* THREAD"},
	} {
		un := c.ok(tc.cmd)
		if len(un) != 1 || un[0] != tc.want {
			t.Errorf("%s: %q, want %q", tc.cmd, un, tc.want)
		}
	}
}

// TestIMAP4rev2AndUTF8: after ENABLE IMAP4rev2, names are UTF-8 on the
// wire and SEARCH answers ESEARCH; before, modified UTF-7.
func TestIMAP4rev2AndUTF8(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.login(t)
	c.ok("CREATE Entw&APw-rfe")
	un := c.ok(`LIST "" Entw*`)
	has(t, un, `* LIST (\HasNoChildren) "." Entw&APw-rfe`)
	c.ok("ENABLE IMAP4rev2")
	un = c.ok(`LIST "" Entw*`)
	has(t, un, `* LIST (\HasNoChildren) "." "Entwürfe"`)
	c.ok(`CREATE "日本語"`)
	un = c.ok("SELECT Entwürfe")
	has(t, un, `* LIST () "." "Entwürfe"`)
	hasNot(t, un, "RECENT")
	un = c.ok("SEARCH ALL")
	has(t, un, "* ESEARCH (TAG")
	c2 := ts.login(t)
	un = c2.ok(`LIST "" *`)
	has(t, un, `&ZeVnLIqe-`)
}

// TestStartTLS: STARTTLS, then LOGIN under TLS; plaintext sent after
// STARTTLS before the handshake is dropped.
func TestStartTLS(t *testing.T) {
	conf := selfSigned(t)
	ts := startServer(t, func(c *Config) { c.TLS = conf })
	c := ts.dial(t)
	un := c.ok("CAPABILITY")
	has(t, un, "STARTTLS")
	c.raw("s STARTTLS\r\nx LOGIN alice@example.test \"alice pw\"\r\n")
	if l := c.line(); !strings.HasPrefix(l, "s OK") {
		t.Fatalf("STARTTLS: %q", l)
	}
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.conn = tc
	c.r.Reset(tc)
	un = c.ok("CAPABILITY")
	hasNot(t, un, "STARTTLS")
	// The injected LOGIN was not run: still not authenticated.
	c.expect("SELECT INBOX", "BAD")
	c.ok(`LOGIN alice@example.test "alice pw"`)
	c.expect("STARTTLS", "BAD")
}

func selfSigned(t testing.TB) *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mx.example.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"mx.example.test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// TestPythonImaplib: Python's imaplib, a client nobody here wrote, over
// an in-process server.
func TestPythonImaplib(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatal("python3 is needed for this test")
	}
	ts := startServer(t, nil)
	ts.put(t, "INBOX", testMsg("one", "hello\n"))
	host, port, _ := net.SplitHostPort(ts.addr)
	out, err := exec.Command("python3", "-c", `
import imaplib, sys
m = imaplib.IMAP4(sys.argv[1], int(sys.argv[2]))
m.login("alice@example.test", "alice pw")
typ, boxes = m.list()
print("LIST", typ, len(boxes))
typ, d = m.select("INBOX")
print("SELECT", typ, d[0].decode())
typ, d = m.fetch("1", "(RFC822)")
print("FETCH", typ, d[0][1].count(b"\r\n"))
typ, d = m.append("INBOX", r"(\Seen)", imaplib.Time2Internaldate(0), b"Subject: py\r\n\r\nfrom python\r\n")
print("APPEND", typ, d[0].decode().split(" ")[0])
typ, d = m.search(None, "SUBJECT", "py")
print("SEARCH", typ, d[0].decode())
typ, d = m.uid("STORE", "2", "+FLAGS", r"(\Flagged)")
print("STORE", typ)
m.create("py.folder")
typ, d = m.uid("COPY", "2", "py.folder")
print("COPY", typ)
m.logout()
`, host, port).CombinedOutput()
	if err != nil {
		t.Fatalf("imaplib: %v\n%s", err, out)
	}
	for _, want := range []string{"LIST OK 6", "SELECT OK 1", "FETCH OK 7", "APPEND OK [APPENDUID", "SEARCH OK 2", "STORE OK", "COPY OK"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("imaplib: no %q in\n%s", want, out)
		}
	}
}
