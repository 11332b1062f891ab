package config

import (
	"os"
	"strings"
	"time"
)

// Kind is the type of a flag's value.
type Kind int

// The kinds of flag values, as on the command line and in the TOML file.
const (
	String      Kind = iota // "text"
	StringSlice             // repeatable; ["a", "b"] in the file
	Bool                    // --flag or --flag=false; true/false in the file
	Int                     // 100
	Int64                   // 36700160
	Duration                // "5m", as time.ParseDuration reads it
)

// Flag describes one option of a command: its command-line names, its
// environment variables and its default. The same description feeds the
// lean parser (deliver) and the urfave/cli wiring (pkg/config/cliapp), so a
// common flag is defined once for every command.
type Flag struct {
	Name    string
	Aliases []string // other names, e.g. "f" for -f
	// EnvVars are read after LETTERBOX_<NAME>, which every flag has: the
	// conventions of other mailers (SENDER, RECIPIENT).
	EnvVars []string
	Kind    Kind
	// Default is a string, []string, bool, int, int64 or time.Duration
	// matching Kind; nil is the kind's zero value.
	Default any
	// Lazy computes the default on first use instead, for defaults that
	// cost a system call (the hostname) on a path that may never need them.
	Lazy  func() any
	Usage string // a `WORD` in back quotes names the value in --help
}

// Names returns the flag's name followed by its aliases.
func (f Flag) Names() []string {
	return append([]string{f.Name}, f.Aliases...)
}

// AllEnvVars returns LETTERBOX_<NAME> followed by the flag's own variables,
// in the order they are looked up.
func (f Flag) AllEnvVars() []string {
	return append([]string{EnvName(f.Name)}, f.EnvVars...)
}

// DefaultValue returns the default, computing a lazy one.
func (f Flag) DefaultValue() any {
	if f.Lazy != nil {
		return f.Lazy()
	}
	return f.Default
}

// Placeholder returns the name of the flag's value shown in --help (the
// back-quoted word of Usage, else "value") and Usage without the quotes.
func (f Flag) Placeholder() (name, usage string) {
	i := strings.IndexByte(f.Usage, '`')
	if i >= 0 {
		if j := strings.IndexByte(f.Usage[i+1:], '`'); j >= 0 {
			name = f.Usage[i+1 : i+1+j]
			return name, f.Usage[:i] + name + f.Usage[i+1+j+1:]
		}
	}
	if f.Kind == Bool {
		return "", f.Usage
	}
	return "value", f.Usage
}

// Values reads resolved flag values by name. Both the lean parser's *Set and
// urfave/cli's *cli.Context satisfy it, so Load serves either.
type Values interface {
	String(name string) string
	StringSlice(name string) []string
	Bool(name string) bool
	Int(name string) int
	Int64(name string) int64
	Duration(name string) time.Duration
}

func hostname() any {
	h, _ := os.Hostname()
	return h
}

// CommonFlags returns the keys shared by all commands (DESIGN.md §
// Configuration), fresh on each call so that callers may modify them.
func CommonFlags() []Flag {
	return []Flag{
		{Name: "config", Usage: "configuration `FILE` (TOML)"},
		{Name: "hostname", Lazy: hostname, Usage: "this host's `NAME` in greetings, Received and Message-ID"},
		{Name: "domains", Kind: StringSlice, Usage: "local `DOMAIN`s (repeatable; default: the hostname)"},
		{Name: "relay-domains", Kind: StringSlice, Usage: "`DOMAIN`s accepted from anyone and relayed to their more preferred MX hosts (backup MX; .DOMAIN: its subdomains; repeatable)"},
		{Name: "spool", Default: "/var/spool/letterbox", Usage: "queue `DIR`"},
		{Name: "mail-root", Default: "/var/mail/letterbox", Usage: "`DIR` holding <domain>/<local>/ Maildirs"},
		{Name: "users", Default: "/etc/letterbox/users", Usage: "users `FILE` (Dovecot passwd-file format)"},
		{Name: "aliases", Default: "/etc/letterbox/aliases", Usage: "aliases `FILE` (aliases(5) syntax)"},
		{Name: "postmaster", Usage: "`ADDRESS` receiving postmaster mail when the aliases have no postmaster entry"},
		{Name: "mail-user", Usage: "`USER` owning the virtual mailboxes under mail-root (deliveries and sessions run as it; default: this process)"},
		{Name: "default-privs", Default: "nobody", Usage: "`USER` that |command and /file targets of a root-owned aliases or :include: file run as (never root)"},
		{Name: "tls-cert", Usage: "TLS certificate `FILE` (PEM)"},
		{Name: "tls-key", Usage: "TLS private key `FILE` (PEM)"},
		{Name: "log-level", Default: "info", Usage: "debug, info, warn or error"},
		{Name: "log-format", Default: "logfmt", Usage: "logfmt or json"},
	}
}

// ProxyFlags are the keys of the servers' listeners behind a load
// balancer (modes with the suffix +proxy): smtpd, pop3d and imapd share
// them.
func ProxyFlags() []Flag {
	return []Flag{
		{Name: "proxy-networks", Kind: StringSlice, Usage: "`CIDR`s of the proxies (HAProxy) that may send the PROXY header to +proxy listeners"},
		{Name: "proxy-timeout", Kind: Duration, Default: 5 * time.Second, Usage: "wait this long for a +proxy connection's PROXY header"},
	}
}
