package runner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/sourcegraph/conc/pool"
	"github.com/zclconf/go-cty/cty"
)

// Options configure one run.
type Options struct {
	Inventory *inventories.Inventory
	// Connector reaches hosts; required.
	Connector Connector
	// Recorder keeps backup records; nil runs without them (library use only:
	// the CLI always records).
	Recorder Recorder
	// Locker holds the playbook's lock; required when the playbook has one.
	Locker Locker
	Run    RunInfo
	// Control is the control machine, for delegated steps and their records.
	// Nil means a local host named "localhost" with the default backup root.
	Control *inventories.Host

	Check    bool
	Diff     bool
	Forks    int      // hosts at once; 0 means every host
	Limit    string   // host pattern intersected with every play's hosts
	Tags     []string // run only steps with one of these tags ("always" always runs)
	SkipTags []string
	Verbose  bool // include module output in events
	// NoCheckAhead runs every step's check in a round trip of its own,
	// instead of batching the read-only checks of consecutive steps (see
	// checkahead.go).
	NoCheckAhead bool
	// StepTimeout bounds each step (its check, record and apply) that sets
	// no timeout of its own: 0 means DefaultStepTimeout, negative none. A
	// host that vanishes is caught sooner, by the connector's keepalives.
	StepTimeout time.Duration
	// Events receives every event, one at a time.
	Events  func(Event)
	Secrets *modules.Secrets
	// Modules is the run's module registry, handed to the modules and the
	// recorder that look others up by name (modules.RegistryUser): the
	// rollback module, which undoes each change with its module, and the
	// backup recorder. Nil is an empty registry.
	Modules *modules.Registry
}

// DefaultStepTimeout bounds a step that sets no timeout, so that no wait
// on a live but stuck host lasts forever.
const DefaultStepTimeout = 30 * time.Minute

// Run executes a playbook and returns its recap. The error is non-nil only
// when the run could not start or was interrupted; failed hosts show in the
// recap.
func Run(ctx context.Context, pb *Playbook, opts Options) (*Recap, error) {
	e, err := newEngine(pb, opts)
	if err != nil {
		return nil, err
	}
	return e.run(ctx)
}

type engine struct {
	pb      *Playbook
	opts    Options
	control *inventories.Host
	local   *transport.LocalConn
	emitMu  sync.Mutex
	plays   [][]*inventories.Host // hosts of each play, resolved before any connection

	playNames     [][]string // names of plays' hosts, made on first use
	playNamesOnce []sync.Once

	mu       sync.Mutex
	recaps   map[string]*HostRecap
	order    []string                        // hosts in first-seen order, for the recap
	results  map[string]map[string]cty.Value // host → register name → value
	seq      map[string]int                  // host → number of changes recorded
	dead     map[string]bool                 // hosts that failed or were unreachable
	recorded map[string]*inventories.Host    // hosts (and control) with records
	finished map[string]bool                 // hosts whose records a batch finished (finish.go)
	lastPlay map[string]int                  // host → the last play with steps for it
	serial   map[string]*sync.Mutex          // Peers.Serialize's locks, by key
	prefetch map[string]*probeAnswers        // host → probes answered by its last apply (prefetch.go)
	phase    int                             // current ChangeRecord.Phase
}

