// Package admin is what the mailuser command does: add, passwd, del, list
// and check entries of the users file. Errors carry sysexits(3) codes.
package admin

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"letterbox/pkg/address"
	"letterbox/pkg/privsep"
	"letterbox/pkg/sysexits"
	"letterbox/pkg/users"
	"letterbox/pkg/users/passwd"
)

// ErrMismatch is check's "the password does not verify" (exit 1).
var ErrMismatch = errors.New("password does not verify")

// Admin edits one users file.
type Admin struct {
	UsersFile string
	MailRoot  string
	Domains   []string  // local domains: adding a user elsewhere is warned about
	MailUser  string    // owner of the virtual mailboxes (config key mail-user)
	Stdin     *os.File  // password source: one line, or a prompt on a tty
	Out, Err  io.Writer // stdout, stderr
}

// CheckAddress validates a user name for the users file: a full address
// whose local part is a dot-atom (no quoting: the name is also a directory
// and a passwd-file field) and whose domain is well-formed. It returns the
// name with the domain in lower case.
func CheckAddress(addr string) (string, error) {
	a, err := address.Parse(addr)
	if err == nil && a.Literal {
		err = fmt.Errorf("%q: domain literals are not accepted", addr)
	}
	if err == nil {
		err = a.CheckLimits()
	}
	if err != nil {
		return "", sysexits.New(sysexits.DataErr, fmt.Errorf("%q: %w", addr, err))
	}
	local, domain := a.Local, a.Domain
	if domain == "" {
		return "", sysexits.New(sysexits.DataErr, fmt.Errorf("%q: not a full address (local@domain)", addr))
	}
	if strings.HasPrefix(strings.TrimSpace(addr), "<") || strings.Contains(addr, "\"") || strings.HasPrefix(strings.TrimSpace(addr), "@") {
		return "", sysexits.New(sysexits.DataErr, fmt.Errorf("%q: write the address plainly as local@domain", addr))
	}
	name := local + "@" + domain
	if err := users.CheckName(name); err != nil {
		return "", sysexits.New(sysexits.DataErr, err)
	}
	return name, nil
}

func (a *Admin) isLocal(domain string) bool {
	for _, d := range a.Domains {
		if strings.EqualFold(strings.TrimSuffix(d, "."), domain) {
			return true
		}
	}
	return false
}

// AddOptions are add's choices besides the address.
type AddOptions struct {
	Scheme   string // password scheme
	UID, GID string // the users file's uid and gid (numbers or names; "" = none)
	Home     string // the users file's home ("" = none; the Maildir is then home/Maildir)
}

// Add adds addr with a password read from stdin, hashed in o.Scheme, and
// creates its Maildir owned by the mailbox's owner (privsep.MailboxOwner:
// o.UID/o.GID, else the home directory's owner, else MailUser, else this
// process), mode 0700.
func (a *Admin) Add(addr string, o AddOptions) error {
	name, err := CheckAddress(addr)
	if err != nil {
		return err
	}
	scheme := o.Scheme
	for _, f := range []struct{ name, v string }{{"--uid", o.UID}, {"--gid", o.GID}, {"--home", o.Home}} {
		if strings.ContainsAny(f.v, ":\n\r") || strings.TrimSpace(f.v) != f.v {
			return sysexits.New(sysexits.Usage, fmt.Errorf("%s %q: no ':', newline or surrounding space", f.name, f.v))
		}
	}
	if o.Home != "" && !filepath.IsAbs(o.Home) {
		return sysexits.New(sysexits.Usage, fmt.Errorf("--home %q: not an absolute path", o.Home))
	}
	if o.UID == "" && o.GID != "" {
		return sysexits.New(sysexits.Usage, errors.New("--gid needs --uid"))
	}
	if _, err := passwd.Hash(scheme, "probe"); err != nil {
		return sysexits.New(sysexits.Usage, err)
	}
	// Early duplicate check, so that no password is asked for in vain; the
	// authoritative one is users.Add's, under the lock.
	if db, err := users.Load(a.UsersFile); err == nil && db.Lookup(name) != nil {
		return sysexits.New(sysexits.DataErr, fmt.Errorf("add %s: %w", name, users.ErrExists))
	}
	if _, d, _ := strings.Cut(name, "@"); !a.isLocal(d) {
		fmt.Fprintf(a.Err, "mailuser: warning: %s is not one of the local domains (%s); mail for %s will not be accepted until it is\n",
			d, strings.Join(a.Domains, ", "), name)
	}
	u := &users.User{Name: name, UID: o.UID, GID: o.GID, Home: o.Home}
	mb := u.Mailbox(a.MailRoot)
	var owner privsep.Cred
	if mb.Kind == "maildir" {
		// Before the password is asked for and the users file written:
		// an owner that cannot be found leaves nothing behind.
		owner, err = privsep.MailboxOwner(privsep.Mailbox{UID: u.UID, GID: u.GID, Home: u.Home, Path: mb.Path, MailUser: a.MailUser})
		if err != nil {
			return sysexits.New(sysexits.NoUser, fmt.Errorf("add %s: owner of %s: %w", name, mb.Path, err))
		}
	}
	pw, err := a.newPassword()
	if err != nil {
		return err
	}
	if u.Password, err = passwd.Hash(scheme, pw); err != nil {
		return sysexits.New(sysexits.DataErr, err)
	}
	if err := users.Add(a.UsersFile, u); err != nil {
		if errors.Is(err, users.ErrExists) {
			return sysexits.New(sysexits.DataErr, err)
		}
		return sysexits.New(sysexits.CantCreat, err)
	}
	if mb.Kind == "maildir" {
		if err := createMaildir(mb.Path, owner); err != nil {
			return sysexits.New(sysexits.CantCreat, fmt.Errorf("added %s, but its Maildir: %w", name, err))
		}
	}
	fmt.Fprintf(a.Out, "added %s, mail in %s\n", name, mb.Path)
	return nil
}

