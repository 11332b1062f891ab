package check

// The streaming DKIM verifier (RFC 6376 § 6): every signature of a message
// is checked while the message arrives, in the session's own goroutine —
// the body is canonicalized and hashed piece by piece as it is read from
// the client, and nothing is read back from the staged copy. Its checks,
// their order and the texts of its errors (which Authentication-Results
// quotes as reason) are those of go-msgauth v0.7.0's dkim.Verify, which it
// replaces for the common case (a header that ends with an empty line);
// TestDKIMStreamMatchesGoMsgauth holds the two to the same results. A
// message whose header does not end so is still verified by go-msgauth,
// following the staged copy (dkimverify.go), because go-msgauth reads such
// a header differently from us and only it says what it then concludes.
//
// Why not go-msgauth throughout: its Verify wants the message as an
// io.Reader, so it ran in a goroutine following the staged copy, woken
// for every piece; it parses the key record and copies the body twice per
// message. bench/NOTES-perf.md has the profiles.
//
// Parts of this file are adapted from github.com/emersion/go-msgauth
// (dkim/verify.go, canonical.go, query.go, header.go), MIT License,
// Copyright (c) 2017 emersion.

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
)

// dkimError is a verification's failure, of go-msgauth's three kinds.
type dkimError struct {
	kind dkimErrorKind
	msg  string
}

type dkimErrorKind int

const (
	dkimPermFail dkimErrorKind = iota // a malformed signature or key, a missing key
	dkimTempFail                      // the key could not be looked up
	dkimFail                          // the signature does not verify
)

func (e *dkimError) Error() string { return "dkim: " + e.msg }

func permFail(msg string) error { return &dkimError{dkimPermFail, msg} }
func tempFail(msg string) error { return &dkimError{dkimTempFail, msg} }
func sigFail(msg string) error  { return &dkimError{dkimFail, msg} }

func isDKIMError(err error, kind dkimErrorKind) bool {
	var e *dkimError
	return errors.As(err, &e) && e.kind == kind
}

// dkimStream verifies the signatures of one message as it streams by.
type dkimStream struct {
	header []string // the header fields as go-msgauth reads them: lines joined with CRLF
	sigs   []*sigCheck
	bodies []*bodyHash // one per body canonicalization in use
	keys   chan struct{}
}

// sigCheck is one DKIM-Signature being verified.
type sigCheck struct {
	field  string // the field, as in header
	params map[string]string
	domain string // d=, once the tags parse
	err    error  // the verdict of the checks made before the key lookup

	keyName string // selector._domainkey.domain; "" when not looked up
	key     *dkimKey
	keyErr  error

	body *bodyHash // the body's hash under c='s body canonicalization; nil: unused
}

// startStream prepares the verification of the signatures in header (at
// most maxDKIMSignatures of them), looking their keys up now when the
// resolver has them, else in a goroutine while the body arrives. header
// holds the fields in go-msgauth's form; sigFields the indexes of the
// DKIM-Signature fields.
func (c *Checker) startStream(ctx context.Context, header []string, sigFields []int) *dkimStream {
	s := &dkimStream{header: header}
	if len(sigFields) > maxDKIMSignatures {
		sigFields = sigFields[:maxDKIMSignatures]
	}
	cached := true
	for _, i := range sigFields {
		sc := &sigCheck{field: header[i]}
		_, value := parseHeaderField(header[i])
		sc.prepare(value)
		if sc.err == nil {
			bodyCan := canonicalization(sc.params["c"], 1)
			if bodyCan == "simple" || bodyCan == "relaxed" {
				sc.body = s.bodyFor(bodyCan == "relaxed")
			}
			if sc.keyName != "" && !c.cfg.Resolver.cachedTXT(sc.keyName) {
				cached = false
			}
		}
		s.sigs = append(s.sigs, sc)
	}
	lookup := func() {
		for _, sc := range s.sigs {
			if sc.err == nil && sc.keyName != "" {
				sc.key, sc.keyErr = c.queryKey(ctx, sc.keyName)
			}
		}
	}
	if cached {
		lookup()
	} else {
		s.keys = make(chan struct{})
		go func() {
			defer close(s.keys)
			lookup()
		}()
	}
	return s
}

