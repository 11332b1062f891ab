package check

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFilter: the filter command gets the message (with our
// Authentication-Results) on stdin and the envelope in its environment;
// its exit code decides.
func TestFilter(t *testing.T) {
	dir := t.TempDir()
	got := filepath.Join(dir, "got")
	for _, tc := range []struct {
		cmd, want string
	}{
		{`cat > ` + got + `; echo "$SENDER|$RECIPIENTS|$QUEUE_ID|$CLIENT_ADDR|$HELO" >> ` + got, ""},
		{`echo "550 no thanks: spam" >&2; exit 100`, "554 5.7.1 550 no thanks: spam"},
		{`exit 100`, "554 5.7.1 Message rejected by the content filter"},
		{`echo busy; exit 111`, "451 4.7.1 busy"},
		{`exit 3`, "451 4.3.0 Content filter failed, try again later"},
		{`kill -9 $$`, "451 4.3.0 Content filter failed, try again later"},
		{`sleep 30 & sleep 30`, "451 4.3.0 Content filter timed out, try again later"},
		{`head -c 1 >/dev/null; exit 0`, ""}, // reads one byte and goes
		{`yes | head -c 1000000 >&2; exit 0`, ""},
	} {
		cfg := noDNS()
		cfg.SPF = ModeTag
		cfg.Filter = tc.cmd
		cfg.FilterTimeout = 500 * time.Millisecond
		z := startDNS(t)
		z.txt(t, "b.test", "v=spf1 +all")
		c := newChecker(t, z, cfg)
		start := time.Now()
		o := run(t, c, milterTx())
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: took %v", tc.cmd, d)
		}
		switch {
		case tc.want == "" && o.err != nil:
			t.Errorf("%s: %v", tc.cmd, o.err)
		case tc.want != "" && (o.err == nil || o.err.Error() != tc.want || o.result != nil):
			t.Errorf("%s: got %v, want %s", tc.cmd, o.err, tc.want)
		}
	}
	b, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	want := "Authentication-Results: mx.example.test;\r\n\tspf=pass smtp.mailfrom=a@b.test\r\n" + strings.ReplaceAll(milterMsg, "\n", "\r\n") +
		"a@b.test|u@example.test v@example.test|TESTID0001|192.0.2.1|client.test\n"
	if string(b) != want {
		t.Errorf("the filter got:\n%q\nwant:\n%q", b, want)
	}
}
