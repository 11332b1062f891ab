package imap

import (
	"strings"
	"time"
	"unicode/utf8"

	"letterbox/pkg/mailstore"
)

// command is one parsed command. APPEND is parsed up to its message
// literal, which the session reads as a stream.
type command struct {
	tag  string
	name string // upper case; "UID FETCH" is name FETCH with uid set
	uid  bool
	args any
}

// Arguments of each command.
type (
	loginArgs struct{ user, password string }
	authArgs  struct {
		mech    string
		initial []byte // SASL-IR; nil: none; empty: "="
		hasIR   bool
	}
	enableArgs  struct{ caps []string }
	mailboxArgs struct{ name string } // DELETE, SUBSCRIBE, UNSUBSCRIBE, EXAMINE …
	selectArgs  struct {
		name      string
		condstore bool
		qresync   *qresyncParams
	}
	qresyncParams struct {
		uidValidity uint32
		modSeq      uint64
		knownUIDs   *seqSet
		seqMatch    *[2]seqSet // known sequence numbers, their UIDs
	}
	createArgs struct{ name, use string }
	renameArgs struct{ from, to string }
	listArgs   struct {
		lsub       bool
		ref        string
		patterns   []string
		selSubscr  bool // SUBSCRIBED
		selRemote  bool
		selRecurse bool // RECURSIVEMATCH
		selSpecial bool // SPECIAL-USE
		retSubscr  bool
		retChild   bool
		retSpecial bool
		retStatus  []string
		extended   bool // any LIST-EXTENDED syntax was used
	}
	statusArgs struct {
		name  string
		items []string
	}
	appendArgs struct {
		name    string
		flags   []string
		date    time.Time
		size    int64
		sync    bool
		utf8    bool // UTF8 (~{n}) form, RFC 6855
		literal bool
	}
	searchArgs struct {
		ret     []string // ESEARCH RETURN options, upper case; nil: plain SEARCH
		esearch bool
		charset string
		key     *searchKey
	}
	fetchArgs struct {
		set          seqSet
		items        []fetchItem
		changedSince uint64
		vanished     bool
	}
	storeArgs struct {
		set            seqSet
		op             mailstore.StoreOp
		silent         bool
		flags          []string
		unchangedSince uint64
		hasUnchanged   bool
	}
	copyArgs struct {
		set  seqSet
		dest string
	}
	expungeArgs struct{ set *seqSet } // UID EXPUNGE
	sortArgs    struct {
		criteria []sortCriterion
		charset  string
		key      *searchKey
		ret      []string // ESORT: not offered; kept nil
	}
	threadArgs struct {
		algorithm string
		charset   string
		key       *searchKey
	}
	idArgs struct{ params []string } // name, value pairs
)

type sortCriterion struct {
	key     string // ARRIVAL CC DATE FROM SIZE SUBJECT TO DISPLAYFROM DISPLAYTO
	reverse bool
}

// parseCommand reads and parses one command. On a syntax error the tag
// and name found so far are returned with it, so that BAD carries the tag.
func parseCommand(r *reader) (*command, error) {
	c := &command{}
	var err error
	if c.tag, err = r.tag(); err != nil {
		return c, err
	}
	if err = r.sp(); err != nil {
		return c, errSyntax("missing command")
	}
	if c.name, err = r.keyword(); err != nil {
		return c, err
	}
	if c.name == "UID" {
		c.uid = true
		if err = r.sp(); err != nil {
			return c, err
		}
		if c.name, err = r.keyword(); err != nil {
			return c, err
		}
		switch c.name {
		case "FETCH", "SEARCH", "STORE", "COPY", "MOVE", "EXPUNGE", "SORT", "THREAD":
		default:
			return c, errSyntax("UID %s is not a command", clip(c.name))
		}
	}
	p, ok := parsers[c.name]
	if !ok {
		return c, errSyntax("unknown command %s", clip(c.name))
	}
	if r.check != nil {
		if err = r.check(c); err != nil {
			return c, err
		}
	}
	if c.args, err = p(r, c); err != nil {
		return c, err
	}
	if c.name != "APPEND" {
		err = r.end()
	}
	return c, err
}

var parsers map[string]func(*reader, *command) (any, error)

