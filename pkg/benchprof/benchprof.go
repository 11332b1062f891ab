//go:build benchprof

package benchprof

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
)

func init() {
	dir := os.Getenv("LETTERBOX_PROFILE_DIR")
	if dir == "" {
		return
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR1)
	go func() {
		n := 0
		var cpu *os.File
		for range c {
			if cpu == nil {
				n++
				writeAllocs(filepath.Join(dir, fmt.Sprintf("allocs.%d.start", n)))
				f, err := os.Create(filepath.Join(dir, fmt.Sprintf("cpu.%d", n)))
				if err == nil {
					err = pprof.StartCPUProfile(f)
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "benchprof:", err)
					continue
				}
				cpu = f
				continue
			}
			pprof.StopCPUProfile()
			cpu.Close()
			cpu = nil
			writeAllocs(filepath.Join(dir, fmt.Sprintf("allocs.%d.end", n)))
		}
	}()
}

func writeAllocs(path string) {
	f, err := os.Create(path)
	if err == nil {
		err = pprof.Lookup("allocs").WriteTo(f, 0)
		f.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchprof:", err)
	}
}
