package runner

// Check-ahead: a host's consecutive steps whose checks only read the host
// (modules.CheckAheadReadOnly) get their checks run together, in one remote
// script over one session, instead of one session per step.
//
// The checks of steps 2…n run before steps 1…n-1 have finished: they are
// speculative. Results are taken in step order, and only while every step
// before has ended ok or skipped (in check mode also changed, since nothing
// is changed). The first step that changes the host keeps its own check,
// which was made on the host as it was, and is applied; the checks after it
// are thrown away and run again. A step whose arguments could have changed
// because an earlier step of the batch registered a result is built again and
// its checked copy kept only if the arguments are the same (a step that reads
// no result, Step.ResultFree, cannot change so).
//
// A step whose check runs a command of the user's (command/shell with
// changed = false, modules.CheckAheadLead) must run in its turn and once, so
// it is never speculative: it may lead a batch, and later in a batch it sits
// behind a gate. Over SSH (and locally) the batch script stops at the gate
// and reads one line from its stdin; the runner writes 1 once every step
// before has ended ok, else 0 and the script ends. Over other Conns a gated
// step starts a new batch.
//
// A batch cut short by a change still tells how the steps after it stood
// before the change: the next batch takes the ones that found nothing to do
// and the first one that found something (or could not tell), since a change
// seldom touches what later steps check. A first run, where most steps
// change, so goes on one step at a time and wastes few checks; a deploy that
// changes a step or two re-checks the rest in one session. A batch that ran
// through doubles the size; a run with nothing to change does each host's
// steps in one session. Once a batch is cut, its remaining checks send
// nothing more to the host: their results would be thrown away.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
	"github.com/iklimco/iklim/runner/transport"
)

// checked is a prepared step (its when and build), and its check once
// made: by commit on the plain path, or ahead by a batch.
type checked struct {
	begin   time.Time
	skip    bool  // when was false
	prepErr error // when or build failed
	m       modules.Module
	checked bool           // ch and err hold the check's result (made by a batch)
	gated   bool           // a lead inside the batch: its check waits for the steps before
	twin    modules.Module // a second, unchecked build; nil when not needed
	done    chan struct{}  // closed when the check has returned
	ch      *modules.Change
	err     error
	pf      *probeAnswers                       // answers its check may take (prefetch.go)
	then    []probeGroup                        // probes its apply answers for the steps after
	before  map[remote.Probe]remote.ProbeResult // what checks read of the host before its apply (known.go)
	found   *verdict                            // what its check found, for the probes it asked
	chain   []*checked                          // the steps applied in its apply's round trip (chain.go)
	apply   *modules.ScriptApply                // its apply, made once for its chain
	link    *chainLink                          // set when it is one of those
}

// runHost runs the steps of a segment on one host, batching checks where it
// may; last tells that the segment ends the host's work in the run.
func (e *engine) runHost(ctx context.Context, p Play, seg []Step, h *inventories.Host, last bool) {
	ahead := len(seg)
	for i := 0; i < len(seg); {
		if ctx.Err() != nil || e.isDead(h.Name) {
			return
		}
		pf := e.takeAnswers(h.Name) // for this unit only
		end := min(i+ahead, len(seg))
		// A unit that would end the host's work may take its finish
		// (finish.go): a batch, even of one step.
		ends := last && end == len(seg)
		if !e.opts.NoCheckAhead && (ahead > 1 || ends) {
			if n, clean, next := e.runAhead(ctx, p, seg[i:end], h, pf, ends); n > 0 {
				i += n
				if clean {
					ahead = min(2*ahead, len(seg))
				} else {
					ahead = next
				}
				continue
			}
		}
		st := e.runStep(ctx, p, seg[i], h, h.Name, pf)
		i++
		if st == StatusOK || st == StatusSkipped {
			ahead = min(2*max(ahead, 1), len(seg))
		} else {
			ahead = 1
		}
	}
}

