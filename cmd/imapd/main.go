// Command imapd serves IMAP4rev1 and IMAP4rev2 over Maildir++ folders,
// sharing them with Dovecot. See imapd(8).
//
// Started once per connection in inetd mode, its start-up is part of every
// login, cold page cache included: it parses its command line with config's
// lean parser rather than urfave/cli (whose config file support links
// net/http, YAML and text/template, all initialised and paged in at start).
package main

import (
	"errors"
	"fmt"
	"os"

	"letterbox/pkg/config"
	"letterbox/pkg/imap"
	"letterbox/pkg/privsep/handoff"
	"letterbox/pkg/sysexits"
)

// usage is the NAME line of --help.
const usage = "serve Maildir++ folders over IMAP"

func main() {
	if handoff.IsHandoffChild() {
		// A session process, started by imapd itself to serve one
		// session as the mailbox's owner.
		os.Exit(imap.ServeHandoff())
	}
	p := config.NewLean("imapd", usage, "", imap.Flags())
	set, err := p.Parse(os.Args[1:])
	switch {
	case errors.Is(err, config.ErrHelp):
		os.Exit(sysexits.OK)
	case err != nil:
		// imapd(8): 75 when the configuration cannot be set up, the
		// command line included.
		fmt.Fprintf(os.Stderr, "imapd: %v (see imapd --help)\n", err)
		os.Exit(sysexits.TempFail)
	}
	// Arguments after the flags are ignored, as they were when urfave/cli
	// parsed imapd's command line.
	if err := imap.Main(set, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "imapd:", err)
		os.Exit(sysexits.Code(err))
	}
}
