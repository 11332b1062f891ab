package mailstore

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// dovecot-uidlist, version 3, as Dovecot 2.x reads and writes it:
//
//	3 V<uidvalidity> N<nextuid> G<mailbox guid>[ <other header fields>]
//	<uid>[ <ext>…] :<file name>
//
// Records are in ascending UID order. Each ext is an upper-case letter and
// a value (W<vsize>, S<size>, G<message guid>, P<pop3 uidl>, O<pop3
// order>); we keep them as written. The file name is the message's base
// name (before ":2,"); old versions wrote whole names, so a record is
// matched on the part before ':'. Dovecot appends records without
// rewriting the header, so the next UID is the larger of N and the last
// record's UID + 1. Version 1 ("1 <uidvalidity> <nextuid>", records
// "<uid> <file name>") is read too; we always write version 3.
const uidlistName = "dovecot-uidlist"

type uidRec struct {
	uid  uint32
	ext  string // extension fields as written, space separated; "" for none
	name string // base file name
}

// key is the record's file name up to ':'.
func (r *uidRec) key() string { return baseKey(r.name) }

// baseKey is a message file name's unique part, before ':'.
func baseKey(name string) string {
	if i := strings.IndexByte(name, ':'); i >= 0 {
		return name[:i]
	}
	return name
}

// extField returns the value of ext field c of r ("" when absent).
func (r *uidRec) extField(c byte) string {
	rest := r.ext
	for rest != "" {
		var f string
		f, rest, _ = strings.Cut(rest, " ")
		if len(f) > 0 && f[0] == c {
			return f[1:]
		}
	}
	return ""
}

// vsize returns the size with CRLF line ends the record of uid gives (its
// W extension), or -1.
func (ul *uidlist) vsize(uid uint32) int64 {
	j, ok := slices.BinarySearchFunc(ul.recs, uid, func(r uidRec, u uint32) int { return cmp.Compare(r.uid, u) })
	if !ok {
		return -1
	}
	if w, err := strconv.ParseInt(ul.recs[j].extField('W'), 10, 64); err == nil && w >= 0 {
		return w
	}
	return -1
}

type uidlist struct {
	uidValidity uint32
	nextUID     uint32 // the next UID to give, never below any record's + 1
	guid        string // mailbox GUID (32 hex digits), "" when the file had none
	hdrExt      string // other header fields, kept as written
	recs        []uidRec
	bad         int // records skipped as unreadable
}

// newUIDList starts a uidlist for a mailbox that has none.
func newUIDList(uidValidity uint32) *uidlist {
	var g [16]byte
	rand.Read(g[:])
	return &uidlist{uidValidity: uidValidity, nextUID: 1, guid: hex.EncodeToString(g[:])}
}

var errUIDListHeader = errors.New("mailstore: dovecot-uidlist: bad header")

// parseUIDList reads a uidlist. A bad header is an error (the file is not
// one we may rewrite); bad records, records out of UID order and a last
// line without its newline (a writer that appends in place, caught
// mid-write) are skipped and counted in bad.
func parseUIDList(text string) (*uidlist, error) {
	hdr, body, ok := strings.Cut(text, "\n")
	if !ok {
		return nil, errUIDListHeader
	}
	u := &uidlist{}
	version, rest, _ := strings.Cut(hdr, " ")
	switch version {
	case "3":
		var others []string
		for _, f := range strings.Fields(rest) {
			var err error
			switch f[0] {
			case 'V':
				u.uidValidity, err = parseUID(f[1:])
			case 'N':
				u.nextUID, err = parseUID(f[1:])
			case 'G':
				u.guid = f[1:]
			default:
				if f[0] < 'A' || f[0] > 'Z' {
					err = errUIDListHeader
				}
				others = append(others, f)
			}
			if err != nil {
				return nil, fmt.Errorf("%w: %q", errUIDListHeader, hdr)
			}
		}
		u.hdrExt = strings.Join(others, " ")
	case "1":
		f := strings.Fields(rest)
		if len(f) != 2 {
			return nil, fmt.Errorf("%w: %q", errUIDListHeader, hdr)
		}
		var err1, err2 error
		u.uidValidity, err1 = parseUID(f[0])
		u.nextUID, err2 = parseUID(f[1])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%w: %q", errUIDListHeader, hdr)
		}
	default:
		return nil, fmt.Errorf("%w: version %q", errUIDListHeader, version)
	}
	if u.uidValidity == 0 {
		return nil, fmt.Errorf("%w: no UIDVALIDITY: %q", errUIDListHeader, hdr)
	}
	if u.nextUID == 0 {
		u.nextUID = 1
	}
	n := strings.Count(body, "\n")
	u.recs = make([]uidRec, 0, n)
	var last uint32
	for body != "" {
		i := strings.IndexByte(body, '\n')
		if i < 0 {
			u.bad++ // torn last line
			break
		}
		line := body[:i]
		body = body[i+1:]
		r, ok := parseUIDRec(line, version == "3")
		if !ok || r.uid <= last {
			u.bad++
			continue
		}
		last = r.uid
		u.recs = append(u.recs, r)
	}
	if last >= u.nextUID {
		u.nextUID = last + 1
	}
	return u, nil
}

