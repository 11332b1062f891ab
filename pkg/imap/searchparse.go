package imap

import (
	"strings"
	"time"
)

// searchKey is one SEARCH key (RFC 9051 § 6.4.4, RFC 7162 MODSEQ); AND,
// OR and NOT hold sub-keys.
type searchKey struct {
	op   string // upper case: ALL, SEEN, FROM, HEADER, OR, AND, NOT, SEQ, UID …
	str  string // text to match; HEADER's field name in field
	fld  string
	num  int64 // LARGER, SMALLER, MODSEQ
	date time.Time
	set  seqSet
	idx  []int // SEQ, UID: the sequence indexes set named, once resolved
	sub  []*searchKey
}

// maxSearchDepth bounds nesting (parentheses, NOT, OR) so that a hostile
// command cannot run the evaluator deep.
const maxSearchDepth = 64

func parseSearch(r *reader, c *command) (any, error) {
	a := searchArgs{}
	if err := r.sp(); err != nil {
		return nil, err
	}
	if w := r.peekWord(); w == "RETURN" {
		r.keyword()
		if err := r.sp(); err != nil {
			return nil, err
		}
		a.esearch = true
		a.ret = []string{}
		err := r.list(func() error {
			k, err := r.keyword()
			if err != nil {
				return err
			}
			switch k {
			case "MIN", "MAX", "ALL", "COUNT", "SAVE":
				a.ret = append(a.ret, k)
				return nil
			}
			return errSyntax("unknown SEARCH return option %s", clip(k))
		})
		if err != nil {
			return nil, err
		}
		if err := r.sp(); err != nil {
			return nil, err
		}
	}
	var err error
	if a.charset, a.key, err = searchCharsetKeys(r); err != nil {
		return nil, err
	}
	return a, nil
}

// searchCharsetKeys reads [CHARSET astring SP] 1*(SP search-key) (the
// first key without its space).
func searchCharsetKeys(r *reader) (string, *searchKey, error) {
	charset := ""
	if r.peekWord() == "CHARSET" {
		r.keyword()
		if err := r.sp(); err != nil {
			return "", nil, err
		}
		cs, err := r.astring()
		if err != nil {
			return "", nil, err
		}
		charset = strings.ToUpper(cs)
		if err := r.sp(); err != nil {
			return "", nil, err
		}
	}
	k, err := searchKeys(r, charset)
	return charset, k, err
}

// searchKeys reads keys separated by spaces up to the end of the line or
// a ")"; several keys are an AND.
func searchKeys(r *reader, charset string) (*searchKey, error) {
	and := &searchKey{op: "AND"}
	for {
		k, err := parseSearchKey(r, 0)
		if err != nil {
			return nil, err
		}
		and.sub = append(and.sub, k)
		if !r.maybe(' ') {
			break
		}
	}
	if len(and.sub) == 1 {
		return and.sub[0], nil
	}
	return and, nil
}

// peekWord returns the upper-cased atom at the position without
// consuming it.
func (r *reader) peekWord() string {
	i := r.pos
	for i < len(r.line) && isAtomChar(r.line[i]) {
		i++
	}
	return strings.ToUpper(string(r.line[r.pos:i]))
}

