// Command pop3d serves POP3 (RFC 1939, 2449, 2595, 5034) over Maildir and
// mbox maildrops. See pop3d(8).
//
// Started once per connection in inetd mode, its start-up is part of every
// login: it parses its command line with config's lean parser rather than
// urfave/cli (whose config file support links net/http and YAML).
package main

import (
	"errors"
	"fmt"
	"os"

	"letterbox/pkg/config"
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
	p := config.NewLean("pop3d", "serve Maildir and mbox mailboxes over POP3", "", pop3.Flags())
	set, err := p.Parse(os.Args[1:])
	switch {
	case errors.Is(err, config.ErrHelp):
		os.Exit(sysexits.OK)
	case err != nil:
		// pop3d(8): 75 when the configuration cannot be set up, the
		// command line included.
		fmt.Fprintf(os.Stderr, "pop3d: %v (see pop3d --help)\n", err)
		os.Exit(sysexits.TempFail)
	}
	if len(set.Args()) > 0 {
		fmt.Fprintf(os.Stderr, "pop3d: unexpected arguments %q (see pop3d --help)\n", set.Args())
		os.Exit(sysexits.TempFail)
	}
	if err := pop3.Main(set, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "pop3d:", err)
		os.Exit(sysexits.Code(err))
	}
}
