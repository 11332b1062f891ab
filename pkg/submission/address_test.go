package submission

import "testing"

func TestParseAddress(t *testing.T) {
	for in, want := range map[string]string{
		"joe":                  "joe@host.test",
		"Joe <Joe@X.TEST>":     "Joe@x.test",
		"<joe@x.test>":         "joe@x.test",
		"\"a b\"@x.test":       "\"a b\"@x.test",
		"  spaced@x.test\t\n ": "spaced@x.test",
	} {
		if got, err := ParseAddress(in, "HOST.test"); err != nil || got != want {
			t.Errorf("ParseAddress(%q) = %q %v, want %q", in, got, err, want)
		}
	}
	if got, err := ParseAddress("joe@x.test bob", "h"); err == nil {
		t.Errorf("junk accepted: %q", got)
	}
}