func (s *dkimStream) bodyFor(relaxed bool) *bodyHash {
	for _, b := range s.bodies {
		if b.relaxed == relaxed {
			return b
		}
	}
	b := &bodyHash{relaxed: relaxed, h: sha256.New(), out: (*hashBuffers.Get().(*[]byte))[:0]}
	s.bodies = append(s.bodies, b)
	return b
}

// hashBuffers hold canonical octets on their way to the hash.
var hashBuffers = sync.Pool{New: func() any { b := make([]byte, 0, hashBufferSize); return &b }}

const hashBufferSize = 8 << 10

// write takes the next piece of the body.
func (s *dkimStream) write(p []byte) {
	for _, b := range s.bodies {
		b.write(p)
	}
}

// finish ends the body and returns each signature's verdict, in order
// (nil: valid).
func (s *dkimStream) finish() []verification {
	for _, b := range s.bodies {
		b.close()
	}
	if s.keys != nil {
		<-s.keys
	}
	out := make([]verification, len(s.sigs))
	for i, sc := range s.sigs {
		out[i] = verification{domain: sc.domain, err: sc.verify(s.header)}
	}
	return out
}

// verification is what one signature came to.
type verification struct {
	domain string // d=, "" when the tags did not parse
	err    error
}

var requiredTags = []string{"v", "a", "b", "bh", "d", "h", "s"}

// prepare makes the checks of go-msgauth's verify that come before the
// key lookup, and finds the key's name.
func (sc *sigCheck) prepare(value string) {
	params, err := parseHeaderParams(value)
	if err != nil {
		sc.err = permFail("malformed signature tags: " + err.Error())
		return
	}
	sc.params = params
	if params["v"] != "1" {
		sc.err = permFail("incompatible signature version")
		return
	}
	sc.domain = stripWhitespace(params["d"])
	for _, tag := range requiredTags {
		if _, ok := params[tag]; !ok {
			sc.err = permFail("signature missing required tag")
			return
		}
	}
	if i, ok := params["i"]; ok {
		id := stripWhitespace(i)
		if !strings.HasSuffix(id, "@"+sc.domain) && !strings.HasSuffix(id, "."+sc.domain) {
			sc.err = permFail("domain mismatch")
			return
		}
	}
	from := false
	for _, k := range colonList(params["h"]) {
		if strings.EqualFold(k, "from") {
			from = true
			break
		}
	}
	if !from {
		sc.err = permFail("From field not signed")
		return
	}
	if s, ok := params["t"]; ok {
		if _, err := parseTime(s); err != nil {
			sc.err = permFail("malformed time: " + err.Error())
			return
		}
	}
	if s, ok := params["x"]; ok {
		t, err := parseTime(s)
		if err != nil {
			sc.err = permFail("malformed expiration time: " + err.Error())
			return
		}
		if time.Now().After(t) {
			sc.err = permFail("signature has expired")
			return
		}
	}
	methods := []string{"dns/txt"}
	if s, ok := params["q"]; ok {
		methods = colonList(s)
	}
	for _, m := range methods {
		if m == "dns/txt" {
			sc.keyName = stripWhitespace(params["s"]) + "._domainkey." + sc.domain
			break
		}
	}
}

