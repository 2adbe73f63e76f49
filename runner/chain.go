package runner

// Chains: a change checked ahead and about to be applied takes the changes
// of the steps right after it into its round trip, where their checks,
// made ahead on the host as it was, saw none of the paths they asked about.
// That is most of a first run, where step after step creates what is not
// there yet: one session instead of one per change.
//
// Such a check is still right after the changes before it as long as its
// paths are still absent: its step's script (ChainLink.Guard) tests that
// with shell builtins when its turn comes, and the chain ends there when
// not. A step joins a chain only when its check saw nothing but absent
// paths, none of them a path a change before it in the chain touches, its
// apply is a script, its change is not sensitive (the recorder reads those
// in a round trip of their own), and it reads no result registered by a
// step of the chain. The steps of a chain are reported one after the other,
// as if applied so; those the chain did not reach run again from their
// check.

import (
	"slices"
	"strings"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// chainLink is a step that a change before it takes into its round trip.
type chainLink struct {
	step  Step
	apply *modules.ScriptApply
	guard string
	rec   *ChangeRecord // numbered once the chain is sent
	out   ChainOutcome
}

// reached reports whether the chain got as far as l: l was recorded, or
// trying to record it failed.
func (l *chainLink) reached() bool {
	return l != nil && (l.out.Recorded || l.out.Err != nil)
}

// chainAfter is the steps after pre[k], a change about to be applied, that
// may go in its round trip (see above). It waits for their checks, which
// have most likely returned with pre[k]'s, in the same round, before the
// batch is cut: a check cut short would end the chain by chance. It stops
// at a step behind a gate, which the checks before it never wait for.
func (e *engine) chainAfter(k int, pre []*checked, steps []Step, h *inventories.Host, b *batchConn) []*checked {
	if _, ok := e.opts.Recorder.(ChainRecorder); !ok || e.opts.Check || steps[k].Delegate {
		return nil
	}
	if _, ok := pre[k].m.(modules.ScriptApplier); !ok {
		return nil
	}
	touched := slices.Clone(pre[k].ch.Files)
	var chain []*checked
	for j := k + 1; j < len(pre); j++ {
		c, s := pre[j], steps[j]
		if c.skip || c.gated || aheadMode(c.m) != modules.CheckAheadReadOnly {
			break
		}
		<-c.done
		if c.err != nil || c.ch == nil || c.ch.Sensitive || modules.TakesSensitive(c.m) {
			break
		}
		// Built from results registered before the chain, or from none.
		if !s.ResultFree && (registeredBefore(steps[k:j]) || registeredBefore(steps[:k]) && !e.sameStep(s, c, h)) {
			break
		}
		paths, ok := b.absentPaths(j)
		if !ok || slices.ContainsFunc(paths, func(p string) bool { return slices.Contains(touched, p) }) {
			break
		}
		sa, ok := c.m.(modules.ScriptApplier)
		if !ok {
			break
		}
		ap := sa.ApplyScript(c.ch)
		if ap == nil {
			break
		}
		c.link = &chainLink{step: s, apply: ap, guard: absentGuard(paths)}
		chain = append(chain, c)
		touched = append(touched, c.ch.Files...)
	}
	return chain
}

// absentPaths is the paths the check of step order asked about, and
// whether it found none of them (nor ran a command): false too when it
// asked nothing.
func (b *batchConn) absentPaths(order int) ([]string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var paths []string
	for _, p := range b.asked[order] {
		if !slices.Contains(paths, p.Path) {
			paths = append(paths, p.Path)
		}
	}
	return paths, len(paths) > 0 && !b.saw[order]
}

// absentGuard is the sh test, builtins only, that none of paths is there,
// not even as a dangling symlink.
func absentGuard(paths []string) string {
	var tests []string
	for _, p := range paths {
		q := remote.Quote(p)
		tests = append(tests, "[ ! -e "+q+" ] && [ ! -L "+q+" ]")
	}
	return strings.Join(tests, " && ")
}

// chainLinks numbers the records of chain's steps, after the change that
// leads it, and returns them as links.
func (e *engine) chainLinks(p Play, h *inventories.Host, chain []*checked) []ChainLink {
	var links []ChainLink
	for _, c := range chain {
		c.link.rec = e.newRecord(p, c.link.step, c.m, h.Name, h.Name, c.ch)
		links = append(links, ChainLink{Rec: c.link.rec, Apply: c.link.apply, Guard: c.link.guard})
	}
	return links
}

// unchained takes back the numbers of the records of chain's steps that
// the chain did not reach, unless a record of h was numbered since.
func (e *engine) unchained(h *inventories.Host, chain []*checked) {
	var missed []*ChangeRecord
	for _, c := range chain {
		if !c.link.reached() {
			missed = append(missed, c.link.rec)
		}
	}
	if len(missed) == 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.seq[h.Name] == missed[len(missed)-1].Seq {
		e.seq[h.Name] = missed[0].Seq - 1
	}
}
