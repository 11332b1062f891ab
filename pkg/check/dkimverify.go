package check

import (
	"bufio"
	"bytes"
	"context"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
)

// maxDKIMSignatures bounds the signatures verified per message; the
// others are reported as not verified (RFC 6376 § 6.1 lets a verifier
// limit them).
const maxDKIMSignatures = 8

// dkimOutcome is the result of one DKIM-Signature (RFC 6376).
type dkimOutcome struct {
	result     authres.ResultValue
	domain     string // d=
	identifier string // i=
	selector   string // s=
	algorithm  string // a=
	b          string // the first 8 characters of b= (RFC 6008)
	reason     string
}

func (o dkimOutcome) authres() authres.Result {
	return &authres.GenericResult{Method: "dkim", Value: o.result, Params: map[string]string{
		"reason":   o.reason,
		"header.d": o.domain,
		"header.i": o.identifier,
		"header.s": o.selector,
		"header.a": o.algorithm,
		"header.b": o.b,
	}}
}

// dkimRun is the verification of a message's signatures by go-msgauth.
// A message staged in memory (most of them) is verified once it is
// complete, in the session's goroutine, from the staged octets: go-msgauth
// gets the body in one piece, and no goroutine is started, woken for each
// piece or grown. A message that outgrows memory is verified while it
// arrives: a goroutine follows the staging file from its start (start),
// in pieces of 64 KiB, so memory stays flat whatever its size.
type dkimRun struct {
	sigs   []dkimOutcome // one per DKIM-Signature field, in order
	res    *Resolver
	lookup time.Duration      // bounds the key lookups of a verification
	done   chan struct{}      // nil until the follower is started
	cancel context.CancelFunc // ends the prefetch
	limit  *lookupLimit       // the verification's lookups, once started
	verifs []*dkim.Verification
	err    error
}

// verifyReaders are the readers go-msgauth reads a message in memory
// through: given a *bufio.Reader of its default size or more, it uses it
// rather than allocating its own for each message.
var verifyReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

// followPiece is how much of a staging file go-msgauth reads at once.
const followPiece = 64 << 10

// prepareDKIM returns the verification of the DKIM signatures of the
// message whose header is fields, or nil when there is no signature. The
// signers' key records that the resolver does not have yet are looked up
// now, in the background, so the body's arrival hides their round trips.
func (c *Checker) prepareDKIM(fields []Field) *dkimRun {
	var sigs []dkimOutcome
	var keys []string
	for _, f := range fields {
		if !f.Is("DKIM-Signature") {
			continue
		}
		o := signatureTags(f)
		sigs = append(sigs, o)
		if len(sigs) <= maxDKIMSignatures && o.selector != "" && o.domain != "" {
			// The name go-msgauth asks (RFC 6376 § 3.6.2.1).
			keys = append(keys, o.selector+"._domainkey."+o.domain)
		}
	}
	if len(sigs) == 0 {
		return nil
	}
	run := &dkimRun{sigs: sigs, cancel: func() {}, res: c.cfg.Resolver, lookup: c.cfg.DNSTimeout}
	if keys = c.cfg.Resolver.uncachedTXT(keys); len(keys) > 0 {
		// No timer for a message whose keys are kept (most of them).
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.DNSTimeout)
		c.cfg.Resolver.prefetchTXT(ctx, keys...)
		run.cancel = cancel
	}
	return run
}

// signatureTags returns what Authentication-Results says of the
// DKIM-Signature field f before it is verified: its d=, i=, s=, a= and
// the start of b=, printable.
func signatureTags(f Field) dkimOutcome {
	// The raw value, CRLFs kept: the tags' values lose their folding
	// white space either way, and Field.Value would copy it twice.
	tags, _ := ParseTagList(f.rawValue())
	return dkimOutcome{
		domain:     printable(stripFWS(tagValue(tags, "d")), 255),
		identifier: printable(stripFWS(tagValue(tags, "i")), 255),
		selector:   printable(stripFWS(tagValue(tags, "s")), 255),
		algorithm:  printable(stripFWS(tagValue(tags, "a")), 40),
		b:          printable(bPrefix(tagValue(tags, "b")), 8),
	}
}

// options returns go-msgauth's options for a verification starting now:
// its lookups get their own time limit, however long the body took to
// arrive since the prefetch (from the first key the resolver does not
// have: none for most messages).
func (r *dkimRun) options() *dkim.VerifyOptions {
	r.limit = newLookupLimit(r.lookup)
	return &dkim.VerifyOptions{LookupTXT: r.res.txtFunc(r.limit), MaxVerifications: maxDKIMSignatures}
}

// stop ends the prefetch and the verification's lookups.
func (r *dkimRun) stop() {
	r.cancel()
	if r.limit != nil {
		r.limit.stop()
	}
}

// start verifies the message while it arrives, following st in a
// goroutine (for a message that outgrew memory).
func (r *dkimRun) start(st *staged) {
	r.done = make(chan struct{})
	opts := r.options()
	go func() {
		defer close(r.done)
		// go-msgauth reads through a bufio.Reader; given one, it uses it
		// as it is (bufio.NewReader returns a large enough one).
		r.verifs, r.err = dkim.VerifyWithOptions(bufio.NewReaderSize(st.follow(), followPiece), opts)
	}()
}

// wait returns the outcome of each signature, verifying the message now
// unless a follower did it (st must be finished).
func (r *dkimRun) wait(st *staged) []dkimOutcome {
	if r.done != nil {
		<-r.done
	} else if b, ok := st.inMemory(); ok {
		br := verifyReaders.Get().(*bufio.Reader)
		br.Reset(bytes.NewReader(b))
		r.verifs, r.err = dkim.VerifyWithOptions(br, r.options())
		br.Reset(nil)
		verifyReaders.Put(br)
	} else {
		// A staging file not followed (cannot happen: start is called
		// when the message moves to one): read it from its start.
		r.verifs, r.err = dkim.VerifyWithOptions(bufio.NewReaderSize(st.section(0), followPiece), r.options())
	}
	r.stop()
	for i := range r.sigs {
		o := &r.sigs[i]
		switch {
		case i >= maxDKIMSignatures:
			o.result, o.reason = authres.ResultNeutral, "not verified: too many signatures"
		case i >= len(r.verifs):
			// The message could not be read as one (its header did
			// not parse): no signature in it is valid.
			o.result, o.reason = authres.ResultPermError, "message not verifiable"
			if r.err != nil {
				o.reason += ": " + r.err.Error()
			}
		default:
			v := r.verifs[i]
			if v.Domain != "" {
				o.domain = v.Domain
			}
			switch err := v.Err; {
			case err == nil:
				o.result = authres.ResultPass
			case dkim.IsTempFail(err):
				o.result = authres.ResultTempError
			case dkim.IsPermFail(err):
				o.result = authres.ResultPermError
			default:
				o.result = authres.ResultFail
			}
			if v.Err != nil {
				o.reason = printable(strings.TrimPrefix(v.Err.Error(), "dkim: "), 200)
			}
		}
	}
	return r.sigs
}

// abort stops the verification of a message that will not be checked.
func (r *dkimRun) abort() {
	r.stop()
}
