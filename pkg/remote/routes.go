package remote

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// TLS policies (--tls-policy, per route tls=).
const (
	TLSMay     = "may"     // STARTTLS when offered, certificate not checked; plaintext if the handshake fails
	TLSEncrypt = "encrypt" // STARTTLS required, certificate not checked
	TLSVerify  = "verify"  // STARTTLS required, certificate verified against the host name
)

func validPolicy(p string) bool { return p == TLSMay || p == TLSEncrypt || p == TLSVerify }

// Route sends a domain's mail to a fixed host instead of its MX.
type Route struct {
	Domain string // lower case; "*" = every domain without its own route
	Host   string // name or IP literal, without brackets
	Port   int    // 0 = the client's SMTP port
	TLS    string // "" = the client's policy
}

// ParseRoute reads `DOMAIN=HOST[:PORT] [tls=POLICY]`; HOST may be an IP
// literal, IPv6 in brackets.
func ParseRoute(s string) (Route, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return Route{}, fmt.Errorf("remote: route %q: empty", s)
	}
	dom, target, ok := strings.Cut(fields[0], "=")
	if !ok || dom == "" || target == "" {
		return Route{}, fmt.Errorf("remote: route %q: want DOMAIN=HOST[:PORT]", s)
	}
	r := Route{Domain: strings.TrimSuffix(strings.ToLower(dom), ".")}
	if h, p, err := net.SplitHostPort(target); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return Route{}, fmt.Errorf("remote: route %q: bad port %q", s, p)
		}
		r.Host, r.Port = h, n
	} else {
		r.Host = strings.Trim(target, "[]")
	}
	if r.Host == "" {
		return Route{}, fmt.Errorf("remote: route %q: empty host", s)
	}
	for _, opt := range fields[1:] {
		k, v, _ := strings.Cut(opt, "=")
		switch k {
		case "tls":
			if !validPolicy(v) {
				return Route{}, fmt.Errorf("remote: route %q: tls=%s: want may, encrypt or verify", s, v)
			}
			r.TLS = v
		default:
			return Route{}, fmt.Errorf("remote: route %q: unknown option %q", s, opt)
		}
	}
	return r, nil
}

// Credentials are a smarthost's AUTH username and password.
type Credentials struct {
	Username, Password string
}

// ReadAuthFile reads lines `HOST[:PORT] username password` (blank lines and
// # comments skipped); the key is HOST or HOST:PORT as written, lower case.
func ReadAuthFile(path string) (map[string]Credentials, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("remote: route-auth-file: %w", err)
	}
	defer f.Close()
	out := map[string]Credentials{}
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 3 {
			return nil, fmt.Errorf("remote: route-auth-file %s:%d: want `HOST[:PORT] username password`", path, n)
		}
		out[strings.ToLower(fields[0])] = Credentials{Username: fields[1], Password: fields[2]}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("remote: route-auth-file %s: %w", path, err)
	}
	return out, nil
}
