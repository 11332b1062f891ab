package mime

import (
	"bytes"
	"fmt"
	"io"
	stdmime "mime"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Header is a parsed header section: field names lower-cased, values
// unfolded, in order.
type Header struct {
	Fields [][2]string
}

// Get returns the first value of the field (case-insensitive) or "".
func (h *Header) Get(name string) string {
	name = strings.ToLower(name)
	for _, f := range h.Fields {
		if f[0] == name {
			return f[1]
		}
	}
	return ""
}

// ToUTF8 converts text in the named charset to UTF-8. It knows the charsets
// that matter for file names, subjects and IMAP SEARCH without pulling in
// x/text: UTF-8, ASCII, ISO-8859-1 and windows-1252 (which mislabelled
// Latin-1 mail really is). Anything else is kept if it is valid UTF-8, else
// read as Latin-1, and ok is false so the caller can say so.
func ToUTF8(cs string, b []byte) (s string, ok bool) {
	switch strings.ToLower(strings.TrimSpace(cs)) {
	case "utf-8", "utf8", "us-ascii", "ascii", "":
		if utf8.Valid(b) {
			return string(b), true
		}
		return latin1(b, false), false
	case "iso-8859-1", "latin1", "iso8859-1", "l1", "iso_8859-1":
		return latin1(b, false), true
	case "windows-1252", "cp1252":
		return latin1(b, true), true
	}
	if utf8.Valid(b) {
		return string(b), false
	}
	return latin1(b, false), false
}

var cp1252 = [32]rune{'€', 0x81, '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', 0x8d, 'Ž', 0x8f,
	0x90, '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', 0x9d, 'ž', 'Ÿ'}

func latin1(b []byte, win bool) string {
	var sb strings.Builder
	for _, c := range b {
		if win && c >= 0x80 && c < 0xa0 {
			sb.WriteRune(cp1252[c-0x80])
		} else {
			sb.WriteRune(rune(c))
		}
	}
	return sb.String()
}

var wordDecoder = &stdmime.WordDecoder{CharsetReader: func(cs string, r io.Reader) (io.Reader, error) {
	b, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return nil, err
	}
	s, _ := ToUTF8(cs, b)
	return strings.NewReader(s), nil
}}

// DecodeWords decodes RFC 2047 encoded words; a malformed word is left as is.
func DecodeWords(s string) string {
	if !strings.Contains(s, "=?") {
		return s
	}
	d, err := wordDecoder.DecodeHeader(s)
	if err != nil {
		return s
	}
	return d
}

// ParseParams splits a Content-Type or Content-Disposition value into its
// lower-cased value and parameters, leniently: unlike mime.ParseMediaType it
// never gives up on the whole header because of one bad parameter, and it
// joins RFC 2231 continuations (name*0*, name*1 …) in any order and decodes
// their charset. RFC 2047 words inside a quoted parameter (what many mailers
// send) are decoded too.
func ParseParams(v string) (string, map[string]string) {
	params := map[string]string{}
	value, raw := RawParams(v)
	value = strings.ToLower(value)
	type piece struct {
		idx int
		enc bool
		val string
	}
	conts := map[string][]piece{}
	for _, kv := range raw {
		key, val := strings.ToLower(kv[0]), kv[1]
		// RFC 2231: key*, key*N, key*N*
		if star := strings.IndexByte(key, '*'); star >= 0 {
			base, suf := key[:star], key[star+1:]
			enc := strings.HasSuffix(suf, "*") || suf == ""
			suf = strings.TrimSuffix(suf, "*")
			idx := 0
			if suf != "" {
				n, err := strconv.Atoi(suf)
				if err != nil || n < 0 || n > 999 {
					continue
				}
				idx = n
			}
			if len(conts[base]) < 1000 {
				conts[base] = append(conts[base], piece{idx, enc, val})
			}
			continue
		}
		if _, dup := params[key]; !dup {
			params[key] = DecodeWords(val)
		}
	}
	for base, ps := range conts {
		sort.SliceStable(ps, func(i, j int) bool { return ps[i].idx < ps[j].idx })
		var raw []byte
		cs := ""
		for i, p := range ps {
			if !p.enc {
				raw = append(raw, p.val...)
				continue
			}
			val := p.val
			if i == 0 {
				// charset'language'value
				if a := strings.IndexByte(val, '\''); a >= 0 {
					if b := strings.IndexByte(val[a+1:], '\''); b >= 0 {
						cs = val[:a]
						val = val[a+1+b+1:]
					}
				}
			}
			raw = append(raw, percentDecode(val)...)
		}
		s, _ := ToUTF8(cs, raw)
		params[base] = s // the RFC 2231 form wins over a plain duplicate
	}
	return value, params
}

