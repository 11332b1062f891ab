// Command imapd serves IMAP4rev1 and IMAP4rev2 over Maildir++ folders,
// sharing them with Dovecot. See imapd(8).
package main

import (
	"fmt"
	"os"

	"letterbox/pkg/config/cliapp"
	"letterbox/pkg/imap"
	"letterbox/pkg/privsep/handoff"
	"letterbox/pkg/sysexits"
)

func main() {
	if handoff.IsHandoffChild() {
		// A session process, started by imapd itself to serve one
		// session as the mailbox's owner.
		os.Exit(imap.ServeHandoff())
	}
	app := cliapp.NewApp("imapd", "serve Maildir++ folders over IMAP", imap.Flags())
	app.Action = imap.Main
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "imapd:", err)
		os.Exit(sysexits.Code(err))
	}
}
