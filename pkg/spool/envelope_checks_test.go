package spool

import (
	"errors"
	"strings"
	"testing"
)

// TestEnvelopeRelayJunk: the relay mark (DKIM signing of relay-networks'
// mail) and the Junk reason (DMARC quarantine, milters) survive a round
// trip, and only "relay yes" is a relay mark.
func TestEnvelopeRelayJunk(t *testing.T) {
	env := testEnv()
	env.Relay = true
	env.Junk = "dmarc: example.org p=quarantine \"q\"\n"
	text := env.Format()
	if !strings.Contains(text, "\nrelay yes\n") || !strings.Contains(text, `junk "dmarc: example.org p=quarantine \"q\"\n"`) {
		t.Fatalf("format:\n%s", text)
	}
	got, err := Parse(text)
	if err != nil || !got.Relay || got.Junk != env.Junk || got.Format() != text {
		t.Fatalf("round trip: %v %+v", err, got)
	}
	plain := testEnv().Format()
	if strings.Contains(plain, "relay") || strings.Contains(plain, "junk") {
		t.Fatalf("unmarked envelope:\n%s", plain)
	}
	for _, bad := range []string{strings.Replace(text, "relay yes", "relay no", 1), strings.Replace(text, "junk \"", "junk x\"", 1)} {
		if _, err := Parse(bad); !errors.Is(err, ErrFormat) {
			t.Errorf("Parse accepted:\n%s", bad)
		}
	}
}
