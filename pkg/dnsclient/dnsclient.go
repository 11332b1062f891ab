// Package dnsclient sends DNS questions to the name servers named by the
// `dns` key (default: those of /etc/resolv.conf) through miekg/dns. Every
// lookup letterbox makes goes through it — MX and addresses for remote
// delivery, SPF, DKIM keys, DMARC policies and DNS lists for the checks on
// mail in — so that a site or a test points them all at one server.
package dnsclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Client asks Servers in turn, each question with Timeout.
type Client struct {
	Servers []string // host:port
	Timeout time.Duration
}

// New returns a Client for addr (HOST or HOST:PORT; port 53 by default),
// or for the name servers of /etc/resolv.conf when addr is empty.
func New(addr string) (*Client, error) {
	c := &Client{Timeout: 5 * time.Second}
	if addr != "" {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			addr = net.JoinHostPort(strings.Trim(addr, "[]"), "53")
		}
		c.Servers = []string{addr}
		return c, nil
	}
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return nil, fmt.Errorf("dns: %w (set --dns)", err)
	}
	for _, s := range cc.Servers {
		c.Servers = append(c.Servers, net.JoinHostPort(s, cc.Port))
	}
	if len(c.Servers) == 0 {
		return nil, errors.New("dns: no nameserver in /etc/resolv.conf (set --dns)")
	}
	if cc.Timeout > 0 {
		c.Timeout = time.Duration(cc.Timeout) * time.Second
	}
	return c, nil
}

// Exchange sends one question to each server in turn until one answers;
// a truncated UDP answer is asked again over TCP. An answer that does not
// parse, or that answers another question, counts as no answer.
func (c *Client) Exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	m.SetEdns0(1232, false)
	var last error
	for _, srv := range c.Servers {
		for _, proto := range []string{"udp", "tcp"} {
			cl := &dns.Client{Net: proto, Timeout: c.Timeout}
			resp, _, err := cl.ExchangeContext(ctx, m, srv)
			if err == nil && !answers(resp, m) {
				err = fmt.Errorf("dns: %s answered another question than %s %s", srv, name, dns.TypeToString[qtype])
			}
			if err != nil {
				last = err
				break // next server
			}
			if resp.Truncated && proto == "udp" {
				continue
			}
			return resp, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

// answers reports whether resp is a reply to q (miekg/dns already checks
// the message id). An error reply may leave the question out.
func answers(resp, q *dns.Msg) bool {
	if !resp.Response {
		return false
	}
	if len(resp.Question) == 0 {
		return resp.Rcode != dns.RcodeSuccess
	}
	if len(resp.Question) != 1 {
		return false
	}
	a, b := resp.Question[0], q.Question[0]
	return a.Qtype == b.Qtype && strings.EqualFold(a.Name, b.Name)
}
