package imap

import (
	"sort"
	"strconv"
	"strings"

	"letterbox/pkg/mime"
)

// ENVELOPE and BODYSTRUCTURE (RFC 9051 § 7.5.2). Header values go out as
// written (encoded words undecoded, as every server sends them); broken
// headers are read leniently, never refused.

// address is one ENVELOPE address, or a group's start (mailbox = name,
// host "") or end (all empty, end set).
type address struct {
	name, adl, mailbox, host string
	groupStart, groupEnd     bool
}

// addrTokenizer reads RFC 5322 address lists leniently.
type addrTokenizer struct {
	s   string
	pos int
}

type addrToken struct {
	kind byte // 'a' atom/dot-run, 'q' quoted string, 'c' comment, or the special itself
	text string
}

func (t *addrTokenizer) next() (addrToken, bool) {
	for t.pos < len(t.s) && (t.s[t.pos] == ' ' || t.s[t.pos] == '\t' || t.s[t.pos] == '\r' || t.s[t.pos] == '\n') {
		t.pos++
	}
	if t.pos >= len(t.s) {
		return addrToken{}, false
	}
	c := t.s[t.pos]
	switch c {
	case '"':
		var b strings.Builder
		t.pos++
		for t.pos < len(t.s) && t.s[t.pos] != '"' {
			if t.s[t.pos] == '\\' && t.pos+1 < len(t.s) {
				t.pos++
			}
			b.WriteByte(t.s[t.pos])
			t.pos++
		}
		t.pos++
		return addrToken{'q', b.String()}, true
	case '(':
		depth := 0
		start := t.pos
		for t.pos < len(t.s) {
			switch t.s[t.pos] {
			case '\\':
				t.pos++
			case '(':
				depth++
			case ')':
				depth--
			}
			t.pos++
			if depth == 0 {
				break
			}
		}
		end := t.pos - 1
		if end < start+1 {
			end = start + 1
		}
		if end > len(t.s) {
			end = len(t.s)
		}
		return addrToken{'c', strings.TrimSpace(t.s[start+1 : end])}, true
	case '<', '>', '@', ',', ';', ':':
		t.pos++
		return addrToken{c, string(c)}, true
	}
	start := t.pos
	for t.pos < len(t.s) && !strings.ContainsRune(" \t\r\n\"(<>@,;:", rune(t.s[t.pos])) {
		t.pos++
	}
	return addrToken{'a', t.s[start:t.pos]}, true
}

// parseAddresses parses an address list for ENVELOPE.
func parseAddresses(v string) []address {
	t := &addrTokenizer{s: v}
	var toks []addrToken
	for {
		tok, ok := t.next()
		if !ok {
			break
		}
		toks = append(toks, tok)
		if len(toks) > 10000 {
			break
		}
	}
	var out []address
	inGroup := false
	for i := 0; i < len(toks); {
		// One mailbox (or group start) up to "," or ";".
		j := i
		for j < len(toks) && toks[j].kind != ',' && toks[j].kind != ';' && toks[j].kind != ':' && toks[j].kind != '<' {
			j++
		}
		if j < len(toks) && toks[j].kind == ':' && !inGroup {
			out = append(out, address{mailbox: phrase(toks[i:j]), groupStart: true})
			inGroup = true
			i = j + 1
			continue
		}
		if j < len(toks) && toks[j].kind == '<' {
			name := phrase(toks[i:j])
			k := j + 1
			for k < len(toks) && toks[k].kind != '>' {
				k++
			}
			a := addrSpec(toks[j+1 : k])
			if name == "" {
				name = trailingComment(toks, k+1)
			}
			a.name = name
			out = append(out, a)
			i = k + 1
			for i < len(toks) && toks[i].kind != ',' && toks[i].kind != ';' {
				i++
			}
		} else {
			if j > i {
				a := addrSpec(toks[i:j])
				if a.mailbox != "" || a.host != "" {
					out = append(out, a)
				}
			}
			i = j
		}
		if i < len(toks) && toks[i].kind == ';' {
			if inGroup {
				out = append(out, address{groupEnd: true})
				inGroup = false
			}
			i++
		} else if i < len(toks) && toks[i].kind == ',' {
			i++
		} else if i < len(toks) && toks[i].kind == ':' {
			i++ // a stray colon
		}
	}
	if inGroup {
		out = append(out, address{groupEnd: true})
	}
	return out
}

