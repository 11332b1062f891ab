// Package dkim signs the mail letterbox sends for its users (RFC 6376,
// rsa-sha256 and ed25519-sha256 per RFC 8463) and makes the keys: one
// private key per file, `<dkim-keys>/<domain>/<selector>.key` (PEM, PKCS#8
// or PKCS#1), mode 0600. queue-runner signs each message as it leaves,
// with every key of its From domain (or of that domain's organizational
// domain), relaxed/relaxed, over the recommended header fields with From
// signed once more than it occurs, so that no From can be added. The
// spool's data file is never changed: the signature is sent in front of
// it.
package dkim

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"
	"golang.org/x/net/publicsuffix"

	"letterbox/pkg/config"
)

// DefaultDir is where the keys are unless dkim-keys says otherwise.
const DefaultDir = "/etc/letterbox/dkim"

// KeysFlag is the dkim-keys key (queue-runner, mailuser).
var KeysFlag = config.Flag{Name: "dkim-keys", Default: DefaultDir,
	Usage: "`DIR` of DKIM keys, DIR/DOMAIN/SELECTOR.key: mail from DOMAIN is signed"}

// Key is one signing key.
type Key struct {
	Domain, Selector string
	Signer           crypto.Signer
}

// Algorithm is the key's k= value: "rsa" or "ed25519".
func (k *Key) Algorithm() string {
	if _, ok := k.Signer.Public().(ed25519.PublicKey); ok {
		return "ed25519"
	}
	return "rsa"
}

// Record returns the value of the TXT record to publish at
// SELECTOR._domainkey.DOMAIN.
func (k *Key) Record() (string, error) {
	var p []byte
	switch pub := k.Signer.Public().(type) {
	case ed25519.PublicKey:
		p = pub // RFC 8463 § 4.2: the raw 32 octets
	default:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", err
		}
		p = der
	}
	return "v=DKIM1; k=" + k.Algorithm() + "; p=" + base64.StdEncoding.EncodeToString(p), nil
}

// ZoneLine returns the record as a zone-file line, the value cut into
// quoted strings of at most 255 octets (RFC 1035's limit per string).
func (k *Key) ZoneLine() (string, error) {
	rec, err := k.Record()
	if err != nil {
		return "", err
	}
	var parts []string
	for len(rec) > 255 {
		parts = append(parts, `"`+rec[:255]+`"`)
		rec = rec[255:]
	}
	parts = append(parts, `"`+rec+`"`)
	return fmt.Sprintf("%s._domainkey.%s. IN TXT %s", k.Selector, k.Domain, strings.Join(parts, " ")), nil
}

// Path returns where a key of domain and selector lives under dir.
func Path(dir, domain, selector string) string {
	return filepath.Join(dir, domain, selector+".key")
}

// ValidName reports whether s can be a domain or a selector here: DNS
// labels of letters, digits, hyphens and underscores, never a path.
func ValidName(s string) bool {
	if s == "" || len(s) > 253 || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Generate makes a new key (algorithm "rsa": 2048 bits; "ed25519") and
// writes it to Path(dir, domain, selector), 0600, its directories 0700;
// an existing key is never overwritten. When run as root in a dkim-keys
// directory that belongs to another user (the one queue-runner runs as),
// the new files are given to that user.
func Generate(dir, domain, selector, algorithm string) (*Key, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if !ValidName(domain) || !strings.Contains(domain, ".") {
		return nil, fmt.Errorf("dkim: %q is not a domain name", domain)
	}
	if !ValidName(selector) {
		return nil, fmt.Errorf("dkim: %q is not a valid selector", selector)
	}
	var signer crypto.Signer
	var err error
	switch algorithm {
	case "rsa":
		signer, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ed25519":
		_, signer, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("dkim: algorithm %q: want rsa or ed25519", algorithm)
	}
	if err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	ddir := filepath.Join(dir, domain)
	// The directories MkdirAll makes, to fsync each into its parent.
	var made []string
	for p := filepath.Clean(ddir); ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil || filepath.Dir(p) == p {
			break
		}
		made = append(made, p)
	}
	if err := os.MkdirAll(ddir, 0o700); err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	path := Path(dir, domain, selector)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	werr := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if werr == nil {
		giveToOwner(dir, ddir, path)
	}
	// The key (its owner too) and every directory entry leading to it are
	// on disk before the DNS record is printed: a record published for a
	// key a crash lost would fail every signature.
	if err := f.Sync(); werr == nil {
		werr = err
	}
	if err := f.Close(); werr == nil {
		werr = err
	}
	for _, d := range append([]string{ddir}, parents(made)...) {
		if err := syncDir(d); werr == nil {
			werr = err
		}
	}
	if werr != nil {
		os.Remove(path)
		return nil, fmt.Errorf("dkim: write %s: %w", path, werr)
	}
	return &Key{Domain: domain, Selector: selector, Signer: signer}, nil
}

