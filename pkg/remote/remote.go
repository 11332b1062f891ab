// Package remote delivers mail to other hosts: MX lookup with miekg/dns
// (preference order, implicit MX, null MX per RFC 7505), routes that override
// MX (a smarthost), and an SMTP client with opportunistic or required
// STARTTLS, AUTH to smarthosts, PIPELINING, SIZE, 8BITMIME, SMTPUTF8 and
// per-recipient results. queue-runner calls Client.Deliver once per
// (message, domain); scheduling, retries and DSNs are the queue's job.
//
// The SMTP client is our own (conn.go), not go-smtp's Client, which has no
// RFC 2920 pipelining and declares BODY=8BITMIME for every message. When
// the peer offers PIPELINING, MAIL, every RCPT and DATA go in one group (on
// a reused session, RSET too), so one message costs one round trip before
// its data instead of 2 + recipients; without it each command waits for
// its reply. Either way every reply is read and kept per recipient: a 5xx
// bounces that recipient only, a 4xx keeps it queued, and after a 452 the
// recipients not yet sent are left for a later transaction. When no
// recipient is accepted no message is sent: DATA is not sent (one by one),
// or, pipelined, its refusal is read, and a server that answers 354 anyway
// gets a lone dot (RFC 2920 §3.1); the session gets RSET before it carries
// another message.
//
// 8-bit content: Deliver reads the message once before the transaction
// (the queue's data file is on local disk) for its SIZE as sent and to see
// whether any octet has the high bit set. Only such a message is declared
// BODY=8BITMIME, and only to a peer that offers 8BITMIME. To a peer that
// does not, the message is sent unchanged, without BODY=: RFC 6152 §3
// allows a downgrade or a bounce instead, but a downgrade rewrites the
// message (breaking DKIM signatures, impossible for 8-bit headers) and a
// bounce loses mail that nearly every such server accepts in practice.
// Postfix does the same for content that is not MIME (and for MIME only
// with disable_mime_output_conversion).
package remote

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net"
	"net/netip"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
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

// Delivered reports whether the recipient's host accepted the message.
func (r Result) Delivered() bool { return r.Code >= 200 && r.Code < 300 }

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
		&cli.StringSliceFlag{Name: "route", Usage: "send mail for a domain to a host instead of its MX: `DOMAIN=HOST[:PORT]`, optionally followed by \" tls=may|encrypt|verify\" (repeatable; DOMAIN * = smarthost)"},
		&cli.StringFlag{Name: "route-auth-file", Usage: "smarthost credentials `FILE`: lines `HOST[:PORT] username password`"},
		&cli.StringFlag{Name: "dns", Usage: "DNS resolver `ADDR[:PORT]` (default: the first nameserver of /etc/resolv.conf)"},
		&cli.IntFlag{Name: "smtp-port", Usage: "`PORT` used for MX hosts", Value: 25},
		&cli.StringFlag{Name: "tls-policy", Usage: "STARTTLS `POLICY`: may (opportunistic), encrypt (required, no certificate check) or verify (required and verified)", Value: "may"},
		&cli.IntFlag{Name: "concurrency", Usage: "at most `N` outgoing connections in total", Value: 20},
		&cli.IntFlag{Name: "concurrency-per-domain", Usage: "at most `N` outgoing connections per destination", Value: 4},
		&cli.DurationFlag{Name: "connect-timeout", Usage: "TCP connect `TIMEOUT` per host", Value: 30 * time.Second},
		&cli.StringFlag{Name: "helo", Usage: "`NAME` sent in EHLO/HELO (default: the hostname)"},
		&cli.StringSliceFlag{Name: "proxy-interfaces", Usage: "`ADDRESS`es that reach this host through a proxy or NAT (an MX host there is ourselves, as one with our hostname or one of the machine's addresses; repeatable)"},
	}
}