// phrase joins display-name words with single spaces (comments dropped).
func phrase(toks []addrToken) string {
	var words []string
	for _, t := range toks {
		if t.kind == 'a' || t.kind == 'q' || t.kind == '.' || t.kind == '@' {
			words = append(words, t.text)
		}
	}
	return strings.Join(words, " ")
}

func trailingComment(toks []addrToken, i int) string {
	for ; i < len(toks) && toks[i].kind != ',' && toks[i].kind != ';'; i++ {
		if toks[i].kind == 'c' {
			return toks[i].text
		}
	}
	return ""
}

// addrSpec reads [route ":"] local "@" domain; a comment is the name when
// there is no other.
func addrSpec(toks []addrToken) address {
	var a address
	// A source route: "@a,@b:" before the address.
	if len(toks) > 0 && toks[0].kind == '@' {
		k := 0
		for k < len(toks) && toks[k].kind != ':' {
			k++
		}
		if k < len(toks) {
			var route strings.Builder
			for _, t := range toks[:k] {
				if t.kind != 'c' {
					route.WriteString(t.text)
				}
			}
			a.adl = route.String()
			toks = toks[k+1:]
		}
	}
	var local, domain strings.Builder
	at := false
	for i, t := range toks {
		switch t.kind {
		case 'c':
			// A comment after the address is its name ("a@b (Name)"),
			// as Dovecot reads it; one before it is not.
			if a.name == "" && i > 0 && (local.Len() > 0 || domain.Len() > 0) {
				a.name = t.text
			}
		case '@':
			if at {
				domain.WriteByte('@')
			}
			at = true
		case 'q':
			if at {
				domain.WriteString(t.text)
			} else {
				local.WriteString(t.text)
			}
		default:
			if at {
				domain.WriteString(t.text)
			} else {
				local.WriteString(t.text)
			}
		}
	}
	a.mailbox, a.host = local.String(), domain.String()
	// What is missing is named, as Dovecot does (RFC 9051 has no NIL
	// host for a mailbox).
	if a.mailbox == "" && a.host != "" {
		a.mailbox = "MISSING_MAILBOX"
	}
	if a.host == "" && a.mailbox != "" {
		a.host = "MISSING_DOMAIN"
	}
	return a
}

// appendAddresses appends an address list (NIL when empty).
func appendAddresses(b []byte, v string, utf8OK bool) []byte {
	as := parseAddresses(v)
	if len(as) == 0 {
		return append(b, "NIL"...)
	}
	b = append(b, '(')
	for _, a := range as {
		switch {
		case a.groupEnd:
			b = append(b, "(NIL NIL NIL NIL)"...)
		case a.groupStart:
			b = append(b, "(NIL NIL "...)
			b = appendNString(b, a.mailbox, utf8OK)
			b = append(b, " NIL)"...)
		default:
			b = append(b, '(')
			b = appendNString(b, a.name, utf8OK)
			b = append(b, ' ')
			b = appendNString(b, a.adl, utf8OK)
			b = append(b, ' ')
			b = appendNString(b, a.mailbox, utf8OK)
			b = append(b, ' ')
			b = appendNString(b, a.host, utf8OK)
			b = append(b, ')')
		}
	}
	return append(b, ')')
}

// appendEnvelope appends the ENVELOPE of a header.
func appendEnvelope(b []byte, h *mime.Header, utf8OK bool) []byte {
	get := func(name string) string {
		for _, f := range h.Fields {
			if f[0] == name {
				return f[1]
			}
		}
		return ""
	}
	from := get("from")
	b = append(b, '(')
	b = appendNString(b, get("date"), utf8OK)
	b = append(b, ' ')
	b = appendNString(b, get("subject"), utf8OK)
	b = append(b, ' ')
	b = appendAddresses(b, from, utf8OK)
	for _, f := range []string{"sender", "reply-to"} {
		b = append(b, ' ')
		v := get(f)
		if len(parseAddresses(v)) == 0 {
			v = from // RFC 9051 § 7.5.2: absent or empty means From
		}
		b = appendAddresses(b, v, utf8OK)
	}
	for _, f := range []string{"to", "cc", "bcc"} {
		b = append(b, ' ')
		b = appendAddresses(b, get(f), utf8OK)
	}
	b = append(b, ' ')
	b = appendNString(b, get("in-reply-to"), utf8OK)
	b = append(b, ' ')
	b = appendNString(b, get("message-id"), utf8OK)
	return append(b, ')')
}

