// Package config builds every letterbox command's command line and merges it
// with the environment and the shared TOML file, in the precedence
// flag > environment > file > default (DESIGN.md § Configuration).
//
// One file serves every command: top-level keys are flag names, and a table
// named after a command ([smtpd]) overrides them for that command. A key that
// the running command does not know is ignored silently, since another command
// may use it; a key that no letterbox command knows is warned about.
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
)

// Version is set at build time with -ldflags "-X letterbox/pkg/config.Version=…".
var Version = "0.1.0-dev"

// DefaultFile is read when neither --config nor LETTERBOX_CONFIG names a file.
const DefaultFile = "/etc/letterbox/letterbox.conf"

// EnvName is the environment variable that sets the flag name:
// LETTERBOX_<FLAG_IN_UPPER_SNAKE>.
func EnvName(flag string) string {
	return "LETTERBOX_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// CommonFlags are the keys shared by all commands (DESIGN.md § Configuration).
func CommonFlags() []cli.Flag {
	host, _ := os.Hostname()
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "configuration `FILE` (TOML)", Value: ""},
		&cli.StringFlag{Name: "hostname", Usage: "this host's `NAME` in greetings, Received and Message-ID", Value: host},
		&cli.StringSliceFlag{Name: "domains", Usage: "local `DOMAIN`s (repeatable; default: the hostname)"},
		&cli.StringFlag{Name: "spool", Usage: "queue `DIR`", Value: "/var/spool/letterbox"},
		&cli.StringFlag{Name: "mail-root", Usage: "`DIR` holding <domain>/<local>/ Maildirs", Value: "/var/mail/letterbox"},
		&cli.StringFlag{Name: "users", Usage: "users `FILE` (Dovecot passwd-file format)", Value: "/etc/letterbox/users"},
		&cli.StringFlag{Name: "aliases", Usage: "aliases `FILE` (aliases(5) syntax)", Value: "/etc/letterbox/aliases"},
		&cli.StringFlag{Name: "postmaster", Usage: "`ADDRESS` receiving postmaster mail when the aliases have no postmaster entry"},
		&cli.StringFlag{Name: "tls-cert", Usage: "TLS certificate `FILE` (PEM)"},
		&cli.StringFlag{Name: "tls-key", Usage: "TLS private key `FILE` (PEM)"},
		&cli.StringFlag{Name: "log-level", Usage: "debug, info, warn or error", Value: "info"},
		&cli.StringFlag{Name: "log-format", Usage: "logfmt or json", Value: "logfmt"},
	}
}

// NewApp returns a cli.App for the command name with the common flags and
// flags, each also read from its environment variable and from the config
// file.
func NewApp(name, usage string, flags []cli.Flag) *cli.App {
	all := wrap(append(CommonFlags(), flags...))
	app := &cli.App{
		Name:                   name,
		Usage:                  usage,
		Version:                Version,
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
	return append([]string{EnvName(name)}, have...)
}

// ApplyFile reads the config file named by --config, LETTERBOX_CONFIG or
// DefaultFile (the last only if it exists) and applies its top-level keys,
// overridden by the [command] table, to the flags not set on the command line
// or in the environment.
func ApplyFile(c *cli.Context, command string, flags []cli.Flag) error {
	path := c.String("config")
	explicit := path != ""
	if !explicit {
		path = DefaultFile
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		if !explicit && errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("config: %w", err)
	}
	values, err := Merge(raw, command, c.App.ErrWriter)
	if err != nil {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	return altsrc.ApplyInputSourceValues(c, altsrc.NewMapInputSource(path, values), flags)
}

// Merge decodes a TOML document and returns the values that apply to command:
// the top-level keys with the [command] table on top. It warns on w about keys
// that no letterbox command knows.
func Merge(raw []byte, command string, w io.Writer) (map[interface{}]interface{}, error) {
	var doc map[string]interface{}
	if _, err := toml.Decode(string(raw), &doc); err != nil {
		return nil, err
	}
	out := map[interface{}]interface{}{}
	for k, v := range doc {
		if _, ok := v.(map[string]interface{}); ok {
			if !IsCommand(k) {
				warn(w, "config: unknown table [%s] ignored", k)
			}
			continue
		}
		if !IsKnownKey(k) {
			warn(w, "config: unknown key %q ignored", k)
			continue
		}
		out[k] = normalize(v)
	}
	if tbl, ok := doc[command].(map[string]interface{}); ok {
		for k, v := range tbl {
			if !IsKnownKey(k) {
				warn(w, "config: unknown key %q in [%s] ignored", k, command)
				continue
			}
			out[k] = normalize(v)
		}
	}
	return out, nil
}

func warn(w io.Writer, format string, args ...any) {
	if w == nil {
		w = os.Stderr
	}
	fmt.Fprintf(w, format+"\n", args...)
}

// normalize turns TOML's decoded types into the ones altsrc's map source
// expects: int for integers, strings for durations written as strings.
func normalize(v interface{}) interface{} {
	switch v := v.(type) {
	case int64:
		return int(v)
	case []interface{}:
		out := make([]interface{}, len(v))
		for i, e := range v {
			out[i] = normalize(e)
		}
		return out
	}
	return v
}

// Common holds the shared keys, resolved.
type Common struct {
	Hostname   string
	Domains    []string
	Spool      string
	MailRoot   string
	Users      string
	Aliases    string
	Postmaster string
	TLSCert    string
	TLSKey     string
	Log        *slog.Logger
}

// Load reads the shared keys from c and sets up the logger.
func Load(c *cli.Context) (*Common, error) {
	cm := &Common{
		Hostname:   c.String("hostname"),
		Domains:    c.StringSlice("domains"),
		Spool:      c.String("spool"),
		MailRoot:   c.String("mail-root"),
		Users:      c.String("users"),
		Aliases:    c.String("aliases"),
		Postmaster: c.String("postmaster"),
		TLSCert:    c.String("tls-cert"),
		TLSKey:     c.String("tls-key"),
	}
	if cm.Hostname == "" {
		return nil, errors.New("config: hostname is empty")
	}
	if len(cm.Domains) == 0 {
		cm.Domains = []string{cm.Hostname}
	}
	for i, d := range cm.Domains {
		cm.Domains[i] = strings.TrimSuffix(strings.ToLower(d), ".")
	}
	log, err := NewLogger(c.App.ErrWriter, c.String("log-level"), c.String("log-format"), c.App.Name)
	if err != nil {
		return nil, err
	}
	cm.Log = log
	return cm, nil
}

// IsLocalDomain reports whether domain (any case, trailing dot allowed) is one
// of the local domains.
func (cm *Common) IsLocalDomain(domain string) bool {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	for _, d := range cm.Domains {
		if d == domain {
			return true
		}
	}
	return false
}

// NewLogger returns the slog logger every command uses: one line per event on
// w (stderr when nil), logfmt or JSON.
func NewLogger(w io.Writer, level, format, command string) (*slog.Logger, error) {
	if w == nil {
		w = os.Stderr
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("config: log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	switch format {
	case "", "logfmt", "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("config: log-format %q: want logfmt or json", format)
	}
	return slog.New(h).With("cmd", command), nil
}