func newEngine(pb *Playbook, opts Options) (*engine, error) {
	if opts.Inventory == nil {
		return nil, errors.New("no inventory")
	}
	if opts.Connector == nil {
		return nil, errors.New("no connector")
	}
	if opts.Forks <= 0 {
		// Every host at once: a host costs a goroutine and a connection
		// while it runs, and handshakes are throttled by the connector.
		opts.Forks = max(len(opts.Inventory.Hosts), 1)
	}
	if opts.Secrets == nil {
		opts.Secrets = modules.NewSecrets()
	}
	if su, ok := opts.Recorder.(modules.SecretsUser); ok {
		su.UseSecrets(opts.Secrets)
	}
	if ru, ok := opts.Recorder.(modules.RegistryUser); ok {
		ru.UseRegistry(opts.Modules)
	}
	if opts.StepTimeout == 0 {
		opts.StepTimeout = DefaultStepTimeout
	}
	if opts.Run.ID == "" {
		opts.Run.ID = time.Now().UTC().Format("2006-01-02T15-04-05Z")
	}
	if opts.Run.Started.IsZero() {
		opts.Run.Started = time.Now().UTC()
	}
	control := opts.Control
	if control == nil {
		control = &inventories.Host{Name: "localhost", Address: "localhost", Local: true, BackupRoot: inventories.DefaultBackupRoot}
	}
	e := &engine{
		pb: pb, opts: opts, control: control, local: transport.NewLocalConn(control.Name),
		recaps: map[string]*HostRecap{}, results: map[string]map[string]cty.Value{},
		seq: map[string]int{}, dead: map[string]bool{}, recorded: map[string]*inventories.Host{}, finished: map[string]bool{},
		serial:   map[string]*sync.Mutex{},
		prefetch: map[string]*probeAnswers{},
	}
	// Resolve every play's hosts first: a bad pattern must fail the run
	// before any host is touched.
	for _, p := range pb.Plays {
		hosts, err := opts.Inventory.Select(p.Hosts)
		if err != nil {
			return nil, fmt.Errorf("play %q: %w", p.Name, err)
		}
		if hosts, err = opts.Inventory.Limit(hosts, opts.Limit); err != nil {
			return nil, fmt.Errorf("--limit: %w", err)
		}
		e.plays = append(e.plays, hosts)
	}
	e.playNames, e.playNamesOnce = make([][]string, len(e.plays)), make([]sync.Once, len(e.plays))
	if pb.Lock != nil {
		if opts.Locker == nil {
			return nil, fmt.Errorf("playbook declares lock %q but no locker is set", pb.Lock.Name)
		}
		if _, ok := opts.Inventory.Host(pb.Lock.Host); !ok {
			return nil, fmt.Errorf("lock %q: host %q is not in the inventory", pb.Lock.Name, pb.Lock.Host)
		}
	}
	return e, nil
}

func (e *engine) run(ctx context.Context) (*Recap, error) {
	start := time.Now()
	e.emit(Event{Type: EventRunStart, Extra: map[string]string{"playbook": e.pb.File}})

	var runErr error
	if e.pb.Lock != nil {
		release, err := e.acquireLock(ctx)
		if err != nil {
			return nil, err
		}
		defer func() {
			// Release even when ctx was cancelled: a lock left behind blocks
			// every later deploy until it goes stale.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if err := release(rctx); err != nil {
				e.warn("", fmt.Errorf("release lock %q: %w", e.pb.Lock.Name, err))
			}
		}()
	}

	e.lastPlay = e.lastPlays()
	for i, p := range e.pb.Plays {
		if err := e.runPlay(ctx, i, p, e.plays[i]); err != nil {
			runErr = err
			break
		}
	}
	e.finishRecords(ctx)

	recap := e.recap(time.Since(start))
	e.emit(Event{Type: EventRecap, Recap: recap})
	if runErr == nil {
		runErr = ctx.Err()
	}
	return recap, runErr
}

func (e *engine) acquireLock(ctx context.Context) (func(context.Context) error, error) {
	spec := *e.pb.Lock
	h, _ := e.opts.Inventory.Host(spec.Host)
	conn, err := e.opts.Connector.Connect(ctx, h)
	if err != nil {
		return nil, fmt.Errorf("lock %q: %w", spec.Name, err)
	}
	return e.opts.Locker.Acquire(ctx, conn, spec, e.opts.Run)
}

