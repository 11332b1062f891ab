// Command mime-pack builds MIME messages with attachments, lists and
// unpacks them, and speaks uuencode (see mime-pack(1)).
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"letterbox/pkg/config/cliapp"
	"letterbox/pkg/mime"
	"letterbox/pkg/sysexits"
)

func packFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "subject", Aliases: []string{"s"}, Usage: "`SUBJECT` (UTF-8 allowed)"},
		&cli.StringFlag{Name: "from", Aliases: []string{"f"}, Usage: "From `ADDRESS`"},
		&cli.StringSliceFlag{Name: "to", Aliases: []string{"t"}, Usage: "To `ADDRESS` (repeatable)"},
		&cli.StringSliceFlag{Name: "cc", Aliases: []string{"c"}, Usage: "Cc `ADDRESS` (repeatable)"},
		&cli.StringSliceFlag{Name: "attach", Aliases: []string{"a"}, Usage: "attach `FILE[:TYPE]` (repeatable; - is stdin when -b gives the body)"},
		&cli.StringFlag{Name: "body", Aliases: []string{"b"}, Usage: "body text `FILE` (default: stdin)"},
		&cli.StringFlag{Name: "html", Usage: "HTML `FILE`: the body becomes multipart/alternative text+HTML"},
		&cli.BoolFlag{Name: "inline", Usage: "attachments with inline disposition"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the message to `FILE` (default: stdout)"},
	}
}

func unpackFlags(all bool) []cli.Flag {
	f := []cli.Flag{
		&cli.StringFlag{Name: "dir", Aliases: []string{"d"}, Value: ".", Usage: "write files into `DIR`"},
		&cli.BoolFlag{Name: "force", Usage: "replace existing files instead of adding -1, -2 … to the name"},
	}
	if all {
		f = append(f, &cli.BoolFlag{Name: "all", Usage: "write every part, not only attachments"})
	}
	return f
}

func before(flags []cli.Flag) cli.BeforeFunc {
	return func(c *cli.Context) error { return cliapp.ApplyFile(c, "mime-pack", flags) }
}

// input opens the one optional FILE argument, else stdin.
func input(c *cli.Context) (io.ReadCloser, error) {
	switch c.NArg() {
	case 0:
		return io.NopCloser(os.Stdin), nil
	case 1:
		if c.Args().First() == "-" {
			return io.NopCloser(os.Stdin), nil
		}
		f, err := os.Open(c.Args().First())
		if err != nil {
			return nil, sysexits.New(sysexits.NoInput, err)
		}
		return f, nil
	}
	return nil, sysexits.New(sysexits.Usage, fmt.Errorf("%s: at most one FILE", c.Command.Name))
}

func warnf(c *cli.Context) func(string) {
	return func(s string) { fmt.Fprintf(c.App.ErrWriter, "mime-pack: %s\n", s) }
}

func pack(c *cli.Context) error {
	if c.NArg() > 0 {
		return sysexits.New(sysexits.Usage, fmt.Errorf("unexpected argument %q (attach files with -a)", c.Args().First()))
	}
	cm, err := cliapp.Load(c)
	if err != nil {
		return sysexits.New(sysexits.Config, err)
	}
	o := mime.PackOptions{From: c.String("from"), Subject: c.String("subject"), To: c.StringSlice("to"),
		Cc: c.StringSlice("cc"), Inline: c.Bool("inline"), Hostname: cm.Hostname}
	stdinUsed := false
	for _, a := range c.StringSlice("attach") {
		at := mime.ParseAttachArg(a)
		if at.Path == "-" {
			if c.String("body") == "" || stdinUsed {
				return sysexits.New(sysexits.Usage, errors.New("-a -: stdin is an attachment only when -b gives the body, and only once"))
			}
			stdinUsed = true
		} else if fi, err := os.Stat(at.Path); err != nil {
			return sysexits.New(sysexits.NoInput, fmt.Errorf("attach: %w", err))
		} else if fi.IsDir() {
			return sysexits.New(sysexits.NoInput, fmt.Errorf("attach: %s is a directory", at.Path))
		}
		o.Attachments = append(o.Attachments, at)
	}
	open := func(p string) (io.Reader, error) {
		if p == "-" {
			return os.Stdin, nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil, sysexits.New(sysexits.NoInput, err)
		}
		return f, nil
	}
	switch {
	case c.String("body") != "":
		if o.Body, err = open(c.String("body")); err != nil {
			return err
		}
	case !stdinIsTTY():
		// An empty stdin (</dev/null) gives no body part when files are attached.
		br := bufio.NewReader(os.Stdin)
		if _, err := br.Peek(1); err == nil || len(o.Attachments) == 0 {
			o.Body = br
		}
	}
	if c.String("html") != "" {
		if o.HTML, err = open(c.String("html")); err != nil {
			return err
		}
	}
	out := io.Writer(os.Stdout)
	var f *os.File
	if p := c.String("output"); p != "" && p != "-" {
		if f, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o666); err != nil {
			return sysexits.New(sysexits.CantCreat, err)
		}
		out = f
	}
	if err := mime.Pack(out, o); err != nil {
		if f != nil {
			f.Close()
			os.Remove(f.Name())
		}
		return sysexits.New(sysexits.IOErr, fmt.Errorf("pack: %w", err))
	}
	if f != nil {
		if err := f.Close(); err != nil {
			return sysexits.New(sysexits.IOErr, err)
		}
	}
	return nil
}

