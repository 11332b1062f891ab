package check

import (
	"log/slog"
	"time"

	"github.com/urfave/cli/v2"
)

// Flags are smtpd's keys for the checks (letterbox.conf(5)); `dns` is
// also queue-runner's.
func Flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "dnsbl", Usage: "refuse clients listed in DNS list `ZONE` or ZONE=127.0.0.2,… (repeatable)"},
		&cli.StringSliceFlag{Name: "dnswl", Usage: "clients listed in `ZONE` (or ZONE=CODES) skip the DNS lists, SPF, DKIM and DMARC (repeatable)"},
		&cli.StringFlag{Name: "spf", Usage: "SPF `MODE`: off, tag or reject", Value: ModeTag},
		&cli.StringFlag{Name: "dkim-verify", Usage: "DKIM verification `MODE`: off or tag", Value: ModeTag},
		&cli.StringFlag{Name: "dmarc", Usage: "DMARC `MODE`: off, tag or enforce (the sender's published policy)", Value: ModeEnforce},
		&cli.StringSliceFlag{Name: "milter", Usage: "milter `inet:HOST:PORT|unix:PATH` [default-action=…] [timeout=…] (repeatable, in order)"},
		&cli.StringFlag{Name: "milter-default-action", Usage: "`ACTION` when a milter is down: tempfail or accept", Value: "tempfail"},
		&cli.DurationFlag{Name: "milter-timeout", Usage: "connect to a milter and wait for each reply at most `DURATION`", Value: 30 * time.Second},
		&cli.StringFlag{Name: "filter", Usage: "content filter `COMMAND` (sh -c): message on stdin; exit 0 accept, 100 reject, 111 tempfail"},
		&cli.DurationFlag{Name: "filter-timeout", Usage: "the filter's time limit", Value: 2 * time.Minute},
		&cli.StringFlag{Name: "dns", Usage: "DNS resolver `ADDR[:PORT]` of the checks (default: the nameservers of /etc/resolv.conf)"},
	}
}

// FlagNames are the keys of Flags, for config.AddKnownKeys.
var FlagNames = []string{"dnsbl", "dnswl", "spf", "dkim-verify", "dmarc", "milter",
	"milter-default-action", "milter-timeout", "filter", "filter-timeout", "dns"}

// FromContext builds a Checker from the flags of Flags; hostname,
// maxMessage, tmpDir and log come from smtpd. It returns nil when no check
// is configured.
func FromContext(c *cli.Context, hostname string, maxMessage int64, tmpDir string, log *slog.Logger) (*Checker, error) {
	cfg := Config{
		Hostname:            hostname,
		SPF:                 c.String("spf"),
		DKIMVerify:          c.String("dkim-verify"),
		DMARC:               c.String("dmarc"),
		MilterDefaultAction: c.String("milter-default-action"),
		MilterTimeout:       c.Duration("milter-timeout"),
		Filter:              c.String("filter"),
		FilterTimeout:       c.Duration("filter-timeout"),
		TempDir:             tmpDir,
		MaxMessageSize:      maxMessage,
		Log:                 log,
	}
	for _, s := range c.StringSlice("dnsbl") {
		l, err := ParseList(s)
		if err != nil {
			return nil, err
		}
		cfg.DNSBL = append(cfg.DNSBL, l)
	}
	for _, s := range c.StringSlice("dnswl") {
		l, err := ParseList(s)
		if err != nil {
			return nil, err
		}
		cfg.DNSWL = append(cfg.DNSWL, l)
	}
	for _, s := range c.StringSlice("milter") {
		m, err := ParseMilter(s)
		if err != nil {
			return nil, err
		}
		cfg.Milters = append(cfg.Milters, m)
	}
	if cfg.needsDNS() {
		r, err := NewResolver(c.String("dns"))
		if err != nil {
			return nil, err
		}
		cfg.Resolver = r
	}
	ch, err := New(cfg)
	if err != nil || !ch.Active() {
		return nil, err
	}
	return ch, nil
}
