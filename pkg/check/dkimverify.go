package check

import (
	"context"
	"strings"

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

// dkimRun is a verification following a message into its staging file.
type dkimRun struct {
	sigs   []dkimOutcome // one per DKIM-Signature field, in order
	done   chan struct{}
	cancel context.CancelFunc
	verifs []*dkim.Verification
	err    error
}

// startDKIM starts verifying the DKIM signatures of the message whose
// header is fields, reading it from st as it arrives. It returns nil when
// there is no signature.
func (c *Checker) startDKIM(st *staged, fields []Field) *dkimRun {
	var sigs []dkimOutcome
	for _, f := range fields {
		if !f.Is("DKIM-Signature") {
			continue
		}
		tags, _ := ParseTagList(f.Value())
		b := stripFWS(tagValue(tags, "b"))
		if len(b) > 8 {
			b = b[:8]
		}
		sigs = append(sigs, dkimOutcome{
			domain:     printable(stripFWS(tagValue(tags, "d")), 255),
			identifier: printable(stripFWS(tagValue(tags, "i")), 255),
			selector:   printable(stripFWS(tagValue(tags, "s")), 255),
			algorithm:  printable(stripFWS(tagValue(tags, "a")), 40),
			b:          printable(b, 8),
		})
	}
	if len(sigs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.DNSTimeout)
	run := &dkimRun{sigs: sigs, done: make(chan struct{}), cancel: cancel}
	opts := &dkim.VerifyOptions{LookupTXT: c.cfg.Resolver.txtFunc(ctx), MaxVerifications: maxDKIMSignatures}
	go func() {
		defer close(run.done)
		run.verifs, run.err = dkim.VerifyWithOptions(st.follow(), opts)
	}()
	return run
}

// wait returns the outcome of each signature once the verifier is done
// (the staging file must be finished).
func (r *dkimRun) wait() []dkimOutcome {
	<-r.done
	r.cancel()
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

// abort stops the verifier of a message that will not be checked.
func (r *dkimRun) abort() {
	r.cancel()
}
