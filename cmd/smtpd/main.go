// Command smtpd receives mail over SMTP, submission and implicit TLS and puts
// it in the spool. See smtpd(8).
package main

import (
	"fmt"
	"os"

	"letterbox/pkg/config/cliapp"
	"letterbox/pkg/smtpd"
	"letterbox/pkg/sysexits"
)

func main() {
	app := cliapp.NewApp("smtpd", "receive mail over SMTP into the spool", smtpd.Flags())
	app.Action = smtpd.Main
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "smtpd:", err)
		os.Exit(sysexits.Code(err))
	}
}
