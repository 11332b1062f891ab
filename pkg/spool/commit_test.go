package spool

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestCommitOrder: the order of Submit's comment, seen from the committer's
// flushes. For every message: a barrier started with its data and its
// envelope's contents written (data/ID, tmp/ID.env) and ended before its
// envelope appeared in env/; and Submit returned only after an fsync of
// env/ that started with the envelope in env/ had ended. The strace tests
// in tests/ check the same order against the real system calls.
func TestCommitOrder(t *testing.T) {
	for _, mode := range []string{"syncfs", "fsync-dirs"} {
		t.Run(mode, func(t *testing.T) {
			s := open(t)
			if mode == "fsync-dirs" {
				// What other systems than Linux do (barrier_other.go):
				// the writers fsync their files, the barrier fsyncs data/.
				s.once.Do(func() {
					s.reqs = make(chan *commitReq, maxBatch)
					s.envDir, s.envDirErr = os.Open(filepath.Join(s.Dir, envDir))
					go s.committer()
				})
			}
			// The event log: each flush's start with the names in tmp/,
			// data/ and env/ at that moment, each end, each return.
			type event struct {
				what  string
				id    string          // "return"
				names map[string]bool // starts
			}
			var mu sync.Mutex
			var log []event
			snapshot := func() map[string]bool {
				names := map[string]bool{}
				for _, dir := range []string{tmpDir, dataDir, envDir} {
					ents, _ := os.ReadDir(filepath.Join(s.Dir, dir))
					for _, e := range ents {
						names[dir+"/"+e.Name()] = true
					}
				}
				return names
			}
			s.commitHook = func(what string) {
				mu.Lock()
				defer mu.Unlock()
				e := event{what: what}
				if what == "barrier" || what == "env fsync" {
					e.names = snapshot()
				}
				log = append(log, e)
			}
			const writers, each = 4, 5
			var wg sync.WaitGroup
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < each; i++ {
						id, err := s.Submit(testEnv(), bytes.NewReader(benchData))
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						log = append(log, event{what: "return", id: id})
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			mu.Lock()
			defer mu.Unlock()
			if s.batchSync != (mode == "syncfs") {
				t.Fatalf("%s: committer used syncfs: %v", mode, s.batchSync)
			}
			// end returns the index of the end of the flush started at i.
			end := func(i int) int {
				for j := i + 1; j < len(log); j++ {
					if log[j].what == log[i].what+" done" {
						return j
					}
				}
				return len(log)
			}
			n := 0
			for ri, r := range log {
				if r.what != "return" {
					continue
				}
				n++
				id := r.id
				appeared := -1 // the first start that saw env/ID
				for i, e := range log {
					if e.names[envDir+"/"+id] {
						appeared = i
						break
					}
				}
				if appeared < 0 {
					t.Fatalf("%s: no flush began with the envelope in env/", id)
				}
				covered := false
				for i, e := range log[:appeared] {
					if e.what == "barrier" && e.names[dataDir+"/"+id] && e.names[tmpDir+"/"+id+".env"] && end(i) < appeared {
						covered = true
					}
				}
				if !covered {
					t.Fatalf("%s: its envelope appeared in env/ without a barrier that began with data/%s and tmp/%s.env and ended before", id, id, id)
				}
				synced := false
				for i, e := range log[:ri] {
					if e.what == "env fsync" && e.names[envDir+"/"+id] && end(i) < ri {
						synced = true
					}
				}
				if !synced {
					t.Fatalf("%s: Submit returned without an fsync of env/ that began with the envelope there and ended", id)
				}
			}
			if n != writers*each {
				t.Fatalf("%d messages committed, want %d", n, writers*each)
			}
		})
	}
}
