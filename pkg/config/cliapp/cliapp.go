// Package cliapp wires letterbox's flag descriptions (pkg/config) into
// urfave/cli applications, for every command but deliver: each flag is also
// read from its environment variable and from the config file, in the
// precedence flag > environment > file > default.
package cliapp

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"letterbox/pkg/config"
)

// Flag converts a flag description into a urfave/cli flag (without the
// LETTERBOX_ environment variable, which Wrap adds).
func Flag(f config.Flag) cli.Flag {
	d := f.DefaultValue()
	switch f.Kind {
	case config.StringSlice:
		fl := &cli.StringSliceFlag{Name: f.Name, Aliases: f.Aliases, EnvVars: f.EnvVars, Usage: f.Usage}
		if v, _ := d.([]string); len(v) > 0 {
			fl.Value = cli.NewStringSlice(v...)
		}
		return fl
	case config.Bool:
		v, _ := d.(bool)
		return &cli.BoolFlag{Name: f.Name, Aliases: f.Aliases, EnvVars: f.EnvVars, Usage: f.Usage, Value: v}
	case config.Int:
		v, _ := d.(int)
		return &cli.IntFlag{Name: f.Name, Aliases: f.Aliases, EnvVars: f.EnvVars, Usage: f.Usage, Value: v}
	case config.Int64:
		v, _ := d.(int64)
		return &cli.Int64Flag{Name: f.Name, Aliases: f.Aliases, EnvVars: f.EnvVars, Usage: f.Usage, Value: v}
	case config.Duration:
		v, _ := d.(time.Duration)
		return &cli.DurationFlag{Name: f.Name, Aliases: f.Aliases, EnvVars: f.EnvVars, Usage: f.Usage, Value: v}
	}
	v, _ := d.(string)
	return &cli.StringFlag{Name: f.Name, Aliases: f.Aliases, EnvVars: f.EnvVars, Usage: f.Usage, Value: v}
}

// Flags converts flag descriptions with Flag.
func Flags(fs []config.Flag) []cli.Flag {
	out := make([]cli.Flag, len(fs))
	for i, f := range fs {
		out[i] = Flag(f)
	}
	return out
}

// CommonFlags are the keys shared by all commands (DESIGN.md §
// Configuration), from config.CommonFlags.
func CommonFlags() []cli.Flag { return Flags(config.CommonFlags()) }

// NewApp returns a cli.App for the command name with the common flags and
// flags, each also read from its environment variable and from the config
// file.
func NewApp(name, usage string, flags []cli.Flag) *cli.App {
	all := wrap(append(CommonFlags(), flags...))
	app := &cli.App{
		Name:                   name,
		Usage:                  usage,
		Version:                config.Version,
		Flags:                  all,
		HideHelpCommand:        true,
		UseShortOptionHandling: false,
		Before:                 func(c *cli.Context) error { return ApplyFile(c, name, all) },
	}
	return app
}

// Wrap makes flags readable from the environment and the config file. Commands
// with subcommands wrap the subcommands' flags with it and call ApplyFile in
// the subcommand's Before.
func Wrap(flags []cli.Flag) []cli.Flag { return wrap(flags) }

func wrap(flags []cli.Flag) []cli.Flag {
	out := make([]cli.Flag, 0, len(flags))
	for _, f := range flags {
		switch f := f.(type) {
		case *cli.StringFlag:
			f.EnvVars = envs(f.Name, f.EnvVars)
			out = append(out, altsrc.NewStringFlag(f))
		case *cli.StringSliceFlag:
			f.EnvVars = envs(f.Name, f.EnvVars)
			out = append(out, altsrc.NewStringSliceFlag(f))
		case *cli.IntFlag:
			f.EnvVars = envs(f.Name, f.EnvVars)
			out = append(out, altsrc.NewIntFlag(f))
		case *cli.Int64Flag:
			f.EnvVars = envs(f.Name, f.EnvVars)
			out = append(out, altsrc.NewInt64Flag(f))
		case *cli.BoolFlag:
			f.EnvVars = envs(f.Name, f.EnvVars)
			out = append(out, altsrc.NewBoolFlag(f))
		case *cli.DurationFlag:
			f.EnvVars = envs(f.Name, f.EnvVars)
			out = append(out, altsrc.NewDurationFlag(f))
		case *cli.PathFlag:
			f.EnvVars = envs(f.Name, f.EnvVars)
			out = append(out, altsrc.NewPathFlag(f))
		default:
			out = append(out, f)
		}
	}
	return out
}

func envs(name string, have []string) []string {
	return append([]string{config.EnvName(name)}, have...)
}

// ApplyFile reads the config file named by --config, LETTERBOX_CONFIG or
// config.DefaultFile (the last only if it exists) and applies its top-level
// keys, overridden by the [command] table, to the flags not set on the
// command line or in the environment.
func ApplyFile(c *cli.Context, command string, flags []cli.Flag) error {
	path := c.String("config")
	explicit := path != ""
	if !explicit {
		path = config.DefaultFile
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		if !explicit && errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("config: %w", err)
	}
	values, err := config.Merge(raw, command, c.App.ErrWriter)
	if err != nil {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	return altsrc.ApplyInputSourceValues(c, altsrc.NewMapInputSource(path, values), flags)
}

// Load reads the shared keys from c (config.Load) with the app's name and
// error writer for the logger.
func Load(c *cli.Context) (*config.Common, error) {
	return config.Load(c, c.App.Name, c.App.ErrWriter)
}
