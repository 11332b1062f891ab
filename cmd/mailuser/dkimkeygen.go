package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"letterbox/pkg/config/cliapp"
	"letterbox/pkg/dkim"
	"letterbox/pkg/sysexits"
)

// dkimKeygenCommand is `mailuser dkim-keygen DOMAIN [--selector S]
// [--algorithm ed25519|rsa]`: a new key under dkim-keys, and the DNS
// record to publish on stdout as a zone-file line.
func dkimKeygenCommand() *cli.Command {
	fileFlags := cliapp.Wrap([]cli.Flag{cliapp.Flag(dkim.KeysFlag)})
	flags := append(fileFlags,
		&cli.StringFlag{Name: "selector", Usage: "`SELECTOR` of the key (default: the algorithm's name)"},
		&cli.StringFlag{Name: "algorithm", Usage: "`ALGORITHM`: rsa (2048 bits) or ed25519", Value: "rsa"},
	)
	return &cli.Command{
		Name: "dkim-keygen", Usage: "make a DKIM key for DOMAIN and print the DNS record to publish",
		ArgsUsage: "DOMAIN", Flags: flags,
		Before: func(c *cli.Context) error { return cliapp.ApplyFile(c, "mailuser", fileFlags) },
		Action: func(c *cli.Context) error {
			// Options may follow DOMAIN, as the usage line shows them;
			// urfave/cli stops at the first argument, so those are
			// taken here.
			opts := map[string]string{}
			for _, n := range []string{"selector", "algorithm", "dkim-keys"} {
				opts[n] = c.String(n)
			}
			args, err := trailingOptions(c.Args().Slice(), opts)
			if err != nil || len(args) != 1 {
				return sysexits.New(sysexits.Usage, errors.New("usage: mailuser dkim-keygen DOMAIN [--selector S] [--algorithm ed25519|rsa]"))
			}
			alg := opts["algorithm"]
			if alg != "rsa" && alg != "ed25519" {
				return sysexits.New(sysexits.Usage, fmt.Errorf("--algorithm %q: want rsa or ed25519", alg))
			}
			sel := opts["selector"]
			if sel == "" {
				sel = alg
			}
			dir := opts["dkim-keys"]
			k, err := dkim.Generate(dir, args[0], sel, alg)
			switch {
			case errors.Is(err, os.ErrExist):
				return sysexits.New(sysexits.CantCreat, fmt.Errorf("%w (choose another --selector)", err))
			case err != nil && (errors.Is(err, os.ErrPermission) || errors.Is(err, os.ErrNotExist)):
				return sysexits.New(sysexits.CantCreat, err)
			case err != nil:
				return sysexits.New(sysexits.Usage, err)
			}
			line, err := k.ZoneLine()
			if err != nil {
				return sysexits.New(sysexits.Software, err)
			}
			fmt.Fprintf(c.App.ErrWriter, "mailuser: wrote %s; publish this record, then mail from %s is signed:\n", dkim.Path(dir, k.Domain, k.Selector), k.Domain)
			fmt.Fprintln(c.App.Writer, line)
			return nil
		},
	}
}

// trailingOptions takes the options named in opts (--NAME VALUE,
// --NAME=VALUE, one or two dashes) out of args, setting opts, and returns
// the other arguments.
func trailingOptions(args []string, opts map[string]string) ([]string, error) {
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(rest, args[i+1:]...), nil
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if _, ok := opts[name]; !ok || !strings.HasPrefix(a, "-") {
			rest = append(rest, a)
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("option %s needs a value", a)
			}
			i++
			val = args[i]
		}
		opts[name] = val
	}
	return rest, nil
}
