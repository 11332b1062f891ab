package imap

import (
	"errors"
	"sort"
	"strconv"
	"strings"

	"letterbox/pkg/mailstore"
)

func (s *session) cmdStore(uid bool, a storeArgs) result {
	sel := s.sel
	idx, err := sel.resolve(a.set, uid)
	if err != nil {
		return bad(err.Error())
	}
	for _, f := range a.flags {
		if strings.HasPrefix(f, `\`) && !systemFlag(f) {
			return bad("Unknown system flag " + clip(f))
		}
	}
	if sel.readOnly {
		return no("READ-ONLY", "Mailbox is read-only")
	}
	if a.hasUnchanged {
		s.condstore = true
	}
	uids := sel.uidsOf(idx)
	var changed []mailstore.Msg
	var failed []uint32
	if a.hasUnchanged && a.unchangedSince == 0 {
		// Every message has a MODSEQ above 0 (RFC 7162 § 3.1.3).
		for _, u := range uids {
			if sel.lookup(u) != nil {
				failed = append(failed, u)
			}
		}
	} else if len(uids) > 0 {
		changed, failed, err = sel.view.Store(uids, a.op, a.flags, a.unchangedSince)
		if err != nil {
			return s.storeError("store", err)
		}
	}
	byUID := make(map[uint32]*mailstore.Msg, len(changed))
	for i := range changed {
		byUID[changed[i].UID] = &changed[i]
	}
	failedSet := setOf(sortedCopy(failed))
	for k, i := range idx {
		u := uids[k]
		m := byUID[u]
		if m != nil {
			sel.modseq[i] = m.ModSeq
			sel.addKeywordsTold(s, m.Flags)
			if old := sel.lookup(u); old != nil {
				m.Recent = old.Recent // this session's \Recent, not the store's answer
			}
		} else if failedSet.contains(u) {
			continue
		} else if m = sel.lookup(u); m == nil {
			continue // expunged meanwhile
		}
		switch {
		case !a.silent:
			s.writeFlagsFetch(i, m, uid)
		case s.condstore && byUID[u] != nil:
			s.writeFetchUpdate(i, m, uid, false)
		}
	}
	if len(failed) > 0 {
		var set numSet
		if uid {
			set = failedSet
		} else {
			var seqs []uint32
			for k, i := range idx {
				if failedSet.contains(uids[k]) {
					seqs = append(seqs, uint32(i+1))
				}
			}
			set = setOf(seqs)
		}
		return okCode("MODIFIED "+set.String(), "Conditional STORE failed")
	}
	return ok("STORE completed")
}

// addKeywordsTold announces keywords a STORE created before the FETCH
// responses that show them.
func (sel *selected) addKeywordsTold(s *session, flags []string) {
	if sel.addKeywords(flags) {
		s.untagged(sel.flagsResponse())
		s.untagged("OK [PERMANENTFLAGS " + permanentFlags(sel) + "] Flags permitted")
	}
}

func (s *session) cmdCopy(uid, move bool, a copyArgs) result {
	sel := s.sel
	op := a2s(move, "MOVE", "COPY")
	idx, err := sel.resolve(a.set, uid)
	if err != nil {
		return bad(err.Error())
	}
	if err := checkName(a.dest); err != nil {
		return s.storeError(strings.ToLower(op), err)
	}
	if move && sel.readOnly {
		return no("READ-ONLY", "Mailbox is read-only")
	}
	uids := sel.uidsOf(idx)
	if len(uids) == 0 {
		if _, err := s.store.Status(a.dest); err != nil {
			return s.copyError(op, err)
		}
		return ok(op + " completed")
	}
	var res mailstore.CopyResult
	if move {
		res, err = sel.view.Move(uids, a.dest)
	} else {
		res, err = sel.view.Copy(uids, a.dest)
	}
	if err != nil && len(res.SrcUIDs) == 0 {
		return s.copyError(op, err)
	}
	code := ""
	if len(res.SrcUIDs) > 0 {
		code = "COPYUID " + strconv.FormatUint(uint64(res.UIDValidity), 10) + " " + pairSets(res.SrcUIDs, res.DstUIDs)
	}
	if move {
		s.moved += len(res.SrcUIDs)
		if code != "" {
			s.untagged("OK [" + code + "] Moved")
		}
		s.removeUIDs(res.SrcUIDs)
		if err != nil {
			return s.copyError(op, err)
		}
		return ok("MOVE completed")
	}
	s.copied += len(res.SrcUIDs)
	if err != nil {
		return s.copyError(op, err)
	}
	if code == "" {
		return ok("COPY completed")
	}
	return okCode(code, "COPY completed")
}

func (s *session) copyError(op string, err error) result {
	if errors.Is(err, mailstore.ErrNoMailbox) {
		return no("TRYCREATE", "Destination mailbox does not exist")
	}
	return s.storeError(strings.ToLower(op), err)
}

// pairSets writes COPYUID's two uid-sets, pair by pair in source order,
// with a range only where both sides run on together.
func pairSets(src, dst []uint32) string {
	type pair struct{ s, d uint32 }
	n := len(src)
	if len(dst) < n {
		n = len(dst)
	}
	ps := make([]pair, n)
	for i := range ps {
		ps[i] = pair{src[i], dst[i]}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].s < ps[j].s })
	var a, b []byte
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1].s == ps[j].s+1 && ps[j+1].d == ps[j].d+1 {
			j++
		}
		if i > 0 {
			a, b = append(a, ','), append(b, ',')
		}
		a = strconv.AppendUint(a, uint64(ps[i].s), 10)
		b = strconv.AppendUint(b, uint64(ps[i].d), 10)
		if j > i {
			a = append(append(a, ':'), strconv.FormatUint(uint64(ps[j].s), 10)...)
			b = append(append(b, ':'), strconv.FormatUint(uint64(ps[j].d), 10)...)
		}
		i = j + 1
	}
	return string(a) + " " + string(b)
}
