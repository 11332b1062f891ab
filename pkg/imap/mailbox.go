package imap

import (
	"errors"
	"io"
	"strconv"
	"strings"

	"letterbox/pkg/mailstore"
)

// checkName refuses names that could reach outside the user's Maildir or
// that Maildir++ cannot store (DESIGN.md § Guarantees; mox's list in
// LIBRARIES.md): empty, empty or dot components, "/", control characters,
// a leading "#" or "~", and components too long for a directory name.
// The store checks again; this is the protocol's own line.
func checkName(name string) error {
	if name == "" || !validUTF8(name) {
		return mailstore.ErrBadName
	}
	if name == "INBOX" {
		return nil
	}
	if name[0] == '#' || name[0] == '~' {
		return mailstore.ErrBadName
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '/' || r == '\\' || (r >= 0x80 && r < 0xa0) {
			return mailstore.ErrBadName
		}
	}
	for _, c := range strings.Split(name, string(mailstore.Delimiter)) {
		if c == "" || len(encodeUTF7(c)) > 200 {
			return mailstore.ErrBadName
		}
	}
	return nil
}

func (s *session) cmdCreate(a createArgs) result {
	name := strings.TrimSuffix(a.name, string(mailstore.Delimiter))
	if strings.EqualFold(name, "INBOX") {
		return no("ALREADYEXISTS", "INBOX always exists")
	}
	if err := checkName(name); err != nil {
		return s.storeError("create", err)
	}
	if err := s.store.Create(name, a.use); err != nil {
		return s.storeError("create", err)
	}
	return ok("CREATE completed")
}

func (s *session) cmdDelete(name string) result {
	if name == "INBOX" {
		return no("CANNOT", "INBOX cannot be deleted")
	}
	if err := checkName(name); err != nil {
		return s.storeError("delete", err)
	}
	if s.sel != nil && s.sel.name == name {
		return no("INUSE", "Mailbox is selected; unselect it first")
	}
	if err := s.store.Delete(name); err != nil {
		return s.storeError("delete", err)
	}
	return ok("DELETE completed")
}

func (s *session) cmdRename(a renameArgs) result {
	for _, n := range []string{a.from, a.to} {
		if err := checkName(n); err != nil {
			return s.storeError("rename", err)
		}
	}
	if a.to == "INBOX" {
		return no("ALREADYEXISTS", "INBOX always exists")
	}
	if err := s.store.Rename(a.from, a.to); err != nil {
		return s.storeError("rename", err)
	}
	return ok("RENAME completed")
}

func (s *session) cmdSubscribe(name string, on bool) result {
	if err := checkName(name); err != nil {
		return s.storeError("subscribe", err)
	}
	if err := s.store.SetSubscribed(name, on); err != nil {
		return s.storeError("subscribe", err)
	}
	return ok(a2s(on, "SUBSCRIBE", "UNSUBSCRIBE") + " completed")
}

// match reports whether name matches a LIST pattern: "*" matches
// anything, "%" anything but the hierarchy delimiter.
func match(pattern, name string) bool {
	for len(pattern) > 0 {
		switch pattern[0] {
		case '*', '%':
			wild := pattern[0]
			pattern = pattern[1:]
			for i := 0; i <= len(name); i++ {
				if match(pattern, name[i:]) {
					return true
				}
				if i < len(name) && wild == '%' && name[i] == mailstore.Delimiter {
					return false
				}
			}
			return false
		default:
			if name == "" || name[0] != pattern[0] {
				return false
			}
			pattern, name = pattern[1:], name[1:]
		}
	}
	return name == ""
}

// canonicalPattern combines reference and pattern, decodes them and
// spells a leading INBOX as INBOX.
func (s *session) canonicalPattern(ref, pat string) (string, bool) {
	p := ref + pat
	// Collapse runs of wildcards so that matching stays linear-ish.
	for strings.Contains(p, "**") {
		p = strings.ReplaceAll(p, "**", "*")
	}
	for strings.Contains(p, "*%") || strings.Contains(p, "%*") {
		p = strings.ReplaceAll(strings.ReplaceAll(p, "*%", "*"), "%*", "*")
	}
	d, err := s.rd.decodeName(p)
	if err != nil {
		return "", false
	}
	if len(d) >= 5 && strings.EqualFold(d[:5], "INBOX") && (len(d) == 5 || d[5] == mailstore.Delimiter) {
		d = "INBOX" + d[5:]
	}
	return d, true
}

