package check

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
)

// BenchmarkChecks: one 10 KB DKIM-signed message through SPF, DKIM and
// DMARC, all passing, DNS on loopback; the SMTP side is left out.
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
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cn, _ := c.Connect(ConnInfo{IP: net.ParseIP("192.0.2.1")})
		cn.Helo("client.test")
		cn.Mail("ID", "alice@signed.test", "")
		cn.Rcpt("u@example.test", "")
		_, err := cn.Message(strings.NewReader(msg), func(r *Result) (string, error) {
			_, err := io.Copy(io.Discard, r.Data)
			return "ID", err
		})
		if err != nil {
			b.Fatal(err)
		}
		cn.Close()
	}
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
