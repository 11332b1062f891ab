package listen

import (
	"os"
	"runtime/debug"
	"testing"
)

// TestOneSessionGC: a one-session process collects at OneSessionGCPercent,
// unless GOGC says otherwise.
func TestOneSessionGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	if v, set := os.LookupEnv("GOGC"); set {
		t.Setenv("GOGC", v) // restored after the test
	}
	os.Unsetenv("GOGC")
	debug.SetGCPercent(100)
	OneSessionGC()
	if got := debug.SetGCPercent(100); got != OneSessionGCPercent {
		t.Errorf("GC percent %d after OneSessionGC, want %d", got, OneSessionGCPercent)
	}
	t.Setenv("GOGC", "50")
	OneSessionGC()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GC percent %d with GOGC set, want it left at 100", got)
	}
}