func init() {
	none := func(r *reader, c *command) (any, error) { return nil, nil }
	mbox := func(r *reader, c *command) (any, error) {
		if err := r.sp(); err != nil {
			return nil, err
		}
		n, err := r.mailbox()
		return mailboxArgs{n}, err
	}
	parsers = map[string]func(*reader, *command) (any, error){
		"CAPABILITY": none, "NOOP": none, "LOGOUT": none, "STARTTLS": none,
		"NAMESPACE": none, "IDLE": none, "CHECK": none, "CLOSE": none, "UNSELECT": none,
		"DELETE": mbox, "SUBSCRIBE": mbox, "UNSUBSCRIBE": mbox,
		"LOGIN":        parseLogin,
		"AUTHENTICATE": parseAuthenticate,
		"ENABLE":       parseEnable,
		"SELECT":       parseSelect,
		"EXAMINE":      parseSelect,
		"CREATE":       parseCreate,
		"RENAME":       parseRename,
		"LIST":         parseList,
		"LSUB":         parseList,
		"STATUS":       parseStatus,
		"APPEND":       parseAppend,
		"EXPUNGE":      parseExpunge,
		"SEARCH":       parseSearch,
		"FETCH":        parseFetch,
		"STORE":        parseStore,
		"COPY":         parseCopy,
		"MOVE":         parseCopy,
		"SORT":         parseSort,
		"THREAD":       parseThread,
		"ID":           parseID,
	}
}

func parseLogin(r *reader, c *command) (any, error) {
	var a loginArgs
	var err error
	if err = r.sp(); err != nil {
		return nil, err
	}
	if a.user, err = r.astring(); err != nil {
		return nil, err
	}
	if err = r.sp(); err != nil {
		return nil, err
	}
	a.password, err = r.astring()
	return a, err
}

func parseAuthenticate(r *reader, c *command) (any, error) {
	var a authArgs
	var err error
	if err = r.sp(); err != nil {
		return nil, err
	}
	if a.mech, err = r.keyword(); err != nil {
		return nil, err
	}
	if r.maybe(' ') {
		ir, err := r.word(func(c byte) bool {
			return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '='
		}, "a base64 initial response")
		if err != nil {
			return nil, err
		}
		a.hasIR = true
		if ir != "=" {
			a.initial = []byte(ir)
		}
	}
	return a, nil
}

func parseEnable(r *reader, c *command) (any, error) {
	var a enableArgs
	for r.maybe(' ') {
		k, err := r.keyword()
		if err != nil {
			return nil, err
		}
		a.caps = append(a.caps, k)
	}
	if len(a.caps) == 0 {
		return nil, errSyntax("ENABLE needs a capability")
	}
	return a, nil
}

func parseSelect(r *reader, c *command) (any, error) {
	var a selectArgs
	var err error
	if err = r.sp(); err != nil {
		return nil, err
	}
	if a.name, err = r.mailbox(); err != nil {
		return nil, err
	}
	if !r.maybe(' ') {
		return a, nil
	}
	err = r.list(func() error {
		k, err := r.keyword()
		if err != nil {
			return err
		}
		switch k {
		case "CONDSTORE":
			a.condstore = true
			return nil
		case "QRESYNC":
			if err := r.sp(); err != nil {
				return err
			}
			q := &qresyncParams{}
			a.qresync = q
			return parseQresync(r, q)
		}
		return errSyntax("unknown SELECT parameter %s", clip(k))
	})
	return a, err
}

func parseQresync(r *reader, q *qresyncParams) error {
	if err := r.char('('); err != nil {
		return err
	}
	var err error
	if q.uidValidity, err = r.nzNumber(); err != nil {
		return err
	}
	if err = r.sp(); err != nil {
		return err
	}
	if q.modSeq, err = r.number64(); err != nil {
		return err
	}
	if q.modSeq == 0 {
		return errSyntax("QRESYNC mod-sequence must be positive")
	}
	if r.maybe(' ') {
		if r.peek() != '(' {
			s, err := r.seqSet()
			if err != nil {
				return err
			}
			if s.saved || s.hasStar() {
				return errSyntax("known-uids must be plain UIDs")
			}
			q.knownUIDs = &s
			if !r.maybe(' ') {
				return r.char(')')
			}
		}
		if err := r.char('('); err != nil {
			return err
		}
		var m [2]seqSet
		for i := range m {
			if i == 1 {
				if err := r.sp(); err != nil {
					return err
				}
			}
			if m[i], err = r.seqSet(); err != nil {
				return err
			}
			if m[i].saved || m[i].hasStar() {
				return errSyntax("seq-match-data must be plain numbers")
			}
		}
		q.seqMatch = &m
		if err := r.char(')'); err != nil {
			return err
		}
	}
	return r.char(')')
}