// runAhead checks the leading steps of steps that may be batched in one
// round trip, then finishes them in order. It returns how many steps it
// finished (0: none could be batched, run steps[0] the usual way), whether
// all of those ended without changing the host, and when not, the size of
// the next batch (nextBatch). ends tells that steps end the host's work:
// the batch then takes the host's finish when it can (finish.go).
func (e *engine) runAhead(ctx context.Context, p Play, steps []Step, h *inventories.Host, pf *probeAnswers, ends bool) (n int, clean bool, next int) {
	conn, err := e.connect(ctx, h)
	if err != nil {
		return 0, false, 1 // runStep reports it
	}
	b := newBatchConn(ctx, conn)
	results := e.snapshotResults()
	var pre []*checked
	registered := false // an earlier step of the batch registers a result
	for k, s := range steps {
		if s.Delegate || s.Timeout > 0 || s.RunOnce || (k > 0 && s.Barrier) || s.Build == nil {
			break
		}
		c := e.prepare(p, s, h, results)
		if c.prepErr != nil {
			break // runStep reports it in its turn
		}
		if !c.skip {
			if !b.canBatch(aheadMode(c.m), k) {
				break
			}
			c.gated = k > 0 && aheadMode(c.m) == modules.CheckAheadLead
			if registered && !s.ResultFree {
				twin, err := s.Build(&StepContext{Host: h, Results: results, Check: e.opts.Check})
				if err != nil {
					break
				}
				c.twin = twin
			}
		}
		c.checked = true // by the batch below
		pre = append(pre, c)
		registered = registered || s.Register != ""
	}
	var fin *ScriptFinish
	if ends && len(pre) == len(steps) && b.stream != nil {
		fin = e.scriptFinish(h)
	}
	if len(pre) == 0 || len(pre) < 2 && fin == nil {
		return 0, false, 1
	}
	// Prefetched answers hold until the first check that is not read-only:
	// a user's command may run there.
	b.pf, b.pfBefore = pf, firstNotReadOnly(pre, 0)

	// Every check in its own goroutine; their commands go in batches.
	var wg sync.WaitGroup
	for _, c := range pre {
		if !c.skip {
			b.active++ // before any check starts: each takes itself off
		}
	}
	var finReq *batchReq
	if fin != nil {
		finReq = b.queueFinish(len(pre), fin.Script)
	}
	for k, c := range pre {
		c.found = &verdict{done: c.done}
		if c.skip {
			close(c.done)
			continue
		}
		if c.gated {
			b.gates[k] = &gate{decided: make(chan struct{})}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(c.done)
			c.ch, c.err = c.m.Check(ctx, &batchView{b: b, order: k, gated: c.gated})
			c.found.changes, c.found.cut = c.foundChange(), errors.Is(c.err, errNotAhead)
			b.finished()
		}()
	}
	defer wg.Wait()
	defer b.closeGates()

	// Take the results in order while they still hold.
	for k, c := range pre {
		s := steps[k]
		if c.link == nil {
			// Before a gate opens too: a gated command built from results
			// that have changed since must not run.
			if k > 0 && !s.ResultFree && registeredBefore(steps[:k]) && !e.sameStep(s, c, h) {
				return k, false, 1
			}
			if c.gated {
				b.open(k, true)
			}
			<-c.done
			if ctx.Err() != nil && c.err == nil {
				return k, false, 1 // interrupted: as run one by one, start no more steps
			}
			if !c.skip && (c.err != nil || c.ch != nil && !e.opts.Check) {
				if c.err == nil {
					c.chain = e.chainAfter(ctx, k, pre, steps, h, b)
				}
				b.closeGates() // nothing runs ahead of a change being applied
				c.then = b.probesBefore(k+1+len(c.chain), pre, steps)
				c.before = b.readSince(k, pre)
				c.pf = pf
			}
		}
		st := e.commit(ctx, p, s, h, h.Name, c)
		if k+1 < len(pre) && pre[k+1].link.reached() {
			continue // applied in this step's round trip: commit reports it next
		}
		switch {
		case st == StatusOK || st == StatusSkipped:
		case st == StatusChanged && e.opts.Check:
		default:
			b.closeGates()
			wg.Wait()
			return k + 1, false, nextBatch(pre[k+1:])
		}
	}
	if fin != nil {
		e.finishIn(ctx, b, finReq, fin, h)
	}
	return len(pre), true, 0
}