// Config is what a Client needs; FromContext fills it from the flags.
type Config struct {
	Helo           string                 // name in EHLO/HELO
	Port           int                    // port of MX hosts and of routes without one (default 25)
	TLSPolicy      string                 // may, encrypt or verify (default may)
	Routes         []Route                // override MX; Domain "*" = smarthost
	Auth           map[string]Credentials // by "host:port" or "host", lower case
	DNS            string                 // resolver address; "" = /etc/resolv.conf
	Concurrency    int                    // total connections at once (default 20)
	PerDestination int                    // connections at once per destination (default 4)
	Timeouts       Timeouts               // zero fields take DefaultTimeouts
	IdleTimeout    time.Duration          // cached idle connections are closed after this (default 5s)
	RootCAs        *x509.CertPool         // for policy verify; nil = the system's roots
	// SelectMX, when set, chooses among a domain's MX hosts (in preference
	// order, each marked Ours when it is this host) those to send to;
	// an error means mail for the domain would loop back to us and fails
	// its recipients with 5.4.6. queue-runner sets it to pkg/route's
	// decision (route.UsableMX). Routes are not subject to it.
	SelectMX func(domain string, hosts []MX) ([]MX, error)
	// Hostname and ProxyInterfaces say which MX hosts are ours: the one
	// named Hostname (default Helo), and those resolving to one of the
	// machine's interface addresses or of ProxyInterfaces.
	Hostname        string
	ProxyInterfaces []netip.Addr
	Log             *slog.Logger // nil = discard
}

// CONTRACT: Client is safe for concurrent use; it holds the per-destination
// limits and a connection cache.
type Client struct {
	cfg    Config
	res    *resolver
	routes map[string]Route

	total chan struct{}

	mu      sync.Mutex
	perDest map[string]chan struct{}
	idle    map[string][]*conn
	closed  bool
	janitor chan struct{}
	rnd     *rand.Rand

	ours map[netip.Addr]bool // our addresses, for SelectMX
}

// MX is one MX host of a domain as SelectMX sees it (the same fields as
// pkg/route's MX).
type MX struct {
	Host string
	Pref int
	Ours bool
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	if cfg.Port == 0 {
		cfg.Port = 25
	}
	if cfg.TLSPolicy == "" {
		cfg.TLSPolicy = TLSMay
	}
	if !validPolicy(cfg.TLSPolicy) {
		return nil, fmt.Errorf("remote: tls-policy %q: want may, encrypt or verify", cfg.TLSPolicy)
	}
	if cfg.Helo == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		cfg.Helo = h
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 20
	}
	if cfg.PerDestination <= 0 {
		cfg.PerDestination = 4
	}
	if cfg.PerDestination > cfg.Concurrency {
		cfg.PerDestination = cfg.Concurrency
	}
	t, d := &cfg.Timeouts, DefaultTimeouts
	for _, p := range []struct {
		f *time.Duration
		v time.Duration
	}{
		{&t.Connect, d.Connect}, {&t.Greeting, d.Greeting}, {&t.Command, d.Command},
		{&t.DataInit, d.DataInit}, {&t.DataBlock, d.DataBlock}, {&t.DataEnd, d.DataEnd},
	} {
		if *p.f <= 0 {
			*p.f = p.v
		}
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	res, err := newResolver(cfg.DNS)
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:     cfg,
		res:     res,
		routes:  map[string]Route{},
		total:   make(chan struct{}, cfg.Concurrency),
		perDest: map[string]chan struct{}{},
		idle:    map[string][]*conn{},
		rnd:     rand.New(rand.NewSource(time.Now().UnixNano())),
	}
	if cfg.SelectMX != nil {
		if cfg.Hostname == "" {
			cfg.Hostname = cfg.Helo
		}
		c.cfg.Hostname = strings.TrimSuffix(strings.ToLower(cfg.Hostname), ".")
		c.ours = ourAddresses(cfg.ProxyInterfaces, cfg.Log)
	}
	for _, r := range cfg.Routes {
		if r.TLS != "" && !validPolicy(r.TLS) {
			return nil, fmt.Errorf("remote: route %s: tls=%s: want may, encrypt or verify", r.Domain, r.TLS)
		}
		c.routes[r.Domain] = r
	}
	return c, nil
}

// CONTRACT: FromContext builds a Client from the flags of Flags.
func FromContext(c *cli.Context, cm *config.Common) (*Client, error) {
	cfg, err := ConfigFromContext(c, cm)
	if err != nil {
		return nil, err
	}
	return New(cfg)
}