// runPlay runs a play batch by batch (serial), and within a batch segment by
// segment: a segment is a run of steps that hosts may go through at their own
// pace; barrier and run_once steps start a new segment.
func (e *engine) runPlay(ctx context.Context, index int, p Play, hosts []*inventories.Host) error {
	names := make([]string, len(hosts))
	for i, h := range hosts {
		names[i] = h.Name
		e.recapFor(h.Name)
	}
	e.emit(Event{Type: EventPlayStart, Play: p.Name, Hosts: names})
	steps := SelectSteps(p.Steps, e.opts.Tags, e.opts.SkipTags)
	if len(hosts) == 0 || len(steps) == 0 {
		return nil
	}
	size := p.Serial
	if size <= 0 || size > len(hosts) {
		size = len(hosts)
	}
	for lo := 0; lo < len(hosts); lo += size {
		batch := hosts[lo:min(lo+size, len(hosts))]
		segs := segments(steps)
		for si, seg := range segs {
			if err := ctx.Err(); err != nil {
				return err
			}
			live := e.live(batch)
			if len(live) == 0 {
				break
			}
			e.mu.Lock()
			e.phase++
			e.mu.Unlock()
			if seg[0].RunOnce {
				e.runOnce(ctx, p, seg[0], live)
				continue
			}
			// The play's last segment ends the work of the hosts it is the
			// last play of.
			e.runSegment(ctx, p, seg, live, func(h *inventories.Host) bool {
				return si == len(segs)-1 && e.lastPlay[h.Name] == index
			})
		}
		// Ansible stops a serial rollout when a whole batch failed.
		if len(e.live(batch)) == 0 {
			break
		}
	}
	return ctx.Err()
}

