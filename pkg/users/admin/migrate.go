package admin

import (
	"errors"
	"fmt"
	"io"
	"os"

	"letterbox/pkg/mailstore"
	"letterbox/pkg/mbox"
	"letterbox/pkg/migrate"
	"letterbox/pkg/privsep"
	"letterbox/pkg/sysexits"
	"letterbox/pkg/users"
)

// MigrateOptions are the choices of Import and Export.
type MigrateOptions struct {
	Folder   string      // IMAP folder name ("" or INBOX: the Maildir itself)
	Format   mbox.Format // Import's input format ("" = mbox.Mboxrd)
	MailUser string      // owner of the virtual mailboxes (config key mail-user)
	Hostname string      // host part of the new file names ("" = this host's)
}

// Import copies the mbox file into addr's Maildir (or folder, created as
// imapd creates folders when missing), as the mailbox's owner, and prints
// how many messages it imported. Errors carry sysexits(3) codes; an import
// that stops part-way says how many messages it imported.
func (a *Admin) Import(addr, file string, o MigrateOptions) error {
	if o.Format == "" {
		o.Format = mbox.Mboxrd
	}
	if o.Format != mbox.Mboxo && o.Format != mbox.Mboxrd {
		return sysexits.New(sysexits.Usage, fmt.Errorf("import: --format %q: mboxo or mboxrd", o.Format))
	}
	name, root, dir, owner, err := a.mailbox(addr, o)
	if err != nil {
		return err
	}
	// The file is the administrator's: opened before this process
	// becomes the mailbox's owner, who may not be able to read it.
	in, err := os.Open(file)
	if err != nil {
		return sysexits.New(sysexits.NoInput, fmt.Errorf("import: %w", err))
	}
	defer in.Close()
	if fi, err := in.Stat(); err == nil && fi.IsDir() {
		return sysexits.New(sysexits.NoInput, fmt.Errorf("import: %s is a directory, not an mbox file", file))
	}
	if err := becomeOwner(owner); err != nil {
		return err
	}
	if err := ensureFolder(root, o); err != nil {
		return err
	}
	n, err := migrate.Import(dir, in, o.Format, o.Hostname)
	if err != nil {
		code := sysexits.IOErr
		switch {
		case errors.Is(err, mbox.ErrNotMbox), errors.Is(err, mbox.ErrTruncated), errors.Is(err, migrate.ErrContentLength):
			code = sysexits.DataErr
		case errors.Is(err, os.ErrPermission):
			code = sysexits.NoPerm
		}
		return sysexits.New(code, fmt.Errorf("import %s into %s of %s: %w", file, folderName(o), name, err))
	}
	fmt.Fprintf(a.Out, "imported %d messages from %s into %s of %s\n", n, file, folderName(o), name)
	return nil
}

// Export writes addr's Maildir (or folder) to out as mboxrd, as the
// mailbox's owner.
func (a *Admin) Export(addr string, out io.Writer, o MigrateOptions) error {
	name, _, dir, owner, err := a.mailbox(addr, o)
	if err != nil {
		return err
	}
	if err := becomeOwner(owner); err != nil {
		return err
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return sysexits.New(sysexits.NoInput, fmt.Errorf("export: %s of %s: no such folder (%s)", folderName(o), name, dir))
	}
	n, err := migrate.Export(dir, out)
	if err != nil {
		return sysexits.New(sysexits.IOErr, fmt.Errorf("export %s of %s: stopped after %d messages: %w", folderName(o), name, n, err))
	}
	fmt.Fprintf(a.Err, "mailuser: exported %d messages from %s of %s\n", n, folderName(o), name)
	return nil
}

func folderName(o MigrateOptions) string {
	if o.Folder == "" {
		return "INBOX"
	}
	return o.Folder
}

// mailbox finds addr's Maildir, the folder's directory in it and whom it
// belongs to.
func (a *Admin) mailbox(addr string, o MigrateOptions) (name, root, dir string, owner privsep.Cred, err error) {
	name, err = CheckAddress(addr)
	if err != nil {
		return
	}
	db, lerr := users.Load(a.UsersFile)
	if lerr != nil {
		err = sysexits.New(sysexits.Config, lerr)
		return
	}
	u := db.Lookup(name)
	if u == nil {
		err = sysexits.New(sysexits.NoUser, fmt.Errorf("%s: %w", name, users.ErrNotFound))
		return
	}
	name = u.Name
	mb := u.Mailbox(a.MailRoot)
	if mb.Kind != "maildir" {
		err = sysexits.New(sysexits.DataErr, fmt.Errorf("%s: the mailbox is an %s (%s), not a Maildir", name, mb.Kind, mb.Path))
		return
	}
	root = mb.Path
	if dir, err = mailstore.FolderDir(root, folderName(o)); err != nil {
		err = sysexits.New(sysexits.Usage, fmt.Errorf("--folder: %w", err))
		return
	}
	if owner, err = privsep.MailboxOwner(privsep.Mailbox{UID: u.UID, GID: u.GID, Home: u.Home, Path: mb.Path, MailUser: o.MailUser}); err != nil {
		err = sysexits.New(sysexits.NoUser, fmt.Errorf("%s: owner of %s: %w", name, mb.Path, err))
	}
	return
}

// becomeOwner makes this process the mailbox's owner (it runs as root, or
// as that owner already), so that everything it creates is the owner's and
// no path the owner controls is followed as root.
func becomeOwner(owner privsep.Cred) error {
	if err := owner.Switch(); err != nil {
		if errors.Is(err, privsep.ErrNotRoot) {
			return sysexits.New(sysexits.NoPerm, fmt.Errorf("the mailbox belongs to %s: run as root or as that user (%w)", owner, err))
		}
		return sysexits.New(sysexits.NoPerm, err)
	}
	return nil
}

// ensureFolder creates the Maildir and the folder, the way imapd does
// (mailstore: tmp/, new/, cur/, maildirfolder, a uidlist with its
// UIDVALIDITY, missing parents too).
func ensureFolder(root string, o MigrateOptions) error {
	st, err := mailstore.Open(mailstore.Options{Root: root, Hostname: o.Hostname})
	if err != nil {
		return sysexits.New(sysexits.CantCreat, fmt.Errorf("import: %w", err))
	}
	defer st.Close()
	if folderName(o) == "INBOX" {
		return nil
	}
	if err := st.Create(o.Folder, ""); err != nil && !errors.Is(err, mailstore.ErrExists) {
		code := sysexits.CantCreat
		if errors.Is(err, mailstore.ErrBadName) {
			code = sysexits.Usage
		}
		return sysexits.New(code, fmt.Errorf("import: folder %s: %w", o.Folder, err))
	}
	return nil
}
