package delivery

// Deliveries as the mailbox's owner (DESIGN.md § Guarantees, issue 15).
//
// A root process never writes into a place a user controls: it would
// follow the user's symlinks with root's rights. queue-runner and deliver,
// when they run as root, make each local delivery in a child process with
// the owner's uid, gid and groups, as qmail-local and Postfix local(8) do.
// The child is this same executable (/proc/self/exe), started with one
// environment variable that holds the destination (LETTERBOX_DELIVERY), the
// message on its stdin (the spool's file itself when it is one: the child
// can read that message and nothing else of the spool), and its result
// written to stdout as one JSON object. It runs in /, in its own process
// group (a timeout kills the pipe commands it started too), with an
// environment of PATH, TZ and the locale from the parent and HOME, USER,
// LOGNAME and SHELL of the owner.
//
// Who the owner is:
//   - a user's mailbox: privsep.MailboxOwner (the users file's uid/gid,
//     else the home directory's owner, else mail-user);
//   - a |command, /file or /dir/ target of an alias: the owner of the
//     aliases or :include: file it came from, or default-privs when that is
//     root (Postfix's rule);
//   - deliver --maildir/--mbox run by root: the owner of the mailbox (of
//     its directory when it does not exist yet).
//
// A process that is not root delivers in-process: the kernel's permissions
// are then the boundary. Root-owned mailboxes are delivered in-process too.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"letterbox/pkg/maildir"
	"letterbox/pkg/mbox"
	"letterbox/pkg/privsep"
	"letterbox/pkg/route"
)

// Owners decides whose credentials a local delivery runs with.
type Owners struct {
	MailUser     string // config key mail-user: owner of the virtual mailboxes
	DefaultPrivs string // config key default-privs ("" = nobody)
	// DirSync, when set, is shared by the Maildir deliveries Deliver makes
	// in this process: concurrent deliveries into one Maildir share the
	// fsyncs of its new/ (queue-runner). A delivery made in a child
	// process (another owner, when this one is root) fsyncs on its own.
	DirSync *maildir.DirSyncer
}

// ErrDefaultPrivsRoot: default-privs names root, which would run what a
// root-owned aliases file says with root's rights after all.
var ErrDefaultPrivsRoot = errors.New("default-privs must not be root")

// Owner returns who d's delivery runs as (d not a Remote destination).
func (o Owners) Owner(d route.Destination) (privsep.Cred, error) {
	if d.User != nil {
		return privsep.MailboxOwner(privsep.Mailbox{UID: d.User.UID, GID: d.User.GID, Home: d.User.Home, Path: d.Path, MailUser: o.MailUser})
	}
	if d.AliasOwner > 0 {
		return uidCred(uint32(d.AliasOwner), 0, false)
	}
	name := o.DefaultPrivs
	if name == "" {
		name = "nobody"
	}
	c, err := privsep.LookupUser(name)
	if err != nil {
		return privsep.Cred{}, err
	}
	if c.UID == 0 {
		return privsep.Cred{}, fmt.Errorf("privsep: %s: %w", name, ErrDefaultPrivsRoot)
	}
	return c, nil
}

// PathOwner is the owner of the mailbox at path (a Maildir or an mbox,
// looked at without following a symlink), or of the nearest directory
// above it that exists when it does not exist yet: whom deliver
// --maildir/--mbox run by root delivers as.
func PathOwner(path string) (privsep.Cred, error) {
	var st syscall.Stat_t
	p := filepath.Clean(path)
	for {
		err := syscall.Lstat(p, &st)
		if err == nil {
			return uidCred(st.Uid, st.Gid, true)
		}
		if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENOTDIR) || filepath.Dir(p) == p {
			return privsep.Cred{}, fmt.Errorf("delivery: owner of %s: %w", path, err)
		}
		p = filepath.Dir(p)
	}
}

