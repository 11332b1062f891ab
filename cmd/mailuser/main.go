// Command mailuser manages the users file: add, passwd, del, list, check;
// and makes DKIM keys: dkim-keygen.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"letterbox/pkg/config/cliapp"
	"letterbox/pkg/sysexits"
	"letterbox/pkg/users"
	"letterbox/pkg/users/admin"
)

func main() {
	schemeFlag := func() []cli.Flag {
		return cliapp.Wrap([]cli.Flag{&cli.StringFlag{Name: "scheme", Value: users.DefaultScheme,
			Usage: "password `SCHEME`: BLF-CRYPT, ARGON2ID or SHA512-CRYPT"}})
	}
	setup := func(c *cli.Context) (*admin.Admin, error) {
		cm, err := cliapp.Load(c)
		if err != nil {
			return nil, sysexits.New(sysexits.Config, err)
		}
		return &admin.Admin{UsersFile: cm.Users, MailRoot: cm.MailRoot, Domains: cm.Domains,
			Stdin: os.Stdin, Out: c.App.Writer, Err: c.App.ErrWriter}, nil
	}
	oneArg := func(c *cli.Context) (string, error) {
		if c.NArg() != 1 {
			return "", sysexits.New(sysexits.Usage, fmt.Errorf("usage: mailuser %s ADDRESS", c.Command.Name))
		}
		return c.Args().First(), nil
	}
	withFile := func(flags []cli.Flag) cli.BeforeFunc {
		return func(c *cli.Context) error { return cliapp.ApplyFile(c, "mailuser", flags) }
	}
	addFlags, passwdFlags := schemeFlag(), schemeFlag()

	app := cliapp.NewApp("mailuser", "manage the letterbox users file", nil)
	app.ExitErrHandler = func(*cli.Context, error) {}
	app.Commands = []*cli.Command{
		{
			Name: "add", Usage: "add a user (password on stdin or prompted) and create its Maildir",
			ArgsUsage: "ADDRESS", Flags: addFlags, Before: withFile(addFlags),
			Action: func(c *cli.Context) error {
				addr, err := oneArg(c)
				if err != nil {
					return err
				}
				a, err := setup(c)
				if err != nil {
					return err
				}
				return a.Add(addr, c.String("scheme"))
			},
		},
		{
			Name: "passwd", Usage: "change a user's password", ArgsUsage: "ADDRESS",
			Flags: passwdFlags, Before: withFile(passwdFlags),
			Action: func(c *cli.Context) error {
				addr, err := oneArg(c)
				if err != nil {
					return err
				}
				a, err := setup(c)
				if err != nil {
					return err
				}
				return a.Passwd(addr, c.String("scheme"))
			},
		},
		{
			Name: "del", Usage: "remove a user (the mail is kept)", ArgsUsage: "ADDRESS",
			Action: func(c *cli.Context) error {
				addr, err := oneArg(c)
				if err != nil {
					return err
				}
				a, err := setup(c)
				if err != nil {
					return err
				}
				return a.Del(addr)
			},
		},
		{
			Name: "list", Usage: "print every user, one per line",
			Action: func(c *cli.Context) error {
				if c.NArg() != 0 {
					return sysexits.New(sysexits.Usage, errors.New("usage: mailuser list"))
				}
				a, err := setup(c)
				if err != nil {
					return err
				}
				return a.List()
			},
		},
		{
			Name: "check", Usage: "exit 0 if the password on stdin is the user's, 1 if not", ArgsUsage: "ADDRESS",
			Action: func(c *cli.Context) error {
				addr, err := oneArg(c)
				if err != nil {
					return err
				}
				a, err := setup(c)
				if err != nil {
					return err
				}
				return a.Check(addr)
			},
		},
	}
	app.Commands = append(app.Commands, dkimKeygenCommand())
	app.Action = func(c *cli.Context) error {
		if c.NArg() > 0 {
			return sysexits.New(sysexits.Usage, fmt.Errorf("unknown command %q (add, passwd, del, list, check)", c.Args().First()))
		}
		cli.ShowAppHelp(c)
		return sysexits.New(sysexits.Usage, errors.New("a command is needed: add, passwd, del, list or check"))
	}
	err := app.Run(os.Args)
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "mailuser: %v\n", err)
	var se *sysexits.Error
	if errors.As(err, &se) {
		os.Exit(se.Code)
	}
	// Errors that are not ours come from parsing the command line.
	os.Exit(sysexits.Usage)
}
