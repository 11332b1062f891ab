package check

import (
	"bytes"
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

// dkimRun is the verification of a message's signatures: streamed (the
// body hashed as it arrives, dkimstream.go) or, for a header that does
// not end with an empty line, go-msgauth following the staged message.
type dkimRun struct {
	sigs   []dkimOutcome // one per DKIM-Signature field, in order
	cancel context.CancelFunc

	stream *dkimStream

	done   chan struct{} // go-msgauth's run
	verifs []*dkim.Verification
	err    error
}

// startDKIM starts verifying the DKIM signatures of the message whose
// header hp has read: streamed when the header ended with an empty line
// (the caller then gives the body to run.body), else by go-msgauth reading
// the message from st as it arrives. It returns nil when there is no
// signature.
func (c *Checker) startDKIM(st *staged, hp *headerParser) *dkimRun {
	var sigs []dkimOutcome
	var sigFields []int
	for i, f := range hp.fields {
		if !f.Is("DKIM-Signature") {
			continue
		}
		sigFields = append(sigFields, i)
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
	run := &dkimRun{sigs: sigs, cancel: cancel}
	if hp.blank {
		run.stream = c.startStream(ctx, msgauthHeader(hp.fields), sigFields)
		return run
	}
	run.done = make(chan struct{})
	opts := &dkim.VerifyOptions{LookupTXT: c.cfg.Resolver.txtFunc(ctx), MaxVerifications: maxDKIMSignatures}
	go func() {
		defer close(run.done)
		run.verifs, run.err = dkim.VerifyWithOptions(st.follow(), opts)
	}()
	return run
}

// msgauthHeader returns the fields as go-msgauth's header reader gives
// them: each line without its line end (CRLF or LF), then CRLF.
func msgauthHeader(fields []Field) []string {
	h := make([]string, len(fields))
	var b strings.Builder
	for i, f := range fields {
		b.Reset()
		raw := f.Raw
		for len(raw) > 0 {
			j := bytes.IndexByte(raw, '\n')
			line := raw
			if j >= 0 {
				line, raw = raw[:j], raw[j+1:]
			} else {
				raw = nil
			}
			line = bytes.TrimSuffix(line, []byte("\r"))
			b.Write(line)
			b.WriteString("\r\n")
		}
		h[i] = b.String()
	}
	return h
}

// body takes the next piece of the body (after the header's empty line).
func (r *dkimRun) body(p []byte) {
	if r.stream != nil {
		r.stream.write(p)
	}
}

// wait returns the outcome of each signature once the message is all
// there (its staging finished).
func (r *dkimRun) wait() []dkimOutcome {
	var verifs []verification
	var msgErr error
	if r.stream != nil {
		verifs = r.stream.finish()
	} else {
		<-r.done
		for _, v := range r.verifs {
			verifs = append(verifs, verification{domain: v.Domain, err: v.Err})
		}
		msgErr = r.err
	}
	r.cancel()
	for i := range r.sigs {
		o := &r.sigs[i]
		switch {
		case i >= maxDKIMSignatures:
			o.result, o.reason = authres.ResultNeutral, "not verified: too many signatures"
		case i >= len(verifs):
			// The message could not be read as one (its header did
			// not parse): no signature in it is valid.
			o.result, o.reason = authres.ResultPermError, "message not verifiable"
			if msgErr != nil {
				o.reason += ": " + msgErr.Error()
			}
		default:
			v := verifs[i]
			if v.domain != "" {
				o.domain = v.domain
			}
			switch err := v.err; {
			case err == nil:
				o.result = authres.ResultPass
			case dkim.IsTempFail(err) || isDKIMError(err, dkimTempFail):
				o.result = authres.ResultTempError
			case dkim.IsPermFail(err) || isDKIMError(err, dkimPermFail):
				o.result = authres.ResultPermError
			default:
				o.result = authres.ResultFail
			}
			if v.err != nil {
				o.reason = printable(strings.TrimPrefix(v.err.Error(), "dkim: "), 200)
			}
		}
	}
	return r.sigs
}

// abort stops the verifier of a message that will not be checked.
func (r *dkimRun) abort() {
	r.cancel()
}
