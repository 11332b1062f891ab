// Package route decides where a recipient address goes: a local Maildir or
// mbox, a pipe command, or a remote address, after the users file and the
// aliases (recursively, with loop protection). It is the one place that knows
// local domains, postmaster, +detail and catch-alls.
//
// The order for local@domain in a local domain (first match wins):
//
//  1. the aliases' full-address key local@domain, then the local-part key;
//  2. the users file entry local@domain;
//  3. for local = base+detail: steps 1 and 2 for base (a user's mail then
//     goes to the Maildir++ folder .detail when it exists, else INBOX);
//  4. postmaster (any case): the config key `postmaster`, else the Maildir
//     <mail-root>/postmaster/;
//  5. the aliases' @domain catch-all;
//  6. ErrNoSuchUser.
//
// So users win over a catch-all, and postmaster always resolves. Alias
// targets are expanded recursively; an unqualified target (bob) is in the
// first local domain, as Postfix appends $myorigin; a target naming the alias itself (user: user, other)
// is the user's own mailbox, as in sendmail, and so is \user; any other cycle
// is ErrLoop, as is nesting deeper than MaxDepth. Duplicate destinations are
// removed.
//
// CONTRACT (shared by smtpd, deliver, queue-runner): the exported names
// below are relied on by other packages; add to them, don't change them.
package route

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"letterbox/pkg/address"
	"letterbox/pkg/aliases"
	"letterbox/pkg/config"
	"letterbox/pkg/users"
)

// Kind is what a Destination is.
type Kind int

const (
	Maildir Kind = iota + 1 // Path is a Maildir directory (Folder: a Maildir++ folder name for +detail, "" = INBOX)
	Mbox                    // Path is an mbox file
	Pipe                    // Command is run with the message on stdin
	Remote                  // Address is delivered by SMTP
)

