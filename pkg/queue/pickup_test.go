package queue

import (
	"os"
	"strings"
	"testing"

	"letterbox/pkg/config"
	"letterbox/pkg/privsep"
	"letterbox/pkg/spool"
)

// Drop files of root, of queue-runner's own user and of mail-user may name
// any sender; anyone else's forged one gets the warning.
func TestPickupTrustedUsers(t *testing.T) {
	nobody, err := privsep.LookupUser("nobody")
	if err != nil {
		t.Fatal(err)
	}
	p := pickup(&config.Common{Hostname: "mx.example.test", Domains: []string{"example.test"}, MailUser: "nobody"})
	for _, c := range []struct {
		uid  uint32
		warn bool
	}{{0, false}, {uint32(os.Geteuid()), false}, {nobody.UID, false}, {nobody.UID - 1, true}} {
		h, err := p(spool.DropFile{UID: c.uid, Login: "x", Env: &spool.Envelope{From: "root@mx.example.test"}})
		if err != nil || strings.Contains(h, "X-Authentication-Warning") != c.warn || !strings.HasPrefix(h, "Received: (from x uid ") {
			t.Errorf("uid %d: %q %v", c.uid, h, err)
		}
	}
}
