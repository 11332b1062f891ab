// Command deliver is the local delivery agent: one message on stdin into a
// Maildir, an mbox, or a local address's mailbox. See deliver(8).
//
// It runs once per message, so its start-up is its cost: it parses its
// command line with config's lean parser rather than urfave/cli, and links
// nothing it does not need (pkg/config's TestDeliverDeps keeps it so).
//
// updatemaxprocs is off (as for any module older than Go 1.25, and for the
// Go floor of bench/deliver.sh): it starts a goroutine that follows the
// CPU limit to change GOMAXPROCS, of no use to a process that lives a few
// milliseconds, and its start cost deliver 5 page faults a message.
//
//go:debug updatemaxprocs=0
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"letterbox/pkg/config"
	"letterbox/pkg/delivery"
	"letterbox/pkg/route"
	"letterbox/pkg/sysexits"
)

// Flags are deliver's own flags; the common ones come from config.
func Flags() []config.Flag {
	return []config.Flag{
		{Name: "sender", Aliases: []string{"f"}, EnvVars: []string{"SENDER"}, Usage: "envelope `SENDER` (Return-Path)"},
		{Name: "recipient", Aliases: []string{"a"}, EnvVars: []string{"RECIPIENT"}, Usage: "envelope `RECIPIENT` (Delivered-To)"},
		{Name: "maildir", Usage: "deliver into the Maildir `DIR` (created if missing)"},
		{Name: "mbox", Usage: "append to the mbox `FILE`"},
	}
}

func main() {
	if delivery.IsOwnerChild() {
		os.Exit(delivery.OwnerChildMain())
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	p := config.NewLean("deliver", "deliver one message from stdin into a Maildir, an mbox or a local address's mailbox",
		"[ADDRESS]", Flags())
	p.Stdout, p.Stderr = stdout, stderr
	set, err := p.Parse(args)
	var ue *config.UsageError
	switch {
	case errors.Is(err, config.ErrHelp):
		return sysexits.OK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "deliver: %v (see deliver --help)\n", err)
		return sysexits.Usage
	case err != nil:
		// A broken config file or environment is temporary: the mail
		// waits for the fix instead of bouncing.
		fmt.Fprintln(stderr, err)
		return sysexits.TempFail
	}
	if n := len(set.Args()); n > 1 {
		fmt.Fprintf(stderr, "deliver: one ADDRESS at most, got %d arguments\n", n)
		return sysexits.Usage
	}
	log, err := config.NewLogger(stderr, set.String("log-level"), set.String("log-format"), "deliver")
	if err != nil {
		fmt.Fprintln(stderr, err)
		return sysexits.TempFail
	}
	q := delivery.Request{
		Sender:    set.String("sender"),
		Recipient: set.String("recipient"),
		Maildir:   set.String("maildir"),
		Mbox:      set.String("mbox"),
		Stdin:     stdin,
		Log:       log,
	}
	if len(set.Args()) == 1 {
		q.Address = set.Args()[0]
		// Only the ADDRESS form reads the users and aliases files, and only
		// it may forward to remote alias targets.
		q.Sendmail = sendmail(set.String("config"))
		q.Owners = &delivery.Owners{}
		q.Router = func() (*route.Router, error) {
			cm, err := config.Load(set, "deliver", stderr)
			if err != nil {
				return nil, err
			}
			*q.Owners = delivery.Owners{MailUser: cm.MailUser, DefaultPrivs: cm.DefaultPrivs}
			// Aliases may pipe (|command) and append to files: they come
			// from the administrator's aliases file only.
			return route.New(cm, true)
		}
	}
	err = delivery.Run(q)
	if err != nil {
		fmt.Fprintln(stderr, err)
	}
	return delivery.ExitCode(err)
}

// sendmail returns the command line of the sendmail(8) installed beside
// this deliver, used to forward to an alias's remote targets.
func sendmail(configFile string) []string {
	p := "sendmail"
	if exe, err := os.Executable(); err == nil {
		if sib := filepath.Join(filepath.Dir(exe), "sendmail"); fileExists(sib) {
			p = sib
		}
	}
	if configFile != "" {
		return []string{p, "--config", configFile}
	}
	return []string{p}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