// appendBodyStructure appends BODYSTRUCTURE (ext) or BODY of part p.
func appendBodyStructure(b []byte, p *part, ext, utf8OK bool) []byte {
	h := p.Header
	if h == nil {
		h = &mime.Header{}
	}
	if p.isMultipart() && len(p.children) > 0 {
		b = append(b, '(')
		for _, c := range p.children {
			b = appendBodyStructure(b, c, ext, utf8OK)
		}
		_, sub := splitType(p.Type)
		b = append(b, ' ')
		b = appendString(b, sub, utf8OK)
		if ext {
			_, params := mime.RawParams(h.Get("content-type"))
			b = append(b, ' ')
			b = appendParams(b, params, utf8OK)
			b = appendExtension(b, h, utf8OK)
		}
		return append(b, ')')
	}
	typ, sub := splitType(p.Type)
	var params [][2]string
	if strings.HasPrefix(p.Type, "multipart/") {
		// A multipart whose parts could not be found: one text part.
		typ, sub = "text", "plain"
	} else if ct := h.Get("content-type"); ct != "" {
		// Type, subtype and parameters as written, as Dovecot sends them
		// (a type without a subtype too: "text" is ("text" "")).
		var v string
		v, params = mime.RawParams(ct)
		t, s, _ := strings.Cut(v, "/")
		if t = strings.TrimSpace(t); strings.EqualFold(t, typ) {
			typ, sub = t, strings.TrimSpace(s)
		} else if !strings.Contains(v, "/") {
			params = nil
		}
	}
	if strings.EqualFold(typ, "text") && !hasParam(params, "charset") {
		params = append(params, [2]string{"charset", "us-ascii"}) // RFC 2045's default, said
	}
	b = append(b, '(')
	b = appendString(b, typ, utf8OK)
	b = append(b, ' ')
	b = appendString(b, sub, utf8OK)
	b = append(b, ' ')
	b = appendParams(b, params, utf8OK)
	b = append(b, ' ')
	b = appendNString(b, h.Get("content-id"), utf8OK)
	b = append(b, ' ')
	b = appendNString(b, h.Get("content-description"), utf8OK)
	b = append(b, ' ')
	enc := h.Get("content-transfer-encoding")
	if enc == "" {
		enc = "7bit"
	}
	b = appendString(b, enc, utf8OK)
	b = append(b, ' ')
	b = strconv.AppendInt(b, p.End-p.BodyOffset, 10)
	switch {
	case strings.EqualFold(typ, "message") && strings.EqualFold(sub, "rfc822") && !p.isMessage():
		// Not parsed (a transfer encoding hides it): an empty message, as
		// Dovecot answers, so that clients find the fields they expect.
		b = append(b, ` (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0`...)
		if ext {
			b = append(b, " NIL NIL NIL NIL"...)
		}
		b = append(b, ") "...)
		b = strconv.AppendInt(b, p.Lines, 10)
	case p.isMessage() && strings.EqualFold(sub, "rfc822"):
		m := p.children[0]
		mh := m.Header
		if mh == nil {
			mh = &mime.Header{}
		}
		b = append(b, ' ')
		b = appendEnvelope(b, mh, utf8OK)
		b = append(b, ' ')
		b = appendBodyStructure(b, m, ext, utf8OK)
		b = append(b, ' ')
		b = strconv.AppendInt(b, p.Lines, 10)
	case strings.EqualFold(typ, "text"):
		b = append(b, ' ')
		b = strconv.AppendInt(b, p.Lines, 10)
	}
	if ext {
		b = append(b, ' ')
		b = appendNString(b, h.Get("content-md5"), utf8OK)
		b = appendExtension(b, h, utf8OK)
	}
	return append(b, ')')
}