func (k Kind) String() string {
	switch k {
	case Maildir:
		return "maildir"
	case Mbox:
		return "mbox"
	case Pipe:
		return "pipe"
	case Remote:
		return "remote"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Destination is one place a message for a recipient must go.
type Destination struct {
	Kind     Kind
	Path     string // Maildir or mbox
	Folder   string // Maildir++ folder (without the leading dot), when +detail named an existing one
	Command  string // Pipe
	Address  string // the final address: Delivered-To for local kinds, RCPT TO for Remote
	Original string // the address the sender used (ORIGINAL_RECIPIENT)
	User     *users.User
	// AliasOwner is the uid of the file (the aliases file or an :include:
	// file) a Pipe, Mbox or Maildir destination's |command, /file or
	// /dir/ target was read from: root's targets run as the config key
	// default-privs, anyone else's as that uid. -1 when the destination
	// is no such alias target (a user's mailbox, a remote address), and
	// also for one of a table whose file has no owner (aliases.Parse):
	// treat that as root's. Destinations made outside this package must
	// set it too (its zero value is root).
	AliasOwner int
}

// Errors Resolve returns; test them with errors.Is.
var (
	ErrNoSuchUser = errors.New("no such user")      // permanent: 550 5.1.1
	ErrLoop       = errors.New("alias loop")        // permanent: 5.4.6
	ErrBadAddress = errors.New("malformed address") // permanent: 501 5.1.3
	// ErrNotAllowed: an alias names a |command or a file, and this Router
	// has AllowPipes false (permanent; a configuration matter).
	ErrNotAllowed = errors.New("pipe and file destinations not allowed")
	// ErrAliasDisabled: an alias on the way is disabled by a bad :include:
	// file (temporary, 451 4.3.0: the mail waits until the file is fixed).
	// It is aliases.ErrBadInclude.
	ErrAliasDisabled = aliases.ErrBadInclude
)

// MaxDepth is how deep aliases may nest.
const MaxDepth = 20

// Router resolves addresses.
type Router struct {
	Domains []string // local domains, lower case
	// RelayDomains are the domains we are a backup MX for (relay.go).
	RelayDomains []string
	MailRoot     string
	Postmaster   string // config key `postmaster`
	Users        *users.DB
	Aliases      *aliases.Table
	// AllowPipes allows |command and /file targets (only from the aliases
	// file, never from a user-controlled source).
	AllowPipes bool
}

// New returns a Router for the configuration's domains, mail root,
// postmaster, users file and aliases file. The users and aliases files are
// re-read when they change.
func New(cm *config.Common, allowPipes bool) (*Router, error) {
	db, err := users.Load(cm.Users)
	if err != nil {
		return nil, fmt.Errorf("route: %w", err)
	}
	al, err := aliases.LoadLog(cm.Aliases, cm.Log)
	if err != nil {
		return nil, fmt.Errorf("route: %w", err)
	}
	domains := make([]string, len(cm.Domains))
	for i, d := range cm.Domains {
		domains[i] = strings.TrimSuffix(address.LowerASCII(d), ".")
	}
	return &Router{Domains: domains, RelayDomains: cm.RelayDomains, MailRoot: cm.MailRoot, Postmaster: cm.Postmaster,
		Users: db, Aliases: al, AllowPipes: allowPipes}, nil
}

// IsLocal reports whether domain is a local domain (case-insensitive, a
// trailing dot ignored).
func (r *Router) IsLocal(domain string) bool {
	domain = strings.TrimSuffix(address.LowerASCII(domain), ".")
	if domain == "" {
		return false
	}
	for _, d := range r.Domains {
		if strings.TrimSuffix(address.LowerASCII(d), ".") == domain {
			return true
		}
	}
	return false
}

// Resolve returns the destinations of addr, after aliases. A remote addr
// resolves to one Remote destination.
func (r *Router) Resolve(addr string) ([]Destination, error) {
	return r.resolve(addr, false)
}

// Exists reports whether addr would resolve (nil), or why not: ErrBadAddress,
// ErrNoSuchUser, ErrLoop. It is Resolve for smtpd's RCPT check: pipe and
// file targets count as existing even when this Router may not run them.
func (r *Router) Exists(addr string) error {
	_, err := r.resolve(addr, true)
	return err
}

// Split parses addr as Resolve does and returns its local part (unquoted)
// and its domain (lower case, no trailing dot); a bare "postmaster" gets the
// first local domain.
func (r *Router) Split(addr string) (local, domain string, err error) {
	local, domain, err = parseAddress(addr)
	if err != nil {
		return "", "", err
	}
	if domain == "" {
		// RFC 5321 §4.1.1.3: RCPT TO:<Postmaster> without a domain must be
		// accepted. Nothing else is complete without one.
		if address.LowerASCII(local) != "postmaster" || len(r.Domains) == 0 {
			return "", "", fmt.Errorf("%w: %q: no domain", ErrBadAddress, addr)
		}
		domain = r.primary()
	}
	return local, domain, nil
}

func (r *Router) resolve(addr string, check bool) ([]Destination, error) {
	local, domain, err := r.Split(addr)
	if err != nil {
		return nil, err
	}
	if !r.IsLocal(domain) {
		return []Destination{{Kind: Remote, Address: address.Format(local, domain), Original: addr, AliasOwner: -1}}, nil
	}
	rs := &resolver{r: r, original: addr, check: check, stack: map[string]bool{}, seen: map[string]bool{}}
	if err := rs.local(local, domain, "", 0); err != nil {
		return nil, err
	}
	return rs.out, nil
}

type resolver struct {
	r        *Router
	original string
	check    bool
	stack    map[string]bool // keys being expanded: a repeat is a cycle
	seen     map[string]bool // destinations already in out
	out      []Destination
}

func key(local, domain string) string { return address.LowerASCII(local) + "@" + domain }

// local resolves local@domain in a local domain; detail is a +detail carried
// over from an alias (user+x → alias user → user's own mailbox, folder x).
func (rs *resolver) local(local, domain, detail string, depth int) error {
	if depth > MaxDepth {
		return fmt.Errorf("%w: %s: aliases nest deeper than %d", ErrLoop, rs.original, MaxDepth)
	}
	k := key(local, domain)
	if rs.stack[k] {
		return fmt.Errorf("%w: %s: %s expands to itself", ErrLoop, rs.original, k)
	}
	rs.stack[k] = true
	defer delete(rs.stack, k)

	if a, ok := rs.r.Aliases.FindExact(local, domain); ok {
		return rs.expand(k, domain, detail, a, depth)
	}
	if u := rs.r.Users.Lookup(address.Format(local, domain)); u != nil {
		return rs.user(u, detail)
	}
	if base, det, ok := strings.Cut(local, "+"); ok && base != "" {
		bk := key(base, domain)
		if !rs.stack[bk] {
			rs.stack[bk] = true
			defer delete(rs.stack, bk)
			if a, ok := rs.r.Aliases.FindExact(base, domain); ok {
				return rs.expand(bk, domain, det, a, depth)
			}
			if u := rs.r.Users.Lookup(address.Format(base, domain)); u != nil {
				return rs.user(u, det)
			}
		}
		local = base
	}
	if address.LowerASCII(local) == "postmaster" {
		return rs.postmaster(domain, depth)
	}
	ck := "@" + domain
	if a, ok := rs.r.Aliases.FindCatchAll(domain); ok {
		if rs.stack[ck] {
			// @d: x@d with no x: the catch-all feeds itself.
			return fmt.Errorf("%w: %s: catch-all %s reaches itself via %s", ErrLoop, rs.original, ck, address.Format(local, domain))
		}
		rs.stack[ck] = true
		defer delete(rs.stack, ck)
		return rs.expand(ck, domain, "", a, depth)
	}
	return fmt.Errorf("%w: %s", ErrNoSuchUser, address.Format(local, domain))
}

// expand resolves the targets of the alias k in domain.
func (rs *resolver) expand(k, domain, detail string, a aliases.Alias, depth int) error {
	if a.Err != nil {
		// Disabled by a bad :include: file: deferred, not bounced and not
		// delivered to the rest of its targets (which may be incomplete).
		return fmt.Errorf("route: %s: %w", rs.original, a.Err)
	}
	for _, tg := range a.Targets {
		t := tg.Value
		kind, v := aliases.Classify(t)
		switch kind {
		case aliases.Command, aliases.File, aliases.Dir:
			if !rs.r.AllowPipes && !rs.check {
				return fmt.Errorf("%w: alias %s: %q", ErrNotAllowed, k, t)
			}
			d := Destination{Address: k, Original: rs.original, AliasOwner: tg.Owner}
			switch kind {
			case aliases.Command:
				if v == "" {
					return fmt.Errorf("%w: alias %s: empty command", ErrBadAddress, k)
				}
				d.Kind, d.Command = Pipe, v
			case aliases.File:
				d.Kind, d.Path = Mbox, filepath.Clean(v)
			default:
				d.Kind, d.Path = Maildir, filepath.Clean(v)
			}
			if strings.HasPrefix(k, "@") {
				d.Address = rs.original
			}
			rs.add(d)
		case aliases.Local:
			tl, td, err := rs.target(v, domain, k)
			if err != nil {
				return err
			}
			if err := rs.own(tl, td, detail, depth); err != nil {
				return err
			}
		case aliases.Address:
			tl, td, err := rs.target(v, domain, k)
			if err != nil {
				return err
			}
			if !rs.r.IsLocal(td) {
				rs.add(Destination{Kind: Remote, Address: address.Format(tl, td), Original: rs.original, AliasOwner: -1})
				continue
			}
			if key(tl, td) == k {
				// user: user, other — the user's own mailbox.
				if err := rs.own(tl, td, detail, depth); err != nil {
					return err
				}
				continue
			}
			if err := rs.local(tl, td, "", depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// primary is the first local domain.
func (r *Router) primary() string {
	if len(r.Domains) == 0 {
		return ""
	}
	return strings.TrimSuffix(address.LowerASCII(r.Domains[0]), ".")
}

// target parses an alias target address; an unqualified name is in the
// first local domain.
func (rs *resolver) target(v, domain, k string) (string, string, error) {
	tl, td, err := parseAddress(v)
	if err != nil {
		return "", "", fmt.Errorf("alias %s: %w", k, err)
	}
	if td == "" {
		// As Postfix appends $myorigin: the first local domain, whatever
		// domain the alias was reached in, so that "root: bob" means one
		// bob everywhere.
		td = rs.r.primary()
	}
	return tl, td, nil
}

// own resolves local@domain to the user's own mailbox, without aliases.
func (rs *resolver) own(local, domain, detail string, depth int) error {
	if u := rs.r.Users.Lookup(address.Format(local, domain)); u != nil {
		return rs.user(u, detail)
	}
	if address.LowerASCII(local) == "postmaster" {
		return rs.postmaster(domain, depth)
	}
	return fmt.Errorf("%w: %s", ErrNoSuchUser, address.Format(local, domain))
}

// postmaster is the fallback for postmaster@domain without alias or user.
func (rs *resolver) postmaster(domain string, depth int) error {
	if pm := rs.r.Postmaster; pm != "" {
		pl, pd, err := rs.r.Split(pm)
		if err != nil {
			return fmt.Errorf("route: config postmaster: %w", err)
		}
		if !rs.r.IsLocal(pd) {
			rs.add(Destination{Kind: Remote, Address: address.Format(pl, pd), Original: rs.original, AliasOwner: -1})
			return nil
		}
		if !rs.stack[key(pl, pd)] {
			return rs.local(pl, pd, "", depth+1)
		}
	}
	rs.add(Destination{Kind: Maildir, Path: filepath.Join(rs.r.MailRoot, "postmaster"),
		Address: "postmaster@" + domain, Original: rs.original, AliasOwner: -1})
	return nil
}

// user adds u's mailbox; detail picks the Maildir++ folder .detail when it
// exists.
func (rs *resolver) user(u *users.User, detail string) error {
	mb := u.Mailbox(rs.r.MailRoot)
	d := Destination{Address: u.Name, Original: rs.original, User: u, Path: mb.Path, AliasOwner: -1}
	if detail != "" {
		d.Address = address.Format(u.Local()+"+"+detail, u.Domain())
	}
	if mb.Kind == "mbox" {
		d.Kind = Mbox
	} else {
		d.Kind = Maildir
		if folderOK(detail) {
			// A folder is a real directory: a symlink there is the
			// user's, and the mail goes to INBOX rather than through it.
			if fi, err := os.Lstat(filepath.Join(mb.Path, "."+detail)); err == nil && fi.IsDir() {
				d.Folder = detail
			}
		}
	}
	rs.add(d)
	return nil
}

// folderOK accepts +detail values that can only name a folder directly under
// the Maildir: no slash, no leading dot (Maildir++ folders are .name, and
// ".." must not be reachable), no control characters.
func folderOK(s string) bool {
	if s == "" || s[0] == '.' || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for _, c := range []byte(s) {
		if c < ' ' || c == 0x7f || c == '/' || c == '\\' {
			return false
		}
	}
	return true
}

func (rs *resolver) add(d Destination) {
	var id string
	switch d.Kind {
	case Maildir:
		id = "m\x00" + d.Path + "\x00" + d.Folder
	case Mbox:
		id = "f\x00" + d.Path
	case Pipe:
		id = "p\x00" + d.Command
	case Remote:
		id = "r\x00" + d.Address
		if l, dom, err := parseAddress(d.Address); err == nil {
			id = "r\x00" + l + "@" + dom
		}
	}
	if rs.seen[id] {
		return
	}
	rs.seen[id] = true
	rs.out = append(rs.out, d)
}

// parseAddress parses an address as the router takes it (address.Parse):
// the local part unquoted, the domain canonical or "" for a lone local
// part. On top of the syntax, the router's policy: no address literals (we
// cannot tell whether one names this host, and guessing wrong would make a
// local-looking address remote or the reverse) and the limits of RFC 5321
// §4.5.3.1. Errors wrap ErrBadAddress.
func parseAddress(addr string) (local, domain string, err error) {
	a, err := address.Parse(addr)
	if err == nil && a.Literal {
		err = errors.New("domain literals are not accepted")
	}
	if err == nil {
		err = a.CheckLimits()
	}
	if err != nil {
		return "", "", fmt.Errorf("%w: %q: %v", ErrBadAddress, addr, err)
	}
	return a.Local, a.Domain, nil
}
