package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
)

// startProfiling starts what IKLIM_CPUPROFILE (a CPU profile for go tool
// pprof), IKLIM_MEMPROFILE (a heap profile at exit: see -sample_index
// alloc_space for what the run allocated) and IKLIM_TRACE (an execution
// trace for go tool trace) ask for, each written to the file it names; the
// returned function stops and flushes them.
func startProfiling() (stop func()) {
	var stops []func()
	if p := os.Getenv("IKLIM_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "warning: IKLIM_CPUPROFILE:", err)
		} else {
			stops = append(stops, func() { pprof.StopCPUProfile(); _ = f.Close() })
		}
	}
	if p := os.Getenv("IKLIM_TRACE"); p != "" {
		f, err := os.Create(p)
		if err == nil {
			err = trace.Start(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "warning: IKLIM_TRACE:", err)
		} else {
			stops = append(stops, func() { trace.Stop(); _ = f.Close() })
		}
	}
	if p := os.Getenv("IKLIM_MEMPROFILE"); p != "" {
		runtime.MemProfileRate = 64 << 10
		stops = append(stops, func() {
			f, err := os.Create(p)
			if err == nil {
				err = pprof.Lookup("heap").WriteTo(f, 0)
				_ = f.Close()
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "warning: IKLIM_MEMPROFILE:", err)
			}
		})
	}
	return func() {
		for _, s := range stops {
			s()
		}
	}
}
