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
//
// An apply asks the probes of the steps after it up to the first one whose
// check (when it was checked ahead, and has returned) found a change to
// make, and the ones right after that found one too: those steps will most
// likely be applied next, together when they can (chain.go), and their
// apply asks the rest. So a first run, where step after step changes, reads
// a path about once, after the last change before the step that reads it,
// not after every change. A wrong guess costs the step after a round trip
// of its own.

import (
	"context"
	"slices"
	"sync"

	"github.com/iklimco/iklim/modules/remote"
)

// probeGroup is the probes one step's check asked.
type probeGroup struct {
	step   string
	probes []remote.Probe
	found  *verdict // what the check that asked them found
}

// verdict is whether a check made ahead found a change to make (or
// failed), known once done is closed. The probes carried past their batch
// keep it rather than the check, whose module and change may be large.
type verdict struct {
	done    <-chan struct{}
	changes bool
	cut     bool // the batch cut the check short: it may find a change yet
}

// returned is the group's verdict once its check has returned, else nil.
func (g probeGroup) returned() *verdict {
	if g.found == nil {
		return nil
	}
	select {
	case <-g.found.done:
		return g.found
	default:
		return nil
	}
}

// changes reports whether the group's check found a change to make. One
// still running is taken to find none: its step's probes are asked, as
// they would be without the guess.
func (g probeGroup) changes() bool {
	v := g.returned()
	return v != nil && v.changes
}

// findsNothing reports whether the group's check has returned and found
// no change to make.
func (g probeGroup) findsNothing() bool {
	v := g.returned()
	return v != nil && !v.changes && !v.cut
}

// probeAnswers are probes answered after an apply, each to be taken once,
// and the probes of the steps further on, which that apply did not ask.
type probeAnswers struct {
	mu      sync.Mutex
	groups  []probeGroup // answered, in the order asked; taken probes leave
	answers map[remote.Probe]remote.ProbeResult
	later   []probeGroup // not asked: for the next apply
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
		for i, g := range a.groups {
			if slices.Contains(g.probes, p) { // a copy: the slice may be a batch's own
				a.groups[i].probes = slices.DeleteFunc(slices.Clone(g.probes), func(q remote.Probe) bool { return q == p })
			}
		}
	}
	return res, ok
}

// left is the probes not taken, answered or not, by step in order, but
// those of the step named done, which has been checked.
func (a *probeAnswers) left(done string) []probeGroup {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []probeGroup
	for _, g := range slices.Concat(a.groups, a.later) {
		if len(g.probes) > 0 && g.step != done {
			out = append(out, g)
		}
	}
	return out
}

// thenProbes is what an apply asks after it, from the groups of want and
// then of more, each probe once: up to the first group that found a change,
// and those right after it up to one known to find nothing (they may be
// applied in one round trip, chain.go). The groups after are left for
// later.
func thenProbes(want, more []probeGroup) thenAsk {
	var t thenAsk
	all := slices.Concat(want, more)
	seen := map[remote.Probe]bool{}
	for i, g := range all {
		var ps []remote.Probe
		for _, p := range g.probes {
			if remote.Probeable(p) && !seen[p] {
				seen[p] = true
				ps = append(ps, p)
			}
		}
		if len(ps) > 0 {
			t.asked = append(t.asked, probeGroup{step: g.step, probes: ps, found: g.found})
		}
		if g.changes() && (i+1 == len(all) || all[i+1].findsNothing()) {
			t.later = all[i+1:]
			break
		}
	}
	return t
}

// thenAsk is what an apply asks after it (thenProbes), and what it leaves
// for the next one.
type thenAsk struct {
	asked, later []probeGroup
	// before is what checks read of the host before the apply; known the
	// answers to the probes asked, as knownAfter tells them where guard
	// holds (known.go).
	before map[remote.Probe]remote.ProbeResult
	guard  string
	known  []remote.ProbeResult
}

// probes is what is asked, in order.
func (t thenAsk) probes() []remote.Probe {
	var ps []remote.Probe
	for _, g := range t.asked {
		ps = append(ps, g.probes...)
	}
	return ps
}

// thenScript answers ps after an apply: a function, called, whose status
// is the last command's; where guard holds, the answers are known
// (known.go) and it prints knownMark instead.
func thenScript(ps []remote.Probe, guard string) string {
	if len(ps) == 0 {
		return ""
	}
	probe := remote.ProbeFunc("_ikthen", ps) + "_ikthen"
	if guard == "" {
		return probe
	}
	return "if " + guard + "; then echo " + knownMark + "; else\n" + probe + "\nfi"
}

// answersFrom reads the output of thenScript(t.probes(), t.guard), and keeps
// t.later for the next apply; nil when there is nothing to keep.
func answersFrom(t thenAsk, out string, ok bool) *probeAnswers {
	a := &probeAnswers{answers: map[remote.Probe]remote.ProbeResult{}, later: t.later}
	ps := t.probes()
	switch {
	case !ok || len(ps) == 0:
	case t.guard != "" && out == knownMark+"\n":
		for i, p := range ps {
			a.answers[p] = t.known[i]
		}
	default:
		if res, errs, err := remote.ParseProbes(ps, out); err == nil {
			for i, p := range ps {
				if errs[i] == nil {
					a.answers[p] = res[i]
				}
			}
		}
	}
	for _, g := range t.asked {
		answered := slices.DeleteFunc(slices.Clone(g.probes), func(p remote.Probe) bool { _, ok := a.answers[p]; return !ok })
		if len(answered) > 0 {
			a.groups = append(a.groups, probeGroup{step: g.step, probes: answered, found: g.found})
		}
	}
	if len(a.groups) == 0 && len(a.later) == 0 {
		return nil
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