// uidCred is the credentials of uid from the system's user database (its
// groups too); a uid without an entry gets gid alone when haveGID.
func uidCred(uid, gid uint32, haveGID bool) (privsep.Cred, error) {
	if uid == 0 && haveGID {
		// Root's mailbox is delivered to in-process (DeliverAs): no
		// groups to look up, and no user database to read per message.
		return privsep.Cred{UID: 0, GID: gid}, nil
	}
	c, err := privsep.LookupUser(strconv.FormatUint(uint64(uid), 10))
	if err == nil {
		return c, nil
	}
	if !haveGID {
		return privsep.Cred{}, err
	}
	return privsep.Cred{UID: uid, GID: gid}, nil
}

// Deliver is DeliverContext made as d's owner: in a child process with the
// owner's credentials when this process is root and the owner is not, else
// in this process.
func (o Owners) Deliver(ctx context.Context, d route.Destination, sender string, msg io.Reader) error {
	return deliverAsOwner(ctx, o.Owner, d, sender, msg, o.DirSync)
}

// deliverAsOwner is DeliverContext, made as owner(d) when this process is
// root: the one place where root decides whom a delivery runs as.
// In-process Maildir deliveries fsync new/ through ds (nil: on their own).
func deliverAsOwner(ctx context.Context, owner func(route.Destination) (privsep.Cred, error), d route.Destination, sender string, msg io.Reader, ds *maildir.DirSyncer) error {
	if !privsep.IsRoot() {
		return deliverContext(ctx, d, sender, msg, ds)
	}
	cred, err := owner(d)
	if err != nil {
		return &Error{Temporary: true, Status: "4.3.0", Err: fmt.Errorf("delivery: %s: the mailbox's owner: %w", d.Address, err)}
	}
	return deliverAs(ctx, cred, d, sender, msg, ds)
}

// DeliverAs is DeliverContext run with cred's credentials: in a child
// process, unless cred is root (or this process already runs as cred).
func DeliverAs(ctx context.Context, cred privsep.Cred, d route.Destination, sender string, msg io.Reader) error {
	return deliverAs(ctx, cred, d, sender, msg, nil)
}

// deliverAs is DeliverAs; a delivery in this process fsyncs new/ through
// ds (nil: on its own), one in a child process on its own.
func deliverAs(ctx context.Context, cred privsep.Cred, d route.Destination, sender string, msg io.Reader, ds *maildir.DirSyncer) error {
	if cred.UID == 0 || !privsep.IsRoot() {
		return deliverContext(ctx, d, sender, msg, ds)
	}
	req := childRequest{Kind: d.Kind, Path: d.Path, Folder: d.Folder, Command: d.Command,
		Address: d.Address, Original: d.Original, Sender: sender}
	if dl, ok := ctx.Deadline(); ok {
		req.Deadline = dl
	}
	enc, err := json.Marshal(req)
	if err != nil {
		return &Error{Temporary: true, Status: "4.3.0", Err: fmt.Errorf("delivery: %s: %w", d.Address, err)}
	}
	home := "/"
	if d.User != nil && filepath.IsAbs(d.User.Home) {
		home = d.User.Home
	} else if u, err := user.LookupId(strconv.FormatUint(uint64(cred.UID), 10)); err == nil && filepath.IsAbs(u.HomeDir) {
		home = u.HomeDir
	}
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args = []string{"letterbox-deliver"}
	cmd.Env = append(childEnv(cred, home), childEnvVar+"="+string(enc))
	cmd.Dir = "/"
	cmd.Stdin = msg
	var out, stderr limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	attr := cred.SysProcAttr()
	attr.Setpgid = true
	cmd.SysProcAttr = attr
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	var res childResult
	if jerr := json.Unmarshal(bytes.TrimSpace(out.b.Bytes()), &res); jerr != nil {
		why := strings.TrimSpace(stderr.b.String())
		if why == "" && runErr != nil {
			why = runErr.Error()
		}
		return &Error{Temporary: true, Status: "4.3.0", Err: fmt.Errorf("delivery: %s: the delivery as %s gave no result: %s", d.Address, cred, why)}
	}
	return res.err()
}

// childEnvVar holds a child's request; its presence makes the process the
// child (IsOwnerChild).
const childEnvVar = "LETTERBOX_DELIVERY"