// nextBatch is the size of the batch after one cut short before rest, from
// what rest's checks found on the host as it was: the steps that found
// nothing to do (or were skipped, or were not run, having been cut), the
// first one that found a change or failed, and those right after it up to
// one that found nothing (they may be applied together, chain.go); at
// least 1. It only sizes the batch: every step in it is checked again.
func nextBatch(rest []*checked) int {
	k := slices.IndexFunc(rest, (*checked).foundChange)
	if k < 0 {
		return max(len(rest), 1)
	}
	for k+1 < len(rest) && !rest[k+1].foundNothing() {
		k++
	}
	return k + 1
}

// foundChange reports whether a check made ahead, once returned, found a
// change to make or failed; one cut short (errNotAhead) found nothing.
func (c *checked) foundChange() bool {
	return !c.skip && (c.ch != nil || c.err != nil && !errors.Is(c.err, errNotAhead))
}

// foundNothing reports whether a check made ahead, once returned, found no
// change to make (or its step was skipped); one cut short may have.
func (c *checked) foundNothing() bool {
	return c.skip || c.err == nil && c.ch == nil
}

// firstNotReadOnly is the order of the first check of pre from order from
// on that is not read-only (one that may run a user's command), or
// len(pre).
func firstNotReadOnly(pre []*checked, from int) int {
	for k := from; k < len(pre); k++ {
		if c := pre[k]; !c.skip && aheadMode(c.m) != modules.CheckAheadReadOnly {
			return k
		}
	}
	return len(pre)
}

// probesBefore is the probes asked by the read-only checks of pre from
// order from on, up to the first that is not read-only, by step.
func (b *batchConn) probesBefore(from int, pre []*checked, steps []Step) []probeGroup {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []probeGroup
	for k, end := from, firstNotReadOnly(pre, from); k < end; k++ {
		out = append(out, probeGroup{step: steps[k].Name, probes: b.asked[k], found: pre[k].found})
	}
	return out
}

// canBatch reports whether a check of mode may go in a batch at position k.
func (b *batchConn) canBatch(mode modules.CheckAhead, k int) bool {
	switch mode {
	case modules.CheckAheadReadOnly:
		return true
	case modules.CheckAheadLead:
		return k == 0 || b.stream != nil // behind a gate
	}
	return false
}

func aheadMode(m modules.Module) modules.CheckAhead {
	if ca, ok := m.(modules.CheckAheader); ok {
		return ca.CheckAhead()
	}
	return modules.CheckAheadNever
}

func registeredBefore(steps []Step) bool {
	return slices.ContainsFunc(steps, func(s Step) bool { return s.Register != "" })
}

// sameStep reports whether s, evaluated against the results registered by
// now, is the step that was checked ahead: same when, same arguments.
func (e *engine) sameStep(s Step, c *checked, h *inventories.Host) bool {
	sc := &StepContext{Host: h, Results: e.snapshotResults(), Check: e.opts.Check}
	skip := false
	if s.When != nil {
		ok, err := s.When(sc)
		if err != nil {
			return false
		}
		skip = !ok
	}
	if skip || c.skip {
		return skip == c.skip
	}
	m, err := s.Build(sc)
	return err == nil && c.twin != nil && reflect.DeepEqual(m, c.twin)
}

// errNotAhead is what a gated check's command gets when the gate closed: a
// step before it changed the host or failed, so it must not run yet.
var errNotAhead = errors.New("not run ahead: a step before it changed the host")

// streamFunc runs cmd with a live stdin and output writers.
type streamFunc func(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error)

