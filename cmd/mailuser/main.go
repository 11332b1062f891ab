// Command mailuser manages the users file: add, passwd, del, list, check;
// moves mail between mbox files and Maildirs: import, export; and makes
// DKIM keys: dkim-keygen.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"letterbox/pkg/config"
	"letterbox/pkg/config/cliapp"
	"letterbox/pkg/mbox"
	"letterbox/pkg/sysexits"
	"letterbox/pkg/users"
	"letterbox/pkg/users/admin"
)

func main() {
	schemeFlag := func() []cli.Flag {
		return cliapp.Wrap([]cli.Flag{&cli.StringFlag{Name: "scheme", Value: users.DefaultScheme,
			Usage: "password `SCHEME`: BLF-CRYPT, ARGON2ID or SHA512-CRYPT"}})
	}
	var cm *config.Common
	setup := func(c *cli.Context) (*admin.Admin, error) {
		var err error
		if cm, err = cliapp.Load(c); err != nil {
			return nil, sysexits.New(sysexits.Config, err)
		}
		return &admin.Admin{UsersFile: cm.Users, MailRoot: cm.MailRoot, Domains: cm.Domains, MailUser: cm.MailUser,
			Stdin: os.Stdin, Out: c.App.Writer, Err: c.App.ErrWriter}, nil
	}
	// migrateArgs takes --folder and --format also after the arguments,
	// as the usage lines show them.
	migrateArgs := func(c *cli.Context, n int, usage string) ([]string, admin.MigrateOptions, error) {
		opts := map[string]string{"folder": c.String("folder")}
		if c.Command.Name == "import" {
			opts["format"] = c.String("format")
		}
		args, err := trailingOptions(c.Args().Slice(), opts)
		if err != nil || len(args) != n {
			return nil, admin.MigrateOptions{}, sysexits.New(sysexits.Usage, errors.New("usage: "+usage))
		}
		return args, admin.MigrateOptions{Folder: opts["folder"], Format: mbox.Format(opts["format"])}, nil
	}
	folderFlag := &cli.StringFlag{Name: "folder", Usage: "the IMAP `FOLDER` (as imapd names it, e.g. Archive.2019; default INBOX)"}
	importFlags := []cli.Flag{folderFlag, &cli.StringFlag{Name: "format", Value: string(mbox.Mboxrd),
		Usage: "the mbox `FORMAT`: mboxrd (also what mutt and Dovecot write: their Content-Length is honoured) or mboxo"}}
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
	addFlags = append(addFlags, cliapp.Wrap([]cli.Flag{
		&cli.StringFlag{Name: "uid", Usage: "the user's `UID` (number or login) in the users file: owner of its Maildir"},
		&cli.StringFlag{Name: "gid", Usage: "the user's `GID` (number or group name; default: the uid's primary group)"},
		&cli.StringFlag{Name: "home", Usage: "the user's home `DIR` in the users file: the Maildir is DIR/Maildir"},
	})...)

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
				return a.Add(addr, admin.AddOptions{Scheme: c.String("scheme"),
					UID: c.String("uid"), GID: c.String("gid"), Home: c.String("home")})
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
	app.Commands = append(app.Commands, &cli.Command{
		Name: "import", Usage: "copy every message of an mbox file into a user's Maildir or folder",
		ArgsUsage: "ADDRESS FILE", Flags: importFlags,
		Action: func(c *cli.Context) error {
			args, o, err := migrateArgs(c, 2, "mailuser import ADDRESS FILE [--folder NAME] [--format mboxo|mboxrd]")
			if err != nil {
				return err
			}
			a, err := setup(c)
			if err != nil {
				return err
			}
			o.MailUser, o.Hostname = cm.MailUser, cm.Hostname
			return a.Import(args[0], args[1], o)
		},
	}, &cli.Command{
		Name: "export", Usage: "write a user's Maildir or folder to stdout as an mbox (mboxrd)",
		ArgsUsage: "ADDRESS", Flags: []cli.Flag{folderFlag},
		Action: func(c *cli.Context) error {
			args, o, err := migrateArgs(c, 1, "mailuser export ADDRESS [--folder NAME]")
			if err != nil {
				return err
			}
			a, err := setup(c)
			if err != nil {
				return err
			}
			o.MailUser, o.Hostname = cm.MailUser, cm.Hostname
			return a.Export(args[0], c.App.Writer, o)
		},
	}, dkimKeygenCommand())
	app.Action = func(c *cli.Context) error {
		if c.NArg() > 0 {
			return sysexits.New(sysexits.Usage, fmt.Errorf("unknown command %q (add, passwd, del, list, check, import, export, dkim-keygen)", c.Args().First()))
		}
		cli.ShowAppHelp(c)
		return sysexits.New(sysexits.Usage, errors.New("a command is needed: add, passwd, del, list, check, import, export or dkim-keygen"))
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
