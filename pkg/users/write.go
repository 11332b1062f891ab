package users

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Errors of the editing functions; test them with errors.Is.
var (
	ErrExists   = errors.New("user already exists")
	ErrNotFound = errors.New("no such user")
)

// Edit rewrites the users file at path under an exclusive lock (path.lock,
// flock(2)), so concurrent mailuser runs serialise: fn gets the current lines
// (without newlines; none if the file is missing) and returns the new ones.
// The new file is written beside the old one, fsynced, renamed over it and
// the directory fsynced, so a crash leaves either the old or the new file.
// The mode and owner of an existing file are kept; a new file is 0600.
//
// The lock is opened with O_NOFOLLOW: whoever may write the directory
// could make path.lock a symbolic link, and root must then neither create
// nor open the file it names. It must be a regular file.
func Edit(path string, fn func(lines []string) ([]string, error)) error {
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return fmt.Errorf("users: lock %s.lock: a symbolic link (remove it)", path)
	}
	if err != nil {
		return fmt.Errorf("users: lock %s: %w", path, err)
	}
	defer lock.Close()
	if fi, err := lock.Stat(); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("users: lock %s.lock: not a regular file", path)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("users: lock %s: %w", path, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	mode := os.FileMode(0o600)
	uid, gid := -1, -1
	var lines []string
	old, err := os.ReadFile(path)
	switch {
	case err == nil:
		if fi, err := os.Stat(path); err == nil {
			mode = fi.Mode().Perm()
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				uid, gid = int(st.Uid), int(st.Gid)
			}
		}
		sc := bufio.NewScanner(bytes.NewReader(old))
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("users: read %s: %w", path, err)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return fmt.Errorf("users: read %s: %w", path, err)
	}

	lines, err = fn(lines)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	for _, l := range lines {
		buf.WriteString(l)
		buf.WriteByte('\n')
	}
	return writeAtomic(path, buf.Bytes(), mode, uid, gid)
}

func writeAtomic(path string, data []byte, mode os.FileMode, uid, gid int) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("users: write %s: %w", path, err)
	}
	name := tmp.Name()
	fail := func(err error) error {
		tmp.Close()
		os.Remove(name)
		return fmt.Errorf("users: write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return fail(err)
	}
	if uid >= 0 && os.Geteuid() == 0 {
		// Only root can give the file away; keep the old owner (the file
		// may be readable by a mail group, for instance).
		if err := tmp.Chown(uid, gid); err != nil {
			return fail(err)
		}
	}
	if _, err := tmp.Write(data); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(name)
		return fmt.Errorf("users: write %s: %w", path, err)
	}
	if err := os.Rename(name, path); err != nil {
		os.Remove(name)
		return fmt.Errorf("users: write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("users: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("users: sync %s: %w", dir, err)
	}
	return nil
}

// findLine returns the index of the line whose user is addr, or -1. Lines
// that do not parse are skipped (kept verbatim by the editors).
func findLine(lines []string, addr string) int {
	k := Key(addr)
	for i, l := range lines {
		u, err := ParseLine(l)
		if err == nil && u != nil && Key(u.Name) == k {
			return i
		}
	}
	return -1
}

// FormatLine returns the users-file line of u.
func FormatLine(u *User) string {
	var extra []string
	for _, k := range sortedKeys(u.Extra) {
		if v := u.Extra[k]; v != "" {
			extra = append(extra, k+"="+v)
		} else {
			extra = append(extra, k)
		}
	}
	return strings.Join([]string{u.Name, u.Password, u.UID, u.GID, u.Gecos, u.Home, u.Shell, strings.Join(extra, " ")}, ":")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

// Add appends u to the users file at path; ErrExists if a user of that name
// (ignoring case) is there.
func Add(path string, u *User) error {
	if err := CheckName(u.Name); err != nil {
		return fmt.Errorf("users: add: %w", err)
	}
	if strings.ContainsAny(u.Password, ":\n\r") {
		return fmt.Errorf("users: add %s: password field contains ':' or a newline", u.Name)
	}
	line := FormatLine(u)
	return Edit(path, func(lines []string) ([]string, error) {
		if findLine(lines, u.Name) >= 0 {
			return nil, fmt.Errorf("users: add %s: %w", u.Name, ErrExists)
		}
		return append(lines, line), nil
	})
}

// SetPassword replaces addr's password field with stored ({SCHEME}hash),
// keeping the rest of the line as it was.
func SetPassword(path, addr, stored string) error {
	if strings.ContainsAny(stored, ":\n\r") {
		return fmt.Errorf("users: passwd %s: password field contains ':' or a newline", addr)
	}
	return Edit(path, func(lines []string) ([]string, error) {
		i := findLine(lines, addr)
		if i < 0 {
			return nil, fmt.Errorf("users: passwd %s: %w", addr, ErrNotFound)
		}
		f := strings.SplitN(lines[i], ":", 3)
		if len(f) < 3 {
			lines[i] = f[0] + ":" + stored
		} else {
			lines[i] = f[0] + ":" + stored + ":" + f[2]
		}
		return lines, nil
	})
}

// Delete removes addr's line from the users file. It returns the removed
// user (its Mailbox is what the caller may tell about).
func Delete(path, addr string) (*User, error) {
	var removed *User
	err := Edit(path, func(lines []string) ([]string, error) {
		i := findLine(lines, addr)
		if i < 0 {
			return nil, fmt.Errorf("users: del %s: %w", addr, ErrNotFound)
		}
		removed, _ = ParseLine(lines[i])
		return append(lines[:i:i], lines[i+1:]...), nil
	})
	return removed, err
}
