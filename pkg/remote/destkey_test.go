package remote

import "testing"

// Domains behind one smarthost share a key; a domain with its own route or
// none (its MX) has its own.
func TestDestinationKey(t *testing.T) {
	c, err := New(Config{Routes: []Route{
		{Domain: "*", Host: "smarthost.example", Port: 587},
		{Domain: "own.test", Host: "mx.own.test"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.DestinationKey("a.test"), c.DestinationKey("B.TEST.")
	if a != b {
		t.Fatalf("smarthost domains differ: %q %q", a, b)
	}
	if o := c.DestinationKey("own.test"); o == a {
		t.Fatalf("own route shares the smarthost's key %q", o)
	}
	n, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if x, y := n.DestinationKey("x.test"), n.DestinationKey("y.test"); x == y {
		t.Fatalf("two MX domains share key %q", x)
	}
}
