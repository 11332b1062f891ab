//go:build interop

package tests

import (
	"bytes"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func mimeNeed(t *testing.T, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s not installed (tests/interop/packages.txt lists its package)", c)
		}
	}
}

func mimeExec(t *testing.T, dir string, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	c := exec.Command(name, args...)
	c.Dir = dir
	c.Stdin = bytes.NewReader(stdin)
	c.Env = append(os.Environ(), "MBLAZE="+t.TempDir())
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return out
}

// What we build, munpack (mpack) and mblaze's mshow unpack identically;
// mshow lists the structure with the names.
func TestInteropMimeMunpackMshow(t *testing.T) {
	mimeNeed(t, "munpack", "mshow")
	e := newEnv(t)
	src := t.TempDir()
	files := mimeFiles(t, src)
	var args []string
	for _, n := range []string{"random.bin", "crlf.txt", "Größenvergleich.pdf", "empty.dat"} {
		args = append(args, "-a", filepath.Join(src, n))
	}
	msg, errs, code := mimeRun(t, e, []byte("the body\n"), append([]string{"-s", "interop ü", "-t", "x@example.net"}, args...)...)
	if code != 0 {
		t.Fatalf("pack: %d %s", code, errs)
	}
	msgPath := filepath.Join(t.TempDir(), "msg.eml")
	os.WriteFile(msgPath, msg, 0o600)

	mu := t.TempDir()
	mimeExec(t, mu, nil, "munpack", "-q", msgPath)
	// munpack knows neither RFC 2231 nor RFC 2047 names: it names a part
	// with a non-ASCII name partN, so only ASCII names are checked by name.
	if b, err := os.ReadFile(filepath.Join(mu, "part1")); err != nil || !bytes.Equal(b, files["Größenvergleich.pdf"]) {
		t.Errorf("munpack part1 (Größenvergleich.pdf): %v, %d bytes", err, len(b))
	}
	for _, n := range []string{"random.bin", "empty.dat"} {
		if b, err := os.ReadFile(filepath.Join(mu, n)); err != nil || !bytes.Equal(b, files[n]) {
			t.Errorf("munpack %s: %v, %d bytes, want %d", n, err, len(b), len(files[n]))
		}
	}
	// munpack writes text parts with local (LF) line ends, by design
	if b, _ := os.ReadFile(filepath.Join(mu, "crlf.txt")); string(b) != strings.ReplaceAll(string(files["crlf.txt"]), "\r\n", "\n") {
		t.Errorf("munpack crlf.txt: %q", b)
	}

	mx := t.TempDir()
	mimeExec(t, mx, nil, "mshow", "-x", msgPath)
	for _, n := range []string{"random.bin", "crlf.txt", "Größenvergleich.pdf", "empty.dat"} {
		if b, err := os.ReadFile(filepath.Join(mx, n)); err != nil || !bytes.Equal(b, files[n]) {
			t.Errorf("mshow -x %s: %v, %d bytes, want %d", n, err, len(b), len(files[n]))
		}
	}
	tree := string(mimeExec(t, mx, nil, "mshow", "-t", msgPath))
	for _, want := range []string{"multipart/mixed", "text/plain", `application/octet-stream size=3145733 name="random.bin"`, `name="Größenvergleich.pdf"`} {
		if !strings.Contains(tree, want) {
			t.Errorf("mshow -t lacks %q:\n%s", want, tree)
		}
	}
}

// What mpack builds, we unpack byte-identical (mpack splits nothing when
// no -s size is given).
func TestInteropMimeMpackBuilt(t *testing.T) {
	mimeNeed(t, "mpack")
	e := newEnv(t)
	src := t.TempDir()
	files := mimeFiles(t, src)
	for _, n := range []string{"random.bin", "crlf.txt", "Größenvergleich.pdf"} {
		out := filepath.Join(t.TempDir(), "m.eml")
		mimeExec(t, src, nil, "mpack", "-s", "from mpack", "-o", out, n)
		dir := t.TempDir()
		stdout, errs, code := mimeRun(t, e, nil, "unpack", "-d", dir, out)
		if code != 0 || errs != "" {
			t.Fatalf("unpack %s: %d %s", n, code, errs)
		}
		p := strings.TrimSpace(string(stdout))
		if b, _ := os.ReadFile(p); filepath.Base(p) != n || !bytes.Equal(b, files[n]) {
			t.Errorf("mpack %s: unpacked as %q, %d bytes, want %d", n, p, len(b), len(files[n]))
		}
	}
}

// uuencode/uudecode agree with sharutils both ways (our output is even
// byte-identical to theirs).
func TestInteropMimeSharutils(t *testing.T) {
	mimeNeed(t, "uuencode", "uudecode")
	e := newEnv(t)
	src := t.TempDir()
	data := make([]byte, 100003)
	rand.New(rand.NewSource(11)).Read(data)
	f := filepath.Join(src, "d.bin")
	os.WriteFile(f, data, 0o644)
	for _, m := range [][]string{nil, {"-m"}} {
		theirs := mimeExec(t, src, nil, "uuencode", append(m, f, "d.bin")...)
		ours, _, code := mimeRun(t, e, nil, append(append([]string{"uuencode"}, m...), f, "d.bin")...)
		if code != 0 || !bytes.Equal(ours, theirs) {
			t.Errorf("uuencode %v: ours differs from sharutils (%d vs %d bytes)", m, len(ours), len(theirs))
		}
		// theirs → our uudecode
		dir := t.TempDir()
		if _, errs, code := mimeRun(t, e, theirs, "uudecode", "-d", dir); code != 0 {
			t.Fatalf("our uudecode: %d %s", code, errs)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "d.bin")); !bytes.Equal(b, data) {
			t.Errorf("our uudecode of sharutils %v: differs", m)
		}
		// ours → their uudecode
		dir = t.TempDir()
		mimeExec(t, dir, ours, "uudecode", "-o", filepath.Join(dir, "out.bin"))
		if b, _ := os.ReadFile(filepath.Join(dir, "out.bin")); !bytes.Equal(b, data) {
			t.Errorf("sharutils uudecode of ours %v: differs", m)
		}
	}
}