// segments splits steps at barriers; a run_once step is a segment of its own.
func segments(steps []Step) [][]Step {
	var out [][]Step
	var cur []Step
	for _, s := range steps {
		if (s.Barrier || s.RunOnce) && len(cur) > 0 {
			out = append(out, cur)
			cur = nil
		}
		cur = append(cur, s)
		if s.RunOnce {
			out = append(out, cur)
			cur = nil
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

func (e *engine) runSegment(ctx context.Context, p Play, seg []Step, hosts []*inventories.Host, last func(*inventories.Host) bool) {
	wp := pool.New().WithMaxGoroutines(min(e.opts.Forks, len(hosts)))
	for _, h := range hosts {
		wp.Go(func() { e.runHost(ctx, p, seg, h, last(h)) })
	}
	wp.Wait()
}

// runOnce runs the step on the first live host and registers its result
// for every host of the batch, as Ansible's run_once does.
func (e *engine) runOnce(ctx context.Context, p Play, s Step, hosts []*inventories.Host) {
	first := hosts[0]
	status := e.runStep(ctx, p, s, first, first.Name, nil)
	if s.Register == "" || status == StatusFailed || status == StatusUnreachable {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	v := e.results[first.Name][s.Register]
	for _, h := range hosts[1:] {
		e.register(h.Name, s.Register, v)
	}
}

// runStep runs one step on one host by itself: prepare, then commit, which
// checks it in a round trip of its own unless pf answers it.
func (e *engine) runStep(ctx context.Context, p Play, s Step, h *inventories.Host, name string, pf *probeAnswers) Status {
	c := e.prepare(p, s, h, e.snapshotResults())
	c.pf = pf
	return e.commit(ctx, p, s, h, name, c)
}

// prepare is the part of a step that needs no host: its when, evaluated
// against results, and its module built for h. The plain path (runStep) and
// check-ahead (runAhead) both start a step with it.
func (e *engine) prepare(p Play, s Step, h *inventories.Host, results map[string]map[string]cty.Value) *checked {
	c := &checked{begin: time.Now(), done: make(chan struct{})}
	sc := &StepContext{Host: h, Results: results, Check: e.opts.Check}
	if s.When != nil {
		ok, err := s.When(sc)
		if err != nil {
			c.prepErr = fmt.Errorf("when: %w", err)
			return c
		}
		c.skip = !ok
	}
	if !c.skip {
		c.m, c.prepErr = s.Build(sc)
	}
	if c.m != nil {
		e.wire(c.m, p, h)
	}
	return c
}

// serialize takes the run's lock named key (Peers.Serialize).
func (e *engine) serialize(key string) func() {
	e.mu.Lock()
	mu := e.serial[key]
	if mu == nil {
		mu = &sync.Mutex{}
		e.serial[key] = mu
	}
	e.mu.Unlock()
	mu.Lock()
	return mu.Unlock
}

// wire hands a built module what it asked for: the step's Peers, the
// run's Secrets and its registry, explicitly rather than through its context.
func (e *engine) wire(m modules.Module, p Play, h *inventories.Host) {
	if pu, ok := m.(modules.PeersUser); ok {
		pu.UsePeers(&peers{e: e, self: h, play: e.playHosts(p)})
	}
	if su, ok := m.(modules.SecretsUser); ok {
		su.UseSecrets(e.opts.Secrets)
	}
	if ru, ok := m.(modules.RegistryUser); ok {
		ru.UseRegistry(e.opts.Modules)
	}
}

// commit finishes a prepared step on h: it connects, checks the step unless
// a batch already did (c.checked), then records and applies the change,
// registers the result and emits it. Both paths end a step here.
func (e *engine) commit(ctx context.Context, p Play, s Step, h *inventories.Host, name string, c *checked) Status {
	ev := Event{Type: EventHostResult, Play: p.Name, Step: s.Name, Module: s.Module, Source: s.Source, Host: name}
	start := Event{Type: EventStepStart, Play: p.Name, Step: s.Name, Module: s.Module, Source: s.Source, Host: name}
	if d := e.stepTimeout(s); d > 0 {
		// The deadline is shown while the step runs, not only when it hits.
		start.Extra = map[string]string{"timeout": d.String()}
	}
	e.emit(start)
	status := e.newStepStatus(start)
	finish := func(st Status, summary string, err error) Status {
		status.stop() // no status after the result
		ev.Status, ev.Summary, ev.Duration = st, summary, time.Since(c.begin)
		if err != nil {
			ev.Error = err.Error()
		}
		e.count(name, st, ev.Error, s.IgnoreErrors)
		e.emit(ev)
		return st
	}

	switch {
	case c.prepErr != nil:
		return finish(StatusFailed, "", c.prepErr)
	case c.skip:
		e.registerValue(name, s.Register, cty.ObjectVal(map[string]cty.Value{"skipped": cty.True, "changed": cty.False}))
		return finish(StatusSkipped, "", nil)
	case c.checked && c.err != nil:
		return finish(failStatus(c.err), "", c.err) // no step timeout: not batched
	}
	m := c.m

	target, recHost := h, h
	if s.Delegate {
		target, recHost = e.control, e.control
	}
	conn, err := e.connect(ctx, target)
	if err != nil {
		return finish(StatusUnreachable, "", err)
	}
	var probe proberFunc // a read-only check of h may take what h's last apply answered
	if !c.checked && c.pf != nil && aheadMode(m) == modules.CheckAheadReadOnly && !s.Delegate {
		probe = prefetchProber(c.pf)
	}
	mc := status.wrap(conn, probe) // the module's Conn: it may report its status

	sctx := ctx
	timeout := e.stepTimeout(s)
	if timeout > 0 {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(sctx, timeout)
		defer cancel()
	}
	if !c.checked {
		c.ch, c.err = m.Check(sctx, mc)
	}
	if c.err != nil {
		return finish(failStatus(c.err), "", stepError(sctx, timeout, c.err))
	}
	ch := c.ch
	if ch == nil {
		e.registerOutput(name, s.Register, m, false)
		e.attachOutput(&ev, m)
		return finish(StatusOK, "", nil)
	}
	if e.opts.Diff || e.opts.Check {
		ev.Diff = e.redactDiff(ch.Diff)
	}
	if e.opts.Check {
		e.registerOutput(name, s.Register, m, true)
		return finish(StatusChanged, ch.Summary, nil)
	}

	// The change makes what was answered for the host stale; the probes not
	// taken (but this step's own) go with this apply again, as far as
	// thenProbes asks them.
	var rec *ChangeRecord
	var applyErr error
	var done, afterDone bool
	if l := c.link; l != nil {
		// Applied in the round trip of a step before it (chain.go).
		rec, applyErr, done, afterDone, err = l.rec, l.out.ApplyErr, l.out.Recorded, l.out.AfterDone, l.out.Err
	} else {
		var then thenAsk
		if !s.Delegate && !e.opts.NoCheckAhead {
			then = thenProbes(c.then, c.pf.left(s.Name))
			then.before = c.before
		}
		e.takeAnswers(target.Name)
		rec = e.newRecord(p, s, m, name, recHost.Name, ch)
		applyErr, done, afterDone, err = e.recordApply(sctx, conn, p, recHost, rec, m, target.Name, then, c)
	}
	if err != nil {
		// Never change a host without a record that can undo it.
		return finish(failStatus(err), ch.Summary, fmt.Errorf("record change before applying: %w", err))
	}
	if !done && e.opts.Recorder != nil {
		if err := e.opts.Recorder.Before(sctx, conn, recHost, rec); err != nil {
			return finish(failStatus(err), ch.Summary, fmt.Errorf("record change before applying: %w", err))
		}
		e.markRecorded(recHost)
	}
	if !done {
		applyErr = m.Apply(sctx, mc, ch)
	}
	if e.opts.Recorder != nil && !afterDone {
		// Record the outcome even when the step timed out or the run was
		// interrupted; rollback needs to know how far the change got.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		err := e.opts.Recorder.After(actx, conn, recHost, rec, applyErr)
		cancel()
		if err != nil && applyErr == nil {
			applyErr = fmt.Errorf("record outcome: %w", err)
		}
	}
	if applyErr != nil {
		return finish(failStatus(applyErr), ch.Summary, stepError(sctx, timeout, applyErr))
	}
	e.registerOutput(name, s.Register, m, true)
	e.attachOutput(&ev, m)
	return finish(StatusChanged, ch.Summary, nil)
}

// recordApply records and applies a change in one round trip when the
// recorder and the module can (ScriptRecorder, modules.ScriptApplier). done
// reports that it did, with the apply's outcome in applyErr; afterDone
// that the outcome is recorded too. With done false nothing was recorded or
// changed, and err means the change must not be applied.
//
// then are probes to answer in the same round trip once the change is
// applied; their answers are kept for target's next step (prefetch.go).
// c.chain are the steps after it to apply in that round trip too
// (chain.go): their outcomes are left in their links.
func (e *engine) recordApply(ctx context.Context, conn modules.Conn, p Play, h *inventories.Host, rec *ChangeRecord, m modules.Module, target string, then thenAsk, c *checked) (applyErr error, done, afterDone bool, err error) {
	sr, ok := e.opts.Recorder.(ScriptRecorder)
	if !ok {
		return nil, false, false, nil
	}
	sa, ok := m.(modules.ScriptApplier)
	if !ok {
		return nil, false, false, nil
	}
	ap := c.apply // made for its chain, if it has one
	if ap == nil {
		ap = sa.ApplyScript(rec.Change)
	}
	if ap == nil {
		return nil, false, false, nil
	}
	links := []ChainLink{{Rec: rec, Apply: ap}}
	cr, _ := sr.(ChainRecorder)
	var chain []*checked // the chain's changes, each a link
	if cr != nil && len(c.chain) > 0 {
		chain = applying(c.chain)
		links = append(links, e.chainLinks(p, h, c.chain)...)
	}
	if ps := then.probes(); len(ps) > 0 {
		aps := make([]*modules.ScriptApply, len(links))
		for i, l := range links {
			aps[i] = l.Apply
		}
		then.guard, then.known = knownAfter(ps, aps, then.before)
		withThen := *links[len(links)-1].Apply
		withThen.Then = thenScript(ps, then.guard)
		links[len(links)-1].Apply = &withThen
	}
	var outs []ChainOutcome
	if len(links) > 1 {
		outs = cr.RecordApplyChain(ctx, conn, h, links)
		for i, member := range chain {
			member.link.out = outs[i+1]
			if o := member.link.out; o.Recorded && o.ApplyErr == nil {
				member.m.(modules.ScriptApplier).ScriptApplied()
			}
		}
		e.unchained(h, c.chain)
	} else {
		out, err := sr.RecordApply(ctx, conn, h, rec, links[0].Apply)
		outs = []ChainOutcome{{ScriptOutcome: out, Err: err}}
	}
	out, last := outs[0], outs[len(outs)-1]
	if out.Recorded {
		e.markRecorded(h) // with an error too: Finish ends the run's record
	}
	if out.Err != nil || !out.Recorded {
		return nil, false, false, out.Err
	}
	if out.ApplyErr == nil {
		sa.ScriptApplied()
		e.putAnswers(target, answersFrom(then, last.Then, last.ThenOK))
	}
	return out.ApplyErr, true, out.AfterDone, nil
}

func stepError(ctx context.Context, timeout time.Duration, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && timeout > 0 {
		return fmt.Errorf("timed out after %s: %w", timeout, err)
	}
	return err
}

// stepTimeout is the deadline of step s: its own, else the run's default.
func (e *engine) stepTimeout(s Step) time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return max(e.opts.StepTimeout, 0)
}

// failStatus is how a step that ended in err is counted: unreachable when
// its host's connection was lost (the host may come back; nothing it ran
// is known to have failed), failed otherwise.
func failStatus(err error) Status {
	var ue *transport.UnreachableError
	if errors.As(err, &ue) {
		return StatusUnreachable
	}
	return StatusFailed
}

func (e *engine) connect(ctx context.Context, h *inventories.Host) (modules.Conn, error) {
	if h.Local {
		if h == e.control {
			return e.local, nil
		}
		return transport.NewLocalConn(h.Name), nil
	}
	return e.opts.Connector.Connect(ctx, h)
}

// newRecord numbers changes per recording host: delegated changes of many
// hosts share the control machine's sequence.
func (e *engine) newRecord(p Play, s Step, m modules.Module, host, recHost string, ch *modules.Change) *ChangeRecord {
	e.mu.Lock()
	e.seq[recHost]++
	n := e.seq[recHost]
	phase := e.phase
	e.mu.Unlock()
	return &ChangeRecord{
		RunID: e.opts.Run.ID, Seq: n, Host: host, Play: p.Name, Step: s.Name,
		Module: s.Module, Source: s.Source, Time: time.Now().UTC(), Change: ch, Delegated: s.Delegate,
		ModuleUndo: isRollbacker(m), SensitiveArgs: modules.TakesSensitive(m), Phase: phase,
	}
}

func isRollbacker(m modules.Module) bool {
	_, ok := m.(modules.Rollbacker)
	return ok
}

func (e *engine) markRecorded(h *inventories.Host) {
	e.mu.Lock()
	e.recorded[h.Name] = h
	e.mu.Unlock()
}

// finishRecords writes every recorded host's final result, after the plays,
// even when the run was interrupted.
func (e *engine) finishRecords(ctx context.Context) {
	if e.opts.Recorder == nil {
		return
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	e.mu.Lock()
	hosts := make([]*inventories.Host, 0, len(e.recorded))
	for name, h := range e.recorded {
		if !e.finished[name] {
			hosts = append(hosts, h)
		}
	}
	e.mu.Unlock()
	wp := pool.New().WithMaxGoroutines(e.opts.Forks)
	for _, h := range hosts {
		wp.Go(func() {
			conn, err := e.connect(fctx, h)
			if err != nil {
				return
			}
			var res HostRecap
			if h == e.control {
				res = e.controlRecap()
			} else {
				res = e.hostRecap(h.Name)
			}
			if ctx.Err() != nil && res.Error == "" {
				res.Error = "interrupted"
			}
			if err := e.opts.Recorder.Finish(fctx, conn, h, res); err != nil {
				e.warn(h.Name, fmt.Errorf("finish backup record: %w", err))
			}
		})
	}
	wp.Wait()
}

// SelectSteps is the steps a run with tags and skipTags (Options.Tags,
// Options.SkipTags) runs: a step tagged "always" runs unless skipped.
func SelectSteps(steps []Step, tags, skipTags []string) []Step {
	if len(tags) == 0 && len(skipTags) == 0 {
		return steps
	}
	var out []Step
	for _, s := range steps {
		if anyTag(s.Tags, skipTags) {
			continue
		}
		if len(tags) > 0 && !anyTag(s.Tags, tags) && !slices.Contains(s.Tags, "always") {
			continue
		}
		out = append(out, s)
	}
	return out
}

func anyTag(have, want []string) bool {
	for _, t := range have {
		if slices.Contains(want, t) {
			return true
		}
	}
	return false
}

func (e *engine) live(hosts []*inventories.Host) []*inventories.Host {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*inventories.Host
	for _, h := range hosts {
		if !e.dead[h.Name] {
			out = append(out, h)
		}
	}
	return out
}

func (e *engine) isDead(host string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dead[host]
}

// playHosts names the hosts of play p. The list is made once per play and
// shared (made per step and host, it cost hosts² allocations over a run).
func (e *engine) playHosts(p Play) []string {
	for i, q := range e.pb.Plays {
		if q.Name == p.Name {
			e.playNamesOnce[i].Do(func() {
				names := make([]string, len(e.plays[i]))
				for j, h := range e.plays[i] {
					names[j] = h.Name
				}
				e.playNames[i] = slices.Clip(names)
			})
			return e.playNames[i]
		}
	}
	return nil
}

func (e *engine) emit(ev Event) {
	if e.opts.Events == nil {
		return
	}
	ev.Time = time.Now().UTC()
	ev.RunID = e.opts.Run.ID
	sec := e.opts.Secrets
	ev.Summary, ev.Error = sec.Redact(ev.Summary), sec.Redact(ev.Error)
	e.emitMu.Lock()
	defer e.emitMu.Unlock()
	e.opts.Events(ev)
}

// warn reports trouble that does not fail a step as an EventWarning; the
// library never prints.
func (e *engine) warn(host string, err error) {
	e.emit(Event{Type: EventWarning, Host: host, Error: err.Error()})
}

func (e *engine) redactDiff(d *modules.Diff) *modules.Diff {
	if d == nil {
		return nil
	}
	sec := e.opts.Secrets
	return &modules.Diff{Label: d.Label, Before: sec.Redact(d.Before), After: sec.Redact(d.After)}
}

func (e *engine) attachOutput(ev *Event, m modules.Module) {
	if !e.opts.Verbose {
		return
	}
	if o, ok := m.(modules.Outputter); ok {
		ev.Output = redactValue(e.opts.Secrets, o.Output()).(map[string]any)
	}
}

// redactValue redacts every string inside a module's output.
func redactValue(sec *modules.Secrets, v any) any {
	switch t := v.(type) {
	case string:
		return sec.Redact(t)
	case []string:
		out := make([]any, len(t))
		for i, s := range t {
			out[i] = sec.Redact(s)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = redactValue(sec, x)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[k] = redactValue(sec, x)
		}
		return out
	case map[string]string:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[k] = sec.Redact(x)
		}
		return out
	default:
		return v
	}
}