// ConfigFromContext reads the flags of Flags into a Config, for callers
// that set more of it (SelectMX) before New.
func ConfigFromContext(c *cli.Context, cm *config.Common) (Config, error) {
	cfg := Config{
		Helo:           c.String("helo"),
		Port:           c.Int("smtp-port"),
		TLSPolicy:      c.String("tls-policy"),
		DNS:            c.String("dns"),
		Concurrency:    c.Int("concurrency"),
		PerDestination: c.Int("concurrency-per-domain"),
		Timeouts:       DefaultTimeouts,
	}
	cfg.Timeouts.Connect = c.Duration("connect-timeout")
	if cm != nil {
		if cfg.Helo == "" {
			cfg.Helo = cm.Hostname
		}
		cfg.Hostname = cm.Hostname
		cfg.Log = cm.Log
	}
	for _, s := range c.StringSlice("proxy-interfaces") {
		a, err := netip.ParseAddr(strings.Trim(s, "[]"))
		if err != nil {
			return Config{}, fmt.Errorf("remote: proxy-interfaces: %w", err)
		}
		cfg.ProxyInterfaces = append(cfg.ProxyInterfaces, a.Unmap())
	}
	for _, s := range c.StringSlice("route") {
		r, err := ParseRoute(s)
		if err != nil {
			return Config{}, err
		}
		cfg.Routes = append(cfg.Routes, r)
	}
	if f := c.String("route-auth-file"); f != "" {
		a, err := ReadAuthFile(f)
		if err != nil {
			return Config{}, err
		}
		cfg.Auth = a
	}
	return cfg, nil
}

// CONTRACT: Close ends cached connections with QUIT.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	idle := c.idle
	c.idle = map[string][]*conn{}
	if c.janitor != nil {
		close(c.janitor)
		c.janitor = nil
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, l := range idle {
		for _, cn := range l {
			wg.Add(1)
			go func(cn *conn) { defer wg.Done(); cn.quit() }(cn)
		}
	}
	wg.Wait()
	return nil
}

// destination is where a domain's mail goes: a route or the domain's MX.
type destination struct {
	key    string // semaphore and connection cache key
	route  *Route
	policy string
}

func (c *Client) destination(domain string) destination {
	r, ok := c.routes[domain]
	if !ok {
		r, ok = c.routes["*"]
	}
	if ok {
		if r.Port == 0 {
			r.Port = c.cfg.Port
		}
		if r.TLS == "" {
			r.TLS = c.cfg.TLSPolicy
		}
		return destination{key: fmt.Sprintf("route %s:%d %s", strings.ToLower(r.Host), r.Port, r.TLS), route: &r, policy: r.TLS}
	}
	return destination{key: "mx " + domain, policy: c.cfg.TLSPolicy}
}

// DestinationKey names where mail for domain goes: the same key for two
// domains sent through one route (a smarthost), so that the queue's
// scheduler caps them together, as this Client's per-destination limit
// does.
func (c *Client) DestinationKey(domain string) string {
	return c.destination(strings.TrimSuffix(strings.ToLower(domain), ".")).key
}

// acquire takes a per-destination then a total slot; release gives both back.
func (c *Client) acquire(ctx context.Context, key string) (release func(), err error) {
	c.mu.Lock()
	sem := c.perDest[key]
	if sem == nil {
		sem = make(chan struct{}, c.cfg.PerDestination)
		c.perDest[key] = sem
	}
	c.mu.Unlock()
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case c.total <- struct{}{}:
	case <-ctx.Done():
		<-sem
		return nil, ctx.Err()
	}
	return func() { <-c.total; <-sem }, nil
}

// getIdle takes the most recently used cached connection for key.
func (c *Client) getIdle(key string) *conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	for l := c.idle[key]; len(l) > 0; l = c.idle[key] {
		cn := l[len(l)-1]
		c.idle[key] = l[:len(l)-1]
		if time.Since(cn.lastUsed) < c.cfg.IdleTimeout {
			return cn
		}
		go cn.quit()
	}
	return nil
}

// putIdle caches a connection ready for the next MAIL.
func (c *Client) putIdle(cn *conn) {
	cn.lastUsed = time.Now()
	c.mu.Lock()
	if c.closed || len(c.idle[cn.key]) >= c.cfg.PerDestination {
		c.mu.Unlock()
		go cn.quit()
		return
	}
	c.idle[cn.key] = append(c.idle[cn.key], cn)
	if c.janitor == nil {
		c.janitor = make(chan struct{})
		go c.sweep(c.janitor)
	}
	c.mu.Unlock()
}

