// Package privsep is letterbox's privilege model in code: who a process or
// a child runs as. Mailboxes are touched only as their owner (DESIGN.md §
// Guarantees): a root process never opens a path a user controls; it runs
// the work in a child with the owner's credentials (deliveries, POP3 and
// IMAP sessions), as qmail-local, Postfix local(8) and Dovecot do.
//
// Go cannot give one goroutine other credentials than the rest of the
// process, so a switch is either the whole process (Cred.Switch, for a
// process that serves one user from then on: --user after binding, an
// inetd session after login) or a child started with Cred.SysProcAttr.
package privsep

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// Cred is a set of Unix credentials: user, primary group and supplementary
// groups.
type Cred struct {
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups; empty means just GID
	Name   string   // login name when known, for logs
}

func (c Cred) String() string {
	if c.Name != "" {
		return fmt.Sprintf("%s(%d:%d)", c.Name, c.UID, c.GID)
	}
	return fmt.Sprintf("%d:%d", c.UID, c.GID)
}

// Self is the credentials this process runs with (effective ids).
func Self() Cred {
	c := Cred{UID: uint32(os.Geteuid()), GID: uint32(os.Getegid())}
	if gs, err := os.Getgroups(); err == nil {
		for _, g := range gs {
			c.Groups = append(c.Groups, uint32(g))
		}
	}
	return c
}

// IsRoot reports whether this process may take other credentials.
func IsRoot() bool { return os.Geteuid() == 0 }

// Same reports whether c and o name the same user and primary group (the
// supplementary groups follow from the user).
func (c Cred) Same(o Cred) bool { return c.UID == o.UID && c.GID == o.GID }

// LookupUser returns the credentials of a login name or numeric uid from
// the system's user database, with its supplementary groups.
func LookupUser(name string) (Cred, error) {
	var u *user.User
	var err error
	if _, nerr := strconv.ParseUint(name, 10, 32); nerr == nil {
		u, err = user.LookupId(name)
	} else {
		u, err = user.Lookup(name)
	}
	if err != nil {
		return Cred{}, fmt.Errorf("privsep: user %s: %w", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return Cred{}, fmt.Errorf("privsep: user %s: non-numeric uid %q or gid %q", name, u.Uid, u.Gid)
	}
	c := Cred{UID: uint32(uid), GID: uint32(gid), Name: u.Username}
	if ids, err := u.GroupIds(); err == nil {
		for _, s := range ids {
			if g, err := strconv.ParseUint(s, 10, 32); err == nil {
				c.Groups = append(c.Groups, uint32(g))
			}
		}
	}
	return c, nil
}

// groups is the supplementary group list to set: Groups, else just GID.
func (c Cred) groups() []uint32 {
	if len(c.Groups) == 0 {
		return []uint32{c.GID}
	}
	return c.Groups
}

// SysProcAttr starts a child with c's credentials (all of real, effective
// and saved ids, and the supplementary groups). Only root may use it for
// credentials other than its own.
func (c Cred) SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: c.UID, Gid: c.GID, Groups: c.groups()}}
}

// ErrNotRoot: a switch to other credentials was asked of a process that
// cannot make it.
var ErrNotRoot = errors.New("not running as root")

// Switch makes the whole process run as c: supplementary groups, then the
// group, then the user (real, effective and saved ids, in every thread).
// Already c: nothing to do. Not root and another user: ErrNotRoot.
func (c Cred) Switch() error {
	if os.Geteuid() != 0 {
		if uint32(os.Geteuid()) == c.UID {
			return nil
		}
		return fmt.Errorf("privsep: switch to %s: %w", c, ErrNotRoot)
	}
	gids := make([]int, 0, len(c.groups()))
	for _, g := range c.groups() {
		gids = append(gids, int(g))
	}
	if err := syscall.Setgroups(gids); err != nil {
		return fmt.Errorf("privsep: setgroups: %w", err)
	}
	if err := syscall.Setresgid(int(c.GID), int(c.GID), int(c.GID)); err != nil {
		return fmt.Errorf("privsep: setresgid %d: %w", c.GID, err)
	}
	if err := syscall.Setresuid(int(c.UID), int(c.UID), int(c.UID)); err != nil {
		return fmt.Errorf("privsep: setresuid %d: %w", c.UID, err)
	}
	if uint32(os.Geteuid()) != c.UID || uint32(os.Getuid()) != c.UID {
		return fmt.Errorf("privsep: still uid %d after switching to %d", os.Geteuid(), c.UID)
	}
	return nil
}
