package mime

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func randBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// roundTrip packs files (name → content) and unpacks the message; it
// returns the message and the unpacked files by base name.
func roundTrip(t *testing.T, files map[string][]byte, names []string, body string) (string, map[string][]byte) {
	t.Helper()
	src := t.TempDir()
	var atts []Attachment
	for _, n := range names {
		p := filepath.Join(src, fmt.Sprintf("f%d", len(atts)))
		if err := os.WriteFile(p, files[n], 0o600); err != nil {
			t.Fatal(err)
		}
		atts = append(atts, Attachment{Path: p, Name: n})
	}
	var msg bytes.Buffer
	o := PackOptions{From: "Zoë <z@example.org>", To: []string{"a@example.net"}, Subject: "Grüße – ünïcode",
		Attachments: atts, Hostname: "test.example", Date: time.Unix(1700000000, 0)}
	if body != "" {
		o.Body = strings.NewReader(body)
	}
	if err := Pack(&msg, o); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	got := map[string][]byte{}
	var warns []string
	_, err := Unpack(bytes.NewReader(msg.Bytes()), UnpackOptions{Dir: dir, Lim: DefaultLimits,
		Warn:  func(s string) { warns = append(warns, s) },
		Wrote: func(p string) { got[filepath.Base(p)] = nil }})
	if err != nil {
		t.Fatal(err)
	}
	for n := range got {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Error(err)
		}
		got[n] = b
	}
	if len(warns) > 0 {
		t.Errorf("warnings unpacking our own message: %q", warns)
	}
	return msg.String(), got
}

func checkLines(t *testing.T, msg string) {
	t.Helper()
	for i, l := range strings.Split(msg, "\n") {
		if len(l) > 76 {
			t.Errorf("line %d is %d chars: %.80q", i+1, len(l), l)
		}
		for _, c := range []byte(l) {
			if c >= 0x80 || (c < 0x20 && c != '\t') {
				t.Errorf("line %d has byte %#x: %.80q", i+1, c, l)
				break
			}
		}
	}
}

func TestRoundTrip(t *testing.T) {
	long := strings.Repeat("Ünïcödé-name ", 20) + ".txt"
	files := map[string][]byte{
		"binary.bin":     randBytes(1, 100000),
		"crlf.txt":       []byte("line one\r\nline two  \r\n\r\nFrom here\r\n.\r\nno final newline"),
		"lf.txt":         []byte("plain\ntrailing tab\t\n\nend\n"),
		"lone-cr.txt":    []byte("a\rb\r\n\x00c=d\n"),
		"empty.dat":      {},
		"résumé été.pdf": randBytes(2, 1000),
		long:             []byte("long name\n"),
		"utf8.txt":       []byte(strings.Repeat("grüße ", 200) + "\n" + strings.Repeat("x", 300) + "\n"),
		"latin.txt":      []byte("caf\xe9 \xe0 la cr\xe8me\n"),
		"ends-space.txt": []byte("space at the end "),
	}
	var names []string
	for n := range files {
		names = append(names, n)
	}
	msg, got := roundTrip(t, files, names, "Hello,\nsee the files.\n")
	checkLines(t, msg)
	if len(got) != len(files) {
		t.Errorf("unpacked %d files, want %d: %v", len(got), len(files), keys(got))
	}
	for n, want := range files {
		safe := SafeName(n)
		if !bytes.Equal(got[safe], want) {
			t.Errorf("%s (as %q): got %d bytes %.40q, want %d bytes %.40q", n, safe, len(got[safe]), got[safe], len(want), want)
		}
	}
	if !strings.Contains(msg, "Subject: =?utf-8?") || !strings.Contains(msg, "filename*=utf-8''r%C3%A9sum%C3%A9%20%C3%A9t%C3%A9.pdf") {
		t.Errorf("encoded headers missing:\n%.2000s", msg)
	}
	if !strings.Contains(msg, "filename*0*=utf-8''") {
		t.Error("long name not sent as RFC 2231 continuations")
	}
}

