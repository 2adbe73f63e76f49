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
//
// A step whose check read paths that exist joins too where the changes
// before it write nowhere but files they write whole (a deploy's copy and
// line, modules.ScriptApply.Confined): its probes are told as the host
// will be once those are applied (known.go), and its step is built and
// checked again on those answers. A change found so joins behind the
// guard that the host is as told; a step that finds nothing to do joins as
// a quiet link, whose guard goes with the next change's and which is
// reported, unchanged, where that change is reached. A chain never ends
// with quiet links: those run again from their check after it.

import (
	"context"
	"errors"
	"io"
	"io/fs"
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
	// quiet: a step between two changes of the chain whose check, made
	// again on the host as told (known.go), found nothing to do. It has no
	// apply of its own; its guard goes with the next link's, and it stands
	// as checked where that link was reached.
	quiet bool
	next  *chainLink // a quiet link's next link that applies a change
	// m and ch are the step's module and change as checked again on the
	// told state; nil for a link whose check ahead stands.
	m  modules.Module
	ch *modules.Change
}

// reached reports whether the chain got as far as l: l was recorded, or
// trying to record it failed (for a quiet link: its next link was).
func (l *chainLink) reached() bool {
	if l != nil && l.quiet {
		return l.next.reached()
	}
	return l != nil && (l.out.Recorded || l.out.Err != nil)
}

// chainAfter is the steps after pre[k], a change about to be applied, that
// may go in its round trip (see above), and sets pre[k].apply. It waits for
// their checks, which have most likely returned with pre[k]'s, in the same
// round, before the batch is cut: a check cut short would end the chain by
// chance. It stops at a step behind a gate, which the checks before it
// never wait for.
func (e *engine) chainAfter(ctx context.Context, k int, pre []*checked, steps []Step, h *inventories.Host, b *batchConn) []*checked {
	if _, ok := e.opts.Recorder.(ChainRecorder); !ok || e.opts.Check || steps[k].Delegate {
		return nil
	}
	sa, ok := pre[k].m.(modules.ScriptApplier)
	if !ok {
		return nil
	}
	if pre[k].apply = sa.ApplyScript(pre[k].ch); pre[k].apply == nil {
		return nil
	}
	aps := []*modules.ScriptApply{pre[k].apply}
	touched := slices.Clone(pre[k].ch.Files)
	var chain []*checked
	var quiet []string // guards of the quiet links since the last change
	for j := k + 1; j < len(pre); j++ {
		c, s := pre[j], steps[j]
		if c.skip || c.gated || aheadMode(c.m) != modules.CheckAheadReadOnly {
			break
		}
		<-c.done
		if c.err != nil || c.ch != nil && c.ch.Sensitive || modules.TakesSensitive(c.m) {
			break
		}
		// Built from results registered before the chain, or from none.
		if !s.ResultFree && (registeredBefore(steps[k:j]) || registeredBefore(steps[:k]) && !e.sameStep(s, c, h)) {
			break
		}
		l := absentLink(j, c, b, touched)
		if l == nil {
			l = e.toldLink(ctx, j, s, h, b, aps, b.readSince(k, pre))
		}
		if l == nil {
			break
		}
		l.step = s
		c.link = l
		chain = append(chain, c)
		if l.quiet {
			quiet = append(quiet, l.guard)
			continue
		}
		l.guard = strings.Join(append(quiet, l.guard), " && ")
		for _, q := range chain[len(chain)-1-len(quiet) : len(chain)-1] {
			q.link.next = l
		}
		quiet = nil
		aps = append(aps, l.apply)
		touched = append(touched, l.changed(c).Files...)
	}
	// A quiet link stands only where a change after it was reached.
	for _, c := range chain[len(chain)-len(quiet):] {
		c.link = nil
	}
	chain = chain[:len(chain)-len(quiet)]
	for _, c := range chain {
		if l := c.link; l.m != nil {
			c.m, c.ch = l.m, l.ch
		}
	}
	return chain
}

// changed is the change l applies: the one checked ahead (c's), or the one
// checked again on the told state.
func (l *chainLink) changed(c *checked) *modules.Change {
	if l.ch != nil {
		return l.ch
	}
	return c.ch
}

