package queue

import (
	"io"
	"log/slog"
	"strings"
	"sync"

	"letterbox/pkg/dkim"
	"letterbox/pkg/spool"
)

// Signer signs the mail our users send as it leaves for other hosts
// (*dkim.Keys): the DKIM-Signature fields to send in front of the
// message open returns, "" when its domain has no key.
type Signer interface {
	Sign(open func() (io.ReadCloser, error)) (sig, domain string, err error)
}

// signer returns the Signer of the dkim-keys directory (nil for none); a
// domain without a directory there has no key.
func signer(dir string) Signer {
	if dir == "" {
		return nil
	}
	return &dkim.Keys{Dir: dir}
}

// ours reports whether env is mail from us: an authenticated user, a local
// user (sendmail), a client in relay-networks, or queue-runner's own
// notices. Only ours is signed: mail from strangers that we forward keeps
// its own signatures and gets none of ours.
func ours(env *spool.Envelope) bool {
	return env.AuthUser != "" || env.Relay || env.Notice != ""
}

// remoteData returns the opener of the message as it goes to other hosts:
// the spool's data file, signed (once, at the first open) when it is ours
// and its domain has a key. The data file itself is never changed. A
// message that cannot be signed goes unsigned, with a warning.
func (r *Runner) remoteData(l *spool.Locked, env *spool.Envelope, log *slog.Logger) func() (io.ReadCloser, error) {
	plain := func() (io.ReadCloser, error) { return l.Data(), nil }
	if r.Signer == nil || !ours(env) {
		return plain
	}
	var once sync.Once
	var sig string
	return func() (io.ReadCloser, error) {
		once.Do(func() {
			s, domain, err := r.Signer.Sign(plain)
			switch {
			case err != nil:
				log.Warn("dkim: sent unsigned", "domain", domain, "err", err)
			case s != "":
				log.Info("dkim: signed", "domain", domain, "signatures", strings.Count(s, "DKIM-Signature:"))
			}
			sig = s
		})
		if sig == "" {
			return l.Data(), nil
		}
		return signedData{io.MultiReader(strings.NewReader(sig), l.Data())}, nil
	}
}

type signedData struct{ io.Reader }

func (signedData) Close() error { return nil }