func keys(m map[string][]byte) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}

func TestRoundTripLarge(t *testing.T) {
	big := randBytes(3, 5<<20+17)
	text := bytes.Repeat([]byte("a fairly long line of ASCII text that goes on, and on = and on\r\n"), 50000)
	msg, got := roundTrip(t, map[string][]byte{"big.bin": big, "big.txt": text}, []string{"big.bin", "big.txt"}, "")
	if !bytes.Equal(got["big.bin"], big) || !bytes.Equal(got["big.txt"], text) {
		t.Fatalf("large files differ: %d/%d and %d/%d bytes", len(got["big.bin"]), len(big), len(got["big.txt"]), len(text))
	}
	if !strings.Contains(msg, "quoted-printable") {
		t.Error("ASCII text not sent quoted-printable")
	}
}

func TestPackStructure(t *testing.T) {
	var msg bytes.Buffer
	err := Pack(&msg, PackOptions{To: []string{"x@y"}, Body: strings.NewReader("text\n"), HTML: strings.NewReader("<p>html</p>\n"),
		Attachments: []Attachment{{Name: "a.png", Reader: bytes.NewReader([]byte("\x89PNG\r\n\x1a\n0000")), Type: ""}}, Inline: true})
	if err != nil {
		t.Fatal(err)
	}
	parts, warns, err := List(&msg, DefaultLimits)
	if err != nil || len(warns) > 0 {
		t.Fatal(err, warns)
	}
	var got []string
	for _, p := range parts {
		got = append(got, p.ID+" "+p.Type+" "+p.Disposition)
	}
	want := "1 multipart/mixed |1.1 multipart/alternative |1.1.1 text/plain |1.1.2 text/html |1.2 image/png inline"
	if strings.Join(got, "|") != want {
		t.Errorf("structure:\n got %s\nwant %s", strings.Join(got, "|"), want)
	}
}

func TestDetectType(t *testing.T) {
	for _, c := range []struct {
		name string
		data string
		want string
	}{
		{"x.pdf", "", "application/pdf"},
		{"noext", "%PDF-1.4 blah", "application/pdf"},
		{"noext", "\x89PNG\r\n\x1a\nxxxx", "image/png"},
		{"noext", "just words\n", "text/plain"},
		{"noext", "\x00\x01\x02binary", "application/octet-stream"},
		{"page.HTML", "", "text/html"},
	} {
		if got := DetectType(c.name, []byte(c.data)); got != c.want {
			t.Errorf("DetectType(%q, %q) = %q, want %q", c.name, c.data, got, c.want)
		}
	}
}

func TestParseAttachArg(t *testing.T) {
	for in, want := range map[string]Attachment{
		"a.txt":                   {Path: "a.txt"},
		"a.bin:application/x-foo": {Path: "a.bin", Type: "application/x-foo"},
		"C:\\x":                   {Path: "C:\\x"},
		"dir/a:b":                 {Path: "dir/a:b"},
	} {
		if got := ParseAttachArg(in); got != want {
			t.Errorf("ParseAttachArg(%q) = %+v, want %+v", in, got, want)
		}
	}
}

func TestSafeName(t *testing.T) {
	for in, want := range map[string]string{
		"../../etc/passwd":      "passwd",
		"/abs":                  "abs",
		"..\\..\\win\\boot.ini": "boot.ini",
		"con":                   "con",
		"nul\x00name":           "nulname",
		"new\nline.txt":         "newline.txt",
		"..":                    "",
		".":                     "",
		"...":                   "",
		"dir/":                  "",
		"-rf":                   "rf",
		"--help.txt":            "help.txt",
		".bashrc":               "bashrc",
		"~root":                 "root",
		"ok name.pdf":           "ok name.pdf",
		"Grüße.txt":             "Grüße.txt",
		"bad\xffutf8":           "badutf8",
		"evil\u202etxt.exe":     "eviltxt.exe",
		"trailing. ":            "trailing",
	} {
		if got := SafeName(in); got != want {
			t.Errorf("SafeName(%q) = %q, want %q", in, got, want)
		}
	}
	long := SafeName(strings.Repeat("é", 10000) + ".pdf")
	if len(long) > MaxNameBytes || !strings.HasSuffix(long, ".pdf") || !strings.HasPrefix(long, "éé") {
		t.Errorf("long name: %d bytes, %q…", len(long), long[:10])
	}
}

