package sendmail

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"letterbox/pkg/address"
	"letterbox/pkg/config"
	"letterbox/pkg/config/cliapp"
	"letterbox/pkg/listen"
	"letterbox/pkg/route"
	"letterbox/pkg/smtpd"
	"letterbox/pkg/spool"
	"letterbox/pkg/submission"
	"letterbox/pkg/sysexits"
)

// Run runs one sendmail(8) invocation after the config is parsed.
//
// root, or the spool's owner, commits the message to the spool itself: it
// checks the local recipients against the users file and aliases and
// writes the trace field naming itself. Anyone else leaves the message in
// the drop directory and needs nothing it cannot read (the users file and
// the aliases are private): queue-runner writes that field from the drop
// file's owner when it takes the file in, and its delivery checks the
// recipients, bouncing unknown ones to the sender.
func Run(c *cli.Context, o *Options) error {
	cm, err := cliapp.Load(c)
	if err != nil {
		return sysexits.New(sysexits.Config, err)
	}
	for _, f := range o.Ignored {
		cm.Log.Debug("ignoring option of other sendmails", "option", f)
	}
	switch o.Op {
	case "list":
		return execQueueRunner(c, "list")
	case "flush":
		return execQueueRunner(c, "flush")
	}
	sp, err := spool.Open(cm.Spool)
	if err != nil {
		return sysexits.New(sysexits.TempFail, fmt.Errorf("sendmail: %w", err))
	}
	if o.Op == "smtp" {
		return sendmailSMTP(cm, sp)
	}
	me := CurrentUser()
	p, err := PrepareMessage(o, os.Stdin, me, cm.Hostname, cm.Domains[0], 35<<20)
	if err != nil {
		return err
	}
	env := &spool.Envelope{From: p.From, Arrived: time.Now(), AuthUser: me.Login}
	for _, r := range p.Recipients {
		env.Recipients = append(env.Recipients, &spool.Recipient{Address: r, State: spool.Pending})
	}
	var id string
	if sp.MaySubmit() {
		if err := checkRecipients(cm, p.Recipients); err != nil {
			return err
		}
		trace := submission.LocalReceived(me.Login, me.UID, cm.Hostname, time.Now())
		id, err = sp.Submit(env, io.MultiReader(strings.NewReader(trace), bytes.NewReader(p.Data)))
	} else {
		id, err = sp.Drop(env, bytes.NewReader(p.Data))
	}
	if err != nil {
		return sysexits.New(sysexits.TempFail, fmt.Errorf("sendmail: queueing the message: %w", err))
	}
	cm.Log.Info("queued", "id", id, "from", p.From, "rcpts", p.Recipients, "size", len(p.Data))
	if o.Verbose {
		fmt.Fprintf(os.Stderr, "sendmail: queued as %s\n", id)
	}
	return nil
}

// checkRecipients checks the local recipients against the router: an
// unknown one is an error (67) and nothing is queued.
func checkRecipients(cm *config.Common, rcpts []string) error {
	rt, _, err := submission.NewRouter(cm)
	if err != nil {
		return sysexits.New(sysexits.Config, err)
	}
	rc := submission.RouterRecipients{Router: rt}
	for _, r := range rcpts {
		a, _, _, perr := address.ParsePath("<"+r+">", true)
		if perr != nil || a.Literal || !cm.IsLocalDomain(a.Domain) {
			continue
		}
		if err := rc.Check(r); err != nil {
			switch {
			case errors.Is(err, route.ErrNoSuchUser):
				return sysexits.New(sysexits.NoUser, fmt.Errorf("sendmail: %s: no such user; nothing was sent", r))
			case errors.Is(err, route.ErrBadAddress), errors.Is(err, route.ErrLoop):
				return sysexits.New(sysexits.DataErr, fmt.Errorf("sendmail: %s: %v; nothing was sent", r, err))
			case errors.Is(err, route.ErrAliasDisabled):
				// A bad :include: file: queue-runner defers the mail
				// until the file is fixed; the caller (cron) would not
				// retry.
				continue
			default:
				return sysexits.New(sysexits.TempFail, fmt.Errorf("sendmail: checking %s: %v; nothing was sent", r, err))
			}
		}
	}
	return nil
}

// sendmailSMTP is -bs: an SMTP dialog on stdin and stdout with smtpd's
// engine, the caller trusted as a local user. One who may not write the
// spool gets the same split as a message on stdin: no recipient checks
// (no users file, no aliases), the drop directory for a queue.
func sendmailSMTP(cm *config.Common, sp *spool.Spool) error {
	var srv *smtpd.Server
	if sp.MaySubmit() {
		var err error
		if srv, err = smtpd.New(cm); err != nil {
			return sysexits.New(sysexits.TempFail, err)
		}
	} else {
		srv = &smtpd.Server{
			Config: smtpd.Config{Hostname: cm.Hostname, IsLocal: cm.IsLocalDomain, PrimaryDomain: cm.Domains[0], Log: cm.Log},
			Queue:  dropQueue{sp},
		}
		srv.Defaults()
	}
	// The peer is a local user on a pipe: it may relay, as with
	// RELAYCLIENT under tcpserver.
	srv.RelayClient = true
	srv.LocalUser = CurrentUser().Login
	conn, err := listen.Stdio()
	if err != nil {
		return sysexits.New(sysexits.IOErr, err)
	}
	srv.ServeConn(conn, smtpd.ModeSMTP)
	return nil
}

// dropQueue queues -bs messages of a user who may not write the spool.
type dropQueue struct{ *spool.Spool }

func (q dropQueue) Submit(env *spool.Envelope, data io.Reader) (string, error) {
	return q.Drop(env, data)
}

// execQueueRunner replaces this process with the queue-runner next to us.
func execQueueRunner(c *cli.Context, sub string) error {
	self, err := os.Executable()
	if err != nil {
		return sysexits.New(sysexits.Software, err)
	}
	qr := filepath.Join(filepath.Dir(self), "queue-runner")
	args := []string{"queue-runner"}
	if f := c.String("config"); f != "" {
		args = append(args, "--config", f)
	}
	args = append(args, sub)
	err = syscall.Exec(qr, args, os.Environ())
	return sysexits.New(sysexits.Unavailable, fmt.Errorf("sendmail: exec %s: %w", qr, err))
}
