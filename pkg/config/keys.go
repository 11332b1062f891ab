package config

// Commands are the letterbox commands; each may have a [name] table.
var Commands = []string{"smtpd", "sendmail", "queue-runner", "deliver", "pop3d", "imapd", "mime-pack", "mailuser"}

// knownKeys lists every key some letterbox command understands. A command
// adding a flag adds its name here, so that the file's other readers don't warn
// about it.
var knownKeys = map[string]bool{}

func init() {
	for _, f := range CommonFlags() {
		for _, n := range f.Names() {
			knownKeys[n] = true
		}
	}
	for _, k := range []string{
		// smtpd
		"listen", "user", "relay-networks", "max-message-size", "max-recipients",
		"max-errors", "command-timeout", "data-timeout", "allow-insecure-auth",
		"max-auth-failures", "max-received", "greeting",
		"mode", "auth-failure-delay",
		// queue-runner
		"daemon", "dns", "route", "smtp-port", "retry-after", "max-retry-interval",
		"warn-after", "bounce-after", "mda", "concurrency", "concurrency-per-domain",
		"tls-policy", "route-auth-file", "interval",
		"connect-timeout", "helo",
		// deliver
		"sender", "recipient", "maildir", "mbox",
		// pop3d / imapd
		"idle-timeout", "no-flag-updates", "mbox-lock-timeout",
		// mailuser
		"scheme",
		// mime-pack
		"subject", "from", "to", "cc", "attach", "body", "html", "inline", "output",
		"json", "dir", "force", "all", "base64",
	} {
		knownKeys[k] = true
	}
}

// IsKnownKey reports whether some letterbox command understands key.
func IsKnownKey(key string) bool { return knownKeys[key] }

// AddKnownKeys registers keys (for commands whose flags are defined outside
// this list).
func AddKnownKeys(keys ...string) {
	for _, k := range keys {
		knownKeys[k] = true
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