// Passwd sets addr's password.
func (a *Admin) Passwd(addr, scheme string) error {
	name, err := a.existing(addr)
	if err != nil {
		return err
	}
	if _, err := passwd.Hash(scheme, "probe"); err != nil {
		return sysexits.New(sysexits.Usage, err)
	}
	pw, err := a.newPassword()
	if err != nil {
		return err
	}
	hash, err := passwd.Hash(scheme, pw)
	if err != nil {
		return sysexits.New(sysexits.DataErr, err)
	}
	if err := users.SetPassword(a.UsersFile, name, hash); err != nil {
		if errors.Is(err, users.ErrNotFound) {
			return sysexits.New(sysexits.NoUser, err)
		}
		return sysexits.New(sysexits.IOErr, err)
	}
	fmt.Fprintf(a.Out, "password of %s changed\n", name)
	return nil
}

// Del removes addr from the users file; its mail stays where it is.
func (a *Admin) Del(addr string) error {
	name, err := a.existing(addr)
	if err != nil {
		return err
	}
	u, err := users.Delete(a.UsersFile, name)
	if err != nil {
		if errors.Is(err, users.ErrNotFound) {
			return sysexits.New(sysexits.NoUser, err)
		}
		return sysexits.New(sysexits.IOErr, err)
	}
	mb := u.Mailbox(a.MailRoot)
	fmt.Fprintf(a.Out, "deleted %s; its mail in %s was kept (remove it by hand if you want)\n", u.Name, mb.Path)
	return nil
}

// List prints every user, one per line.
func (a *Admin) List() error {
	db, err := users.Load(a.UsersFile)
	if err != nil {
		return sysexits.New(sysexits.DataErr, err)
	}
	w := bufio.NewWriter(a.Out)
	for _, n := range db.Names() {
		fmt.Fprintln(w, n)
	}
	return w.Flush()
}

// Check reads a password and returns nil if it is addr's, ErrMismatch (exit
// 1) if not or if there is no such user.
func (a *Admin) Check(addr string) error {
	db, err := users.Load(a.UsersFile)
	if err != nil {
		return sysexits.New(sysexits.DataErr, err)
	}
	pw, err := a.readPassword("Password: ")
	if err != nil {
		return err
	}
	if _, err := db.Authenticate(addr, pw); err != nil {
		return sysexits.New(1, fmt.Errorf("check %s: %w", addr, ErrMismatch))
	}
	return nil
}

// existing validates addr and checks that it is in the users file.
func (a *Admin) existing(addr string) (string, error) {
	name, err := CheckAddress(addr)
	if err != nil {
		return "", err
	}
	db, err := users.Load(a.UsersFile)
	if err != nil {
		return "", sysexits.New(sysexits.DataErr, err)
	}
	u := db.Lookup(name)
	if u == nil {
		return "", sysexits.New(sysexits.NoUser, fmt.Errorf("%s: %w", name, users.ErrNotFound))
	}
	return u.Name, nil
}

// newPassword reads a new password: twice with a prompt on a tty, else one
// line from stdin.
func (a *Admin) newPassword() (string, error) {
	pw, err := a.readPassword("New password: ")
	if err != nil {
		return "", err
	}
	if isTerminal(a.Stdin) {
		again, err := a.readPassword("Retype new password: ")
		if err != nil {
			return "", err
		}
		if again != pw {
			return "", sysexits.New(sysexits.DataErr, errors.New("the passwords do not match"))
		}
	}
	return pw, nil
}

// readPassword reads one line from stdin; on a tty it prompts on stderr and
// turns echo off while reading.
func (a *Admin) readPassword(prompt string) (string, error) {
	in := a.Stdin
	if in == nil {
		in = os.Stdin
	}
	var line string
	var err error
	if isTerminal(in) {
		line, err = readNoEcho(in, a.Err, prompt)
	} else {
		line, err = readLine(in)
	}
	if err != nil {
		return "", sysexits.New(sysexits.NoInput, fmt.Errorf("reading the password: %w", err))
	}
	if line == "" {
		return "", sysexits.New(sysexits.DataErr, errors.New("empty password"))
	}
	if strings.ContainsAny(line, "\x00") {
		return "", sysexits.New(sysexits.DataErr, errors.New("password contains a NUL byte"))
	}
	return line, nil
}

// readLine reads up to a newline one byte at a time, so that nothing after
// the line is consumed (a script may feed more to the next command).
func readLine(f *os.File) (string, error) {
	var b []byte
	buf := make([]byte, 1)
	for {
		n, err := f.Read(buf)
		if n == 1 {
			if buf[0] == '\n' {
				break
			}
			b = append(b, buf[0])
			if len(b) > 4096 {
				return "", errors.New("line too long")
			}
		}
		if err == io.EOF {
			if len(b) == 0 {
				return "", errors.New("no password on standard input")
			}
			break
		}
		if err != nil {
			return "", err
		}
	}
	return strings.TrimSuffix(string(b), "\r"), nil
}

func isTerminal(f *os.File) bool {
	if f == nil {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// readNoEcho turns echo off, then prompts (in that order, so that typing
// ahead of the prompt is not echoed either), reads a line and restores the
// terminal.
func readNoEcho(f *os.File, w io.Writer, prompt string) (string, error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return "", err
	}
	t := *old
	t.Lflag &^= unix.ECHO
	t.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &t); err != nil {
		return "", err
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	fmt.Fprint(w, prompt)
	defer fmt.Fprintln(w)
	return readLine(f)
}
