package runner

// Prefetch: the round trip that applies a change also answers the probes
// that the steps after it asked for when they were checked ahead, so that
// the host's next step can be checked without a round trip of its own (a
// first run, where step after step changes, takes one session per change
// instead of two).
//
// The answers are the host's state right after the apply, in the same
// script. They are kept for the host's next unit of work only (a batch or
// a step, runHost), where only read-only checks (modules.CheckAheadReadOnly)
// take them, each answer once, and only checks that come before any user
// command. Any later change on the host discards them; the probes not taken
// go with the next change's apply again.

import (
	"context"
	"slices"
	"sync"

	"github.com/iklimco/iklim/modules/remote"
)

// probeAnswers are probes answered after an apply, each to be taken once.
type probeAnswers struct {
	mu      sync.Mutex
	probes  []remote.Probe // in the order asked, answered or not
	answers map[remote.Probe]remote.ProbeResult
}

// take returns p's answer and forgets it.
func (a *probeAnswers) take(p remote.Probe) (remote.ProbeResult, bool) {
	if a == nil {
		return remote.ProbeResult{}, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	res, ok := a.answers[p]
	if ok {
		delete(a.answers, p)
		a.probes = slices.DeleteFunc(a.probes, func(q remote.Probe) bool { return q == p })
	}
	return res, ok
}

// left is the probes not taken.
func (a *probeAnswers) left() []remote.Probe {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.probes)
}

// thenProbes is the probes an apply answers: those of want, then those of
// more, each once.
func thenProbes(want, more []remote.Probe) []remote.Probe {
	var out []remote.Probe
	seen := make(map[remote.Probe]bool, len(want)+len(more))
	for _, p := range slices.Concat(want, more) {
		if remote.Probeable(p) && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// thenScript answers ps after an apply: a function, called, whose status
// is the last command's.
func thenScript(ps []remote.Probe) string {
	if len(ps) == 0 {
		return ""
	}
	return remote.ProbeFunc("_ikthen", ps) + "_ikthen"
}

// answersFrom reads the output of thenScript(ps); nil when it does not
// answer them.
func answersFrom(ps []remote.Probe, out string, ok bool) *probeAnswers {
	if !ok || len(ps) == 0 {
		return nil
	}
	res, errs, err := remote.ParseProbes(ps, out)
	if err != nil {
		return nil
	}
	a := &probeAnswers{answers: map[remote.Probe]remote.ProbeResult{}}
	for i, p := range ps {
		if errs[i] == nil {
			a.probes = append(a.probes, p)
			a.answers[p] = res[i]
		}
	}
	return a
}

// putAnswers keeps a for host's next unit of work.
func (e *engine) putAnswers(host string, a *probeAnswers) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if a == nil {
		delete(e.prefetch, host)
		return
	}
	e.prefetch[host] = a
}

// takeAnswers returns (and forgets) what was kept for host.
func (e *engine) takeAnswers(host string) *probeAnswers {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.prefetch[host]
	delete(e.prefetch, host)
	return a
}

// prefetchProber answers a check's probes from a, else tells it to run its
// own script.
func prefetchProber(a *probeAnswers) func(context.Context, remote.Probe) (remote.ProbeResult, error) {
	return func(_ context.Context, p remote.Probe) (remote.ProbeResult, error) {
		if res, ok := a.take(p); ok {
			return res, nil
		}
		return remote.ProbeResult{}, remote.ErrNoProbe
	}
}