// absentLink is the step of c (order j) as a link after changes that
// touch the paths touched, where its check ahead saw only absent paths, none
// of those, and its apply is a script; else nil.
func absentLink(j int, c *checked, b *batchConn, touched []string) *chainLink {
	if c.ch == nil {
		return nil
	}
	paths, ok := b.absentPaths(j)
	if !ok || slices.ContainsFunc(paths, func(p string) bool { return slices.Contains(touched, p) }) {
		return nil
	}
	sa, ok := c.m.(modules.ScriptApplier)
	if !ok {
		return nil
	}
	ap := sa.ApplyScript(c.ch)
	if ap == nil {
		return nil
	}
	return &chainLink{apply: ap, guard: absentGuard(paths)}
}

// toldLink is step s (order j) as a link after the applies aps, where the
// probes its check asked can be told once they are applied (knownAfter,
// from before): the step is built and checked again on the told answers,
// and joins as a change whose apply is a script, or as a quiet link where
// it finds nothing to do; else nil (its check needs more than the probes
// told, or the change is sensitive).
func (e *engine) toldLink(ctx context.Context, j int, s Step, h *inventories.Host, b *batchConn, aps []*modules.ScriptApply, before map[remote.Probe]remote.ProbeResult) *chainLink {
	b.mu.Lock()
	asked := slices.Clone(b.asked[j])
	b.mu.Unlock()
	if len(asked) == 0 {
		return nil
	}
	guard, told := knownAfter(asked, aps, before)
	if guard == "" {
		return nil
	}
	m, err := s.Build(&StepContext{Host: h, Results: e.snapshotResults()})
	if err != nil {
		return nil
	}
	tc := toldConn{host: h.Name, answers: map[remote.Probe]remote.ProbeResult{}}
	for i, p := range asked {
		tc.answers[p] = told[i]
	}
	ch, err := m.Check(ctx, tc)
	switch {
	case err != nil:
		return nil
	case ch == nil:
		return &chainLink{guard: guard, quiet: true, m: m}
	case ch.Sensitive || modules.TakesSensitive(m):
		return nil
	}
	sa, ok := m.(modules.ScriptApplier)
	if !ok {
		return nil
	}
	ap := sa.ApplyScript(ch)
	if ap == nil {
		return nil
	}
	return &chainLink{apply: ap, guard: guard, m: m, ch: ch}
}

// toldConn is the Conn of a check made again on a host's state as told
// (known.go): it answers the probes told, and nothing else.
type toldConn struct {
	host    string
	answers map[remote.Probe]remote.ProbeResult
}

// errNotTold ends a check made again on a told state that needs more of
// the host than the told probes.
var errNotTold = errors.New("the check needs more of the host than was told")

func (c toldConn) Host() string { return c.host }

func (c toldConn) Run(context.Context, string, ...modules.RunOption) (modules.Result, error) {
	return modules.Result{}, errNotTold
}

func (c toldConn) Upload(context.Context, string, io.Reader, fs.FileMode) error { return errNotTold }

func (c toldConn) Download(context.Context, string, io.Writer) error { return errNotTold }

// Probe implements remote.Prober.
func (c toldConn) Probe(_ context.Context, p remote.Probe) (remote.ProbeResult, error) {
	if r, ok := c.answers[p]; ok {
		return r, nil
	}
	return remote.ProbeResult{}, errNotTold
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

// applying is the links of chain that apply a change (not the quiet ones).
func applying(chain []*checked) []*checked {
	return slices.DeleteFunc(slices.Clone(chain), func(c *checked) bool { return c.link.quiet })
}

// chainLinks numbers the records of chain's changes, after the change that
// leads it, and returns them as links.
func (e *engine) chainLinks(p Play, h *inventories.Host, chain []*checked) []ChainLink {
	var links []ChainLink
	for _, c := range applying(chain) {
		c.link.rec = e.newRecord(p, c.link.step, c.m, h.Name, h.Name, c.ch)
		links = append(links, ChainLink{Rec: c.link.rec, Apply: c.link.apply, Guard: c.link.guard})
	}
	return links
}

// unchained takes back the numbers of the records of chain's changes that
// the chain did not reach, unless a record of h was numbered since.
func (e *engine) unchained(h *inventories.Host, chain []*checked) {
	var missed []*ChangeRecord
	for _, c := range applying(chain) {
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
