package config

import "sync"

// Commands are the letterbox commands; each may have a [name] table.
var Commands = []string{"smtpd", "sendmail", "queue-runner", "deliver", "pop3d", "imapd", "mime-pack", "mailuser"}

// otherKeys are the keys of the commands' own flags. A command adding a flag
// adds its name here, so that the file's other readers don't warn about it.
var otherKeys = []string{
	// smtpd
	"listen", "user", "relay-networks", "max-message-size", "max-recipients",
	"max-errors", "command-timeout", "data-timeout", "allow-insecure-auth",
	"max-auth-failures", "max-received", "greeting",
	"mode", "auth-failure-delay",
	// smtpd's checks on mail in (pkg/check)
	"dnsbl", "dnswl", "spf", "dkim-verify", "dmarc", "milter", "milter-default-action",
	"milter-timeout", "filter", "filter-timeout",
	// queue-runner and mailuser: DKIM signing keys
	"dkim-keys", "bare-newline",
	// queue-runner
	"daemon", "dns", "route", "smtp-port", "retry-after", "max-retry-interval",
	"warn-after", "bounce-after", "mda", "concurrency", "concurrency-per-domain",
	"tls-policy", "route-auth-file", "interval",
	"connect-timeout", "helo", "proxy-interfaces",
	// deliver
	"sender", "recipient", "maildir", "mbox",
	// pop3d / imapd
	"idle-timeout", "no-flag-updates", "mbox-lock-timeout",
	"max-line-length", "max-preauth-literal", "poll-interval",
	// mailuser
	"scheme",
	// mime-pack
	"subject", "from", "to", "cc", "attach", "body", "html", "inline", "output",
	"json", "dir", "force", "all", "base64",
}

var (
	keysMu    sync.Mutex
	knownKeys map[string]bool // built on first use: only a config file needs it
)

func known() map[string]bool {
	if knownKeys == nil {
		knownKeys = map[string]bool{}
		for _, f := range CommonFlags() {
			for _, n := range f.Names() {
				knownKeys[n] = true
			}
		}
		for _, k := range otherKeys {
			knownKeys[k] = true
		}
		for _, f := range ProxyFlags() {
			knownKeys[f.Name] = true
		}
	}
	return knownKeys
}

// IsKnownKey reports whether some letterbox command understands key.
func IsKnownKey(key string) bool {
	keysMu.Lock()
	defer keysMu.Unlock()
	return known()[key]
}

// AddKnownKeys registers keys (for commands whose flags are defined outside
// this list).
func AddKnownKeys(names ...string) {
	keysMu.Lock()
	defer keysMu.Unlock()
	m := known()
	for _, k := range names {
		m[k] = true
	}
}

// IsCommand reports whether name is a letterbox command (a valid table name).
func IsCommand(name string) bool {
	for _, c := range Commands {
		if c == name {
			return true
		}
	}
	return false
}
