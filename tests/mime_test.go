package tests

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// mimeFiles writes test attachments into dir and returns name → content.
func mimeFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	bin := make([]byte, 3<<20+5)
	rand.New(rand.NewSource(7)).Read(bin)
	files := map[string][]byte{
		"random.bin":          bin,
		"crlf.txt":            []byte("one\r\ntwo  \r\nFrom three\r\n.\r\nno newline at the end"),
		"empty.dat":           {},
		"Größenvergleich.pdf": append([]byte("%PDF-1.4\n"), bin[:5000]...),
		"отчет за год, итоговая версия (окончательная).txt": []byte("Привет, мир\n"),
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

// mimeRun runs mime-pack with stdin and returns stdout, stderr, exit code.
func mimeRun(t *testing.T, e *env, stdin []byte, args ...string) ([]byte, string, int) {
	t.Helper()
	c := e.cmd("mime-pack", args...)
	c.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := bounded(t, c).Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), errb.String(), code
}

func mimeSums(files map[string][]byte) string {
	var lines []string
	for n, b := range files {
		lines = append(lines, fmt.Sprintf("%s %x", n, sha256.Sum256(b)))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// Python's email package reads what we build: headers decoded, every
// attachment byte-identical under its non-ASCII name, the text and HTML
// alternatives found.
func TestMimePackParsedByPython(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	files := mimeFiles(t, src)
	os.WriteFile(filepath.Join(src, "body.txt"), []byte("Hallo Jörg,\nanbei die Dateien.\n"), 0o600)
	os.WriteFile(filepath.Join(src, "body.html"), []byte("<p>Hallo J&ouml;rg</p>\n"), 0o600)
	args := []string{"-s", "Bericht über das Jahr – final", "-f", "Zoë Ünal <zoe@example.test>",
		"-t", "bob@example.net", "-t", `"Carol, Jr." <carol@example.net>`, "-c", "dave@example.net",
		"-b", filepath.Join(src, "body.txt"), "--html", filepath.Join(src, "body.html")}
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		args = append(args, "-a", filepath.Join(src, n))
	}
	msgPath := filepath.Join(t.TempDir(), "msg.eml")
	args = append(args, "-o", msgPath)
	if _, errs, code := mimeRun(t, e, nil, args...); code != 0 {
		t.Fatalf("pack: exit %d: %s", code, errs)
	}
	out := python(t, `
import sys, email, hashlib
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=policy.default)
print("subject:", m["subject"])
print("from:", m["from"])
print("to:", m["to"])
print("cc:", m["cc"])
print("defects:", [p.defects for p in m.walk() if p.defects])
print("text:", repr(m.get_body(("plain",)).get_content()))
print("html:", repr(m.get_body(("html",)).get_content()))
sums = sorted("%s %s" % (a.get_filename(), hashlib.sha256(a.get_payload(decode=True)).hexdigest()) for a in m.iter_attachments())
print("\n".join(sums))
`, msgPath)
	for _, want := range []string{
		"subject: Bericht über das Jahr – final\n",
		"from: Zoë Ünal <zoe@example.test>\n",
		"to: bob@example.net, \"Carol, Jr.\" <carol@example.net>\n",
		"cc: dave@example.net\n",
		"defects: []\n",
		"text: 'Hallo Jörg,\\nanbei die Dateien.\\n'\n",
		"html: '<p>Hallo J&ouml;rg</p>\\n'\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("python output lacks %q:\n%s", want, out)
		}
	}
	if !strings.HasSuffix(out, mimeSums(files)+"\n") {
		t.Errorf("attachments as python sees them:\n%s\nwant:\n%s", out, mimeSums(files))
	}
	raw, _ := os.ReadFile(msgPath)
	for i, l := range strings.Split(string(raw), "\n") {
		if len(l) > 76 {
			t.Errorf("line %d over 76 chars: %.90q", i+1, l)
		}
	}

	// and we unpack it back, byte-identical
	dir := t.TempDir()
	stdout, errs, code := mimeRun(t, e, nil, "unpack", "-d", dir, msgPath)
	if code != 0 {
		t.Fatalf("unpack: exit %d: %s", code, errs)
	}
	got := map[string][]byte{}
	for _, p := range strings.Split(strings.TrimSpace(string(stdout)), "\n") {
		if filepath.Dir(p) != dir {
			t.Errorf("unpack printed %q, not in %s", p, dir)
		}
		got[filepath.Base(p)], _ = os.ReadFile(p)
	}
	if mimeSums(got) != mimeSums(files) {
		t.Errorf("unpacked:\n%s\nwant:\n%s", mimeSums(got), mimeSums(files))
	}
}