// parents returns the parent directory of each path.
func parents(paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = filepath.Dir(p)
	}
	return out
}

// syncDir fsyncs a directory, making the entries made in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// giveToOwner chowns ddir and path to the owner of dir when we are root
// and dir is someone else's.
func giveToOwner(dir, ddir, path string) {
	if os.Geteuid() != 0 {
		return
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return
	}
	os.Chown(ddir, int(st.Uid), int(st.Gid))
	os.Chown(path, int(st.Uid), int(st.Gid))
}

// ReadKey reads a key file: PEM, PKCS#8 (RSA or Ed25519) or PKCS#1 (RSA,
// as opendkim-genkey writes it).
func ReadKey(path, domain, selector string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("dkim: %s: no PEM block", path)
	}
	var k any
	switch blk.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("dkim: %s: %w", path, err)
	}
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return &Key{Domain: domain, Selector: selector, Signer: k}, nil
	case ed25519.PrivateKey:
		return &Key{Domain: domain, Selector: selector, Signer: k}, nil
	}
	return nil, fmt.Errorf("dkim: %s: unsupported key type %T", path, k)
}

// Keys finds the keys of a domain under Dir. A domain's keys are read
// again when its directory changes, so keys added while queue-runner runs
// are used.
type Keys struct {
	Dir string

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	mtime time.Time
	keys  []*Key
	err   error
}

