package check

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/authres"
)

// BenchmarkChecks: one 10 KB DKIM-signed message through SPF, DKIM and
// DMARC, all passing, DNS on loopback; the SMTP side is left out. The
// result is read as the spool reads it (a buffer of its own, no WriteTo),
// and cpu-ns/op is the process's CPU time per message (user + system),
// which a machine loaded by others inflates less than ns/op.
func BenchmarkChecks(b *testing.B) {
	z := startDNS(b)
	rk, _ := testKeys(b)
	publishKey(b, z, "rsa", "signed.test", rk)
	z.txt(b, "signed.test", "v=spf1 ip4:192.0.2.1 -all")
	z.txt(b, "_dmarc.signed.test", "v=DMARC1; p=reject")
	msg := sign(b, plainMsg+strings.Repeat(strings.Repeat("x", 76)+"\n", 130), "signed.test", "rsa", rk)
	c := newChecker(b, z, Config{Log: discardLog()})
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	buf := make([]byte, 32<<10)
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cn, _ := c.Connect(ConnInfo{IP: net.ParseIP("192.0.2.1")})
		cn.Helo("client.test")
		cn.Mail("ID", "alice@signed.test", "")
		cn.Rcpt("u@example.test", "")
		_, err := cn.Message(strings.NewReader(msg), func(r *Result) (string, error) {
			for {
				_, err := r.Data.Read(buf)
				if err == io.EOF {
					return "ID", nil
				}
				if err != nil {
					return "", err
				}
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		cn.Close()
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user and system time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// BenchmarkSignatureTags: reading what Authentication-Results says of a
// DKIM-Signature (d, i, s, a, the start of b) from a folded 2048-bit RSA
// signature, as prepareDKIM does for every signed message ("now"), and
// as it did before the tag list stopped copying ("before").
func BenchmarkSignatureTags(b *testing.B) {
	rk, _ := testKeys(b)
	msg := sign(b, plainMsg, "signed.test", "rsa", rk)
	hp := &headerParser{lim: DefaultHeaderLimits}
	hp.feed([]byte(msg), 0)
	var sig Field
	for _, f := range hp.fields {
		if f.Is("DKIM-Signature") {
			sig = f
		}
	}
	for _, c := range []struct {
		name string
		read func(Field) dkimOutcome
	}{{"now", signatureTags}, {"before", refSignatureTags}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if o := c.read(sig); o.domain != "signed.test" {
					b.Fatalf("%+v", o)
				}
			}
		})
	}
}

// BenchmarkAuthResultsField: the Authentication-Results field of a message
// that passed SPF, DKIM and DMARC, now and as it was formatted before.
func BenchmarkAuthResultsField(b *testing.B) {
	results := []authres.Result{
		&authres.SPFResult{Value: authres.ResultPass, From: "alice@sender.bench"},
		dkimOutcome{result: authres.ResultPass, domain: "sender.bench", identifier: "@sender.bench", selector: "bench", algorithm: "rsa-sha256", b: "dGhpcyBp"}.authres(),
		&authres.DMARCResult{Value: authres.ResultPass, From: "sender.bench"},
	}
	b.Run("now", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			authResultsField("mx.example.test", results)
		}
	})
	b.Run("before", func(b *testing.B) { // each result through authres.Format
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			var sb strings.Builder
			sb.WriteString("Authentication-Results: mx.example.test")
			for _, r := range results {
				sb.WriteString(";\r\n\t")
				sb.WriteString(strings.TrimSpace(strings.TrimPrefix(authres.Format("", []authres.Result{r}), "; ")))
			}
			sb.WriteString("\r\n")
			_ = Field{Name: "Authentication-Results", Raw: []byte(sb.String())}
		}
	})
}