// verify makes the rest of go-msgauth's checks, in its order: the key,
// the algorithms, the canonicalizations, the body hash, the signature.
func (sc *sigCheck) verify(header []string) error {
	if sc.err != nil {
		return sc.err
	}
	if sc.keyName == "" {
		return permFail("unsupported public key query method")
	}
	if sc.keyErr != nil {
		return sc.keyErr
	}
	if sc.key == nil {
		// The lookup was stopped before it ran (a message aborted).
		return tempFail("key unavailable: lookup not done")
	}
	params, key := sc.params, sc.key
	keyAlgo, hashAlgo, ok := strings.Cut(stripWhitespace(params["a"]), "-")
	if !ok {
		return permFail("malformed algorithm name")
	}
	if key.hashAlgos != nil {
		ok := false
		for _, a := range key.hashAlgos {
			if a == hashAlgo {
				ok = true
				break
			}
		}
		if !ok {
			return permFail("inappropriate hash algorithm")
		}
	}
	switch hashAlgo {
	case "sha1":
		// RFC 8301 § 3.1: rsa-sha1 MUST NOT be used for verifying.
		return permFail(fmt.Sprintf("hash algorithm too weak: %v", hashAlgo))
	case "sha256":
	default:
		return permFail("unsupported hash algorithm")
	}
	if key.keyAlgo != keyAlgo {
		return permFail("inappropriate key algorithm")
	}
	if key.services != nil {
		ok := false
		for _, s := range key.services {
			if s == "email" {
				ok = true
				break
			}
		}
		if !ok {
			return permFail("inappropriate service")
		}
	}
	headerCan, bodyCan := canonicalization(params["c"], 0), canonicalization(params["c"], 1)
	if headerCan != "simple" && headerCan != "relaxed" {
		return permFail("unsupported header canonicalization algorithm")
	}
	if bodyCan != "simple" && bodyCan != "relaxed" {
		return permFail("unsupported body canonicalization algorithm")
	}
	// l= leaves part of the body unsigned: go-msgauth refuses it.
	if _, ok := params["l"]; ok {
		return sigFail("message contains an insecure body length tag")
	}
	bodyHashed, err := decodeBase64String(params["bh"])
	if err != nil {
		return permFail("malformed body hash: " + err.Error())
	}
	sig, err := decodeBase64String(params["b"])
	if err != nil {
		return permFail("malformed signature: " + err.Error())
	}
	if subtle.ConstantTimeCompare(sc.body.sum, bodyHashed) != 1 {
		return sigFail("body hash did not verify")
	}

	h := sha256.New()
	relaxed := headerCan == "relaxed"
	picker := headerPicker{h: header}
	for _, k := range colonList(params["h"]) {
		kv := picker.pick(k)
		if kv == "" {
			// Fields named but absent do not count (RFC 6376 § 5.4).
			continue
		}
		if relaxed {
			kv = relaxedHeader(kv)
		}
		h.Write([]byte(kv))
	}
	self := removeSignature(sc.field)
	if relaxed {
		self = relaxedHeader(self)
	}
	h.Write([]byte(strings.TrimRight(self, "\r\n")))
	if err := key.verify(h.Sum(nil), sig); err != nil {
		return sigFail("signature did not verify: " + err.Error())
	}
	return nil
}

// dkimKey is a parsed key record (RFC 6376 § 3.6.1).
type dkimKey struct {
	rsa       *rsa.PublicKey
	ed25519   ed25519.PublicKey
	keyAlgo   string
	hashAlgos []string // h=; nil: any
	services  []string // s=; nil: any
}

func (k *dkimKey) verify(hashed, sig []byte) error {
	if k.rsa != nil {
		return rsa.VerifyPKCS1v15(k.rsa, crypto.SHA256, hashed, sig)
	}
	if !ed25519.Verify(k.ed25519, hashed, sig) {
		return errors.New("dkim: invalid Ed25519 signature")
	}
	return nil
}

// keyCache keeps parsed key records by their text: the same senders sign
// message after message, and parsing a record (base64, DER) costs more
// than hashing a small message. The record itself comes from the
// resolver, which keeps it only for its TTL.
type keyCache struct {
	mu   sync.Mutex
	keys map[string]parsedKey
}

type parsedKey struct {
	key *dkimKey
	err error
}

const maxKeyCache = 1000

func (kc *keyCache) parse(record string) (*dkimKey, error) {
	kc.mu.Lock()
	p, ok := kc.keys[record]
	kc.mu.Unlock()
	if ok {
		return p.key, p.err
	}
	k, err := parsePublicKey(record)
	kc.mu.Lock()
	if kc.keys == nil || len(kc.keys) >= maxKeyCache {
		kc.keys = map[string]parsedKey{}
	}
	kc.keys[record] = parsedKey{k, err}
	kc.mu.Unlock()
	return k, err
}