// childEnv is the environment of a delivery as cred: what a pipe command
// may rely on, nothing else of root's.
func childEnv(cred privsep.Cred, home string) []string {
	env := []string{"HOME=" + home, "SHELL=/bin/sh"}
	if cred.Name != "" {
		env = append(env, "USER="+cred.Name, "LOGNAME="+cred.Name)
	}
	path := "PATH=/usr/local/bin:/usr/bin:/bin"
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "PATH":
			path = kv
		case k == "TZ", k == "LANG", strings.HasPrefix(k, "LC_"), k == "GOCOVERDIR":
			env = append(env, kv)
		}
	}
	return append(env, path)
}

// childRequest is what a child delivers: a route.Destination without the
// user's record (it holds the password hash), and the sender.
type childRequest struct {
	Kind     route.Kind
	Path     string    `json:",omitempty"`
	Folder   string    `json:",omitempty"`
	Command  string    `json:",omitempty"`
	Address  string    `json:",omitempty"`
	Original string    `json:",omitempty"`
	Sender   string    `json:",omitempty"`
	Deadline time.Time `json:",omitempty"`
}

// childResult is a child's outcome; an error keeps the sentinels that
// callers test with errors.Is (ExitCode, the queue's outcome).
type childResult struct {
	OK        bool
	Temporary bool     `json:",omitempty"`
	Status    string   `json:",omitempty"`
	Error     string   `json:",omitempty"`
	Is        []string `json:",omitempty"`
}

// sentinels are the errors a child's result names by key.
var sentinels = map[string]error{
	"loop": ErrLoop, "cantcreate": ErrCantCreate, "input": ErrInput, "pipe": ErrPipe,
	"permission": os.ErrPermission, "unsafe-maildir": maildir.ErrUnsafe, "unsafe-mbox": mbox.ErrUnsafe,
	"nospace": syscall.ENOSPC, "quota": syscall.EDQUOT,
}

func resultOf(err error) childResult {
	if err == nil {
		return childResult{OK: true}
	}
	r := childResult{Temporary: true, Status: "4.3.0", Error: err.Error()}
	var de *Error
	if errors.As(err, &de) {
		r.Temporary, r.Status = de.Temporary, de.Status
	}
	for k, s := range sentinels {
		if errors.Is(err, s) {
			r.Is = append(r.Is, k)
		}
	}
	return r
}

func (r childResult) err() error {
	if r.OK {
		return nil
	}
	e := &childError{text: r.Error}
	for _, k := range r.Is {
		if s, ok := sentinels[k]; ok {
			e.is = append(e.is, s)
		}
	}
	return &Error{Temporary: r.Temporary, Status: r.Status, Err: e}
}

// childError is an error reported by a child: its text and the sentinels
// it wrapped.
type childError struct {
	text string
	is   []error
}

func (e *childError) Error() string { return e.text }

func (e *childError) Is(target error) bool {
	for _, s := range e.is {
		if s == target {
			return true
		}
	}
	return false
}

// IsOwnerChild reports whether this process was started by DeliverAs; its
// main must then call OwnerChildMain before anything else.
func IsOwnerChild() bool { return os.Getenv(childEnvVar) != "" }

// OwnerChildMain makes the delivery a DeliverAs parent asked for, writes the
// result to stdout and returns the exit status (0 when a result was
// written).
func OwnerChildMain() int {
	var req childRequest
	err := json.Unmarshal([]byte(os.Getenv(childEnvVar)), &req)
	os.Unsetenv(childEnvVar)
	if err == nil {
		ctx := context.Background()
		if !req.Deadline.IsZero() {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, req.Deadline)
			defer cancel()
		}
		d := route.Destination{Kind: req.Kind, Path: req.Path, Folder: req.Folder, Command: req.Command,
			Address: req.Address, Original: req.Original}
		err = DeliverContext(ctx, d, req.Sender, os.Stdin)
	} else {
		err = fmt.Errorf("delivery: the request from the parent: %w", err)
	}
	if werr := json.NewEncoder(os.Stdout).Encode(resultOf(err)); werr != nil {
		fmt.Fprintln(os.Stderr, "delivery: writing the result:", werr)
		return 75
	}
	return 0
}
