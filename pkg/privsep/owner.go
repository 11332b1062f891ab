package privsep

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Mailbox describes a mailbox for MailboxOwner: the users file's fields for
// its user and where it is.
type Mailbox struct {
	UID, GID string // users file columns 3 and 4 (numbers or names; "" when empty)
	Home     string // users file column 6
	Path     string // the Maildir or mbox
	MailUser string // config key mail-user: owner of virtual mailboxes ("" = this process)
}

// MailboxOwner returns whom a mailbox belongs to, which is who may touch
// it (DESIGN.md § Guarantees): the users file's uid/gid when given; else,
// for a mailbox inside the user's home directory, the owner of that
// directory (looked at without following a symlink); else, a virtual
// mailbox (under mail-root), the mail user, or this process when none is
// configured.
func MailboxOwner(m Mailbox) (Cred, error) {
	if m.UID != "" {
		return fromIDs(m.UID, m.GID)
	}
	if m.Home != "" && filepath.IsAbs(m.Home) && within(m.Home, m.Path) {
		fi, err := os.Lstat(m.Home)
		if err != nil {
			return Cred{}, fmt.Errorf("privsep: home %s: %w", m.Home, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !fi.IsDir() || !ok {
			return Cred{}, fmt.Errorf("privsep: home %s: not a directory", m.Home)
		}
		return withGroups(Cred{UID: st.Uid, GID: st.Gid}), nil
	}
	if m.MailUser != "" {
		return LookupUser(m.MailUser)
	}
	return Self(), nil
}

// within reports whether path is dir or below it (lexically).
func within(dir, path string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}

// fromIDs resolves the users file's uid and gid columns; a missing gid is
// the user's primary group in the system's database.
func fromIDs(uidS, gidS string) (Cred, error) {
	c, err := LookupUser(uidS)
	if err != nil {
		uid, perr := strconv.ParseUint(uidS, 10, 32)
		if perr != nil {
			return Cred{}, err // a name the system does not know
		}
		if gidS == "" {
			return Cred{}, fmt.Errorf("privsep: uid %s has no gid in the users file and no passwd entry", uidS)
		}
		c = Cred{UID: uint32(uid)}
	}
	if gidS != "" {
		gid, err := parseGroup(gidS)
		if err != nil {
			return Cred{}, err
		}
		if gid != c.GID {
			// The users file's gid wins, as in Dovecot; supplementary groups
			// still come from the system's entry for the uid.
			c.GID = gid
			c.Groups = append([]uint32{gid}, c.Groups...)
		}
	}
	return c, nil
}

func parseGroup(s string) (uint32, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, fmt.Errorf("privsep: group %s: %w", s, err)
	}
	n, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("privsep: group %s: gid %q", s, g.Gid)
	}
	return uint32(n), nil
}

// withGroups adds the supplementary groups of c's uid when the system knows
// that user.
func withGroups(c Cred) Cred {
	if u, err := LookupUser(strconv.FormatUint(uint64(c.UID), 10)); err == nil {
		c.Name, c.Groups = u.Name, u.Groups
		if !containsGID(c.Groups, c.GID) {
			c.Groups = append([]uint32{c.GID}, c.Groups...)
		}
	}
	return c
}

func containsGID(gs []uint32, g uint32) bool {
	for _, x := range gs {
		if x == g {
			return true
		}
	}
	return false
}
