package submission

import (
	"strings"
	"testing"
	"time"

	"letterbox/pkg/spool"
)

func TestPickupHeader(t *testing.T) {
	now := time.Date(2026, 11, 23, 14, 5, 6, 0, time.UTC)
	p := Pickup{Hostname: "mx.example.test", IsLocal: func(d string) bool { return d == "example.test" },
		Trusted: []uint32{0, 8}, Now: func() time.Time { return now }}
	received := "Received: (from joe uid 1000)\r\n\tby mx.example.test (letterbox sendmail); Mon, 23 Nov 2026 14:05:06 +0000\r\n"
	warn := func(sender string) string {
		return "X-Authentication-Warning: mx.example.test: joe set sender to " + sender + " using -f\r\n"
	}
	for _, c := range []struct {
		uid    uint32
		login  string
		sender string
		want   string
	}{
		{1000, "joe", "joe@mx.example.test", received},   // sendmail's default sender
		{1000, "joe", "joe@example.test", received},      // a local domain
		{1000, "joe", "joe+cron@EXAMPLE.test", received}, // +detail, any case of the domain
		{1000, "joe", "root@mx.example.test", received + warn("root@mx.example.test")},
		{1000, "joe", "joe@remote.test", received + warn("joe@remote.test")},
		{1000, "joe", "joey@example.test", received + warn("joey@example.test")},
		{1000, "joe", "", received + warn("<>")},
		{0, "root", "anyone@remote.test", strings.Replace(received, "joe uid 1000", "root uid 0", 1)},
		{8, "mail", "MAILER-DAEMON@example.test", strings.Replace(received, "joe uid 1000", "mail uid 8", 1)},
		// A login that would break the field is made harmless.
		{1000, "j)\r\nX-Evil: 1", "joe@example.test", "Received: (from j?" + "??X-Evil:?1 uid 1000)\r\n\tby mx.example.test (letterbox sendmail); Mon, 23 Nov 2026 14:05:06 +0000\r\n" +
			"X-Authentication-Warning: mx.example.test: j???X-Evil:?1 set sender to joe@example.test using -f\r\n"},
	} {
		got, err := p.Header(spool.DropFile{UID: c.uid, Login: c.login, Env: &spool.Envelope{From: c.sender}})
		if err != nil || got != c.want {
			t.Errorf("uid %d %q sender %q:\n got %q\nwant %q", c.uid, c.login, c.sender, got, c.want)
		}
	}
}
