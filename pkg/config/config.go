// Package config describes every letterbox command's flags and merges the
// command line with the environment and the shared TOML file, in the
// precedence flag > environment > file > default (DESIGN.md § Configuration).
//
// One file serves every command: top-level keys are flag names, and a table
// named after a command ([smtpd]) overrides them for that command. A key that
// the running command does not know is ignored silently, since another command
// may use it; a key that no letterbox command knows is warned about.
//
// This package does not import urfave/cli: deliver, started once per message,
// parses its command line with the lean parser here (NewLean), which keeps
// its start-up cheap. The urfave/cli wiring of the other commands is in
// pkg/config/cliapp, built from the same flag descriptions.
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
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

// normalize turns TOML's decoded types into the ones urfave/cli's altsrc map
// source expects (int for integers); the lean parser accepts them too.
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
	Hostname string
	Domains  []string
	// RelayDomains are the domains we are a backup MX for (relay-domains):
	// lower case, no trailing dot; ".example.org" stands for its subdomains.
	RelayDomains []string
	Spool        string
	MailRoot     string
	Users        string
	Aliases      string
	Postmaster   string
	// MailUser owns the virtual mailboxes (those under MailRoot without a
	// uid or home in the users file); "" means this process.
	MailUser string
	// DefaultPrivs is whom the aliases' pipe and file targets run as when
	// the file naming them belongs to root (Postfix's default_privs).
	DefaultPrivs string
	TLSCert      string
	TLSKey       string
	Log          *slog.Logger
}

// Load reads the shared keys from v and sets up the logger, which writes
// to w (stderr when nil) with cmd=command on every line.
func Load(v Values, command string, w io.Writer) (*Common, error) {
	cm := &Common{
		Hostname:     v.String("hostname"),
		Domains:      append([]string(nil), v.StringSlice("domains")...),
		RelayDomains: append([]string(nil), v.StringSlice("relay-domains")...),
		Spool:        v.String("spool"),
		MailRoot:     v.String("mail-root"),
		Users:        v.String("users"),
		Aliases:      v.String("aliases"),
		Postmaster:   v.String("postmaster"),
		MailUser:     v.String("mail-user"),
		DefaultPrivs: v.String("default-privs"),
		TLSCert:      v.String("tls-cert"),
		TLSKey:       v.String("tls-key"),
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
	for i, d := range cm.RelayDomains {
		cm.RelayDomains[i] = strings.TrimSuffix(strings.ToLower(d), ".")
	}
	log, err := NewLogger(w, v.String("log-level"), v.String("log-format"), command)
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
