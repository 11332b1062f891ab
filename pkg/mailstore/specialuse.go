package mailstore

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// Dovecot keeps SPECIAL-USE attributes in its configuration, not in the
// Maildir, so ours live in a file of our own at the root,
// letterbox-imap.specialuse: one "<attribute> <folder name>" line each
// (UTF-8 name). A folder the file does not name but whose name is a
// well-known one (Dovecot's default configuration, other servers' names)
// has that attribute too, unless the file gives the attribute to another
// folder.
const specialUseName = "letterbox-imap.specialuse"

var specialUses = []string{UseSent, UseDrafts, UseTrash, UseJunk, UseArchive}

// defaultFolder is the folder EnsureSpecialUse creates for each attribute.
var defaultFolder = map[string]string{
	UseSent: "Sent", UseDrafts: "Drafts", UseTrash: "Trash", UseJunk: "Junk", UseArchive: "Archive",
}

// wellKnown maps lower-cased top-level names to their attribute.
var wellKnown = map[string]string{
	"sent": UseSent, "sent items": UseSent, "sent messages": UseSent, "sent mail": UseSent,
	"drafts": UseDrafts, "draft": UseDrafts,
	"trash": UseTrash, "deleted items": UseTrash, "deleted messages": UseTrash, "bin": UseTrash,
	"junk": UseJunk, "spam": UseJunk, "junk e-mail": UseJunk, "junk email": UseJunk,
	"archive": UseArchive, "archives": UseArchive,
}

// canonUse returns the attribute as we spell it, ok false when it is not
// one we support.
func canonUse(use string) (string, bool) {
	for _, u := range specialUses {
		if strings.EqualFold(use, u) {
			return u, true
		}
	}
	return "", false
}

// readSpecialUse returns folder name → attribute from the file.
func (a *account) readSpecialUse() map[string]string {
	m := map[string]string{}
	b, err := readSmall(filepath.Join(a.root, specialUseName))
	if err != nil {
		return m
	}
	for _, line := range strings.Split(string(b), "\n") {
		use, name, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		u, ok1 := canonUse(use)
		n, err := canonName(name)
		if ok1 && err == nil && n != "INBOX" {
			m[n] = u
		}
	}
	return m
}

// writeSpecialUse replaces the file (root lock held).
func (a *account) writeSpecialUse(m map[string]string) error {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s %s\n", m[n], n)
	}
	tmp := filepath.Join(a.root, "tmp", specialUseName+"."+strconv.Itoa(os.Getpid())+"."+strconv.FormatInt(nanotime(), 36))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("mailstore: %s: %w", specialUseName, err)
	}
	_, err = f.WriteString(b.String())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(a.root, specialUseName))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("mailstore: %s: %w", specialUseName, err)
	}
	return nil
}

// useOf returns each existing folder's attribute: the file's, else a
// well-known name's for attributes the file gives to no existing folder.
func useOf(names []string, file map[string]string) map[string]string {
	out := map[string]string{}
	given := map[string]bool{}
	exists := map[string]bool{}
	for _, n := range names {
		exists[n] = true
	}
	for n, u := range file {
		if exists[n] {
			out[n] = u
			given[u] = true
		}
	}
	for _, n := range names {
		if _, ok := out[n]; ok || strings.Contains(n, ".") {
			continue
		}
		if u, ok := wellKnown[strings.ToLower(n)]; ok && !given[u] {
			out[n] = u
		}
	}
	return out
}
