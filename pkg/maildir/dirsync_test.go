package maildir

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitState waits until cond (called with mu held) holds, failing the
// test after a generous deadline: a state that never comes is a failure,
// not a hang.
func waitState(t *testing.T, mu *sync.Mutex, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		ok := cond()
		mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("never came: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestDirSyncerWaitsForNextFlush: deliveries into one Maildir whose links
// are made while an fsync of new/ runs do not return with that fsync (it
// may have begun before their links): they share the next one, which
// begins after the running one ends, and return after it ended. Three
// deliveries, two flushes.
func TestDirSyncerWaitsForNextFlush(t *testing.T) {
	md := filepath.Join(t.TempDir(), "Maildir")
	if err := Create(md); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var log []string
	flushes, joins := 0, 0
	hold := make(chan struct{})
	ds := &DirSyncer{Hook: func(ev string) {
		mu.Lock()
		n := 0
		switch ev {
		case "flush":
			flushes++
			n = flushes
		case "join":
			joins++
		}
		if ev != "join" {
			log = append(log, ev)
		}
		mu.Unlock()
		if n == 1 {
			<-hold // the first flush runs until the others have linked
		}
	}}
	deliver := func(who string, done chan<- struct{}) {
		defer close(done)
		if _, err := ds.DeliverFolder(md, "", strings.NewReader("Subject: "+who+"\n\nbody\n")); err != nil {
			t.Error(err)
		}
		mu.Lock()
		log = append(log, "return "+who)
		mu.Unlock()
	}
	aDone, bDone, cDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go deliver("a", aDone)
	waitState(t, &mu, "a's flush", func() bool { return flushes == 1 })
	go deliver("b", bDone)
	go deliver("c", cDone)
	waitState(t, &mu, "b and c waiting", func() bool { return joins >= 2 })
	if n := len(newNames(t, md)); n != 3 {
		t.Fatalf("%d messages linked into new/, want 3", n)
	}
	close(hold)
	<-aDone
	<-bDone
	<-cDone
	mu.Lock()
	defer mu.Unlock()
	// a's flush, a returns; the second flush (led by b or c) ends before
	// either returns.
	got := strings.Join(log, ", ")
	at := map[string]int{}
	dones := 0
	for i, ev := range log {
		if ev == "flush done" {
			dones++
			at[ev+string(rune('0'+dones))] = i
		} else {
			at[ev] = i
		}
	}
	second, ok := at["flush done2"]
	if flushes != 2 || !ok {
		t.Fatalf("want 2 flushes, the second shared by b and c: %s", got)
	}
	for _, who := range []string{"b", "c"} {
		if at["return "+who] < second {
			t.Errorf("%s returned before the flush that began after its link ended: %s", who, got)
		}
	}
}

// TestDirSyncerDirectoriesApart: a flush of one Maildir's new/ holds up
// no delivery into another.
func TestDirSyncerDirectoriesApart(t *testing.T) {
	dir := t.TempDir()
	one, two := filepath.Join(dir, "one"), filepath.Join(dir, "two")
	for _, md := range []string{one, two} {
		if err := Create(md); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	flushes := 0
	hold := make(chan struct{})
	ds := &DirSyncer{Hook: func(ev string) {
		if ev != "flush" {
			return
		}
		mu.Lock()
		flushes++
		n := flushes
		mu.Unlock()
		if n == 1 {
			<-hold
		}
	}}
	held := make(chan struct{})
	go func() {
		defer close(held)
		if _, err := ds.DeliverFolder(one, "", strings.NewReader("one\n")); err != nil {
			t.Error(err)
		}
	}()
	waitState(t, &mu, "the first flush", func() bool { return flushes == 1 })
	if _, err := ds.DeliverFolder(two, "", strings.NewReader("two\n")); err != nil {
		t.Fatal(err)
	}
	close(hold)
	<-held
	if len(newNames(t, one)) != 1 || len(newNames(t, two)) != 1 {
		t.Fatal("a message missing")
	}
}

// TestDirSyncerMany: many concurrent deliveries into one Maildir all land,
// in fewer flushes than deliveries once they overlap (run with -race).
func TestDirSyncerMany(t *testing.T) {
	md := filepath.Join(t.TempDir(), "Maildir")
	if err := Create(md); err != nil {
		t.Fatal(err)
	}
	ds := &DirSyncer{}
	var wg sync.WaitGroup
	const n = 40
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := ds.DeliverFolder(md, "", strings.NewReader("x\n")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := len(newNames(t, md)); got != n {
		t.Fatalf("%d messages in new/, want %d", got, n)
	}
	ds.mu.Lock()
	left := len(ds.dirs)
	ds.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d directories still tracked after every delivery returned", left)
	}
}

func newNames(t *testing.T, md string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(md, "new"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
