// Package remote delivers mail to other hosts: MX lookup with miekg/dns
// (preference order, implicit MX, null MX per RFC 7505), routes that override
// MX (a smarthost), and an SMTP client on go-smtp with opportunistic or
// required STARTTLS, AUTH to smarthosts, SIZE, 8BITMIME, SMTPUTF8 and
// per-recipient results. queue-runner calls Client.Deliver once per
// (message, domain); scheduling, retries and DSNs are the queue's job.
package remote

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"letterbox/pkg/config"
)

// CONTRACT: Result is one recipient's outcome.
type Result struct {
	Rcpt      string
	Code      int    // SMTP reply code (0 when no reply: connection failure, DNS failure)
	Status    string // enhanced status code, e.g. "5.1.1"; synthesised when the peer gave none
	Message   string // the remote reply text (quoted in DSNs) or our own error text, with the host that said it
	Temporary bool   // retry later
}

// Timeouts are the per-stage limits of RFC 5321 §4.5.3.2; they are fields so
// that tests can shorten them.
type Timeouts struct {
	Connect   time.Duration // TCP connect (and TLS handshake)
	Greeting  time.Duration // 220 banner
	Command   time.Duration // EHLO, STARTTLS, AUTH, MAIL, RCPT, RSET
	DataInit  time.Duration // DATA → 354
	DataBlock time.Duration // each write of message data
	DataEnd   time.Duration // final dot → reply
}

// DefaultTimeouts are RFC 5321's recommended values (connect from --connect-timeout).
var DefaultTimeouts = Timeouts{
	Connect:   30 * time.Second,
	Greeting:  5 * time.Minute,
	Command:   5 * time.Minute,
	DataInit:  2 * time.Minute,
	DataBlock: 3 * time.Minute,
	DataEnd:   10 * time.Minute,
}

// CONTRACT: Flags are queue-runner's remote-delivery flags.
//
// A route is `DOMAIN=HOST[:PORT]` optionally followed by space-separated
// options: `tls=may|encrypt|verify` overrides --tls-policy for that route.
// DOMAIN `*` is the smarthost for every domain without its own route.
func Flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "route", Usage: "send mail for `DOMAIN=HOST[:PORT] [tls=POLICY]` to HOST instead of its MX (repeatable; DOMAIN * = smarthost)"},
		&cli.StringFlag{Name: "route-auth-file", Usage: "smarthost credentials `FILE`: lines `HOST[:PORT] username password`"},
		&cli.StringFlag{Name: "dns", Usage: "DNS resolver `ADDR[:PORT]` (default: the first nameserver of /etc/resolv.conf)"},
		&cli.IntFlag{Name: "smtp-port", Usage: "`PORT` used for MX hosts", Value: 25},
		&cli.StringFlag{Name: "tls-policy", Usage: "STARTTLS `POLICY`: may (opportunistic), encrypt (required, no certificate check) or verify (required and verified)", Value: "may"},
		&cli.IntFlag{Name: "concurrency", Usage: "at most `N` outgoing connections in total", Value: 20},
		&cli.IntFlag{Name: "concurrency-per-domain", Usage: "at most `N` outgoing connections per destination", Value: 4},
		&cli.DurationFlag{Name: "connect-timeout", Usage: "TCP connect `TIMEOUT` per host", Value: 30 * time.Second},
		&cli.StringFlag{Name: "helo", Usage: "`NAME` sent in EHLO/HELO (default: the hostname)"},
	}
}

// CONTRACT: Client is safe for concurrent use; it holds the per-destination
// limits and a connection cache.
type Client struct{}

// CONTRACT: FromContext builds a Client from the flags of Flags.
func FromContext(c *cli.Context, cm *config.Common) (*Client, error) {
	return nil, errors.New("remote: not implemented")
}

// CONTRACT: Deliver sends one message (open returns its bytes, headers
// included, each call from the start) from the sender from to rcpts, all at
// domain. It returns one Result per rcpt, in order; err only for a
// programming or configuration error.
func (c *Client) Deliver(ctx context.Context, domain, from string, rcpts []string, open func() (io.ReadCloser, error)) ([]Result, error) {
	return nil, errors.New("remote: not implemented")
}

// CONTRACT: Close ends cached connections with QUIT.
func (c *Client) Close() error { return nil }