func (s *session) cmdList(a listArgs) result {
	cmd := a2s(a.lsub, "LSUB", "LIST")
	if len(a.patterns) == 1 && a.patterns[0] == "" && !a.lsub {
		// The delimiter and root (RFC 9051 § 6.3.9).
		s.untagged(`LIST (\Noselect) "." ""`)
		return ok("LIST completed")
	}
	infos, err := s.store.List()
	if err != nil {
		return s.storeError("list", err)
	}
	var pats []string
	for _, p := range a.patterns {
		if c, ok := s.canonicalPattern(a.ref, p); ok {
			pats = append(pats, c)
		}
	}
	matches := func(name string) bool {
		for _, p := range pats {
			if match(p, name) {
				return true
			}
		}
		return false
	}
	subscribedOnly := a.lsub || a.selSubscr
	// Names of subscribed children, for RECURSIVEMATCH's CHILDINFO.
	var subChildren map[string]bool
	if a.selRecurse {
		subChildren = map[string]bool{}
		for _, mi := range infos {
			if mi.Subscribed {
				for n := mi.Name; ; {
					i := strings.LastIndexByte(n, mailstore.Delimiter)
					if i < 0 {
						break
					}
					n = n[:i]
					subChildren[n] = true
				}
			}
		}
	}
	for _, mi := range infos {
		if !matches(mi.Name) {
			continue
		}
		childInfo := subChildren[mi.Name] && !mi.Subscribed
		if subscribedOnly && !mi.Subscribed && !childInfo {
			continue
		}
		if !subscribedOnly && mi.NonExistent && !mi.HasChildren {
			continue // a subscription to a folder that is gone
		}
		if a.selSpecial && mi.SpecialUse == "" {
			continue
		}
		var attrs []string
		if mi.NonExistent {
			if a.extended || s.rev2 {
				attrs = append(attrs, `\NonExistent`)
			} else {
				attrs = append(attrs, `\Noselect`)
			}
		}
		// Child information in a plain LIST, or when asked for
		// (LIST-EXTENDED: RETURN (CHILDREN)), as Dovecot has it.
		if !a.lsub && (!a.extended || a.retChild) {
			if mi.HasChildren {
				attrs = append(attrs, `\HasChildren`)
			} else if !mi.NonExistent {
				attrs = append(attrs, `\HasNoChildren`)
			}
		}
		if mi.Subscribed && (a.retSubscr || a.selSubscr) {
			attrs = append(attrs, `\Subscribed`)
		}
		if mi.SpecialUse != "" {
			attrs = append(attrs, mi.SpecialUse)
		}
		b := append(s.scratch[:0], "* "...)
		b = append(b, cmd...)
		b = append(b, " ("...)
		b = append(b, strings.Join(attrs, " ")...)
		b = append(b, `) "." `...)
		b = s.appendMailbox(b, mi.Name)
		if childInfo {
			b = append(b, ` ("CHILDINFO" ("SUBSCRIBED"))`...)
		}
		b = append(b, "\r\n"...)
		s.bw.Write(b)
		s.scratch = b[:0]
		if a.retStatus != nil && !mi.NonExistent {
			if st, err := s.store.Status(mi.Name); err == nil {
				s.writeStatus(mi.Name, a.retStatus, st)
			} else if !errors.Is(err, mailstore.ErrNoMailbox) {
				s.log.Error("list-status", "folder", mi.Name, "err", err)
			}
		}
	}
	return ok(cmd + " completed")
}

func (s *session) cmdStatus(a statusArgs) result {
	st, err := s.store.Status(a.name)
	if err != nil {
		return s.storeError("status", err)
	}
	s.writeStatus(a.name, a.items, st)
	return ok("STATUS completed")
}

func (s *session) writeStatus(name string, items []string, st mailstore.Status) {
	b := append(s.scratch[:0], "* STATUS "...)
	b = s.appendMailbox(b, name)
	b = append(b, " ("...)
	for i, it := range items {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, it...)
		b = append(b, ' ')
		switch it {
		case "MESSAGES":
			b = strconv.AppendUint(b, uint64(st.Messages), 10)
		case "RECENT":
			b = strconv.AppendUint(b, uint64(st.Recent), 10)
		case "UIDNEXT":
			b = strconv.AppendUint(b, uint64(st.UIDNext), 10)
		case "UIDVALIDITY":
			b = strconv.AppendUint(b, uint64(st.UIDValidity), 10)
		case "UNSEEN":
			b = strconv.AppendUint(b, uint64(st.Unseen), 10)
		case "DELETED":
			b = strconv.AppendUint(b, uint64(st.Deleted), 10)
		case "SIZE":
			b = strconv.AppendInt(b, st.Size, 10)
		case "HIGHESTMODSEQ":
			s.condstore = true
			b = strconv.AppendUint(b, st.HighestModSeq, 10)
		case "APPENDLIMIT":
			b = strconv.AppendInt(b, s.cfg.MaxMessageSize, 10)
		}
	}
	b = append(b, ")\r\n"...)
	s.bw.Write(b)
	s.scratch = b[:0]
}