func parseSearchKey(r *reader, depth int) (*searchKey, error) {
	if depth > maxSearchDepth {
		return nil, errSyntax("search keys nested too deep")
	}
	if r.peek() == '(' {
		r.pos++
		and := &searchKey{op: "AND"}
		for {
			k, err := parseSearchKey(r, depth+1)
			if err != nil {
				return nil, err
			}
			and.sub = append(and.sub, k)
			if r.maybe(')') {
				break
			}
			if err := r.sp(); err != nil {
				return nil, err
			}
		}
		return and, nil
	}
	c := r.peek()
	if c >= '0' && c <= '9' || c == '*' || c == '$' {
		s, err := r.seqSet()
		return &searchKey{op: "SEQ", set: s}, err
	}
	op, err := r.keyword()
	if err != nil {
		return nil, err
	}
	k := &searchKey{op: op}
	str := func() error {
		if err := r.sp(); err != nil {
			return err
		}
		s, err := r.astring()
		k.str = s
		return err
	}
	date := func() error {
		if err := r.sp(); err != nil {
			return err
		}
		var s string
		var err error
		if r.peek() == '"' {
			s, err = r.quoted()
		} else {
			s, err = r.word(func(c byte) bool { return isAtomChar(c) }, "a date")
		}
		if err != nil {
			return err
		}
		k.date, err = parseDate(s)
		return err
	}
	switch op {
	case "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
		"UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN":
		return k, nil
	case "BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO":
		return k, str()
	case "KEYWORD", "UNKEYWORD":
		if err := r.sp(); err != nil {
			return nil, err
		}
		k.str, err = r.flag(false)
		return k, err
	case "BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE":
		return k, date()
	case "HEADER":
		if err := str(); err != nil {
			return nil, err
		}
		k.fld = k.str
		return k, str()
	case "LARGER", "SMALLER":
		if err := r.sp(); err != nil {
			return nil, err
		}
		n, err := r.number64()
		k.num = int64(n)
		return k, err
	case "UID":
		if err := r.sp(); err != nil {
			return nil, err
		}
		k.set, err = r.seqSet()
		return k, err
	case "NOT":
		if err := r.sp(); err != nil {
			return nil, err
		}
		s, err := parseSearchKey(r, depth+1)
		k.sub = []*searchKey{s}
		return k, err
	case "OR":
		for i := 0; i < 2; i++ {
			if err := r.sp(); err != nil {
				return nil, err
			}
			s, err := parseSearchKey(r, depth+1)
			if err != nil {
				return nil, err
			}
			k.sub = append(k.sub, s)
		}
		return k, nil
	case "MODSEQ":
		// MODSEQ [entry-name entry-type-req] mod-sequence-valzer; the
		// entry is accepted and ignored (one MODSEQ per message here).
		if err := r.sp(); err != nil {
			return nil, err
		}
		if r.peek() == '"' {
			if _, err := r.quoted(); err != nil {
				return nil, err
			}
			if err := r.sp(); err != nil {
				return nil, err
			}
			t, err := r.keyword()
			if err != nil {
				return nil, err
			}
			if t != "PRIV" && t != "SHARED" && t != "ALL" {
				return nil, errSyntax("bad MODSEQ entry type %s", clip(t))
			}
			if err := r.sp(); err != nil {
				return nil, err
			}
		}
		n, err := r.number64()
		k.num = int64(n)
		return k, err
	}
	return nil, errSyntax("unknown search key %s", clip(op))
}

// parseSort: SORT (criteria) charset keys (RFC 5256).
func parseSort(r *reader, c *command) (any, error) {
	var a sortArgs
	if err := r.sp(); err != nil {
		return nil, err
	}
	err := r.list(func() error {
		k, err := r.keyword()
		if err != nil {
			return err
		}
		rev := false
		if k == "REVERSE" {
			rev = true
			if err := r.sp(); err != nil {
				return err
			}
			if k, err = r.keyword(); err != nil {
				return err
			}
		}
		switch k {
		case "ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO":
		default:
			return errSyntax("unknown sort key %s", clip(k))
		}
		a.criteria = append(a.criteria, sortCriterion{key: k, reverse: rev})
		return nil
	})
	if err == nil && len(a.criteria) == 0 {
		err = errSyntax("bad sort criteria")
	}
	if err != nil {
		return nil, err
	}
	if err := r.sp(); err != nil {
		return nil, err
	}
	cs, err := r.astring()
	if err != nil {
		return nil, err
	}
	a.charset = strings.ToUpper(cs)
	if err := r.sp(); err != nil {
		return nil, err
	}
	a.key, err = searchKeys(r, a.charset)
	return a, err
}

// parseThread: THREAD algorithm charset keys (RFC 5256).
func parseThread(r *reader, c *command) (any, error) {
	var a threadArgs
	var err error
	if err = r.sp(); err != nil {
		return nil, err
	}
	if a.algorithm, err = r.keyword(); err != nil {
		return nil, err
	}
	if err = r.sp(); err != nil {
		return nil, err
	}
	cs, err := r.astring()
	if err != nil {
		return nil, err
	}
	a.charset = strings.ToUpper(cs)
	if err := r.sp(); err != nil {
		return nil, err
	}
	a.key, err = searchKeys(r, a.charset)
	return a, err
}