// Messages built by Python's email package (RFC 2231 names, base64 and
// quoted-printable, nested message/rfc822) are unpacked by us.
func TestMimeUnpackPythonBuilt(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	msgPath := filepath.Join(dir, "py.eml")
	python(t, `
import sys
from email.message import EmailMessage
from email import policy
inner = EmailMessage()
inner["Subject"] = "inner"
inner.set_content("inner text")
inner.add_attachment(b"inner bytes\x00\x01", maintype="application", subtype="octet-stream", filename="inner.bin")
m = EmailMessage()
m["Subject"] = "Grüße"
m["From"] = "a@example.org"
m["To"] = "b@example.org"
m.set_content("body text\n")
m.add_attachment(bytes(range(256)) * 40, maintype="application", subtype="octet-stream", filename="daten – ü.bin")
m.add_attachment("line one\nline two ü\n", subtype="plain", filename="notes.txt")
m.add_attachment("x" * 100, subtype="plain", filename="a" * 120 + ".txt")
m.add_attachment(inner)
open(sys.argv[1], "wb").write(m.as_bytes(policy=policy.SMTP))
`, msgPath)
	out := t.TempDir()
	stdout, errs, code := mimeRun(t, e, nil, "unpack", "-d", out, msgPath)
	if code != 0 || errs != "" {
		t.Fatalf("unpack: exit %d: %s", code, errs)
	}
	want := map[string][]byte{
		"daten – ü.bin": bytes.Repeat(func() []byte {
			b := make([]byte, 256)
			for i := range b {
				b[i] = byte(i)
			}
			return b
		}(), 40),
		"notes.txt":                       []byte("line one\nline two ü\n"),
		strings.Repeat("a", 120) + ".txt": []byte(strings.Repeat("x", 100) + "\n"),
		"inner.bin":                       []byte("inner bytes\x00\x01"),
	}
	got := map[string][]byte{}
	for _, p := range strings.Fields(strings.ReplaceAll(string(stdout), " ", "\x00")) {
		p = strings.ReplaceAll(p, "\x00", " ")
		got[filepath.Base(p)], _ = os.ReadFile(p)
	}
	// the attached message is saved whole too (its boundary is random)
	if eml := got["part-1.5.eml"]; !bytes.HasPrefix(eml, []byte("Subject: inner\r\n")) || !bytes.Contains(eml, []byte("inner text")) {
		t.Errorf("attached message part-1.5.eml: %q", eml)
	}
	delete(got, "part-1.5.eml")
	if mimeSums(got) != mimeSums(want) {
		t.Errorf("unpacked:\n%s\nwant:\n%s\n(stdout %q)", mimeSums(got), mimeSums(want), stdout)
	}
	list, _, code := mimeRun(t, e, nil, "list", msgPath)
	if code != 0 {
		t.Fatalf("list: exit %d", code)
	}
	wantList := "1\tmultipart/mixed\t-\t"
	if !strings.HasPrefix(string(list), wantList) || !strings.Contains(string(list), "\tmessage/rfc822\tattachment\t") ||
		!strings.Contains(string(list), "\tapplication/octet-stream\tattachment\t10240\tdaten – ü.bin\n") {
		t.Errorf("list:\n%s", list)
	}
}