var specialUses = map[string]string{
	`\SENT`: mailstore.UseSent, `\DRAFTS`: mailstore.UseDrafts, `\TRASH`: mailstore.UseTrash,
	`\JUNK`: mailstore.UseJunk, `\ARCHIVE`: mailstore.UseArchive,
	`\ALL`: `\All`, `\FLAGGED`: `\Flagged`,
}

func parseCreate(r *reader, c *command) (any, error) {
	var a createArgs
	var err error
	if err = r.sp(); err != nil {
		return nil, err
	}
	if a.name, err = r.mailbox(); err != nil {
		return nil, err
	}
	if !r.maybe(' ') {
		return a, nil
	}
	err = r.list(func() error {
		k, err := r.keyword()
		if err != nil {
			return err
		}
		if k != "USE" {
			return errSyntax("unknown CREATE parameter %s", clip(k))
		}
		if err := r.sp(); err != nil {
			return err
		}
		return r.list(func() error {
			if err := r.char('\\'); err != nil {
				return err
			}
			u, err := r.keyword()
			if err != nil {
				return err
			}
			use, ok := specialUses[`\`+u]
			if !ok {
				return &useError{`\` + u}
			}
			if a.use != "" && a.use != use {
				return &useError{"more than one"}
			}
			a.use = use
			return nil
		})
	})
	return a, err
}

// useError: a special-use attribute we don't keep (RFC 6154 § 3: NO
// [USEATTR]). The command parsed, so it is a NO, not a BAD.
type useError struct{ use string }

func (e *useError) Error() string { return "special-use attribute " + e.use + " not supported" }

func parseRename(r *reader, c *command) (any, error) {
	var a renameArgs
	var err error
	if err = r.sp(); err != nil {
		return nil, err
	}
	if a.from, err = r.mailbox(); err != nil {
		return nil, err
	}
	if err = r.sp(); err != nil {
		return nil, err
	}
	a.to, err = r.mailbox()
	return a, err
}

func parseList(r *reader, c *command) (any, error) {
	a := listArgs{lsub: c.name == "LSUB"}
	var err error
	if err = r.sp(); err != nil {
		return nil, err
	}
	if !a.lsub && r.peek() == '(' {
		a.extended = true
		err = r.list(func() error {
			k, err := r.keyword()
			switch k {
			case "SUBSCRIBED":
				a.selSubscr = true
			case "REMOTE":
				a.selRemote = true
			case "RECURSIVEMATCH":
				a.selRecurse = true
			case "SPECIAL-USE":
				a.selSpecial = true
			default:
				if err == nil {
					err = errSyntax("unknown LIST selection option %s", clip(k))
				}
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		if a.selRecurse && !a.selSubscr {
			return nil, errSyntax("RECURSIVEMATCH needs another selection option")
		}
		if err = r.sp(); err != nil {
			return nil, err
		}
	}
	if a.ref, err = r.astring(); err != nil {
		return nil, err
	}
	if err = r.sp(); err != nil {
		return nil, err
	}
	if !a.lsub && r.peek() == '(' {
		a.extended = true
		err = r.list(func() error {
			p, err := r.listMailbox()
			a.patterns = append(a.patterns, p)
			return err
		})
	} else {
		var p string
		p, err = r.listMailbox()
		a.patterns = []string{p}
	}
	if err != nil {
		return nil, err
	}
	if !a.lsub && r.maybe(' ') {
		a.extended = true
		k, err := r.keyword()
		if err != nil {
			return nil, err
		}
		if k != "RETURN" {
			return nil, errSyntax("expected RETURN")
		}
		if err := r.sp(); err != nil {
			return nil, err
		}
		err = r.list(func() error {
			k, err := r.keyword()
			if err != nil {
				return err
			}
			switch k {
			case "SUBSCRIBED":
				a.retSubscr = true
			case "CHILDREN":
				a.retChild = true
			case "SPECIAL-USE":
				a.retSpecial = true
			case "STATUS":
				if err := r.sp(); err != nil {
					return err
				}
				items, err := statusItems(r)
				if err != nil {
					return err
				}
				a.retStatus = items
				if a.retStatus == nil {
					a.retStatus = []string{}
				}
			default:
				return errSyntax("unknown LIST return option %s", clip(k))
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return a, nil
}

var statusNames = map[string]bool{
	"MESSAGES": true, "RECENT": true, "UIDNEXT": true, "UIDVALIDITY": true, "UNSEEN": true,
	"DELETED": true, "SIZE": true, "HIGHESTMODSEQ": true, "APPENDLIMIT": true,
}

func statusItems(r *reader) ([]string, error) {
	var items []string
	err := r.list(func() error {
		k, err := r.keyword()
		if err != nil {
			return err
		}
		if !statusNames[k] {
			return errSyntax("unknown STATUS item %s", clip(k))
		}
		items = append(items, k)
		return nil
	})
	if err == nil && len(items) == 0 {
		err = errSyntax("STATUS needs at least one item")
	}
	return items, err
}

func parseStatus(r *reader, c *command) (any, error) {
	var a statusArgs
	var err error
	if err = r.sp(); err != nil {
		return nil, err
	}
	if a.name, err = r.mailbox(); err != nil {
		return nil, err
	}
	if err = r.sp(); err != nil {
		return nil, err
	}
	a.items, err = statusItems(r)
	return a, err
}

// parseAppend reads APPEND up to the message literal's length; the
// session then asks for it (or refuses it) and reads it as a stream.
func parseAppend(r *reader, c *command) (any, error) {
	var a appendArgs
	var err error
	if err = r.sp(); err != nil {
		return nil, err
	}
	if a.name, err = r.mailbox(); err != nil {
		return nil, err
	}
	if err = r.sp(); err != nil {
		return nil, err
	}
	if r.peek() == '(' {
		if a.flags, err = r.flagList(); err != nil {
			return nil, err
		}
		for _, f := range a.flags {
			if f == `\Recent` {
				return nil, errSyntax(`\Recent cannot be set`)
			}
		}
		if err = r.sp(); err != nil {
			return nil, err
		}
	}
	if r.peek() == '"' {
		s, err := r.quoted()
		if err != nil {
			return nil, err
		}
		if a.date, err = parseDateTime(s); err != nil {
			return nil, err
		}
		if err = r.sp(); err != nil {
			return nil, err
		}
	}
	if r.peek() == 'U' || r.peek() == 'u' {
		k, err := r.keyword()
		if err != nil {
			return nil, err
		}
		if k != "UTF8" {
			return nil, errSyntax("expected a literal")
		}
		if err = r.sp(); err != nil {
			return nil, err
		}
		if err = r.char('('); err != nil {
			return nil, err
		}
		a.utf8 = true
		a.size, a.sync, err = r.literalHeader(true)
	} else {
		a.size, a.sync, err = r.literalHeader(r.peek() == '~')
	}
	if err != nil {
		return nil, err
	}
	a.literal = true
	return a, nil
}

func parseExpunge(r *reader, c *command) (any, error) {
	if !c.uid {
		return expungeArgs{}, nil
	}
	if err := r.sp(); err != nil {
		return nil, err
	}
	s, err := r.seqSet()
	return expungeArgs{&s}, err
}

func parseCopy(r *reader, c *command) (any, error) {
	var a copyArgs
	var err error
	if err = r.sp(); err != nil {
		return nil, err
	}
	if a.set, err = r.seqSet(); err != nil {
		return nil, err
	}
	if err = r.sp(); err != nil {
		return nil, err
	}
	a.dest, err = r.mailbox()
	return a, err
}

func parseStore(r *reader, c *command) (any, error) {
	var a storeArgs
	var err error
	if err = r.sp(); err != nil {
		return nil, err
	}
	if a.set, err = r.seqSet(); err != nil {
		return nil, err
	}
	if err = r.sp(); err != nil {
		return nil, err
	}
	if r.peek() == '(' {
		err = r.list(func() error {
			k, err := r.keyword()
			if err != nil {
				return err
			}
			if k != "UNCHANGEDSINCE" || a.hasUnchanged {
				return errSyntax("unknown STORE modifier %s", clip(k))
			}
			if err := r.sp(); err != nil {
				return err
			}
			a.hasUnchanged = true
			a.unchangedSince, err = r.number64()
			return err
		})
		if err != nil {
			return nil, err
		}
		if err = r.sp(); err != nil {
			return nil, err
		}
	}
	a.op = mailstore.StoreReplace
	if r.maybe('+') {
		a.op = mailstore.StoreAdd
	} else if r.maybe('-') {
		a.op = mailstore.StoreRemove
	}
	k, err := r.keyword()
	if err != nil {
		return nil, err
	}
	switch k {
	case "FLAGS":
	case "FLAGS.SILENT":
		a.silent = true
	default:
		return nil, errSyntax("expected FLAGS or FLAGS.SILENT")
	}
	if err = r.sp(); err != nil {
		return nil, err
	}
	if r.peek() == '(' {
		a.flags, err = r.flagList()
	} else {
		for {
			f, err := r.flag(false)
			if err != nil {
				return nil, err
			}
			a.flags = append(a.flags, f)
			if !r.maybe(' ') {
				break
			}
		}
	}
	if err != nil {
		return nil, err
	}
	a.flags = dedupFlags(a.flags)
	for _, f := range a.flags {
		if f == `\Recent` {
			return nil, errSyntax(`\Recent cannot be stored`)
		}
	}
	return a, nil
}

func parseID(r *reader, c *command) (any, error) {
	var a idArgs
	if err := r.sp(); err != nil {
		return nil, err
	}
	if r.peek() != '(' {
		a, err := r.atom()
		if err != nil || !strings.EqualFold(a, "NIL") {
			return nil, errSyntax("ID takes a list or NIL")
		}
		return idArgs{}, nil
	}
	n := 0
	err := r.list(func() error {
		var s string
		var err error
		if n%2 == 0 {
			s, err = r.str()
		} else {
			s, _, err = r.nstring()
		}
		n++
		a.params = append(a.params, s)
		return err
	})
	if err == nil && n%2 != 0 {
		err = errSyntax("ID takes field-value pairs")
	}
	if n > 60 {
		err = errSyntax("too many ID fields")
	}
	return a, err
}

// canonicalFlag spells a system flag the usual way; other \flags are kept.
func canonicalFlag(f string) (string, error) {
	switch strings.ToUpper(f) {
	case `\SEEN`:
		return mailstore.FlagSeen, nil
	case `\ANSWERED`:
		return mailstore.FlagAnswered, nil
	case `\FLAGGED`:
		return mailstore.FlagFlagged, nil
	case `\DELETED`:
		return mailstore.FlagDeleted, nil
	case `\DRAFT`:
		return mailstore.FlagDraft, nil
	case `\RECENT`:
		return `\Recent`, nil
	}
	return f, nil
}

func dedupFlags(in []string) []string {
	out := in[:0]
	for _, f := range in {
		dup := false
		for _, g := range out {
			if strings.EqualFold(f, g) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, f)
		}
	}
	return out
}

var months = []string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

func parseMonth(s string) (time.Month, bool) {
	for i, m := range months {
		if strings.EqualFold(m, s) {
			return time.Month(i + 1), true
		}
	}
	return 0, false
}

// parseDateTime parses APPEND's date-time: "dd-Mon-yyyy hh:mm:ss +zzzz"
// (the day may have a leading space).
func parseDateTime(s string) (time.Time, error) {
	bad := errSyntax("bad date-time %q", clip(s))
	if len(s) != 26 {
		return time.Time{}, bad
	}
	day := strings.TrimLeft(s[:2], " ")
	t, err := time.Parse("2-Jan-2006 15:04:05 -0700", day+s[2:])
	if err != nil {
		return time.Time{}, bad
	}
	return t, nil
}

// parseDate parses a SEARCH date (dd-Mon-yyyy, day 1 or 2 digits).
func parseDate(s string) (time.Time, error) {
	parts := strings.Split(s, "-")
	if len(parts) != 3 || len(parts[0]) < 1 || len(parts[0]) > 2 || len(parts[2]) != 4 {
		return time.Time{}, errSyntax("bad date %q", clip(s))
	}
	m, ok := parseMonth(parts[1])
	if !ok {
		return time.Time{}, errSyntax("bad month in %q", clip(s))
	}
	d, y := atoi(parts[0]), atoi(parts[2])
	if d < 1 || d > 31 || y < 0 {
		return time.Time{}, errSyntax("bad date %q", clip(s))
	}
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC), nil
}

func atoi(s string) int {
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

func validUTF8(s string) bool { return utf8.ValidString(s) }

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
