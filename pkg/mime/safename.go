package mime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"
)

// MaxNameBytes caps a written file name: far under NAME_MAX (255) so that
// the "-N" suffix added to avoid overwriting still fits.
const MaxNameBytes = 200

// SafeName reduces a file name taken from a message to a base name that is
// safe to create in a directory: no path separators (both / and \, since the
// sender may be on Windows), no "." or "..", no leading dots (hidden files)
// or dashes (option injection into later shell commands), no control
// characters or invalid UTF-8, at most MaxNameBytes bytes (the extension
// kept). It returns "" when nothing usable is left; callers then pick a
// generated name, so that hostile names still get their content written.
func SafeName(name string) string {
	name = strings.ToValidUTF8(name, "")
	name = strings.ReplaceAll(name, "\\", "/")
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	var b strings.Builder
	for _, r := range name {
		switch {
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			// control characters: dropped
		case r == utf8.RuneError, r == '\u2028', r == '\u2029', r == '\ufeff':
		case unicode.Is(unicode.Bidi_Control, r):
			// right-to-left overrides disguise extensions (exe.pdf)
		default:
			b.WriteRune(r)
		}
	}
	name = strings.TrimSpace(b.String())
	name = strings.TrimLeft(name, ".-~ ")
	name = strings.TrimRight(name, ". ")
	if len(name) > MaxNameBytes {
		ext := filepath.Ext(name)
		if len(ext) > 16 || !utf8.ValidString(ext) {
			ext = ""
		}
		stem := name[:MaxNameBytes-len(ext)]
		for len(stem) > 0 && !utf8.ValidString(stem) {
			stem = stem[:len(stem)-1]
		}
		name = stem + ext
	}
	return name
}

// CreateExclusive creates a new file named name (already a safe base name) in
// the open directory dir, never following a symbolic link and never
// replacing anything: when the name is taken it tries name-1.ext, name-2.ext
// and so on. With force, an existing regular file of that name is replaced
// (a symlink or anything else is still left alone). It returns the file and
// the name used.
func CreateExclusive(dir *os.File, name string, mode os.FileMode, force bool) (*os.File, string, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return nil, "", fmt.Errorf("create %q: unsafe name", name)
	}
	ext := filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	if stem == "" {
		stem, ext = name, ""
	}
	cand := name
	for i := 1; i <= 10000; i++ {
		if force && i == 1 {
			// Lstat, not Stat: a symlink is never replaced, only a regular
			// file; O_EXCL below still refuses whatever races in.
			if fi, err := os.Lstat(filepath.Join(dir.Name(), cand)); err == nil && fi.Mode().IsRegular() {
				if err := syscall.Unlinkat(int(dir.Fd()), cand); err != nil {
					return nil, "", fmt.Errorf("replace %s: %w", cand, err)
				}
			}
		}
		fd, err := syscall.Openat(int(dir.Fd()), cand,
			syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC,
			uint32(mode.Perm()))
		if err == nil {
			return os.NewFile(uintptr(fd), filepath.Join(dir.Name(), cand)), cand, nil
		}
		if !errors.Is(err, fs.ErrExist) && err != syscall.ELOOP {
			return nil, "", fmt.Errorf("create %s: %w", filepath.Join(dir.Name(), cand), err)
		}
		cand = fmt.Sprintf("%s-%d%s", stem, i, ext)
	}
	return nil, "", fmt.Errorf("create %s: too many files of that name", name)
}
