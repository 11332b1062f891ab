package delivery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"

	"letterbox/pkg/privsep"
	"letterbox/pkg/route"
	"letterbox/pkg/sysexits"
)

// Request is one run of deliver(8): the message on Stdin goes to the
// Maildir, the mbox, or the local address Address (resolved by Router).
type Request struct {
	Sender    string
	Recipient string // Delivered-To for --maildir/--mbox ("" = none)
	Maildir   string
	Mbox      string
	Address   string
	Stdin     io.Reader
	Log       *slog.Logger
	// Router returns the router for the ADDRESS form; called only then, so
	// the users file and aliases are not read for --maildir/--mbox.
	Router func() (*route.Router, error)
	// Owners says whom the ADDRESS form's deliveries run as when deliver
	// runs as root (filled in by Router, which reads the configuration).
	Owners *Owners
	// Sendmail is the sendmail(8) command line that forwards to the remote
	// targets of an alias (the recipients are appended); nil: forwarding
	// fails temporarily.
	Sendmail []string
}

// Run performs the request; ExitCode(err) is the command's exit status.
func Run(q Request) error {
	n := 0
	for _, s := range []string{q.Maildir, q.Mbox, q.Address} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return sysexits.New(sysexits.Usage, errors.New("deliver: give exactly one of --maildir DIR, --mbox FILE or ADDRESS"))
	}
	log := q.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	switch {
	case q.Maildir != "":
		d := route.Destination{Kind: route.Maildir, Path: q.Maildir, Address: q.Recipient, Original: q.Recipient}
		return deliverOne(log, pathOwner, d, q.Sender, q.Stdin)
	case q.Mbox != "":
		d := route.Destination{Kind: route.Mbox, Path: q.Mbox, Address: q.Recipient, Original: q.Recipient}
		return deliverOne(log, pathOwner, d, q.Sender, q.Stdin)
	}
	if q.Router == nil {
		return sysexits.New(sysexits.Software, errors.New("deliver: no router"))
	}
	r, err := q.Router()
	if err != nil {
		return sysexits.New(sysexits.TempFail, err)
	}
	dests, err := r.Resolve(q.Address)
	if err != nil {
		return fmt.Errorf("deliver: %s: %w", q.Address, err)
	}
	var local []route.Destination
	var remote []string
	for _, d := range dests {
		if d.Kind == route.Remote {
			remote = append(remote, d.Address)
			continue
		}
		if d.Original == "" {
			d.Original = q.Address
		}
		local = append(local, d)
	}
	owners := Owners{}
	if q.Owners != nil {
		owners = *q.Owners
	}
	owner := owners.Owner
	if len(local) == 1 && len(remote) == 0 {
		return deliverOne(log, owner, local[0], q.Sender, q.Stdin)
	}
	// Several targets: the message is needed once for each.
	msg, err := io.ReadAll(q.Stdin)
	if err != nil {
		return &Error{Temporary: true, Status: "4.3.0", Err: fmt.Errorf("deliver: %w: %w", ErrInput, err)}
	}
	var worst error
	note := func(err error) {
		if err != nil && (worst == nil || isTemp(err)) {
			// A temporary failure wins: the caller retries, and a duplicate
			// is better than a loss.
			worst = err
		}
	}
	for _, d := range local {
		note(deliverOne(log, owner, d, q.Sender, bytes.NewReader(msg)))
	}
	if len(remote) > 0 {
		note(forward(log, q, remote, msg))
	}
	return worst
}

// forward hands the message for remote alias targets to sendmail(8), with
// a Delivered-To for the local address so that a forwarding loop back to
// us is caught.
func forward(log *slog.Logger, q Request, to []string, msg []byte) error {
	if len(q.Sendmail) == 0 {
		return &Error{Temporary: true, Status: "4.3.0", Err: fmt.Errorf("deliver: %s: no sendmail to forward to %s", q.Address, strings.Join(to, ", "))}
	}
	sender := q.Sender
	if sender == "" {
		sender = "<>"
	}
	args := append(append([]string{}, q.Sendmail[1:]...), "-i", "-f", sender)
	for _, a := range to {
		if strings.HasPrefix(a, "-") {
			return &Error{Status: "5.1.3", Err: fmt.Errorf("deliver: %w: forward target %q", route.ErrBadAddress, a)}
		}
		args = append(args, a)
	}
	// Return-Path belongs to final delivery, not to a relayed message.
	r, err := prepare("", q.Address, bytes.NewReader(msg), false)
	if err != nil {
		return err
	}
	cmd := exec.Command(q.Sendmail[0], args...)
	cmd.Stdin = r
	out, err := cmd.CombinedOutput()
	if err != nil {
		log.Error("forward failed", "from", q.Address, "to", strings.Join(to, ","), "err", err, "output", strings.TrimSpace(string(out)))
		return &Error{Temporary: true, Status: "4.3.0", Err: fmt.Errorf("deliver: forward %s to %s: %v: %s", q.Address, strings.Join(to, ", "), err, strings.TrimSpace(string(out)))}
	}
	log.Info("forwarded", "from", q.Address, "to", strings.Join(to, ","))
	return nil
}

func isTemp(err error) bool {
	return ExitCode(err) == sysexits.TempFail
}

// pathOwner is PathOwner for a destination: deliver --maildir/--mbox.
func pathOwner(d route.Destination) (privsep.Cred, error) { return PathOwner(d.Path) }

// deliverOne delivers to d, as owner(d) when this process is root.
func deliverOne(log *slog.Logger, owner func(route.Destination) (privsep.Cred, error), d route.Destination, sender string, r io.Reader) error {
	err := deliverAsOwner(context.Background(), owner, d, sender, r, nil)
	where := d.Path
	if d.Kind == route.Pipe {
		where = "|" + d.Command
	} else if d.Folder != "" {
		where += " folder=" + d.Folder
	}
	if err != nil {
		var de *Error
		status := ""
		if errors.As(err, &de) {
			status = de.Status
		}
		log.Error("delivery failed", "to", d.Address, "mailbox", where, "status", status, "err", err)
		return err
	}
	log.Info("delivered", "to", d.Address, "mailbox", where, "from", sender)
	return nil
}