func TestCreateExclusive(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "target")
	os.WriteFile(outside, []byte("keep"), 0o600)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(outside, filepath.Join(dir, "link.txt")))
	must(os.Symlink(filepath.Join(dir, "nowhere"), filepath.Join(dir, "dangling")))
	d, err := os.Open(dir)
	must(err)
	defer d.Close()
	write := func(name string, force bool) string {
		f, used, err := CreateExclusive(d, name, 0o600, force)
		must(err)
		f.WriteString("new")
		f.Close()
		return used
	}
	if got := write("link.txt", false); got != "link-1.txt" {
		t.Errorf("symlink: wrote %q", got)
	}
	if got := write("link.txt", true); got != "link-2.txt" {
		t.Errorf("symlink with force: wrote %q", got)
	}
	if got := write("dangling", false); got != "dangling-1" {
		t.Errorf("dangling symlink: wrote %q", got)
	}
	if b, _ := os.ReadFile(outside); string(b) != "keep" {
		t.Errorf("symlink target changed: %q", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "nowhere")); err == nil {
		t.Error("dangling symlink was followed")
	}
	must(os.WriteFile(filepath.Join(dir, "a.txt"), []byte("old"), 0o600))
	if got := write("a.txt", false); got != "a-1.txt" {
		t.Errorf("existing: wrote %q", got)
	}
	if got := write("a.txt", true); got != "a.txt" {
		t.Errorf("force: wrote %q", got)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "a.txt")); string(b) != "new" {
		t.Errorf("force did not replace: %q", b)
	}
	for _, bad := range []string{"", ".", "..", "a/b", "x\x00"} {
		if _, _, err := CreateExclusive(d, bad, 0o600, false); err == nil {
			t.Errorf("CreateExclusive(%q) succeeded", bad)
		}
	}
}

func TestParseParams(t *testing.T) {
	for _, c := range []struct{ in, key, want string }{
		{`attachment; filename="a b.txt"`, "filename", "a b.txt"},
		{`attachment; filename=plain.txt; size=3`, "filename", "plain.txt"},
		{`attachment; FILENAME="x\"y"`, "filename", `x"y`},
		{`attachment; filename*=UTF-8''%E2%82%AC.txt`, "filename", "€.txt"},
		{`attachment; filename*0*=us-ascii'en'a%20; filename*1=b; filename*2*=%41`, "filename", "a bA"},
		{`attachment; filename="=?utf-8?b?w6kudHh0?="`, "filename", "é.txt"},
		{`text/plain; charset="utf-8"; ; junk; name=n`, "name", "n"},
		{`attachment; filename*=iso-8859-1''caf%E9`, "filename", "café"},
		{`attachment; filename="dup1"; filename="dup2"`, "filename", "dup1"},
		{`attachment; filename="unterminated`, "filename", "unterminated"},
	} {
		_, p := ParseParams(c.in)
		if p[c.key] != c.want {
			t.Errorf("ParseParams(%q)[%s] = %q, want %q", c.in, c.key, p[c.key], c.want)
		}
	}
}

