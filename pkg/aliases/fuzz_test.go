package aliases

import (
	"os"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, p := range []string{"../../testdata/aliases/sample.aliases", "../../testdata/aliases/forms.aliases"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
		for _, l := range strings.Split(string(b), "\n") {
			f.Add(l + "\n")
		}
	}
	f.Fuzz(func(t *testing.T, src string) {
		tb, err := Parse(strings.NewReader(src))
		if err != nil {
			return
		}
		for _, k := range tb.Keys() {
			if k == "" {
				t.Fatal("empty key")
			}
			targets, ok := tb.LookupExact(k, "x.test")
			if strings.HasPrefix(k, "@") {
				targets, ok = tb.CatchAll(k[1:])
			}
			if !ok || len(targets) == 0 {
				t.Fatalf("key %q: no targets", k)
			}
			for _, tg := range targets {
				if tg == "" || strings.ContainsAny(tg, "\n\r\x00") {
					t.Fatalf("key %q: bad target %q", k, tg)
				}
				Classify(tg)
			}
		}
	})
}
