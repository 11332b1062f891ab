package mime

import (
	"bytes"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/mime")

// corpus returns the test messages of testdata/mime.
func corpus(t testing.TB) []string {
	files, err := filepath.Glob("../../testdata/mime/*.eml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus in testdata/mime: %v", err)
	}
	return files
}

// describe lists a message, then unpacks it with --all into a temp dir,
// and renders both (with warnings and a digest of each file written) as
// the text the golden file holds.
func describe(t *testing.T, path string) string {
	var b bytes.Buffer
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	parts, warns, err := List(f, DefaultLimits)
	f.Close()
	if err != nil {
		fmt.Fprintf(&b, "error: %v\n", err)
	}
	WriteList(&b, parts, false)
	for _, w := range warns {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	for _, all := range []bool{false, true} {
		fmt.Fprintf(&b, "--- unpack all=%v\n", all)
		b.WriteString(unpackDigest(t, path, all))
	}
	return b.String()
}

// unpackDigest unpacks path into a temp dir and lists name, size and
// SHA-256 of each file written, then the warnings.
func unpackDigest(t *testing.T, path string, all bool) string {
	var b bytes.Buffer
	dir := t.TempDir()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var wrote, warns []string
	n, err := Unpack(f, UnpackOptions{Dir: dir, All: all, Lim: DefaultLimits,
		Wrote: func(p string) { wrote = append(wrote, p) },
		Warn:  func(s string) { warns = append(warns, s) }})
	if err != nil {
		fmt.Fprintf(&b, "unpack error: %v\n", err)
	}
	if n != len(wrote) {
		t.Errorf("%s: Unpack returned %d, reported %d paths", path, n, len(wrote))
	}
	for _, p := range wrote {
		if filepath.Dir(p) != dir {
			t.Errorf("%s: wrote %q outside %s", path, p, dir)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("%s: %v", path, err)
		}
		fmt.Fprintf(&b, "%s\t%d\t%x\n", filepath.Base(p), len(data), sha256.Sum256(data))
	}
	// nothing else may appear in the directory
	ents, _ := os.ReadDir(dir)
	if len(ents) != len(wrote) {
		t.Errorf("%s: %d files in the directory, %d reported", path, len(ents), len(wrote))
	}
	for _, w := range warns {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	return b.String()
}

func TestGolden(t *testing.T) {
	for _, path := range corpus(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			got := describe(t, path)
			golden := strings.TrimSuffix(path, ".eml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./pkg/mime -run TestGolden -update)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs from %s:\n--- got\n%s--- want\n%s", path, golden, got, want)
			}
		})
	}
}
