package runner

// Check-ahead: a host's consecutive steps whose checks only read the host
// (modules.CheckAheadReadOnly) get their checks run together, in one remote
// script over one session, instead of one session per step. A step that runs
// a command of the user's in its check (command/shell with changed = false,
// modules.CheckAheadLead) may lead such a batch, never sit inside one.
//
// The checks of steps 2…n run before steps 1…n-1 have finished: they are
// speculative. Results are then taken in step order, and only while every
// step before has ended ok or skipped (in check mode also changed, since
// nothing is changed). The first step that changes the host keeps its own
// check, which was made on the host as it was, and is applied; the checks
// after it are thrown away and run again. A step whose arguments could have
// changed because an earlier step of the batch registered a result is built
// again and its checked copy kept only if the arguments are the same.
//
// After a batch was cut short by a change the next batch is a single step,
// then the size doubles with each batch that ran through: a first run, where
// most steps change, wastes few checks; a run with nothing to change does
// every host in one round trip per batch.

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
)

// checked is a step's when, build and check done ahead by a batch.
type checked struct {
	begin time.Time
	skip  bool // when was false
	m     modules.Module
	twin  modules.Module // a second, unchecked build; nil when not needed
	ch    *modules.Change
	err   error
}

// runHost runs the steps of a segment on one host, batching checks where it
// may.
func (e *engine) runHost(ctx context.Context, p Play, seg []Step, h *inventories.Host) {
	ahead := len(seg)
	for i := 0; i < len(seg); {
		if ctx.Err() != nil || e.isDead(h.Name) {
			return
		}
		if !e.opts.NoCheckAhead && ahead > 1 {
			if n, clean := e.runAhead(ctx, p, seg[i:min(i+ahead, len(seg))], h); n > 0 {
				i += n
				if clean {
					ahead = min(2*ahead, len(seg))
				} else {
					ahead = 1
				}
				continue
			}
		}
		st := e.runStep(ctx, p, seg[i], h, h.Name)
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
// finished (0: none could be batched, run steps[0] the usual way) and
// whether all of those ended without changing the host.
func (e *engine) runAhead(ctx context.Context, p Play, steps []Step, h *inventories.Host) (int, bool) {
	results := e.snapshotResults()
	var pre []*checked
	registered := false // an earlier step of the batch registers a result
	for k, s := range steps {
		if s.Delegate || s.Timeout > 0 || s.RunOnce || (k > 0 && s.Barrier) || s.Build == nil {
			break
		}
		c := &checked{begin: time.Now()}
		sc := &StepContext{Host: h, Results: results, Check: e.opts.Check}
		if s.When != nil {
			ok, err := s.When(sc)
			if err != nil {
				break
			}
			c.skip = !ok
		}
		if !c.skip {
			m, err := s.Build(sc)
			if err != nil || !aheadOK(m, k) {
				break
			}
			c.m = m
			if registered {
				if c.twin, err = s.Build(sc); err != nil {
					break
				}
			}
		}
		pre = append(pre, c)
		registered = registered || s.Register != ""
	}
	if len(pre) < 2 {
		return 0, false
	}
	conn, err := e.connect(ctx, h)
	if err != nil {
		return 0, false // runStep reports it
	}

	// Every check in its own goroutine, their commands batched per round.
	b := &batchConn{conn: conn, ctx: ctx}
	for _, c := range pre {
		if !c.skip {
			b.active++ // before any check starts: each takes itself off
		}
	}
	var wg sync.WaitGroup
	playHosts := e.playHosts(p)
	for k, c := range pre {
		if c.skip {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx := modules.WithPeers(ctx, &peers{e: e, self: h, play: playHosts})
			c.ch, c.err = c.m.Check(sctx, &batchView{b: b, order: k})
			b.finished()
		}()
	}
	wg.Wait()

	// Take the results in order while they still hold.
	for k, c := range pre {
		s := steps[k]
		if k > 0 && registeredBefore(steps[:k]) && !e.sameStep(s, c, h) {
			return k, false
		}
		st := e.runStepWith(ctx, p, s, h, h.Name, c)
		switch {
		case st == StatusOK || st == StatusSkipped:
		case st == StatusChanged && e.opts.Check:
		default:
			return k + 1, false
		}
	}
	return len(pre), true
}

// aheadOK reports whether m's check may go in a batch at position k.
func aheadOK(m modules.Module, k int) bool {
	ca, ok := m.(modules.CheckAheader)
	if !ok {
		return false
	}
	switch ca.CheckAhead() {
	case modules.CheckAheadReadOnly:
		return true
	case modules.CheckAheadLead:
		return k == 0
	}
	return false
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

// batchConn runs the commands of concurrent checks in rounds: once every
// check still running is waiting for a command, those commands go to the
// host in one script, in step order, each in a subshell of its own.
type batchConn struct {
	conn modules.Conn
	ctx  context.Context

	mu      sync.Mutex
	active  int // checks running and not waiting for a batch
	pending []*batchReq
}

type batchReq struct {
	order int
	cmd   string
	env   map[string]string
	done  chan struct{}
	res   modules.Result
	err   error
}

// take returns the pending commands once no check is running; it must be
// called with b.mu held.
func (b *batchConn) take() []*batchReq {
	if b.active > 0 || len(b.pending) == 0 {
		return nil
	}
	reqs := b.pending
	b.pending = nil
	b.active += len(reqs) // their checks go on once the batch is back
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
		b.send(reqs)
	}
}

// batchView is the Conn one check sees.
type batchView struct {
	b     *batchConn
	order int
}

func (v *batchView) Host() string { return v.b.conn.Host() }

func (v *batchView) Run(ctx context.Context, cmd string, opts ...modules.RunOption) (modules.Result, error) {
	o := modules.ApplyRunOptions(opts)
	if o.Stdin != nil || o.NoBecome {
		var res modules.Result
		var err error
		v.b.direct(func() { res, err = v.b.conn.Run(ctx, cmd, opts...) })
		return res, err
	}
	r := &batchReq{order: v.order, cmd: cmd, env: o.Env, done: make(chan struct{})}
	v.b.mu.Lock()
	v.b.pending = append(v.b.pending, r)
	v.b.active--
	reqs := v.b.take()
	v.b.mu.Unlock()
	if reqs != nil {
		v.b.send(reqs)
	}
	<-r.done
	return r.res, r.err
}

func (v *batchView) Upload(ctx context.Context, path string, r io.Reader, mode fs.FileMode) error {
	var err error
	v.b.direct(func() { err = v.b.conn.Upload(ctx, path, r, mode) })
	return err
}

func (v *batchView) Download(ctx context.Context, path string, w io.Writer) error {
	var err error
	v.b.direct(func() { err = v.b.conn.Download(ctx, path, w) })
	return err
}

// direct runs fn (a transfer, or a command that cannot be batched) on the
// connection itself; meanwhile the other checks' commands may go.
func (b *batchConn) direct(fn func()) {
	b.mu.Lock()
	b.active--
	reqs := b.take()
	b.mu.Unlock()
	if reqs != nil {
		go b.send(reqs)
	}
	fn()
	b.mu.Lock()
	b.active++
	b.mu.Unlock()
}

// send runs reqs, in one script when there are several, and wakes their
// checks.
func (b *batchConn) send(reqs []*batchReq) {
	defer func() {
		for _, r := range reqs {
			close(r.done)
		}
	}()
	from := 0
	if len(reqs) > 1 {
		from = b.sendBatch(reqs)
	}
	// One alone, or what a batch could not tell (its script died early).
	for _, r := range reqs[from:] {
		var opts []modules.RunOption
		if len(r.env) > 0 {
			opts = append(opts, modules.WithEnv(r.env))
		}
		r.res, r.err = b.conn.Run(b.ctx, r.cmd, opts...)
	}
}

// sendBatch runs reqs in one script and fills in their results; it returns
// the index of the first request it has no result for (len(reqs) when all
// came back). Each command runs in a subshell with stdin from /dev/null, its
// output and exit status followed by a marker line on stdout and stderr. The
// marker is a random tag the script spells in two halves, so that no output
// (not even a ps listing the script) holds it by chance.
func (b *batchConn) sendBatch(reqs []*batchReq) int {
	h1, h2 := randomHex(), randomHex()
	tag := h1 + h2
	var sb strings.Builder
	fmt.Fprintf(&sb, "# iklim: the checks of %d steps in one round trip\n_ik1=%s _ik2=%s\n", len(reqs), h1, h2)
	for i, r := range reqs {
		sb.WriteString("(\n")
		if len(r.env) > 0 {
			if err := writeEnv(&sb, r.env); err != nil {
				// As the command run alone would: fail before running.
				r.err = fmt.Errorf("%s: %w", b.conn.Host(), err)
				sb.WriteString("exit 125\n")
			}
		}
		sb.WriteString(r.cmd)
		sb.WriteString("\n) </dev/null\nprintf '\\n%s%s " + strconv.Itoa(i) + " %d\\n' \"$_ik1\" \"$_ik2\" $?\nprintf '\\n%s%s\\n' \"$_ik1\" \"$_ik2\" >&2\n")
	}
	res, err := b.conn.Run(b.ctx, sb.String())
	if err != nil {
		for _, r := range reqs {
			r.err = err
		}
		return len(reqs)
	}
	out, errOut := res.Stdout, res.Stderr
	for i, r := range reqs {
		mark := "\n" + tag + " " + strconv.Itoa(i) + " "
		j := strings.Index(out, mark)
		if j < 0 {
			return i
		}
		rest := out[j+len(mark):]
		nl := strings.IndexByte(rest, '\n')
		code, cerr := strconv.Atoi(rest[:max(nl, 0)])
		if nl < 0 || cerr != nil {
			return i
		}
		stdout := out[:j]
		out = rest[nl+1:]
		emark := "\n" + tag + "\n"
		stderr := ""
		if k := strings.Index(errOut, emark); k >= 0 {
			stderr, errOut = errOut[:k], errOut[k+len(emark):]
		}
		if r.err == nil {
			r.res = modules.Result{Stdout: stdout, Stderr: stderr, ExitCode: code}
		}
	}
	return len(reqs)
}
