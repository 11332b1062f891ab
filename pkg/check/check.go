// Package check is what smtpd asks about mail from strangers — clients that
// are neither authenticated nor in relay-networks (DESIGN.md § Checks on
// mail in): DNS block and allow lists at connect, SPF at MAIL FROM, DKIM
// verification while the message streams into a staging file, DMARC after
// it, then milters (the Sendmail milter protocol, as Postfix speaks it) and
// a filter command. The message smtpd commits carries an
// Authentication-Results field with our results, the milters' changes, and
// none of the Authentication-Results fields that claimed to be ours.
//
// The spool's data file is written once, so a message is first staged:
// written to an unlinked temporary file as it arrives (DKIM hashes it from
// there while it grows), checked, and then written again, with its new
// header, as the spool's data file — or not at all when it is refused. A
// message's memory is its header (bounded by HeaderLimits) and, when a
// milter replaces the body, the new body (bounded by the message size
// limit); everything else is on disk.
//
// Every decision is one log line; those about a message carry its queue id.
package check

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand"
	"os"
	"strings"
	"time"
)

// Modes of the checks.
const (
	ModeOff     = "off"
	ModeTag     = "tag"     // result in Authentication-Results only
	ModeReject  = "reject"  // spf: fail refused
	ModeEnforce = "enforce" // dmarc: the sender's published policy applies
)

// Config is the checks' configuration (the keys of letterbox.conf(5)).
type Config struct {
	Hostname string // authserv-id of Authentication-Results; the j macro

	DNSBL []List // refuse clients listed here
	DNSWL []List // clients listed here skip the DNS lists, SPF, DKIM and DMARC

	SPF        string // off, tag or reject (default tag)
	DKIMVerify string // off or tag (default tag)
	DMARC      string // off, tag or enforce (default enforce)

	Milters             []MilterSpec
	MilterDefaultAction string        // tempfail or accept (default tempfail)
	MilterTimeout       time.Duration // connect and each reply (default 30s)

	Filter        string        // sh -c command; "" = none
	FilterTimeout time.Duration // default 2m

	Resolver *Resolver
	// DNSTimeout bounds the lookups of one check (a DNS list, SPF, the
	// DKIM keys of a message, DMARC); default 20s (RFC 7208 § 4.6.4).
	DNSTimeout time.Duration

	TempDir        string // where messages are staged ("" = os.TempDir())
	MaxMessageSize int64  // bounds a milter's replacement body
	Header         HeaderLimits
	Log            *slog.Logger

	// Percent draws DMARC's pct sampling: a number in [0, 100).
	Percent func() int
}

// Checker holds the checks of one smtpd; it is safe for concurrent use.
type Checker struct {
	cfg        Config
	milters    []*milterClient
	spfResults spfResults
}

// New checks cfg and fills in its defaults.
func New(cfg Config) (*Checker, error) {
	def := func(p *string, v string, allowed ...string) error {
		if *p == "" {
			*p = v
		}
		for _, a := range allowed {
			if *p == a {
				return nil
			}
		}
		return fmt.Errorf("%q: want %s", *p, strings.Join(allowed, ", "))
	}
	if err := def(&cfg.SPF, ModeTag, ModeOff, ModeTag, ModeReject); err != nil {
		return nil, fmt.Errorf("check: spf %w", err)
	}
	if err := def(&cfg.DKIMVerify, ModeTag, ModeOff, ModeTag); err != nil {
		return nil, fmt.Errorf("check: dkim-verify %w", err)
	}
	if err := def(&cfg.DMARC, ModeEnforce, ModeOff, ModeTag, ModeEnforce); err != nil {
		return nil, fmt.Errorf("check: dmarc %w", err)
	}
	if err := def(&cfg.MilterDefaultAction, "tempfail", "tempfail", "accept"); err != nil {
		return nil, fmt.Errorf("check: milter-default-action %w", err)
	}
	if cfg.Hostname == "" {
		h, _ := os.Hostname()
		cfg.Hostname = h
	}
	if cfg.MilterTimeout <= 0 {
		cfg.MilterTimeout = 30 * time.Second
	}
	if cfg.FilterTimeout <= 0 {
		cfg.FilterTimeout = 2 * time.Minute
	}
	if cfg.DNSTimeout <= 0 {
		cfg.DNSTimeout = 20 * time.Second
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = 35 << 20
	}
	if cfg.Header.MaxFields <= 0 || cfg.Header.MaxBytes <= 0 {
		cfg.Header = DefaultHeaderLimits
	}
	if cfg.TempDir == "" {
		cfg.TempDir = os.TempDir()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Percent == nil {
		cfg.Percent = func() int { return rand.Intn(100) }
	}
	if cfg.Resolver == nil && cfg.needsDNS() {
		return nil, errors.New("check: a resolver is needed for dnsbl, dnswl, spf, dkim-verify and dmarc")
	}
	c := &Checker{cfg: cfg}
	for _, m := range cfg.Milters {
		if m.DefaultAction == "" {
			m.DefaultAction = cfg.MilterDefaultAction
		}
		if m.Timeout <= 0 {
			m.Timeout = cfg.MilterTimeout
		}
		c.milters = append(c.milters, newMilterClient(m, cfg.MaxMessageSize))
	}
	return c, nil
}

func (cfg *Config) needsDNS() bool {
	return len(cfg.DNSBL) > 0 || len(cfg.DNSWL) > 0 || cfg.SPF != ModeOff || cfg.DKIMVerify != ModeOff || cfg.DMARC != ModeOff
}

// Active reports whether any check is configured: an inactive Checker
// lets smtpd skip staging altogether.
func (c *Checker) Active() bool {
	return c != nil && (c.cfg.needsDNS() || len(c.milters) > 0 || c.cfg.Filter != "")
}

// Verdict is what a check decided against the current command: the SMTP
// reply to give instead of the usual one. Discard is a 250 for a message
// that is then dropped.
type Verdict struct {
	Code    int
	Enh     string
	Text    string
	Discard bool
}

func (v *Verdict) Error() string { return fmt.Sprintf("%d %s %s", v.Code, v.Enh, v.Text) }

func verdict(code int, enh, format string, args ...any) *Verdict {
	return &Verdict{Code: code, Enh: enh, Text: fmt.Sprintf(format, args...)}
}

// tempfail is the reply when a check could not be done (a milter that is
// down with default action tempfail), Postfix's wording.
func tempfail() *Verdict {
	return verdict(451, "4.7.1", "Service unavailable - try again later")
}