// queryKey looks the key up (go-msgauth's queryDNSTXT).
func (c *Checker) queryKey(ctx context.Context, name string) (*dkimKey, error) {
	txts, err := c.cfg.Resolver.LookupTXT(ctx, name)
	if netErr, ok := err.(net.Error); ok && netErr.Temporary() {
		return nil, tempFail("key unavailable: " + err.Error())
	} else if err != nil {
		return nil, permFail("no key for signature: " + err.Error())
	}
	// RFC 6376 § 3.6.2.2: more than one record is undefined; refused.
	switch len(txts) {
	case 0:
		return nil, permFail("no valid key found")
	case 1:
		return c.keys.parse(txts[0])
	default:
		return nil, permFail("multiple TXT records found for key")
	}
}

func parsePublicKey(s string) (*dkimKey, error) {
	params, err := parseHeaderParams(s)
	if err != nil {
		return nil, permFail("key record error: " + err.Error())
	}
	if v, ok := params["v"]; ok && v != "DKIM1" {
		return nil, permFail("incompatible public key version")
	}
	p, ok := params["p"]
	if !ok {
		return nil, permFail("key syntax error: missing public key data")
	}
	if p == "" {
		return nil, permFail("key revoked")
	}
	b, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(p, " ", ""))
	if err != nil {
		return nil, permFail("key syntax error: " + err.Error())
	}
	k := &dkimKey{}
	switch params["k"] {
	case "rsa", "":
		pub, err := x509.ParsePKIXPublicKey(b)
		if err != nil {
			// RSAPublicKey or SubjectPublicKeyInfo: RFC 6376 erratum 3017.
			pub, err = x509.ParsePKCS1PublicKey(b)
			if err != nil {
				return nil, permFail("key syntax error: " + err.Error())
			}
		}
		rsaPub, ok := pub.(*rsa.PublicKey)
		if !ok {
			return nil, permFail("key syntax error: not an RSA public key")
		}
		// RFC 8301 § 3.2: no keys under 1024 bits.
		if rsaPub.Size()*8 < 1024 {
			return nil, permFail(fmt.Sprintf("key is too short: want 1024 bits, has %v bits", rsaPub.Size()*8))
		}
		k.rsa, k.keyAlgo = rsaPub, "rsa"
	case "ed25519":
		if len(b) != ed25519.PublicKeySize {
			return nil, permFail(fmt.Sprintf("invalid Ed25519 public key size: %v bytes", len(b)))
		}
		k.ed25519, k.keyAlgo = ed25519.PublicKey(b), "ed25519"
	default:
		return nil, permFail("unsupported key algorithm")
	}
	if s, ok := params["h"]; ok {
		k.hashAlgos = colonList(s)
	}
	if s, ok := params["s"]; ok {
		services := colonList(s)
		wildcard := false
		for _, s := range services {
			if s == "*" {
				wildcard = true
				break
			}
		}
		if !wildcard {
			k.services = services
		}
	}
	return k, nil
}

// parseHeaderField splits a field as go-msgauth does.
func parseHeaderField(s string) (string, string) {
	key, value, _ := strings.Cut(s, ":")
	return strings.TrimSpace(key), strings.TrimSpace(value)
}

// parseHeaderParams is go-msgauth's tag-list parser (looser than
// ParseTagList, and its errors are what reason= says).
func parseHeaderParams(s string) (map[string]string, error) {
	params := make(map[string]string)
	for _, s := range strings.Split(s, ";") {
		key, value, ok := strings.Cut(s, "=")
		if !ok {
			if strings.TrimSpace(s) == "" {
				continue
			}
			return params, errors.New("dkim: malformed header params")
		}
		k := strings.TrimSpace(key)
		if _, dup := params[k]; dup {
			return params, errors.New("dkim: duplicate tag name")
		}
		params[k] = strings.TrimSpace(value)
	}
	return params, nil
}

// colonList splits a colon-separated tag value (h=, q=, s=).
func colonList(s string) []string {
	tags := strings.Split(s, ":")
	for i, t := range tags {
		tags[i] = stripWhitespace(t)
	}
	return tags
}

// canonicalization returns c='s header (part 0) or body (part 1)
// algorithm; simple when not given.
func canonicalization(c string, part int) string {
	cans := strings.SplitN(stripWhitespace(c), "/", 2)
	if part < len(cans) && cans[part] != "" {
		return cans[part]
	}
	return "simple"
}