// RawParams splits a Content-Type or Content-Disposition value into its
// value and parameters as written: names in their case, values unquoted
// but not decoded, in order (IMAP's BODYSTRUCTURE sends them so). It
// reads leniently, as ParseParams does.
func RawParams(v string) (string, [][2]string) {
	semi := strings.IndexByte(v, ';')
	if semi < 0 {
		return strings.TrimSpace(v), nil
	}
	value := strings.TrimSpace(v[:semi])
	rest := v[semi+1:]
	var params [][2]string
	for len(rest) > 0 {
		rest = strings.TrimLeft(rest, " \t\r\n;")
		if rest == "" {
			break
		}
		eq := strings.IndexAny(rest, "=;")
		if eq < 0 || rest[eq] == ';' {
			if eq < 0 {
				break
			}
			rest = rest[eq:]
			continue
		}
		key := strings.TrimSpace(rest[:eq])
		rest = strings.TrimLeft(rest[eq+1:], " \t")
		var val string
		if strings.HasPrefix(rest, `"`) {
			var sb strings.Builder
			i := 1
			for ; i < len(rest); i++ {
				c := rest[i]
				if c == '\\' && i+1 < len(rest) {
					i++
					sb.WriteByte(rest[i])
					continue
				}
				if c == '"' {
					break
				}
				sb.WriteByte(c)
			}
			val = sb.String()
			if i < len(rest) {
				i++
			}
			rest = rest[i:]
			if j := strings.IndexByte(rest, ';'); j >= 0 {
				rest = rest[j:]
			} else {
				rest = ""
			}
		} else {
			j := strings.IndexByte(rest, ';')
			if j < 0 {
				j = len(rest)
			}
			val = strings.TrimSpace(rest[:j])
			rest = rest[j:]
		}
		if key != "" {
			params = append(params, [2]string{key, val})
		}
	}
	return value, params
}

func percentDecode(s string) []byte {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				out = append(out, byte(v))
				i += 2
				continue
			}
		}
		out = append(out, s[i])
	}
	return out
}

// isToken reports whether s can be a bare MIME parameter value.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?=`, c) >= 0 {
			return false
		}
	}
	return true
}

// formatParam writes "; key=value" to buf, folded to stay under 76 columns:
// plain ASCII as a (quoted) string, anything else or anything long as RFC
// 2231 utf-8 percent-encoding split into key*0*, key*1* … continuations.
func formatParam(buf *bytes.Buffer, key, val string) {
	val = strings.ToValidUTF8(val, "\uFFFD")
	ascii := true
	for i := 0; i < len(val); i++ {
		if val[i] < 0x20 || val[i] >= 0x7f {
			ascii = false
			break
		}
	}
	if ascii && len(key)+len(val) < 60 {
		if isToken(val) {
			fmt.Fprintf(buf, ";\n\t%s=%s", key, val)
		} else {
			fmt.Fprintf(buf, ";\n\t%s=%s", key, strconv.Quote(val))
		}
		return
	}
	enc := url.PathEscape(val)
	// PathEscape leaves some characters RFC 2231 forbids in attribute-char.
	var sb strings.Builder
	for i := 0; i < len(enc); i++ {
		c := enc[i]
		if strings.IndexByte("*'%()<>@,;:\\\"/[]?=&+$!", c) >= 0 && c != '%' {
			fmt.Fprintf(&sb, "%%%02X", c)
		} else {
			sb.WriteByte(c)
		}
	}
	enc = sb.String()
	if len(enc) < 50 {
		fmt.Fprintf(buf, ";\n\t%s*=utf-8''%s", key, enc)
		return
	}
	for n := 0; enc != ""; n++ {
		chunk := 50
		if chunk > len(enc) {
			chunk = len(enc)
		}
		// never split a %XX escape
		if i := strings.LastIndexByte(enc[:chunk], '%'); i >= 0 && i > chunk-3 && chunk < len(enc) {
			chunk = i
		}
		prefix := ""
		if n == 0 {
			prefix = "utf-8''"
		}
		fmt.Fprintf(buf, ";\n\t%s*%d*=%s%s", key, n, prefix, enc[:chunk])
		enc = enc[chunk:]
	}
}

// EncodeHeaderText encodes s as RFC 2047 words when it is not plain ASCII,
// with lines folded; mime.QEncoding already splits words at 75 characters.
func EncodeHeaderText(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 || (s[i] < 0x20 && s[i] != '\t') {
			e := stdmime.BEncoding.Encode("utf-8", strings.ToValidUTF8(s, "\uFFFD"))
			return strings.ReplaceAll(e, " =?", "\n =?")
		}
	}
	return s
}