// batchConn runs the commands of concurrent checks in rounds: once every
// check still running is waiting for a command, those commands go to the
// host in one script, in step order, each in a subshell of its own.
type batchConn struct {
	conn   modules.Conn
	ctx    context.Context
	stream streamFunc // nil when conn cannot stream: no gates then

	mu      sync.Mutex
	active  int // checks running and not waiting for a command
	pending []*batchReq
	gates   map[int]*gate                               // by step order
	closed  bool                                        // closeGates was called: undecided gates are shut, and no more commands go
	asked   map[int][]remote.Probe                      // probes asked, by step order
	saw     map[int]bool                                // by step order: the check found a path, or ran a command
	read    map[int]map[remote.Probe]remote.ProbeResult // answers its checks took, by step order

	pf       *probeAnswers // prefetched answers (prefetch.go)
	pfBefore int           // only checks before this order take them
}

// gate holds a gated step's command until the steps before it have ended.
type gate struct {
	decided chan struct{}
	ok      bool
	pipe    *os.File // the stdin of the script waiting at this gate, if any
	payload string   // what an opened gate writes after its 1 (payloadLines)
}

// word is what the script waiting at g reads once it is decided.
func (g *gate) word() string {
	if g.ok {
		return "1\n" + g.payload
	}
	return "0\n"
}

type batchReq struct {
	order   int
	cmd     string
	env     map[string]string
	gated   bool
	payload bool          // cmd reads its gate's payload (FinishPayloadVar)
	probe   *remote.Probe // a probe instead of cmd: answered in pres
	done    chan struct{}
	res     modules.Result
	pres    remote.ProbeResult
	err     error
}

func newBatchConn(ctx context.Context, conn modules.Conn) *batchConn {
	b := &batchConn{conn: conn, ctx: ctx, gates: map[int]*gate{}, asked: map[int][]remote.Probe{}}
	// Only the transport's own conns: a wrapper that embeds one (to count
	// or change its commands) must see every command through its Run.
	switch c := conn.(type) {
	case *transport.SSHConn:
		b.stream = c.Stream
	case *transport.LocalConn:
		b.stream = c.Stream
	}
	return b
}

// open decides the gate of step order.
func (b *batchConn) open(order int, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.decideLocked(order, ok)
}

func (b *batchConn) decideLocked(order int, ok bool) {
	g := b.gates[order]
	select {
	case <-g.decided:
		return
	default:
	}
	g.ok = ok
	close(g.decided)
	if g.pipe != nil {
		_, _ = g.pipe.WriteString(g.word())
	}
}

// openWith opens the gate of a command that takes a payload (the finish,
// at step order).
func (b *batchConn) openWith(order int, payload string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gates[order].payload = payloadLines(payload)
	b.decideLocked(order, true)
}

// closeGates shuts every gate not opened yet, and cuts the batch: the
// results of the checks still running are no longer wanted, so their
// commands get errNotAhead instead of going to the host.
func (b *batchConn) closeGates() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for order := range b.gates {
		b.decideLocked(order, false)
	}
}

// take returns the pending commands once no check is running; it must be
// called with b.mu held.
func (b *batchConn) take() []*batchReq {
	if b.active > 0 || len(b.pending) == 0 {
		return nil
	}
	reqs := b.pending
	b.pending = nil
	slices.SortStableFunc(reqs, func(x, y *batchReq) int { return x.order - y.order })
	return reqs
}

// finished is called when a check returns.
func (b *batchConn) finished() {
	b.mu.Lock()
	b.active--
	reqs := b.take()
	b.mu.Unlock()
	if reqs != nil {
		go b.send(reqs)
	}
}

// deliver wakes the checks of reqs, whose results are set.
func (b *batchConn) deliver(reqs ...*batchReq) {
	b.mu.Lock()
	for _, r := range reqs {
		if !r.payload { // the finish has no check to wake
			b.active++
		}
		if r.probe != nil && r.err == nil {
			b.answeredLocked(r.order, *r.probe, r.pres)
		}
	}
	b.mu.Unlock()
	for _, r := range reqs {
		close(r.done)
	}
}

// batchView is the Conn one check sees.
type batchView struct {
	b     *batchConn
	order int
	gated bool
}

func (v *batchView) Host() string { return v.b.conn.Host() }

