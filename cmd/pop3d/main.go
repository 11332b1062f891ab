// Command pop3d serves POP3 (RFC 1939, 2449, 2595, 5034) over Maildir and
// mbox maildrops. See pop3d(8).
package main

import (
	"fmt"
	"os"

	"letterbox/pkg/config/cliapp"
	"letterbox/pkg/pop3"
	"letterbox/pkg/privsep/handoff"
	"letterbox/pkg/sysexits"
)

func main() {
	if handoff.IsHandoffChild() {
		// A session process, started by pop3d itself to serve one session
		// as the maildrop's owner.
		os.Exit(pop3.ServeHandoff())
	}
	app := cliapp.NewApp("pop3d", "serve Maildir and mbox mailboxes over POP3", pop3.Flags())
	app.Action = pop3.Main
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "pop3d:", err)
		os.Exit(sysexits.Code(err))
	}
}
