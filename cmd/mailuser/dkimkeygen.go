package main

import (
	"errors"
	"fmt"
	"os"

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
			if c.NArg() != 1 {
				return sysexits.New(sysexits.Usage, errors.New("usage: mailuser dkim-keygen DOMAIN [--selector S] [--algorithm ed25519|rsa]"))
			}
			alg := c.String("algorithm")
			if alg != "rsa" && alg != "ed25519" {
				return sysexits.New(sysexits.Usage, fmt.Errorf("--algorithm %q: want rsa or ed25519", alg))
			}
			sel := c.String("selector")
			if sel == "" {
				sel = alg
			}
			dir := c.String("dkim-keys")
			k, err := dkim.Generate(dir, c.Args().First(), sel, alg)
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
