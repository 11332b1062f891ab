package mailstore

import (
	"fmt"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-maildir/maildirpp"

	"letterbox/pkg/maildir"
)

// maxNameLen bounds a whole mailbox name (UTF-8 bytes); a directory name
// (one '.' + every component in modified UTF-7) must also fit NAME_MAX.
const maxNameLen = 200

// canonName checks an IMAP mailbox name (UTF-8, '.' separated) and returns
// it canonical: "INBOX" in any case is INBOX, one trailing separator (RFC
// 3501's "create a parent") is dropped. Refused, after mox and Dovecot:
// empty names and components, control characters, '/' and '\', a leading
// '#' or '~', invalid UTF-8.
func canonName(name string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w: %q: %s", ErrBadName, name, why)
	}
	if strings.HasSuffix(name, ".") && len(name) > 1 {
		name = name[:len(name)-1]
	}
	if strings.EqualFold(name, "INBOX") {
		return "INBOX", nil
	}
	switch {
	case name == "":
		return bad("empty")
	case len(name) > maxNameLen:
		return bad("too long")
	case !utf8.ValidString(name):
		return bad("not UTF-8")
	case name[0] == '#' || name[0] == '~':
		return bad("leading # or ~")
	case strings.ContainsAny(name, "/\\"):
		return bad("contains a slash")
	case name[0] == '.' || strings.HasSuffix(name, ".") || strings.Contains(name, ".."):
		return bad("empty component")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError {
			return bad("control character")
		}
	}
	// "inbox.x" is INBOX's child: spell its first component as INBOX.
	if first, rest, ok := strings.Cut(name, "."); ok && strings.EqualFold(first, "INBOX") {
		name = "INBOX." + rest
	}
	if len(dirName(name)) > 255 {
		return bad("too long")
	}
	return name, nil
}

// dirName is the Maildir++ directory (under the root) of a canonical
// folder name other than INBOX: "." + components in modified UTF-7.
func dirName(name string) string {
	parts := strings.Split(name, ".")
	for i, p := range parts {
		parts[i] = encodeUTF7(p)
	}
	d, err := maildirpp.Join(parts)
	if err != nil {
		// Components come from splitting on '.', so none holds one.
		panic(err)
	}
	return d
}

// nameOfDir is the folder name (UTF-8) of a directory entry of the root,
// ok false for entries that are not Maildir++ folders we may show: not
// ".Name", Dovecot's "..DOVECOT-TRASHED", bad modified UTF-7, or a name
// canonName refuses.
func nameOfDir(entry string) (string, bool) {
	if len(entry) < 2 || entry[0] != '.' || entry[1] == '.' {
		return "", false
	}
	if maildir.CheckFolderName(entry[1:]) != nil {
		return "", false
	}
	parts, err := maildirpp.Split(entry)
	if err != nil {
		return "", false
	}
	for i, p := range parts {
		u, err := decodeUTF7(p)
		if err != nil {
			return "", false
		}
		parts[i] = u
	}
	name := strings.Join(parts, ".")
	c, err := canonName(name)
	if err != nil || c != name || c == "INBOX" {
		return "", false
	}
	return name, true
}

// FolderDir returns the directory of the folder name (UTF-8, '.'
// separated, as IMAP shows it) under the Maildir root: root itself for
// INBOX. Names imapd would refuse are ErrBadName: a '/', an empty
// component ("..", a leading or trailing '.'), control characters.
func FolderDir(root, name string) (string, error) {
	c, err := canonName(name)
	if err != nil {
		return "", err
	}
	if c == "INBOX" {
		return root, nil
	}
	return filepath.Join(root, dirName(c)), nil
}