func parseTime(s string) (time.Time, error) {
	sec, err := strconv.ParseInt(stripWhitespace(s), 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(sec, 0), nil
}

func decodeBase64String(s string) ([]byte, error) {
	return base64.StdEncoding.DecodeString(stripWhitespace(s))
}

// stripWhitespace removes what unicode.IsSpace calls white space (as
// go-msgauth does), with a pass over the octets for ASCII.
func stripWhitespace(s string) string {
	ascii, spaces := true, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 0x80:
			ascii = false
		case asciiSpace(c):
			spaces = true
		}
	}
	switch {
	case !ascii:
		return strings.Map(func(r rune) rune {
			if unicode.IsSpace(r) {
				return -1
			}
			return r
		}, s)
	case !spaces:
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if !asciiSpace(s[i]) {
			b = append(b, s[i])
		}
	}
	return string(b)
}

// asciiSpace: the ASCII octets unicode.IsSpace takes for white space.
func asciiSpace(c byte) bool {
	return c == ' ' || c >= '\t' && c <= '\r'
}

// removeSignature empties the value of b= in a DKIM-Signature field for
// its own hash: what go-msgauth's regexp `(b\s*=)[^;]+` replaced by "$1"
// does (every match; \s is RE2's: space, \t, \n, \f, \r), without the
// regexp.
func removeSignature(s string) string {
	var out []byte
	last := 0
	for i := 0; i < len(s); i++ {
		if s[i] != 'b' {
			continue
		}
		j := i + 1
		for j < len(s) && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\f' || s[j] == '\r') {
			j++
		}
		if j >= len(s) || s[j] != '=' {
			continue
		}
		j++
		k := j
		for k < len(s) && s[k] != ';' {
			k++
		}
		if k == j {
			continue
		}
		out = append(out, s[last:j]...)
		last = k
		i = k - 1
	}
	if out == nil {
		return s
	}
	return string(append(out, s[last:]...))
}

// relaxedHeader is the relaxed header canonicalization (RFC 6376 § 3.4.2).
func relaxedHeader(s string) string {
	k, v, ok := strings.Cut(s, ":")
	if !ok {
		return strings.TrimSpace(strings.ToLower(s)) + ":\r\n"
	}
	b := make([]byte, 0, len(s)+2)
	b = append(b, strings.TrimSpace(strings.ToLower(k))...)
	b = append(b, ':')
	// The value's words, each run of white space and line ends between
	// them one space, none around them.
	space, words := false, false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case ' ', '\t', '\n', '\r':
			space = true
		default:
			if space && words {
				b = append(b, ' ')
			}
			space, words = false, true
			b = append(b, c)
		}
	}
	return string(append(b, '\r', '\n'))
}

// headerPicker hands out the instances of a field from the bottom up, one
// per mention in h= (RFC 6376 § 5.4.2).
type headerPicker struct {
	h      []string
	picked map[string]int
}

func (p *headerPicker) pick(key string) string {
	key = strings.ToLower(key)
	if p.picked == nil {
		p.picked = map[string]int{}
	}
	at := p.picked[key]
	for i := len(p.h) - 1; i >= 0; i-- {
		k, _ := parseHeaderField(p.h[i])
		if !strings.EqualFold(k, key) {
			continue
		}
		if at == 0 {
			p.picked[key]++
			return p.h[i]
		}
		at--
	}
	return ""
}

// bodyHash canonicalizes a body as it streams by (RFC 6376 § 3.4.3 simple,
// § 3.4.4 relaxed, with go-msgauth's repair of a bare LF into CRLF) into a
// SHA-256 hash. Line ends are held back until something follows them, as
// trailing empty lines do not count: as a count of CRLFs, so that the
// memory stays small whatever the body (an irregular run of CRs, which
// smtpd never lets in, is held as it is).
type bodyHash struct {
	relaxed bool
	h       hash.Hash
	out     []byte // canonical octets not yet hashed
	prevCR  bool   // the previous octet received was a CR
	pairs   int    // CRLFs held back
	cr      bool   // a CR held back after them, its LF maybe to come
	tail    []byte // relaxed: an irregular run of CR and LF held back after the CRLFs
	wsp     bool   // relaxed: white space held back
	written bool   // relaxed: some octet was hashed
	sum     []byte // the hash, once closed
}