// literalStream is APPEND's message: exactly size octets read from the
// connection, however many CRLFs they hold. At its end it reads the rest
// of the command and reports a malformed one as an error instead of EOF,
// so that the store keeps nothing of a command that turns out BAD.
type literalStream struct {
	r    *reader
	left int64
	utf8 bool // UTF8 (~{n}) form: ")" follows
	err  error
	done bool
}

func (l *literalStream) Read(p []byte) (int, error) {
	if l.left == 0 {
		if !l.done {
			l.done = true
			l.err = l.tail()
		}
		if l.err != nil {
			return 0, l.err
		}
		return 0, io.EOF
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.br.Read(p)
	l.left -= int64(n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		l.err, l.done = err, true
		return n, err
	}
	return n, nil
}

func (l *literalStream) tail() error {
	if err := l.r.readLine(); err != nil {
		return err
	}
	if l.utf8 {
		if err := l.r.char(')'); err != nil {
			return err
		}
	}
	return l.r.end()
}

// drain reads what the store left of the literal and the command's end,
// so the connection stays in step whatever the store did.
func (l *literalStream) drain() error {
	if l.done {
		return l.err
	}
	if l.left > 0 {
		n, err := io.CopyN(io.Discard, l.r.br, l.left)
		l.left -= n
		if err != nil {
			l.err, l.done = err, true
			return err
		}
	}
	l.done = true
	l.err = l.tail()
	return l.err
}

func (s *session) cmdAppend(a appendArgs) result {
	refuse := func(res result) result {
		// The message literal, if on its way, is read and dropped.
		if err := s.rd.skip(); err != nil {
			return result{status: "BAD", text: "Literal too big", end: s.readFailed(err), noUpdate: true}
		}
		return res
	}
	for _, f := range a.flags {
		if strings.HasPrefix(f, `\`) && !systemFlag(f) {
			return refuse(bad("Unknown system flag " + clip(f)))
		}
	}
	if err := checkName(a.name); err != nil {
		return refuse(s.storeError("append", err))
	}
	if a.size > s.cfg.MaxMessageSize {
		return refuse(no("TOOBIG", "Message is over the size limit of "+itoa(s.cfg.MaxMessageSize)+" octets"))
	}
	if _, err := s.store.Status(a.name); err != nil {
		if errors.Is(err, mailstore.ErrNoMailbox) {
			return refuse(no("TRYCREATE", "Mailbox does not exist"))
		}
		return refuse(s.storeError("append", err))
	}
	if a.sync {
		if err := s.continuation(); err != nil {
			return result{written: true, end: "write-error"}
		}
	}
	lit := &literalStream{r: s.rd, left: a.size, utf8: a.utf8}
	res, err := s.store.Append(a.name, a.flags, a.date, lit)
	derr := lit.drain()
	if derr != nil {
		var se *syntaxError
		if errors.As(derr, &se) {
			if err == nil {
				// Cannot happen with a store that reads to EOF; say so.
				s.log.Error("append: stored a message whose command was malformed", "folder", a.name)
			}
			if serr := s.rd.skip(); serr != nil {
				return result{status: "BAD", text: se.msg, end: s.readFailed(serr), noUpdate: true}
			}
			return bad("Error in IMAP command APPEND: " + se.msg)
		}
		return result{written: true, end: s.readFailed(derr)}
	}
	if err != nil {
		return s.storeError("append", err)
	}
	s.appended++
	s.appendedBytes += a.size
	return okCode("APPENDUID "+strconv.FormatUint(uint64(res.UIDValidity), 10)+" "+
		strconv.FormatUint(uint64(res.UID), 10), "APPEND completed")
}

func systemFlag(f string) bool {
	switch f {
	case mailstore.FlagSeen, mailstore.FlagAnswered, mailstore.FlagFlagged, mailstore.FlagDeleted, mailstore.FlagDraft:
		return true
	}
	return false
}