// Hostile names: everything lands in DIR under a safe name, nothing is
// overwritten, a symlink planted in DIR is not followed.
func TestMimeUnpackHostileNames(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("untouched"), 0o600)
	os.Symlink(victim, filepath.Join(dir, "passwd"))
	os.WriteFile(filepath.Join(dir, "abs"), []byte("old"), 0o600)
	msg, err := os.ReadFile("../testdata/mime/hostile-names.eml")
	if err != nil {
		t.Fatal(err)
	}
	stdout, errs, code := mimeRun(t, e, msg, "unpack", "-d", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	paths := strings.Split(strings.TrimSpace(string(stdout)), "\n")
	if len(paths) != 11 {
		t.Errorf("%d files written, want 11: %q", len(paths), paths)
	}
	for _, p := range paths {
		if filepath.Dir(p) != dir {
			t.Errorf("%q is not in %s", p, dir)
		}
		b := filepath.Base(p)
		if strings.HasPrefix(b, ".") || strings.HasPrefix(b, "-") || len(b) > 200 || strings.ContainsAny(b, "\x00\n\\") {
			t.Errorf("unsafe name %q", b)
		}
		if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("%s: not a regular file (%v)", p, err)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "untouched" {
		t.Errorf("symlink followed: victim now %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "abs")); string(b) != "old" {
		t.Errorf("existing file overwritten: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "passwd-1")); string(b) != "root:x:0:0" {
		t.Errorf("passwd-1 = %q", b)
	}
	// --force replaces the regular file but still not through the symlink
	stdout, _, code = mimeRun(t, e, msg, "unpack", "--force", "-d", dir)
	if code != 0 || !strings.Contains(string(stdout), filepath.Join(dir, "abs")+"\n") {
		t.Errorf("--force: exit %d, %s", code, stdout)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "abs")); string(b) != "abs" {
		t.Errorf("--force did not replace abs: %q", b)
	}
	if b, _ := os.ReadFile(victim); string(b) != "untouched" {
		t.Errorf("--force followed the symlink: victim now %q", b)
	}
}

// list and list --json on the corpus; exit codes for bad input.
func TestMimeListAndExitCodes(t *testing.T) {
	e := newEnv(t)
	msg, _ := os.ReadFile("../testdata/mime/nested.eml")
	out, _, code := mimeRun(t, e, msg, "list")
	if code != 0 || !strings.HasPrefix(string(out), "1\tmultipart/mixed\t-\t") ||
		!strings.Contains(string(out), "\n1.2\tapplication/pdf\tattachment\t265\tagenda.pdf\n") ||
		!strings.Contains(string(out), "\n1.3.1.2\timage/png\tattachment\t70\tdot.png\n") {
		t.Errorf("list: exit %d\n%s", code, out)
	}
	out, _, code = mimeRun(t, e, msg, "list", "--json")
	var parts []struct {
		Part        string `json:"part"`
		Type        string `json:"type"`
		Name        string `json:"name"`
		Size        int64  `json:"size"`
		DecodedSize int64  `json:"decoded_size"`
		Encoding    string `json:"encoding"`
	}
	if err := json.Unmarshal(out, &parts); err != nil || code != 0 || len(parts) != 9 {
		t.Fatalf("--json: exit %d, %v, %d parts\n%s", code, err, len(parts), out)
	}
	if p := parts[4]; p.Part != "1.2" || p.Encoding != "base64" || p.DecodedSize != 265 || p.Size <= 265 {
		t.Errorf("--json part 1.2: %+v", p)
	}
	// the broken corpus: exit 0 (something was read), warnings on stderr
	broken, _ := os.ReadFile("../testdata/mime/broken-base64.eml")
	dir := t.TempDir()
	out, errs, code := mimeRun(t, e, broken, "unpack", "-d", dir)
	if code != 0 || strings.Count(string(out), "\n") != 3 || !strings.Contains(errs, "bad base64") {
		t.Errorf("broken: exit %d, out %q, err %q", code, out, errs)
	}
	// nothing readable: non-zero
	if _, errs, code := mimeRun(t, e, nil, "unpack", "-d", dir); code != 65 {
		t.Errorf("empty input: exit %d (%s), want 65", code, errs)
	}
	if _, _, code := mimeRun(t, e, nil, "unpack", "-d", filepath.Join(dir, "missing")); code == 0 {
		t.Error("missing DIR: exit 0")
	}
	if _, _, code := mimeRun(t, e, nil, "uudecode", "-d", dir); code != 65 {
		t.Errorf("uudecode without begin: exit %d, want 65", code)
	}
	// a plain message: nothing to unpack, not an error
	simple, _ := os.ReadFile("../testdata/mime/simple.eml")
	if out, errs, code := mimeRun(t, e, simple, "unpack", "-d", dir); code != 0 || len(out) != 0 || !strings.Contains(errs, "nothing to unpack") {
		t.Errorf("simple: exit %d, %q, %q", code, out, errs)
	}
	// -a - without -b is refused
	if _, _, code := mimeRun(t, e, []byte("x"), "-a", "-"); code != 64 {
		t.Errorf("-a - without -b: exit %d, want 64", code)
	}
	if _, _, code := mimeRun(t, e, nil, "-a", filepath.Join(dir, "nope")); code != 66 {
		t.Errorf("missing attachment: exit %d, want 66", code)
	}
}

// stdin as the attachment when -b gives the body; the default "pack"
// command and the explicit one; -a FILE:TYPE.
func TestMimePackStdinAttachment(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	body := filepath.Join(src, "b.txt")
	os.WriteFile(body, []byte("see stdin\n"), 0o600)
	data := []byte("\x00\x01from stdin\xff")
	msg, errs, code := mimeRun(t, e, data, "pack", "-t", "x@example.net", "-b", body, "-a", "-:application/x-thing")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	list, _, _ := mimeRun(t, e, msg, "list")
	want := "1.2\tapplication/x-thing\tattachment\t13\t-\n"
	if !strings.Contains(string(list), want) {
		t.Errorf("list:\n%s\nwant line %q", list, want)
	}
	dir := t.TempDir()
	out, _, _ := mimeRun(t, e, msg, "unpack", "-d", dir)
	p := strings.TrimSpace(string(out))
	if b, _ := os.ReadFile(p); !bytes.Equal(b, data) || filepath.Dir(p) != dir {
		t.Errorf("unpacked %q: %q", p, b)
	}
	// --inline, and no body part when stdin is empty
	f := filepath.Join(src, "pic.png")
	os.WriteFile(f, []byte("\x89PNG\r\n\x1a\nxx"), 0o600)
	msg, _, _ = mimeRun(t, e, nil, "--inline", "-a", f)
	list, _, _ = mimeRun(t, e, msg, "list")
	if string(list) != "1\tmultipart/mixed\t-\t"+strings.Split(string(list), "\t")[3]+"\t-\n1.1\timage/png\tinline\t10\tpic.png\n" {
		t.Errorf("inline list:\n%s", list)
	}
}

// uuencode and uudecode round trip through the command.
func TestMimeUUCommands(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	data := make([]byte, 10000)
	rand.New(rand.NewSource(9)).Read(data)
	f := filepath.Join(src, "data.bin")
	os.WriteFile(f, data, 0o640)
	for _, extra := range [][]string{nil, {"-m"}} {
		enc, errs, code := mimeRun(t, e, nil, append(append([]string{"uuencode"}, extra...), f, "../other name.bin")...)
		if code != 0 {
			t.Fatalf("uuencode: %d %s", code, errs)
		}
		if !bytes.HasPrefix(enc, []byte("begin")) || !bytes.Contains(enc, []byte(" 640 ../other name.bin\n")) {
			t.Errorf("uuencode header: %.60q", enc)
		}
		dir := t.TempDir()
		out, errs, code := mimeRun(t, e, append([]byte("some mail text\n\n"), enc...), "uudecode", "-d", dir)
		if code != 0 || strings.TrimSpace(string(out)) != filepath.Join(dir, "other name.bin") {
			t.Fatalf("uudecode: exit %d, %q, %s", code, out, errs)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "other name.bin")); !bytes.Equal(b, data) {
			t.Errorf("uudecode %v: content differs", extra)
		}
	}
}

// The man page's pipeline, through a real shell pipe, with the From taken
// from the [mime-pack] table of the config file.
func TestMimePipelineAndConfig(t *testing.T) {
	e := newEnv(t, "[mime-pack]", `from = "Robot <robot@example.test>"`)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "note.txt"), []byte("the report\n"), 0o600)
	report := make([]byte, 200000)
	rand.New(rand.NewSource(3)).Read(report)
	os.WriteFile(filepath.Join(src, "report.pdf"), append([]byte("%PDF-1.5\n"), report...), 0o600)
	out := filepath.Join(src, "out")
	os.Mkdir(out, 0o700)
	mp := bin(t, "mime-pack")
	c := exec.Command("sh", "-c", `"$0" -t x@example.net -s report -a report.pdf < note.txt | tee msg.eml | "$0" unpack -d out`, mp)
	c.Dir = src
	c.Env = append(os.Environ(), "LETTERBOX_CONFIG="+e.Config)
	stdout, err := bounded(t, c).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if strings.TrimSpace(string(stdout)) != "out/report.pdf" {
		t.Errorf("unpack printed %q", stdout)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "report.pdf")); !bytes.Equal(b, append([]byte("%PDF-1.5\n"), report...)) {
		t.Error("report.pdf differs")
	}
	msg, _ := os.ReadFile(filepath.Join(src, "msg.eml"))
	for _, want := range []string{"From: \"Robot\" <robot@example.test>\n", "To: <x@example.net>\n", "Subject: report\n",
		"Content-Type: application/pdf;\n\tname=report.pdf\n", "@mx.example.test>\n"} {
		if !bytes.Contains(msg, []byte(want)) {
			t.Errorf("message lacks %q:\n%.600s", want, msg)
		}
	}
}