func (v *batchView) Run(ctx context.Context, cmd string, opts ...modules.RunOption) (modules.Result, error) {
	o := modules.ApplyRunOptions(opts)
	if o.Stdin != nil || o.NoBecome {
		var res modules.Result
		var err error
		v.direct(func() { res, err = v.b.conn.Run(ctx, cmd, opts...) }, &err)
		return res, err
	}
	v.b.seen(v.order, true)
	r := &batchReq{order: v.order, cmd: cmd, env: o.Env, gated: v.gated, done: make(chan struct{})}
	v.b.queue(r)
	<-r.done
	return r.res, r.err
}

// Probe implements remote.Prober: the probe waits, like a command, for the
// round, where it joins the others of its segment (see sendBatch).
func (v *batchView) Probe(ctx context.Context, p remote.Probe) (remote.ProbeResult, error) {
	if v.gated || !remote.Probeable(p) {
		return remote.ProbeResult{}, remote.ErrNoProbe
	}
	// Once the batch is cut, a check neither asks nor takes an answer: the
	// apply that cut it asks again what was asked, and what was not is
	// still in pf, for the next apply (probesBefore, probeAnswers.left).
	v.b.mu.Lock()
	if v.b.closed {
		v.b.mu.Unlock()
		return remote.ProbeResult{}, errNotAhead
	}
	v.b.asked[v.order] = append(v.b.asked[v.order], p)
	var res remote.ProbeResult
	took := false
	if v.order < v.b.pfBefore {
		if res, took = v.b.pf.take(p); took {
			v.b.answeredLocked(v.order, p, res)
		}
	}
	v.b.mu.Unlock()
	if took {
		v.b.seen(v.order, res.Stat.Exists)
		return res, nil
	}
	r := &batchReq{order: v.order, probe: &p, done: make(chan struct{})}
	v.b.queue(r)
	<-r.done
	v.b.seen(v.order, r.err != nil || r.pres.Stat.Exists)
	return r.pres, r.err
}

// answeredLocked keeps the answer the check of step order takes for p,
// with b.mu held: as it is given, not once the check has it, so that
// readSince has the answers given in the round of the check it is called
// for.
func (b *batchConn) answeredLocked(order int, p remote.Probe, res remote.ProbeResult) {
	if b.read == nil {
		b.read = map[int]map[remote.Probe]remote.ProbeResult{}
	}
	if b.read[order] == nil {
		b.read[order] = map[remote.Probe]remote.ProbeResult{}
	}
	b.read[order][p] = res
}

