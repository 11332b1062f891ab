package delivery

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"

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
		return deliverOne(log, d, q.Sender, q.Stdin)
	case q.Mbox != "":
		d := route.Destination{Kind: route.Mbox, Path: q.Mbox, Address: q.Recipient, Original: q.Recipient}
		return deliverOne(log, d, q.Sender, q.Stdin)
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
	for _, d := range dests {
		if d.Kind == route.Remote {
			// deliver has no SMTP client: forwarding is queue-runner's job.
			log.Warn("remote target skipped: deliver only delivers locally; send through sendmail(8) to forward", "address", q.Address, "target", d.Address)
			continue
		}
		if d.Original == "" {
			d.Original = q.Address
		}
		local = append(local, d)
	}
	if len(local) == 0 {
		return sysexits.New(sysexits.NoUser, fmt.Errorf("deliver: %s: no local mailbox (remote targets only)", q.Address))
	}
	if len(local) == 1 {
		return deliverOne(log, local[0], q.Sender, q.Stdin)
	}
	// Several mailboxes: the message is needed once for each.
	msg, err := io.ReadAll(q.Stdin)
	if err != nil {
		return &Error{Temporary: true, Status: "4.3.0", Err: fmt.Errorf("deliver: %w: %w", ErrInput, err)}
	}
	var worst error
	for _, d := range local {
		err := deliverOne(log, d, q.Sender, bytes.NewReader(msg))
		if err != nil && (worst == nil || ExitCode(worst) == sysexits.OK || isTemp(err)) {
			// A temporary failure wins: the caller retries, and a duplicate
			// is better than a loss.
			worst = err
		}
	}
	return worst
}

func isTemp(err error) bool {
	return ExitCode(err) == sysexits.TempFail
}

func deliverOne(log *slog.Logger, d route.Destination, sender string, r io.Reader) error {
	err := Deliver(d, sender, r)
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
