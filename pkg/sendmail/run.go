package sendmail

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

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
	case "smtp":
		return sendmailSMTP(cm)
	}
	p, err := PrepareMessage(o, os.Stdin, CurrentUser(), cm.Hostname, cm.Domains[0], 35<<20)
	if err != nil {
		return err
	}
	rt, _, err := submission.NewRouter(cm)
	if err != nil {
		return sysexits.New(sysexits.Config, err)
	}
	rc := submission.RouterRecipients{Router: rt}
	for _, r := range p.Recipients {
		a, _, _, perr := submission.ParsePath("<"+r+">", true)
		if perr != nil || a.Literal || !cm.IsLocalDomain(a.Domain) {
			continue
		}
		if err := rc.Check(r); err != nil {
			switch {
			case errors.Is(err, route.ErrNoSuchUser):
				return sysexits.New(sysexits.NoUser, fmt.Errorf("sendmail: %s: no such user; nothing was sent", r))
			case errors.Is(err, route.ErrBadAddress), errors.Is(err, route.ErrLoop):
				return sysexits.New(sysexits.DataErr, fmt.Errorf("sendmail: %s: %v; nothing was sent", r, err))
			default:
				return sysexits.New(sysexits.TempFail, fmt.Errorf("sendmail: checking %s: %v; nothing was sent", r, err))
			}
		}
	}
	env := &spool.Envelope{From: p.From, Arrived: time.Now(), Size: int64(len(p.Data)), AuthUser: CurrentUser().Login}
	for _, r := range p.Recipients {
		env.Recipients = append(env.Recipients, &spool.Recipient{Address: r, State: spool.Pending})
	}
	id, err := inject(cm.Spool, env, p.Data)
	if err != nil {
		return err
	}
	cm.Log.Info("queued", "id", id, "from", p.From, "rcpts", p.Recipients, "size", len(p.Data))
	if o.Verbose {
		fmt.Fprintf(os.Stderr, "sendmail: queued as %s\n", id)
	}
	return nil
}

// inject commits the message to the spool; a user who may not write the
// spool leaves it in the drop directory instead (Postfix's postdrop
// design), which queue-runner checks and takes in.
func inject(dir string, env *spool.Envelope, data []byte) (string, error) {
	sp, err := spool.Open(dir)
	if err != nil {
		return "", sysexits.New(sysexits.TempFail, fmt.Errorf("sendmail: %w", err))
	}
	id, err := sp.Submit(env, bytes.NewReader(data))
	if errors.Is(err, os.ErrPermission) {
		id, err = sp.Drop(env, bytes.NewReader(data))
	}
	if err != nil {
		return "", sysexits.New(sysexits.TempFail, fmt.Errorf("sendmail: queueing the message: %w", err))
	}
	return id, nil
}

func sendmailSMTP(cm *config.Common) error {
	srv, err := smtpd.New(cm)
	if err != nil {
		return sysexits.New(sysexits.TempFail, err)
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