func hasParam(params [][2]string, name string) bool {
	for _, kv := range params {
		if strings.EqualFold(kv[0], name) {
			return true
		}
	}
	return false
}

func splitType(t string) (string, string) {
	typ, sub, ok := strings.Cut(t, "/")
	if !ok || typ == "" || sub == "" {
		return "text", "plain"
	}
	return typ, sub
}

func appendParams(b []byte, params [][2]string, utf8OK bool) []byte {
	params = joinContinuations(params)
	if len(params) == 0 {
		return append(b, "NIL"...)
	}
	b = append(b, '(')
	for i, kv := range params {
		if i > 0 {
			b = append(b, ' ')
		}
		b = appendString(b, kv[0], utf8OK)
		b = append(b, ' ')
		b = appendString(b, kv[1], utf8OK)
	}
	return append(b, ')')
}

// joinContinuations joins RFC 2231 continuations (name*0, name*1* …) into
// one parameter at the first one's place, as Dovecot sends them: "name*"
// with the charset'language' prefix and the pieces as written when any
// piece is encoded, else "name".
func joinContinuations(params [][2]string) [][2]string {
	type piece struct {
		idx int
		enc bool
		val string
	}
	var pieces map[string][]piece
	for _, kv := range params {
		base, suf, ok := strings.Cut(kv[0], "*")
		if !ok || suf == "" || suf == "*" {
			continue
		}
		enc := strings.HasSuffix(suf, "*")
		n, err := strconv.Atoi(strings.TrimSuffix(suf, "*"))
		if err != nil || n < 0 || n > 999 {
			continue
		}
		if pieces == nil {
			pieces = map[string][]piece{}
		}
		key := strings.ToLower(base)
		pieces[key] = append(pieces[key], piece{n, enc, kv[1]})
	}
	if pieces == nil {
		return params
	}
	out := make([][2]string, 0, len(params))
	done := map[string]bool{}
	for _, kv := range params {
		base, suf, ok := strings.Cut(kv[0], "*")
		key := strings.ToLower(base)
		if !ok || pieces[key] == nil || suf == "" || suf == "*" {
			out = append(out, kv)
			continue
		}
		if done[key] {
			continue
		}
		done[key] = true
		ps := pieces[key]
		sort.SliceStable(ps, func(i, j int) bool { return ps[i].idx < ps[j].idx })
		var v strings.Builder
		anyEnc := false
		for _, p := range ps {
			anyEnc = anyEnc || p.enc
			v.WriteString(p.val)
		}
		name := base
		if anyEnc {
			name += "*"
		}
		out = append(out, [2]string{name, v.String()})
	}
	return out
}

// appendExtension: disposition, language, location.
func appendExtension(b []byte, h *mime.Header, utf8OK bool) []byte {
	b = append(b, ' ')
	if d := h.Get("content-disposition"); d != "" {
		v, params := mime.RawParams(d)
		b = append(b, '(')
		b = appendString(b, v, utf8OK)
		b = append(b, ' ')
		b = appendParams(b, params, utf8OK)
		b = append(b, ')')
	} else {
		b = append(b, "NIL"...)
	}
	b = append(b, ' ')
	if l := h.Get("content-language"); l != "" {
		var langs []string
		for _, x := range strings.Split(l, ",") {
			if x = strings.TrimSpace(x); x != "" {
				langs = append(langs, x)
			}
		}
		if len(langs) == 1 {
			b = appendString(b, langs[0], utf8OK)
		} else if len(langs) > 1 {
			b = append(b, '(')
			for i, x := range langs {
				if i > 0 {
					b = append(b, ' ')
				}
				b = appendString(b, x, utf8OK)
			}
			b = append(b, ')')
		} else {
			b = append(b, "NIL"...)
		}
	} else {
		b = append(b, "NIL"...)
	}
	b = append(b, ' ')
	return appendNString(b, h.Get("content-location"), utf8OK)
}