func TestLimits(t *testing.T) {
	// many parts: capped, no error
	var b strings.Builder
	b.WriteString("Content-Type: multipart/mixed; boundary=x\n\n")
	for i := 0; i < 200; i++ {
		b.WriteString("--x\n\np\n")
	}
	b.WriteString("--x--\n")
	parts, warns, err := List(strings.NewReader(b.String()), Limits{MaxDepth: 8, MaxParts: 50, MaxHeaderBytes: 1024, MaxHeaderLines: 10})
	if err != nil || len(parts) != 50 || len(warns) == 0 {
		t.Errorf("part cap: %d parts, %q, %v", len(parts), warns, err)
	}
	// a huge header: kept within the limit, the body still found
	hdr := "Subject: " + strings.Repeat("x", 200000) + "\nX-A: 1\nX-B: 2\n\nbody\n"
	parts, warns, err = List(strings.NewReader(hdr), Limits{MaxDepth: 8, MaxParts: 50, MaxHeaderBytes: 1024, MaxHeaderLines: 10})
	if err != nil || len(parts) != 1 || parts[0].DecodedSize != 5 || len(warns) == 0 {
		t.Errorf("header cap: %+v %q %v", parts, warns, err)
	}
	if _, _, err := List(strings.NewReader(""), DefaultLimits); err != ErrEmpty {
		t.Errorf("empty input: %v", err)
	}
}

func TestUUEncodeDecode(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 44, 45, 46, 90, 1000} {
		data := randBytes(int64(n), n)
		for _, b64 := range []bool{false, true} {
			var enc bytes.Buffer
			if err := UUEncode(&enc, bytes.NewReader(data), "../x y.bin", 0o640, b64); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			var wrote []string
			found, err := Uudecode(&enc, UnpackOptions{Dir: dir, Wrote: func(p string) { wrote = append(wrote, p) },
				Warn: func(s string) { t.Errorf("n=%d b64=%v: %s", n, b64, s) }})
			if err != nil || found != 1 || len(wrote) != 1 || filepath.Base(wrote[0]) != "x y.bin" {
				t.Fatalf("n=%d b64=%v: found %d, wrote %v, %v", n, b64, found, wrote, err)
			}
			got, _ := os.ReadFile(wrote[0])
			if !bytes.Equal(got, data) {
				t.Errorf("n=%d b64=%v: decoded %d bytes, want %d", n, b64, len(got), n)
			}
		}
	}
}

func TestFoldText(t *testing.T) {
	long := strings.Repeat("word ", 40) + "end"
	got := foldText(long, 9)
	if strings.ReplaceAll(got, "\n", "") != long {
		t.Errorf("folding changed the text: %q", got)
	}
	for i, l := range strings.Split("Subject: "+got, "\n") {
		if len(l) > 76 || (i > 0 && l[0] != ' ') {
			t.Errorf("line %d: %q", i, l)
		}
	}
}

// TestBounds: the offsets of the corpus's parts (IMAP's BODY[section]
// relies on them), and one message checked by hand.
func TestBounds(t *testing.T) {
	for _, path := range corpus(t) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		parts, _, _ := List(bytes.NewReader(data), DefaultLimits)
		checkBounds(t, data, parts)
	}
	msg := "Content-Type: multipart/mixed; boundary=b\r\n\r\npre\r\n--b\r\n\r\none\r\ntwo\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>\r\n--b--\r\nepi\r\n"
	parts, _, err := List(strings.NewReader(msg), DefaultLimits)
	if err != nil || len(parts) != 3 {
		t.Fatalf("parts %v, %v", parts, err)
	}
	for i, want := range []string{msg[45:], "one\r\ntwo", "<p>"} {
		p := parts[i]
		if got := msg[p.BodyOffset:p.End]; got != want {
			t.Errorf("part %s body %q, want %q", p.ID, got, want)
		}
	}
	if h := msg[parts[2].Offset:parts[2].BodyOffset]; h != "Content-Type: text/html\r\n\r\n" {
		t.Errorf("part 1.2 header %q", h)
	}
	if parts[1].Lines != 1 || parts[0].Lines != 11 {
		t.Errorf("lines %d %d", parts[1].Lines, parts[0].Lines)
	}
}