func parseUID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 || n == 1<<32-1 {
		return 0, errors.New("bad uid")
	}
	return uint32(n), nil
}

func parseUIDRec(line string, v3 bool) (uidRec, bool) {
	i := 0
	for i < len(line) && line[i] >= '0' && line[i] <= '9' {
		i++
	}
	if i == 0 || i == len(line) || line[i] != ' ' {
		return uidRec{}, false
	}
	uid, err := parseUID(line[:i])
	if err != nil {
		return uidRec{}, false
	}
	rest := strings.TrimLeft(line[i:], " ")
	r := uidRec{uid: uid}
	if v3 {
		c := strings.Index(rest, ":")
		if c < 0 {
			return uidRec{}, false
		}
		ext := strings.TrimRight(rest[:c], " ")
		for _, f := range strings.Fields(ext) {
			if f[0] < 'A' || f[0] > 'Z' {
				return uidRec{}, false
			}
		}
		if strings.Contains(ext, "  ") {
			ext = strings.Join(strings.Fields(ext), " ")
		}
		r.ext = ext
		rest = rest[c+1:]
	} else if j := strings.LastIndexByte(rest, ' '); j >= 0 {
		rest = rest[j+1:] // "<uid> <flags> <name>" in version 1
	}
	if rest == "" || rest[0] == ':' || strings.ContainsAny(rest, "/\x00") {
		return uidRec{}, false
	}
	r.name = baseKey(rest)
	return r, true
}

// format is the uidlist as Dovecot writes it, header N the next UID.
func (u *uidlist) format() []byte {
	b := make([]byte, 0, 64+len(u.recs)*64)
	b = append(b, "3 V"...)
	b = strconv.AppendUint(b, uint64(u.uidValidity), 10)
	b = append(b, " N"...)
	b = strconv.AppendUint(b, uint64(u.nextUID), 10)
	if u.guid != "" {
		b = append(b, " G"...)
		b = append(b, u.guid...)
	}
	if u.hdrExt != "" {
		b = append(b, ' ')
		b = append(b, u.hdrExt...)
	}
	b = append(b, '\n')
	for i := range u.recs {
		r := &u.recs[i]
		b = strconv.AppendUint(b, uint64(r.uid), 10)
		if r.ext != "" {
			b = append(b, ' ')
			b = append(b, r.ext...)
		}
		b = append(b, " :"...)
		b = append(b, r.name...)
		b = append(b, '\n')
	}
	return b
}

// dedupe drops records whose name a later record (a higher UID) has too,
// as Dovecot does: the file came back after an expunge and got a new UID.
func (u *uidlist) dedupe() {
	idx := u.index()
	if len(idx) == len(u.recs) {
		return
	}
	out := u.recs[:0]
	for _, r := range u.recs {
		if idx[r.name] == r.uid {
			out = append(out, r)
		}
	}
	u.recs = out
}

// index maps base names to UIDs (the highest UID of a name listed twice).
func (u *uidlist) index() map[string]uint32 {
	m := make(map[string]uint32, len(u.recs))
	for i := range u.recs {
		m[u.recs[i].name] = u.recs[i].uid
	}
	return m
}
