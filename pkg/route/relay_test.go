package route

import (
	"errors"
	"reflect"
	"testing"
)

func TestUsableMX(t *testing.T) {
	primary := MX{Host: "mx1.relay.test", Pref: 10}
	primary2 := MX{Host: "mx1b.relay.test", Pref: 10}
	us := MX{Host: "backup.test", Pref: 20, Ours: true}
	peer := MX{Host: "peer.relay.test", Pref: 20}
	worse := MX{Host: "mx3.relay.test", Pref: 30}
	for _, tc := range []struct {
		name string
		in   []MX
		want []MX
		loop bool
	}{
		{"none ours: all, in order", []MX{primary, primary2, peer, worse}, []MX{primary, primary2, peer, worse}, false},
		{"ourselves left out", []MX{primary, us}, []MX{primary}, false},
		{"equal preference left out", []MX{primary, peer, us}, []MX{primary}, false},
		{"equal preference before us in the shuffle left out", []MX{primary2, peer, us, primary}, []MX{primary2, primary}, false},
		{"higher preference value (less preferred) left out", []MX{primary, us, worse}, []MX{primary}, false},
		{"our best entry counts", []MX{primary, us, {Host: "alias-of-us.test", Pref: 30, Ours: true}, worse}, []MX{primary}, false},
		{"our best entry counts, whatever its order", []MX{primary, {Host: "alias-of-us.test", Pref: 30, Ours: true}, us, peer}, []MX{primary}, false},
		{"we are the only MX", []MX{us}, nil, true},
		{"we are the best MX", []MX{{Host: "backup.test", Pref: 10, Ours: true}, peer, worse}, nil, true},
		{"an equal peer does not save us", []MX{{Host: "backup.test", Pref: 10, Ours: true}, primary}, nil, true},
		{"implicit MX that is us", []MX{{Host: "relay.test", Ours: true}}, nil, true},
		{"no hosts", nil, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := UsableMX("relay.test", tc.in)
			if tc.loop {
				if !errors.Is(err, ErrMailLoop) || got != nil {
					t.Fatalf("got %v, %v; want ErrMailLoop", got, err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestIsRelay(t *testing.T) {
	r := &Router{Domains: []string{"example.test", "both.test"}, RelayDomains: []string{"relay.test", ".sub.test", "Both.test", "Upper.Test."}}
	for d, want := range map[string]bool{
		"relay.test": true, "RELAY.test.": true, "x.relay.test": false,
		"a.sub.test": true, "a.b.sub.test": true, "sub.test": false, "xsub.test": false,
		"upper.test":   true,
		"both.test":    false, // local wins
		"example.test": false, "other.test": false, "": false, ".": false,
	} {
		if got := r.IsRelay(d); got != want {
			t.Errorf("IsRelay(%q) = %v, want %v", d, got, want)
		}
	}
}