// sweep closes connections idle longer than IdleTimeout, so that we don't
// hold other servers' connection slots.
func (c *Client) sweep(stop chan struct{}) {
	t := time.NewTicker(c.cfg.IdleTimeout / 2)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		c.mu.Lock()
		for k, l := range c.idle {
			keep := l[:0]
			for _, cn := range l {
				if time.Since(cn.lastUsed) >= c.cfg.IdleTimeout {
					go cn.quit()
				} else {
					keep = append(keep, cn)
				}
			}
			if len(keep) == 0 {
				delete(c.idle, k)
			} else {
				c.idle[k] = keep
			}
		}
		c.mu.Unlock()
	}
}

// message is what Deliver learned about the message before sending it.
type message struct {
	from     string
	rcpts    []string
	open     func() (io.ReadCloser, error)
	size     int64 // as sent: bare LFs counted as CRLF
	eightBit bool  // has octets ≥ 0x80: BODY=8BITMIME where offered
	utf8     bool
}

func needsUTF8(from string, rcpts []string) bool {
	for _, s := range append([]string{from}, rcpts...) {
		for i := 0; i < len(s); i++ {
			if s[i] >= 0x80 {
				return true
			}
		}
	}
	return false
}

// badAddress reports an address that cannot go into a command line: a
// control character would end the line or smuggle another command.
func badAddress(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// scanMessage reads the message once, before the transaction, because
// MAIL FROM must announce both its SIZE and its BODY type: the size as it
// goes on the wire (a bare LF is sent as CRLF) and whether any octet has
// the high bit set. The queue's data file is on local disk, so this costs
// one read of it, not a round trip.
func scanMessage(open func() (io.ReadCloser, error)) (size int64, eightBit bool, err error) {
	rc, err := open()
	if err != nil {
		return 0, false, err
	}
	defer rc.Close()
	buf := make([]byte, 32<<10)
	prev := byte(0)
	for {
		n, err := rc.Read(buf)
		for _, b := range buf[:n] {
			if b >= 0x80 {
				eightBit = true
			} else if b == '\n' && prev != '\r' {
				size++
			}
			prev = b
		}
		size += int64(n)
		if err == io.EOF {
			return size, eightBit, nil
		}
		if err != nil {
			return 0, false, err
		}
	}
}

func fill(rcpts []string, code int, status, msg string, temp bool) []Result {
	out := make([]Result, len(rcpts))
	for i, r := range rcpts {
		out[i] = Result{Rcpt: r, Code: code, Status: status, Message: msg, Temporary: temp}
	}
	return out
}

// CONTRACT: Deliver sends one message (open returns its bytes, headers
// included, each call from the start) from the sender from to rcpts, all at
// domain. It returns one Result per rcpt, in order; err only for a
// programming or configuration error.
func (c *Client) Deliver(ctx context.Context, domain, from string, rcpts []string, open func() (io.ReadCloser, error)) ([]Result, error) {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	if domain == "" || len(rcpts) == 0 || open == nil {
		return nil, errors.New("remote: Deliver needs a domain, recipients and a message")
	}
	if badAddress(from) {
		return fill(rcpts, 553, "5.1.7", fmt.Sprintf("sender address %q contains a control character", from), false), nil
	}
	out := make([]Result, len(rcpts))
	var good []string
	var where []int
	for i, r := range rcpts {
		if badAddress(r) {
			out[i] = Result{Rcpt: r, Code: 553, Status: "5.1.3", Message: fmt.Sprintf("recipient address %q contains a control character", r)}
			continue
		}
		good = append(good, r)
		where = append(where, i)
	}
	if len(good) == 0 {
		return out, nil
	}
	res := c.deliver(ctx, domain, from, good, open)
	for j, r := range res {
		out[where[j]] = r
	}
	return out, nil
}

func (c *Client) deliver(ctx context.Context, domain, from string, rcpts []string, open func() (io.ReadCloser, error)) []Result {
	size, eightBit, err := scanMessage(open)
	if err != nil {
		return fill(rcpts, 0, "4.3.0", fmt.Sprintf("cannot read the message: %v", err), true)
	}
	m := &message{from: from, rcpts: rcpts, open: open, size: size, eightBit: eightBit, utf8: needsUTF8(from, rcpts)}
	dest := c.destination(domain)
	release, err := c.acquire(ctx, dest.key)
	if err != nil {
		return fill(rcpts, 0, "4.4.7", fmt.Sprintf("delivery to %s interrupted: %v", domain, err), true)
	}
	defer release()

	// A cached session first; one that died while idle is no failure.
	// Its transaction starts with RSET, which both probes it and clears
	// what an aborted transaction left.
	for cn := c.getIdle(dest.key); cn != nil; cn = c.getIdle(dest.key) {
		if res, _ := c.transact(ctx, cn, m, true); res != nil {
			return res
		}
	}

	hosts, implicit, err := c.hosts(ctx, domain, dest)
	if err != nil {
		var de *dnsError
		if errors.As(err, &de) {
			return fill(rcpts, 0, de.Status, de.Msg, !de.Permanent)
		}
		return fill(rcpts, 0, "4.4.3", err.Error(), true)
	}
	var looked map[string]addrLookup
	if dest.route == nil && c.cfg.SelectMX != nil {
		hosts, looked, err = c.selectMX(ctx, domain, hosts)
		if err != nil {
			return fill(rcpts, 0, "5.4.6", err.Error(), false)
		}
	}
	creds := c.credentials(dest)
	var last *hostError
	attempts := 0
	for _, h := range hosts {
		var ips []netip.Addr
		if l, ok := looked[h.Name]; ok {
			ips, err = l.ips, l.err
		} else {
			ips, err = c.res.addrs(ctx, h.Name)
		}
		if err != nil && dest.route != nil {
			// A configured relay may be a name only /etc/hosts knows.
			if sys, serr := net.DefaultResolver.LookupNetIP(ctx, "ip", h.Name); serr == nil && len(sys) > 0 {
				ips, err = sys, nil
				for i, ip := range ips {
					ips[i] = ip.Unmap()
				}
			}
		}
		if err != nil {
			var de *dnsError
			if implicit && errors.As(err, &de) && de.Permanent {
				return fill(rcpts, 0, "5.1.2", fmt.Sprintf("domain %s not found: no MX and no address", domain), false)
			}
			// An MX host without an address is the domain's
			// misconfiguration, maybe passing: try the others, retry later.
			what := "MX host"
			if dest.route != nil {
				what = "relay host"
			}
			last = &hostError{Status: "4.4.3", Msg: fmt.Sprintf("%s %s: %v", what, h.Name, err)}
			continue
		}
		port := c.cfg.Port
		if dest.route != nil {
			port = dest.route.Port
		}
		for _, ip := range ips {
			if attempts >= maxAttempts {
				break
			}
			attempts++
			if ctx.Err() != nil {
				return fill(rcpts, 0, "4.4.7", fmt.Sprintf("delivery to %s interrupted: %v", domain, ctx.Err()), true)
			}
			cn, err := c.dial(ctx, h.Name, ip, port, dest.policy, creds, false)
			var he *hostError
			if err != nil && errors.As(err, &he) && he.tlsFailed && dest.policy == TLSMay {
				c.cfg.Log.Info("remote: TLS failed, retrying in plaintext", "domain", domain, "host", who(h.Name, ip), "err", he.Msg)
				cn, err = c.dial(ctx, h.Name, ip, port, dest.policy, creds, true)
			}
			if err != nil {
				if !errors.As(err, &he) {
					he = &hostError{Status: "4.4.1", Msg: err.Error()}
				}
				last = he
				c.cfg.Log.Info("remote: host failed", "domain", domain, "host", who(h.Name, ip), "err", he.Msg)
				continue
			}
			cn.key = dest.key
			res, lost := c.transact(ctx, cn, m, false)
			if res != nil {
				return res
			}
			last = lost
		}
	}
	if last == nil {
		last = &hostError{Status: "4.4.4", Msg: fmt.Sprintf("no host to try for %s", domain)}
	}
	code := last.Code
	if code >= 500 {
		// Every host refused to talk to us; still a temporary failure
		// for the message (RFC 5321 §5.1: try later).
		code = 0
	}
	status := last.Status
	if !strings.HasPrefix(status, "4.") {
		status = "4" + status[1:]
	}
	return fill(rcpts, code, status, last.Msg, true)
}

// maxAttempts bounds the addresses tried per delivery (Postfix's
// smtp_mx_address_limit), so that a domain with many dead MX hosts cannot
// hold its connection slots for many connect timeouts.
const maxAttempts = 5

// hosts returns the hosts to try for domain, and whether they are the
// implicit MX (the domain itself).
func (c *Client) hosts(ctx context.Context, domain string, dest destination) ([]mxHost, bool, error) {
	if dest.route != nil {
		return []mxHost{{Name: dest.route.Host}}, false, nil
	}
	if _, err := netip.ParseAddr(strings.Trim(domain, "[]")); err == nil && strings.HasPrefix(domain, "[") {
		// An address literal domain (user@[192.0.2.1]) has no MX.
		return []mxHost{{Name: strings.Trim(domain, "[]")}}, false, nil
	}
	c.mu.Lock()
	seed := c.rnd.Int63()
	c.mu.Unlock()
	r := rand.New(rand.NewSource(seed))
	return c.res.mx(ctx, domain, r.Intn)
}

type addrLookup struct {
	ips []netip.Addr
	err error
}

// selectMX resolves every MX host of domain, marks those that are ours and
// returns the ones SelectMX keeps, with the addresses looked up.
func (c *Client) selectMX(ctx context.Context, domain string, hosts []mxHost) ([]mxHost, map[string]addrLookup, error) {
	looked := make(map[string]addrLookup, len(hosts))
	in := make([]MX, len(hosts))
	for i, h := range hosts {
		l, ok := looked[h.Name]
		if !ok {
			l.ips, l.err = c.res.addrs(ctx, h.Name)
			looked[h.Name] = l
		}
		ours := strings.EqualFold(strings.TrimSuffix(h.Name, "."), c.cfg.Hostname)
		for _, ip := range l.ips {
			ours = ours || c.ours[ip.Unmap()]
		}
		in[i] = MX{Host: h.Name, Pref: h.Pref, Ours: ours}
	}
	out, err := c.cfg.SelectMX(domain, in)
	if err != nil {
		return nil, nil, err
	}
	if len(out) < len(in) {
		c.cfg.Log.Debug("remote: MX hosts left out: ours or less preferred than ours", "domain", domain, "kept", len(out), "of", len(in))
	}
	kept := make([]mxHost, len(out))
	for i, m := range out {
		kept[i] = mxHost{Name: m.Host, Pref: m.Pref}
	}
	return kept, looked, nil
}

// ourAddresses are the machine's interface addresses and extra.
func ourAddresses(extra []netip.Addr, log *slog.Logger) map[netip.Addr]bool {
	ours := map[netip.Addr]bool{}
	for _, a := range extra {
		ours[a.Unmap()] = true
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		log.Warn("remote: cannot list the interface addresses: only hostname and proxy-interfaces tell which MX host is ours", "err", err)
	}
	for _, ia := range ifaddrs {
		if n, ok := ia.(*net.IPNet); ok {
			if a, ok := netip.AddrFromSlice(n.IP); ok && !a.IsUnspecified() {
				ours[a.Unmap()] = true
			}
		}
	}
	return ours
}

func (c *Client) credentials(dest destination) *Credentials {
	if dest.route == nil || c.cfg.Auth == nil {
		return nil
	}
	h := strings.ToLower(dest.route.Host)
	for _, k := range []string{fmt.Sprintf("%s:%d", h, dest.route.Port), h, "[" + h + "]"} {
		if cr, ok := c.cfg.Auth[k]; ok {
			return &cr
		}
	}
	return nil
}

// maxGroup bounds the commands sent before reading their replies. The
// replies to a group must fit in our socket's receive buffer while we are
// still writing, or both sides block (RFC 2920 §3.2 warns of this
// deadlock): 100 replies of at most 512 octets fit in any default buffer.
const maxGroup = 100

// step is one command of a mail transaction.
type step struct {
	verb string // RSET, MAIL, RCPT or DATA
	rcpt int    // the recipient's index for RCPT
}

// transact runs one mail transaction on cn: RSET first when probe (a
// cached session), then MAIL, each RCPT and DATA, all in one group when
// the peer offers PIPELINING (RFC 2920), else one by one. res is nil when
// the session died before MAIL was answered, with why; the caller then
// tries a fresh session, since nothing was delivered. cn is cached again
// or closed.
func (c *Client) transact(ctx context.Context, cn *conn, m *message, probe bool) (res []Result, lost *hostError) {
	stop := context.AfterFunc(ctx, func() { cn.nc.Close() })
	defer stop()
	healthy := false
	defer func() {
		if healthy && ctx.Err() == nil {
			c.putIdle(cn)
		} else {
			cn.close()
		}
	}()
	all := func(code int, status, msg string, temp bool) []Result {
		return fill(m.rcpts, code, status, msg, temp)
	}
	if max := cn.maxSize(); max > 0 && m.size > max {
		healthy = true
		return all(552, "5.3.4", fmt.Sprintf("message size %d exceeds the limit %d of %s", m.size, max, cn.who()), false), nil
	}
	if m.utf8 && !cn.has("SMTPUTF8") {
		healthy = true
		return all(553, "5.6.7", fmt.Sprintf("%s does not support SMTPUTF8, needed for the non-ASCII addresses", cn.who()), false), nil
	}
	// Opened before MAIL: under pipelining DATA is already sent when we
	// learn whether anything failed.
	rc, err := m.open()
	if err != nil {
		healthy = true
		return all(0, "4.3.0", fmt.Sprintf("cannot read the message: %v", err), true), nil
	}
	defer rc.Close()
	cn.msgs++

	mail := "MAIL FROM:<" + m.from + ">"
	if m.eightBit {
		if cn.has("8BITMIME") {
			mail += " BODY=8BITMIME"
		} else {
			// Sent as is (see the package documentation).
			c.cfg.Log.Debug("remote: 8-bit message to a host without 8BITMIME, sent unchanged", "host", cn.who())
		}
	}
	if cn.has("SIZE") && m.size > 0 {
		mail += " SIZE=" + strconv.FormatInt(m.size, 10)
	}
	if m.utf8 {
		mail += " SMTPUTF8"
	}
	var steps []step
	if probe {
		steps = append(steps, step{verb: "RSET"})
	}
	steps = append(steps, step{verb: "MAIL"})
	for i := range m.rcpts {
		steps = append(steps, step{verb: "RCPT", rcpt: i})
	}
	steps = append(steps, step{verb: "DATA"})
	pipe := cn.has("PIPELINING")

	res = make([]Result, len(m.rcpts))
	var accepted []int
	setAccepted := func(code int, status, msg string, temp bool) {
		for _, k := range accepted {
			res[k] = Result{Rcpt: m.rcpts[k], Code: code, Status: status, Message: msg, Temporary: temp}
		}
	}
	// gone records a session that broke at stage: every recipient not yet
	// refused stays queued, the accepted ones too, since no message went.
	gone := func(e *hostError, from int) []Result {
		for j := from; j < len(m.rcpts); j++ {
			res[j] = Result{Rcpt: m.rcpts[j], Code: e.Code, Status: tempStatus(e.Status), Message: e.Msg, Temporary: true}
		}
		for _, k := range accepted {
			res[k] = Result{Rcpt: m.rcpts[k], Code: e.Code, Status: tempStatus(e.Status), Message: e.Msg, Temporary: true}
		}
		return res
	}
	var mailErr *hostError
	var dataReply reply
	dataSent := false
	for len(steps) > 0 && mailErr == nil {
		if steps[0].verb == "DATA" && len(accepted) == 0 {
			// Every recipient refused: no DATA. The session gets RSET
			// before its next transaction.
			break
		}
		n := 1
		if pipe {
			n = min(len(steps), maxGroup)
		}
		group := steps[:n]
		steps = steps[n:]
		cn.wt = c.cfg.Timeouts.Command
		var werr error
		for _, s := range group {
			line := "RSET"
			switch s.verb {
			case "MAIL":
				line = mail
			case "RCPT":
				line = "RCPT TO:<" + m.rcpts[s.rcpt] + ">"
			case "DATA":
				line = "DATA"
				dataSent = true
			}
			if werr = cn.send(line); werr != nil {
				break
			}
		}
		if werr == nil {
			werr = cn.bw.Flush()
		}
		for _, s := range group {
			stage := s.verb
			switch s.verb {
			case "MAIL":
				stage = "MAIL FROM"
			case "RCPT":
				stage = "RCPT TO"
			}
			timeout := c.cfg.Timeouts.Command
			if s.verb == "DATA" {
				timeout = c.cfg.Timeouts.DataInit
			}
			// A failed write may still leave the peer's reply (a 421)
			// to read; only when there is none is the error the write's.
			// That reply is already on its way, so it is not waited
			// for long.
			if werr != nil {
				timeout = min(timeout, 2*time.Second)
			}
			r, err := cn.read(timeout)
			var e *hostError
			switch {
			case err != nil && werr != nil:
				e = cn.ioError(stage, werr)
			case err != nil:
				e = cn.ioError(stage, err)
			case r.code == 421:
				// The server is closing the session (RFC 5321 §3.8).
				e = cn.replyError(stage, r)
			}
			if e != nil {
				if s.verb == "RSET" || s.verb == "MAIL" {
					return nil, e
				}
				if mailErr != nil {
					return all(mailErr.Code, mailErr.Status, mailErr.Msg, mailErr.Code/100 != 5), nil
				}
				if s.verb == "RCPT" {
					return gone(e, s.rcpt), nil
				}
				return gone(e, len(m.rcpts)), nil
			}
			switch s.verb {
			case "RSET":
				if !r.positive() {
					return nil, cn.replyError(stage, r)
				}
			case "MAIL":
				if !r.positive() {
					mailErr = cn.replyError(stage, r)
				}
			case "RCPT":
				if mailErr != nil {
					continue // the 503s after a refused MAIL say nothing new
				}
				if r.positive() {
					accepted = append(accepted, s.rcpt)
					continue
				}
				e := cn.replyError(stage, r)
				res[s.rcpt] = Result{Rcpt: m.rcpts[s.rcpt], Code: e.Code, Status: e.Status, Message: e.Msg, Temporary: e.Code/100 != 5}
				if r.code == 452 {
					// Too many recipients (RFC 5321 §4.5.3.1.10): those
					// not yet sent go in a later transaction. Under
					// pipelining the ones already sent have their own
					// replies, which stand.
					rest := steps[:0]
					for _, t := range steps {
						if t.verb != "RCPT" {
							rest = append(rest, t)
							continue
						}
						res[t.rcpt] = Result{Rcpt: m.rcpts[t.rcpt], Code: e.Code, Status: e.Status, Message: e.Msg + " (not attempted)", Temporary: true}
					}
					steps = rest
				}
			case "DATA":
				dataReply = r
			}
		}
	}

	// A DATA that got 354 although MAIL or every RCPT was refused (RFC
	// 2920 §3.1: some servers do) is ended with a lone dot, an empty
	// message for nobody, so the session stays in step.
	if dataSent && dataReply.code == 354 && (mailErr != nil || len(accepted) == 0) {
		cn.wt = c.cfg.Timeouts.DataBlock
		if err := cn.send("."); err == nil && cn.bw.Flush() == nil {
			if _, err := cn.read(c.cfg.Timeouts.DataEnd); err == nil {
				healthy = true
			}
		}
	} else {
		healthy = true
	}
	if mailErr != nil {
		return all(mailErr.Code, mailErr.Status, mailErr.Msg, mailErr.Code/100 != 5), nil
	}
	if len(accepted) == 0 {
		return res, nil
	}
	if dataReply.code != 354 {
		e := cn.replyError("DATA", dataReply)
		setAccepted(e.Code, e.Status, e.Msg, e.Code/100 != 5)
		return res, nil
	}

	// Every write of the data, the final dot included, gets the data
	// block timeout; textproto's DotWriter does the dot-stuffing and
	// sends bare LFs as CRLF.
	healthy = false
	cn.wt = c.cfg.Timeouts.DataBlock
	src := &errReader{r: rc}
	w := textproto.NewWriter(cn.bw).DotWriter()
	_, err = io.Copy(w, src)
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		// The session cannot be ended without the dot, and the dot
		// would deliver a truncated message: it is closed.
		if src.err != nil {
			setAccepted(0, "4.3.0", fmt.Sprintf("cannot read the message: %v", src.err), true)
		} else {
			e := cn.ioError("end of data", err)
			setAccepted(0, tempStatus(e.Status), fmt.Sprintf("%s while sending the message", e.Msg), true)
		}
		return res, nil
	}
	r, err := cn.read(c.cfg.Timeouts.DataEnd)
	switch {
	case err != nil:
		e := cn.ioError("end of data", err)
		setAccepted(0, tempStatus(e.Status), e.Msg, true)
	case r.positive():
		healthy = true
		setAccepted(r.code, "2.0.0", fmt.Sprintf("%s said: %s", cn.who(), r), false)
	default:
		e := cn.replyError("end of data", r)
		healthy = r.code != 421
		setAccepted(e.Code, e.Status, e.Msg, e.Code/100 != 5 || r.code == 421)
	}
	return res, nil
}

// errReader remembers a read error, to tell a local failure from a
// network one while copying the message out.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(b []byte) (int, error) {
	n, err := e.r.Read(b)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

func tempStatus(s string) string {
	if s == "" {
		return "4.0.0"
	}
	return "4" + s[1:]
}
