// Command sendmail is the sendmail(8)-compatible injection command (also
// mailq). See sendmail(8).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"letterbox/pkg/config/cliapp"
	"letterbox/pkg/sendmail"
	"letterbox/pkg/sysexits"
)

func main() {
	name := filepath.Base(os.Args[0])
	app := cliapp.NewApp("sendmail", "queue a message from stdin (sendmail(8) compatible; also mailq)", nil)
	app.UsageText = "sendmail [-t] [-i|-oi] [-f SENDER] [-F NAME] [-v] [ADDRESS…]\n" +
		"   sendmail -bp | mailq\n   sendmail -q\n   sendmail -bs"
	takesValue := func(long string) bool {
		for _, f := range app.Flags {
			for _, n := range f.Names() {
				if n == long {
					_, isBool := f.(interface{ IsBoolFlag() bool })
					return !isBool
				}
			}
		}
		return false
	}
	opts, err := sendmail.ParseArgs(name, os.Args[1:], takesValue)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(sysexits.Usage)
	}
	app.Action = func(c *cli.Context) error { return sendmail.Run(c, opts) }
	if err := app.Run(append([]string{name}, opts.Long...)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(sysexits.Code(err))
	}
}