// For returns the keys of domain, by selector; none when it has no
// directory.
func (ks *Keys) For(domain string) ([]*Key, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if !ValidName(domain) {
		return nil, nil
	}
	ddir := filepath.Join(ks.Dir, domain)
	fi, err := os.Stat(ddir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("dkim: %w", err)
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if c, ok := ks.cache[domain]; ok && c.mtime.Equal(fi.ModTime()) {
		return c.keys, c.err
	}
	names, err := filepath.Glob(filepath.Join(ddir, "*.key"))
	sort.Strings(names)
	var keys []*Key
	for _, n := range names {
		sel := strings.TrimSuffix(filepath.Base(n), ".key")
		if !ValidName(sel) {
			continue
		}
		k, kerr := ReadKey(n, domain, sel)
		if kerr != nil {
			err = kerr
			continue
		}
		keys = append(keys, k)
	}
	if ks.cache == nil {
		ks.cache = map[string]cached{}
	}
	ks.cache[domain] = cached{mtime: fi.ModTime(), keys: keys, err: err}
	return keys, err
}

// signedFields are the fields signed when present (RFC 6376 § 5.4.1's
// list, with Message-ID and the MIME fields); From is signed once more
// than it occurs.
var signedFields = []string{"from", "reply-to", "subject", "date", "to", "cc", "message-id",
	"resent-date", "resent-from", "resent-to", "resent-cc", "in-reply-to", "references",
	"list-id", "list-help", "list-unsubscribe", "list-subscribe", "list-post", "list-owner", "list-archive",
	"mime-version", "content-type", "content-transfer-encoding"}

// maxHeader bounds the header read to choose the fields and the domain.
const maxHeader = 1 << 20

// scanHeader returns the names of the header fields of the message (lower
// case, in order) and the From field's value.
func scanHeader(r io.Reader) (names []string, from string, err error) {
	br := bufio.NewReader(io.LimitReader(r, maxHeader))
	var cur string
	for {
		line, err := br.ReadString('\n')
		l := strings.TrimRight(line, "\r\n")
		if l != "" && (l[0] == ' ' || l[0] == '\t') && cur != "" {
			if cur == "from" {
				from += l
			}
		} else if i := strings.IndexByte(l, ':'); i > 0 && !strings.ContainsAny(strings.TrimRight(l[:i], " \t"), " \t") {
			cur = strings.ToLower(strings.TrimRight(l[:i], " \t"))
			names = append(names, cur)
			if cur == "from" && from == "" {
				from = l[i+1:]
			}
		} else {
			return names, from, nil // the empty line, or the body
		}
		if err == io.EOF {
			return names, from, nil
		}
		if err != nil {
			return nil, "", err
		}
	}
}

// headerKeys returns the h= list for a header with these field names.
func headerKeys(names []string) []string {
	count := map[string]int{}
	for _, n := range names {
		count[n]++
	}
	var keys []string
	for _, f := range signedFields {
		n := count[f]
		if f == "from" {
			n++
		}
		for i := 0; i < n; i++ {
			keys = append(keys, f)
		}
	}
	return keys
}

// fromDomain returns the domain of the From field's (first) address.
func fromDomain(v string) string {
	if list, err := mail.ParseAddressList(v); err == nil && len(list) > 0 {
		a := list[0].Address
		return strings.ToLower(a[strings.LastIndexByte(a, '@')+1:])
	}
	return ""
}

// Sign returns the DKIM-Signature fields (CRLF included) to send in front
// of the message that open returns, one per key of the From domain (or,
// without keys there, of its organizational domain); "" when there is no
// key. open is called twice: once for the header, once for the message.
func (ks *Keys) Sign(open func() (io.ReadCloser, error)) (sig string, domain string, err error) {
	rc, err := open()
	if err != nil {
		return "", "", err
	}
	names, from, err := scanHeader(rc)
	rc.Close()
	if err != nil {
		return "", "", fmt.Errorf("dkim: read header: %w", err)
	}
	domain = fromDomain(from)
	if domain == "" {
		return "", "", nil
	}
	keys, kerr := ks.For(domain)
	if len(keys) == 0 {
		if org, err := publicsuffix.EffectiveTLDPlusOne(domain); err == nil && org != domain {
			keys, kerr = ks.For(org)
		}
	}
	if len(keys) == 0 {
		return "", domain, kerr
	}
	rc, err = open()
	if err != nil {
		return "", domain, err
	}
	defer rc.Close()
	sig, err = SignWith(keys, headerKeys(names), rc)
	return sig, domain, err
}

// SignWith signs the message r with each key over the fields hkeys,
// relaxed/relaxed, reading r once. Bare LFs count as CRLF, as they go on
// the wire.
func SignWith(keys []*Key, hkeys []string, r io.Reader) (string, error) {
	signers := make([]*msgdkim.Signer, len(keys))
	ws := make([]io.Writer, len(keys))
	for i, k := range keys {
		s, err := msgdkim.NewSigner(&msgdkim.SignOptions{
			Domain: k.Domain, Selector: k.Selector, Signer: k.Signer,
			HeaderCanonicalization: msgdkim.CanonicalizationRelaxed,
			BodyCanonicalization:   msgdkim.CanonicalizationRelaxed,
			HeaderKeys:             hkeys,
		})
		if err != nil {
			return "", err
		}
		signers[i], ws[i] = s, s
	}
	_, err := io.Copy(&crlfWriter{w: io.MultiWriter(ws...)}, r)
	var b strings.Builder
	for _, s := range signers {
		if cerr := s.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			b.WriteString(s.Signature())
		}
	}
	if err != nil {
		return "", fmt.Errorf("dkim: sign: %w", err)
	}
	return b.String(), nil
}

// crlfWriter turns bare LFs into CRLF on the way to w.
type crlfWriter struct {
	w      io.Writer
	lastCR bool
}

func (c *crlfWriter) Write(p []byte) (int, error) {
	var b bytes.Buffer
	start := 0
	for i, x := range p {
		if x == '\n' && !(i > 0 && p[i-1] == '\r' || i == 0 && c.lastCR) {
			b.Write(p[start:i])
			b.WriteString("\r\n")
			start = i + 1
		}
	}
	if len(p) > 0 {
		c.lastCR = p[len(p)-1] == '\r'
	}
	if start == 0 {
		if _, err := c.w.Write(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	b.Write(p[start:])
	if _, err := c.w.Write(b.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}