// readSince is the answers the checks of pre took, but those made before
// a user's command that ran ahead of pre[k] (a step that is not
// read-only): that command may have changed what they read.
func (b *batchConn) readSince(k int, pre []*checked) map[remote.Probe]remote.ProbeResult {
	from := 0
	for j := k - 1; j >= 0; j-- {
		if c := pre[j]; !c.skip && aheadMode(c.m) != modules.CheckAheadReadOnly {
			from = j + 1
			break
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[remote.Probe]remote.ProbeResult{}
	for order, rs := range b.read {
		if order >= from {
			maps.Copy(out, rs)
		}
	}
	return out
}

// seen notes that the check of step order found something on the host (a
// path that is there, or a command's output) when found is true.
func (b *batchConn) seen(order int, found bool) {
	if !found {
		return
	}
	b.mu.Lock()
	if b.saw == nil {
		b.saw = map[int]bool{}
	}
	b.saw[order] = true
	b.mu.Unlock()
}

// queue adds r to the round and sends the round once no check is running.
func (b *batchConn) queue(r *batchReq) {
	b.mu.Lock()
	b.pending = append(b.pending, r)
	b.active--
	reqs := b.take()
	b.mu.Unlock()
	if reqs != nil {
		// Not in this goroutine: a batch may wait at a gate for this very
		// check to return.
		go b.send(reqs)
	}
}

func (v *batchView) Upload(ctx context.Context, path string, r io.Reader, mode fs.FileMode) error {
	var err error
	v.direct(func() { err = v.b.conn.Upload(ctx, path, r, mode) }, &err)
	return err
}

func (v *batchView) Download(ctx context.Context, path string, w io.Writer) error {
	var err error
	v.direct(func() { err = v.b.conn.Download(ctx, path, w) }, &err)
	return err
}

// direct runs fn (a transfer, or a command that cannot be batched) on the
// connection itself, after the gate when the check is gated; meanwhile the
// other checks' commands may go. A shut gate sets *errp instead.
func (v *batchView) direct(fn func(), errp *error) {
	b := v.b
	b.seen(v.order, true)
	b.mu.Lock()
	b.active--
	reqs := b.take()
	b.mu.Unlock()
	if reqs != nil {
		go b.send(reqs)
	}
	if v.gated && !b.wait(v.order) || b.isClosed() {
		*errp = errNotAhead
	} else {
		fn()
	}
	b.mu.Lock()
	b.active++
	b.mu.Unlock()
}

func (b *batchConn) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// wait blocks until the gate of step order is decided and reports whether
// it opened.
func (b *batchConn) wait(order int) bool {
	b.mu.Lock()
	g := b.gates[order]
	b.mu.Unlock()
	<-g.decided
	return g.ok
}

// send runs reqs, in one script when there are several (or one is gated),
// and wakes their checks.
func (b *batchConn) send(reqs []*batchReq) {
	// A round that starts at a gate waits for it here, not in a session on
	// the host: the gate shuts whenever a step before it changes the host,
	// and a session opened only to wait there would be wasted.
	if len(reqs) > 0 && reqs[0].gated {
		b.wait(reqs[0].order)
	}
	// A gated command whose gate is already decided needs no gate.
	var run []*batchReq
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		for _, r := range reqs {
			r.err = errNotAhead
		}
		b.deliver(reqs...)
		return
	}
	for _, r := range reqs {
		if r.gated {
			select {
			case <-b.gates[r.order].decided:
				if !b.gates[r.order].ok {
					r.err = errNotAhead
					b.mu.Unlock()
					b.deliver(r)
					b.mu.Lock()
					continue
				}
				// Its payload comes through the gate all the same.
				r.gated = r.payload
			default:
			}
		}
		run = append(run, r)
	}
	b.mu.Unlock()
	if len(run) == 0 {
		return
	}
	if len(run) == 1 && !run[0].gated {
		b.runAlone(run[0])
		b.deliver(run[0])
		return
	}
	left := b.sendBatch(run)
	// What the batch could not tell (its script died early) runs alone, in
	// order, each gated one once its gate has opened; but the finish, which
	// the run's end does.
	for _, r := range left {
		if r.payload || r.gated && !b.wait(r.order) || b.isClosed() {
			r.err = errNotAhead
		} else {
			b.runAlone(r)
		}
		b.deliver(r)
	}
}

func (b *batchConn) runAlone(r *batchReq) {
	if r.probe != nil {
		res, errs, err := remote.ProbeAlone(b.ctx, b.conn, []remote.Probe{*r.probe})
		switch {
		case err != nil:
			r.err = remote.ErrNoProbe // the check runs its own script, which reports it
		case errs[0] != nil:
			r.err = errs[0]
		default:
			r.pres = res[0]
		}
		return
	}
	var opts []modules.RunOption
	if len(r.env) > 0 {
		opts = append(opts, modules.WithEnv(r.env))
	}
	r.res, r.err = b.conn.Run(b.ctx, r.cmd, opts...)
}

// sendBatch runs reqs in one script, delivering each result as it comes
// back, and returns the requests it has no result for. Each command runs in
// a subshell (a probe unit in a function) with stdin from /dev/null, its
// output and exit status followed by a marker line on stdout and on stderr.
// The marker is a random tag the script spells in two halves, so that no
// output (not even a ps listing the script) holds it by chance. Before a
// gated command the script reads a line from its stdin and goes on only if
// it is 1.
func (b *batchConn) sendBatch(reqs []*batchReq) []*batchReq {
	h1, h2 := randomTag(), randomTag()
	us := batchUnits(reqs)
	var sb strings.Builder
	fmt.Fprintf(&sb, "# iklim: the checks of %d steps in one round trip\n_ik1=%s _ik2=%s\n", len(reqs), h1, h2)
	gated := false
	for i, u := range us {
		r := u.reqs[0]
		if r.gated {
			gated = true
			sb.WriteString("read _ikgo || exit 0\n[ \"$_ikgo\" = 1 ] || exit 0\n")
			if r.payload {
				sb.WriteString(payloadRead)
			}
		}
		switch {
		case r.payload:
			sb.WriteString(payloadCall(r.cmd))
		case u.probe:
			// Our own script: a function, not a subshell (a fork).
			ps := make([]remote.Probe, len(u.reqs))
			for k, r := range u.reqs {
				ps[k] = *r.probe
			}
			sb.WriteString(remote.ProbeFunc("_ikprobe", ps))
			// Nothing of it stays for the commands after it.
			sb.WriteString("_ikprobe </dev/null; _ikst=$?; unset -f _ikprobe _ikt _iks _ikf _ikr; unset _ikh _n _p _c\n")
		default:
			sb.WriteString("(\n")
			if len(r.env) > 0 {
				if err := remote.WriteExport(&sb, r.env); err != nil {
					r.err = fmt.Errorf("%s: %w", b.conn.Host(), err) // as run alone: fails before running
					sb.WriteString("exit 125\n")
				}
			}
			sb.WriteString(r.cmd)
			sb.WriteString("\n) </dev/null; _ikst=$?\n")
		}
		n := strconv.Itoa(i)
		sb.WriteString("printf '\\n%s%s " + n + " %d\\n' \"$_ik1\" \"$_ik2\" $_ikst\nprintf '\\n%s%s " + n + "\\n' \"$_ik1\" \"$_ik2\" >&2\n")
	}
	p := &batchParser{b: b, tag: h1 + h2, units: us}
	var err error
	switch {
	case gated:
		pr, pw, perr := os.Pipe()
		if perr != nil {
			err = perr
			break
		}
		b.mu.Lock()
		for _, r := range reqs { // in order, as the script reads them
			if r.gated {
				g := b.gates[r.order]
				g.pipe = pw
				select {
				case <-g.decided:
					// Decided since send looked, with no pipe to tell:
					// the script reads it now.
					_, _ = pw.WriteString(g.word())
				default:
				}
			}
		}
		b.mu.Unlock()
		_, err = b.stream(b.ctx, sb.String(), pr, p.writer(false), p.writer(true))
		b.mu.Lock()
		for _, r := range reqs {
			if r.gated {
				b.gates[r.order].pipe = nil
			}
		}
		b.mu.Unlock()
		pw.Close()
		pr.Close()
	case b.stream != nil:
		_, err = b.stream(b.ctx, sb.String(), nil, p.writer(false), p.writer(true))
	default:
		var res modules.Result
		if res, err = b.conn.Run(b.ctx, sb.String()); err == nil {
			p.writer(false).Write([]byte(res.Stdout))
			p.writer(true).Write([]byte(res.Stderr))
		}
	}
	left := p.finish()
	if err != nil {
		for _, r := range left {
			r.err = err
		}
		b.deliver(left...)
		return nil
	}
	return left
}

// batchUnit is one part of a batch script: a command, or the probes of the
// checks between two gates, answered together (remote.ProbeScript): one
// stat and one sha256sum for all of them instead of a few programs each.
type batchUnit struct {
	reqs  []*batchReq
	probe bool
}

// batchUnits splits reqs, in step order, into units. A segment's probes go
// where its first probe is: the checks of a segment are read-only, so their
// order among themselves does not matter; a gate's command does not move.
func batchUnits(reqs []*batchReq) []*batchUnit {
	var out []*batchUnit
	var group *batchUnit
	for _, r := range reqs {
		if r.gated {
			group = nil
		}
		if r.probe == nil {
			out = append(out, &batchUnit{reqs: []*batchReq{r}})
			continue
		}
		if group == nil {
			group = &batchUnit{probe: true}
			out = append(out, group)
		}
		group.reqs = append(group.reqs, r)
	}
	return out
}

// batchParser splits a batch script's output into its commands' results as
// it arrives.
type batchParser struct {
	b     *batchConn
	tag   string
	units []*batchUnit

	mu       sync.Mutex
	done     bool
	out, err []byte // not yet parsed
	nOut     int    // commands whose stdout is complete
	nErr     int    // commands whose stderr is complete
	code     []int
	stdout   []string
	stderr   []string
	given    int // commands delivered
}

type parserWriter struct {
	p      *batchParser
	stderr bool
}

func (w parserWriter) Write(b []byte) (int, error) {
	w.p.feed(w.stderr, b)
	return len(b), nil
}

// ReadFrom implements io.ReaderFrom, so that the session's copy does not
// allocate io.Copy's 32 KiB buffer for every batch (with hundreds of hosts at
// once, that was most of the heap).
func (w parserWriter) ReadFrom(r io.Reader) (int64, error) {
	buf := make([]byte, 2048)
	var n int64
	for {
		m, err := r.Read(buf)
		if m > 0 {
			w.p.feed(w.stderr, buf[:m])
			n += int64(m)
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func (p *batchParser) writer(stderr bool) io.Writer { return parserWriter{p: p, stderr: stderr} }

func (p *batchParser) feed(stderr bool, b []byte) {
	p.mu.Lock()
	if p.done {
		p.mu.Unlock()
		return
	}
	if stderr {
		p.err = append(p.err, b...)
		for p.nErr < len(p.units) {
			mark := "\n" + p.tag + " " + strconv.Itoa(p.nErr) + "\n"
			j := bytes.Index(p.err, []byte(mark))
			if j < 0 {
				break
			}
			p.stderr = append(p.stderr, string(p.err[:j]))
			p.err = p.err[j+len(mark):]
			p.nErr++
		}
	} else {
		p.out = append(p.out, b...)
		for p.nOut < len(p.units) {
			mark := "\n" + p.tag + " " + strconv.Itoa(p.nOut) + " "
			j := bytes.Index(p.out, []byte(mark))
			if j < 0 {
				break
			}
			rest := p.out[j+len(mark):]
			nl := bytes.IndexByte(rest, '\n')
			if nl < 0 {
				break // the status is on its way
			}
			code, err := strconv.Atoi(string(rest[:nl]))
			if err != nil {
				code = -1
			}
			p.stdout = append(p.stdout, string(p.out[:j]))
			p.code = append(p.code, code)
			p.out = rest[nl+1:]
			p.nOut++
		}
	}
	var ready []*batchReq
	for p.given < min(p.nOut, p.nErr) {
		i := p.given
		u := p.units[i]
		res := modules.Result{Stdout: p.stdout[i], Stderr: p.stderr[i], ExitCode: p.code[i]}
		if u.probe {
			answerProbes(u.reqs, res)
		} else if r := u.reqs[0]; r.err == nil {
			r.res = res
		}
		ready = append(ready, u.reqs...)
		p.given++
	}
	p.mu.Unlock()
	if len(ready) > 0 {
		p.b.deliver(ready...)
	}
}

// finish stops the parser and returns the commands it has no result for.
func (p *batchParser) finish() []*batchReq {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = true
	var left []*batchReq
	for _, u := range p.units[p.given:] {
		left = append(left, u.reqs...)
	}
	return left
}

// answerProbes sets the answers of a probe unit's requests from its output.
// A probe the output does not answer gets remote.ErrNoProbe: its check runs
// its own script, which reports what went wrong.
func answerProbes(reqs []*batchReq, res modules.Result) {
	ps := make([]remote.Probe, len(reqs))
	for k, r := range reqs {
		ps[k] = *r.probe
	}
	var out []remote.ProbeResult
	var errs []error
	err := remote.ErrNoProbe
	if res.ExitCode == 0 {
		out, errs, err = remote.ParseProbes(ps, res.Stdout)
	}
	for k, r := range reqs {
		switch {
		case err != nil:
			r.err = remote.ErrNoProbe
		case errs[k] != nil:
			r.err = errs[k]
		default:
			r.pres = out[k]
		}
	}
}

// randomTag is 16 hex digits from crypto/rand, for batch markers.
func randomTag() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