func stdinIsTTY() bool {
	fi, err := os.Stdin.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func main() {
	pf, lf, uf, df, ef := cliapp.Wrap(packFlags()), cliapp.Wrap([]cli.Flag{
		&cli.BoolFlag{Name: "json", Usage: "a JSON array with encoded and decoded sizes, encoding, charset and warnings"},
	}), cliapp.Wrap(unpackFlags(true)), cliapp.Wrap(unpackFlags(false)), cliapp.Wrap([]cli.Flag{
		&cli.BoolFlag{Name: "base64", Aliases: []string{"m"}, Usage: "begin-base64 form (as uuencode -m)"},
	})
	app := cliapp.NewApp("mime-pack", "build, list and unpack MIME messages; uuencode", packFlags())
	app.DisableSliceFlagSeparator = true
	app.ExitErrHandler = func(*cli.Context, error) {}
	app.ArgsUsage = " "
	app.Action = pack
	app.Commands = []*cli.Command{
		{Name: "pack", Usage: "build a message (the default command)", Flags: pf, Before: before(pf), Action: pack},
		{Name: "list", Usage: "print the MIME tree: PART TYPE DISPOSITION SIZE NAME, tab-separated", ArgsUsage: "[FILE]",
			Flags: lf, Before: before(lf), Action: func(c *cli.Context) error {
				in, err := input(c)
				if err != nil {
					return err
				}
				defer in.Close()
				parts, warns, err := mime.List(in, mime.DefaultLimits)
				for _, w := range warns {
					warnf(c)(w)
				}
				if err != nil {
					return sysexits.New(sysexits.DataErr, err)
				}
				if err := mime.WriteList(c.App.Writer, parts, c.Bool("json")); err != nil {
					return sysexits.New(sysexits.IOErr, err)
				}
				return nil
			}},
		{Name: "unpack", Usage: "write the attachments (and uuencoded files) into a directory", ArgsUsage: "[FILE]",
			Flags: uf, Before: before(uf), Action: func(c *cli.Context) error {
				in, err := input(c)
				if err != nil {
					return err
				}
				defer in.Close()
				n, err := mime.Unpack(in, mime.UnpackOptions{Dir: c.String("dir"), All: c.Bool("all"), Force: c.Bool("force"),
					Lim: mime.DefaultLimits, Warn: warnf(c),
					Wrote: func(p string) { fmt.Fprintln(c.App.Writer, p) }})
				var ce *mime.CreateError
				switch {
				case errors.As(err, &ce):
					return sysexits.New(sysexits.CantCreat, err)
				case errors.Is(err, mime.ErrEmpty):
					return sysexits.New(sysexits.DataErr, err)
				case err != nil && n == 0:
					return sysexits.New(sysexits.IOErr, err)
				case err != nil:
					warnf(c)(err.Error())
				case n == 0:
					warnf(c)("nothing to unpack (no attachments; --all writes every part)")
				}
				return nil
			}},
		{Name: "uuencode", Usage: "uuencode FILE (- for stdin) under NAME (default: FILE's base name)", ArgsUsage: "FILE [NAME]",
			Flags: ef, Before: before(ef), Action: func(c *cli.Context) error {
				if c.NArg() < 1 || c.NArg() > 2 {
					return sysexits.New(sysexits.Usage, errors.New("usage: mime-pack uuencode FILE [NAME]"))
				}
				path, name := c.Args().Get(0), c.Args().Get(1)
				var r io.Reader = os.Stdin
				mode := os.FileMode(0o644)
				if path != "-" {
					f, err := os.Open(path)
					if err != nil {
						return sysexits.New(sysexits.NoInput, err)
					}
					defer f.Close()
					if fi, err := f.Stat(); err == nil {
						mode = fi.Mode().Perm()
					}
					r = f
					if name == "" {
						name = filepath.Base(path)
					}
				} else if name == "" {
					name = "-"
				}
				if err := mime.UUEncode(c.App.Writer, r, name, mode, c.Bool("base64")); err != nil {
					return sysexits.New(sysexits.IOErr, err)
				}
				return nil
			}},
		{Name: "uudecode", Usage: "decode the uuencoded files in FILE (or stdin) into DIR", ArgsUsage: "[FILE]",
			Flags: df, Before: before(df), Action: func(c *cli.Context) error {
				in, err := input(c)
				if err != nil {
					return err
				}
				defer in.Close()
				n, err := mime.Uudecode(in, mime.UnpackOptions{Dir: c.String("dir"), Force: c.Bool("force"),
					Warn: warnf(c), Wrote: func(p string) { fmt.Fprintln(c.App.Writer, p) }})
				if err != nil {
					return sysexits.New(sysexits.IOErr, err)
				}
				if n == 0 {
					return sysexits.New(sysexits.DataErr, errors.New("uudecode: no \"begin\" line found"))
				}
				return nil
			}},
	}
	err := app.Run(os.Args)
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "mime-pack: %v\n", err)
	var se *sysexits.Error
	if errors.As(err, &se) {
		os.Exit(se.Code)
	}
	os.Exit(sysexits.Usage)
}