// special are the octets the canonicalizations look at; runs of others
// are hashed as they are.
var special = [2][256]bool{
	{'\r': true, '\n': true},
	{'\r': true, '\n': true, ' ': true, '\t': true},
}

func (b *bodyHash) write(p []byte) {
	// Work on a copy on the stack: storing into the heap's copy for every
	// octet costs a write barrier each while the collector runs.
	st := *b
	st.feed(p)
	*b = st
}

func (b *bodyHash) feed(p []byte) {
	sp := &special[0]
	if b.relaxed {
		sp = &special[1]
	}
	for i := 0; i < len(p); {
		c := p[i]
		if !sp[c] {
			// An ordinary octet: what is held back goes first, then
			// the run of ordinary octets it starts.
			if b.pairs > 0 || b.cr || b.wsp || len(b.tail) > 0 {
				b.put(c)
				b.prevCR = false
				i++
			}
			j := i
			for j < len(p) && !sp[p[j]] {
				j++
			}
			if j > i {
				if len(b.out)+(j-i) > hashBufferSize-64 {
					b.h.Write(b.out)
					b.out = b.out[:0]
				}
				if j-i >= hashBufferSize/2 {
					b.h.Write(p[i:j])
				} else {
					b.out = append(b.out, p[i:j]...)
				}
				b.written = true
				b.prevCR = false
				i = j
			}
		} else {
			if c == '\n' && !b.prevCR {
				b.put('\r')
			}
			b.prevCR = c == '\r'
			b.put(c)
			i++
		}
		if len(b.out) >= hashBufferSize-64 {
			b.h.Write(b.out)
			b.out = b.out[:0]
		}
	}
}

// put takes the next octet of the body with its line ends repaired.
func (b *bodyHash) put(c byte) {
	if !b.relaxed {
		if b.cr {
			b.cr = false
			if c == '\n' {
				b.pairs++
				return
			}
			b.release()
			b.out = append(b.out, '\r')
		}
		switch c {
		case '\r':
			b.cr = true
		default:
			b.release()
			b.out = append(b.out, c)
		}
		return
	}
	switch c {
	case ' ', '\t':
		b.wsp = true
	case '\r', '\n':
		b.wsp = false
		switch {
		case len(b.tail) > 0:
			b.tail = append(b.tail, c)
		case b.cr && c == '\n':
			b.cr = false
			b.pairs++
		case b.cr:
			b.cr = false
			b.tail = append(b.tail, '\r', c)
		case c == '\r':
			b.cr = true
		default:
			b.tail = append(b.tail, c)
		}
	default:
		b.release()
		if b.cr {
			b.out = append(b.out, '\r')
			b.cr = false
		}
		b.out = append(b.out, b.tail...)
		b.tail = b.tail[:0]
		if b.wsp {
			b.out = append(b.out, ' ')
			b.wsp = false
		}
		b.out = append(b.out, c)
		b.written = true
	}
}

// release hashes the CRLFs held back.
func (b *bodyHash) release() {
	for ; b.pairs > 0; b.pairs-- {
		b.out = append(b.out, '\r', '\n')
		if len(b.out) >= hashBufferSize-64 {
			b.h.Write(b.out)
			b.out = b.out[:0]
		}
	}
}

func (b *bodyHash) close() {
	if b.sum != nil {
		return
	}
	if !b.relaxed {
		// A CR at the very end keeps the line ends before it.
		if b.cr {
			b.release()
			b.out = append(b.out, '\r')
		}
		b.out = append(b.out, '\r', '\n')
	} else if b.written {
		b.out = append(b.out, '\r', '\n')
	}
	b.h.Write(b.out)
	if cap(b.out) == hashBufferSize {
		out := b.out[:0]
		hashBuffers.Put(&out)
	}
	b.out = nil
	b.sum = b.h.Sum(nil)
}
