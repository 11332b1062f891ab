// Command deliver is the local delivery agent: one message on stdin into a
// Maildir, an mbox, or a local address's mailbox. See deliver(8).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"letterbox/pkg/config"
	"letterbox/pkg/delivery"
	"letterbox/pkg/route"
	"letterbox/pkg/sysexits"
)

func main() {
	app := config.NewApp("deliver", "deliver one message from stdin into a Maildir, an mbox or a local address's mailbox", []cli.Flag{
		&cli.StringFlag{Name: "sender", Aliases: []string{"f"}, EnvVars: []string{"SENDER"}, Usage: "envelope `SENDER` (Return-Path)"},
		&cli.StringFlag{Name: "recipient", Aliases: []string{"a"}, EnvVars: []string{"RECIPIENT"}, Usage: "envelope `RECIPIENT` (Delivered-To)"},
		&cli.StringFlag{Name: "maildir", Usage: "deliver into the Maildir `DIR` (created if missing)"},
		&cli.StringFlag{Name: "mbox", Usage: "append to the mbox `FILE`"},
	})
	app.ArgsUsage = "[ADDRESS]"
	code := sysexits.OK
	app.Action = func(c *cli.Context) error {
		if c.NArg() > 1 {
			code = sysexits.Usage
			return fmt.Errorf("deliver: one ADDRESS at most, got %d arguments", c.NArg())
		}
		cm, err := config.Load(c)
		if err != nil {
			code = sysexits.TempFail
			return err
		}
		err = delivery.Run(delivery.Request{
			Sender:    c.String("sender"),
			Recipient: c.String("recipient"),
			Maildir:   c.String("maildir"),
			Mbox:      c.String("mbox"),
			Address:   c.Args().First(),
			Stdin:     os.Stdin,
			Log:       cm.Log,
			Sendmail:  sendmail(c.String("config")),
			Router: func() (*route.Router, error) {
				// Aliases may pipe (|command) and append to files: they
				// come from the administrator's aliases file only.
				return route.New(cm, true)
			},
		})
		code = delivery.ExitCode(err)
		return err
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == sysexits.OK {
			// Flag parsing errors are usage errors; a broken config file is
			// temporary, so the mail waits for the fix instead of bouncing.
			code = sysexits.Usage
			if strings.HasPrefix(err.Error(), "config:") {
				code = sysexits.TempFail
			}
		}
	}
	os.Exit(code)
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
