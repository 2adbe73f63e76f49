package runner_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/commands"
	"github.com/iklimco/iklim/modules/files"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/stretchr/testify/require"
	"github.com/zclconf/go-cty/cty"
)

// localConnector hands out LocalConns for non-local hosts and counts the
// commands they run: each is one round trip (one session) over SSH.
type localConnector struct{ runs atomic.Int64 }

type countedConn struct {
	*transport.LocalConn
	runs *atomic.Int64
}

func (c countedConn) Run(ctx context.Context, cmd string, opts ...modules.RunOption) (modules.Result, error) {
	c.runs.Add(1)
	return c.LocalConn.Run(ctx, cmd, opts...)
}

func (l *localConnector) Connect(ctx context.Context, h *inventories.Host) (modules.Conn, error) {
	return countedConn{LocalConn: transport.NewLocalConn(h.Name), runs: &l.runs}, nil
}
func (l *localConnector) Close() error { return nil }

func ptr[T any](v T) *T { return &v }

// aheadWorkload: a read-only command leading, a directory, a stat of it, a
// step whose path depends on that stat's result, and a second command.
func aheadWorkload(base string) *runner.Playbook {
	step := func(name, register string, build func(sc *runner.StepContext, d string) modules.Module) runner.Step {
		return runner.Step{Name: name, Module: "m", Register: register, Source: "test.hcl:1",
			Build: func(sc *runner.StepContext) (modules.Module, error) {
				return build(sc, filepath.Join(base, sc.Host.Name)), nil
			}}
	}
	return &runner.Playbook{Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
		step("echo", "out", func(_ *runner.StepContext, d string) modules.Module {
			return &commands.Command{Argv: []string{"echo", "hi"}, Changed: ptr(false)}
		}),
		step("dir", "", func(_ *runner.StepContext, d string) modules.Module {
			return &files.File{Path: d + "/a", State: "directory"}
		}),
		step("stat", "st", func(_ *runner.StepContext, d string) modules.Module {
			return &files.Stat{Path: d + "/a"}
		}),
		step("depends", "", func(sc *runner.StepContext, d string) modules.Module {
			p := d + "/absent-parent"
			if st := sc.Results[sc.Host.Name]["st"]; st.Type().IsObjectType() && st.GetAttr("exists") == cty.True {
				p = d + "/a/b"
			}
			return &files.File{Path: p, State: "directory"}
		}),
		step("true", "", func(_ *runner.StepContext, d string) modules.Module {
			return &commands.Command{Argv: []string{"true"}, Changed: ptr(false)}
		}),
	}}}}
}

type aheadRun struct {
	statuses map[string][]string // host → "step status summary"
	runs     int64
}

func runAhead(t *testing.T, base string, noAhead, check bool) aheadRun {
	t.Helper()
	return runPlaybook(t, aheadWorkload(base), base, noAhead, check)
}

// runPlaybook runs pb on three hosts over counted local conns.
func runPlaybook(t *testing.T, pb *runner.Playbook, base string, noAhead, check bool) aheadRun {
	t.Helper()
	inv := inventories.New()
	for _, n := range []string{"h1", "h2", "h3"} {
		require.NoError(t, inv.Add(&inventories.Host{Name: n, Address: "127.0.0.1"}))
	}
	conn := &localConnector{}
	var mu sync.Mutex
	res := aheadRun{statuses: map[string][]string{}}
	recap, err := runner.Run(context.Background(), pb, runner.Options{
		Inventory: inv, Connector: conn, NoCheckAhead: noAhead, Check: check,
		Events: func(e runner.Event) {
			if e.Type != runner.EventHostResult {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			line := e.Step + " " + string(e.Status) + " " + e.Summary + " " + e.Error
			res.statuses[e.Host] = append(res.statuses[e.Host], strings.ReplaceAll(line, base, "BASE"))
		},
	})
	require.NoError(t, err)
	for _, h := range recap.Hosts {
		require.Zero(t, h.Failed, h.Error)
	}
	res.runs = conn.runs.Load()
	return res
}

// TestCheckAheadSameResultsFewerRoundTrips runs the workload with and
// without check-ahead, in check mode, for real, and again: every step ends
// the same way, and the run with nothing to change takes 3 round trips per
// host instead of 5: echo, dir and stat in one; depends alone, since the
// stat it reads was not registered yet when it was checked ahead (its
// arguments differ once it is); true alone.
func TestCheckAheadSameResultsFewerRoundTrips(t *testing.T) {
	seq, ahead := t.TempDir(), t.TempDir()
	for _, pass := range []struct {
		name  string
		check bool
	}{{"check mode", true}, {"first run", false}, {"second run", false}} {
		a := runAhead(t, seq, true, pass.check)
		b := runAhead(t, ahead, false, pass.check)
		require.Equal(t, a.statuses, b.statuses, pass.name)
		if pass.name == "second run" {
			require.EqualValues(t, 3*5, a.runs)
			require.EqualValues(t, 3*3, b.runs)
			for _, st := range b.statuses["h1"] {
				require.Contains(t, st, " ok ")
			}
		}
	}
	for _, h := range []string{"h1", "h2", "h3"} {
		_, err := os.Stat(filepath.Join(ahead, h, "a", "b"))
		require.NoError(t, err, "the step after the stat saw the directory the step before it made")
		_, err = os.Stat(filepath.Join(ahead, h, "absent-parent"))
		require.True(t, os.IsNotExist(err))
	}
}

// TestCheckAheadResultFreeStepBuiltOnce: a step after one that registers a
// result is built a second time to compare (and a third time when its turn
// comes) unless it reads no result: then once per batch, and the run ends
// the same.
func TestCheckAheadResultFreeStepBuiltOnce(t *testing.T) {
	for _, free := range []bool{false, true} {
		base := t.TempDir()
		var builds atomic.Int64
		pb := &runner.Playbook{Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
			{Name: "echo", Module: "command", Register: "out", Source: "test.hcl:1",
				Build: func(*runner.StepContext) (modules.Module, error) {
					return &commands.Command{Argv: []string{"echo", "hi"}, Changed: ptr(false)}, nil
				}},
			{Name: "dir", Module: "file", Source: "test.hcl:2", ResultFree: free,
				Build: func(sc *runner.StepContext) (modules.Module, error) {
					builds.Add(1)
					return &files.File{Path: filepath.Join(base, sc.Host.Name), State: "directory"}, nil
				}},
		}}}}
		runPlaybook(t, pb, base, false, false) // makes the directories
		builds.Store(0)
		res := runPlaybook(t, pb, base, false, false)
		want := int64(3 * 3)
		if free {
			want = 3
		}
		require.Equal(t, want, builds.Load(), "free=%v", free)
		require.EqualValues(t, 3, res.runs, "one batch per host")
		for _, st := range res.statuses["h1"] {
			require.Contains(t, st, " ok ")
		}
	}
}

// TestCheckAheadGatedCommandRunsOnceInTurn: a read-only command of the
// user's after a step that changes the host runs once per run, after that
// change, also when it is batched behind a gate (local hosts stream).
func TestCheckAheadGatedCommandRunsOnceInTurn(t *testing.T) {
	workload := func(base string) *runner.Playbook {
		step := func(name string, build func(d string) modules.Module) runner.Step {
			return runner.Step{Name: name, Module: "m", Source: "test.hcl:1",
				Build: func(sc *runner.StepContext) (modules.Module, error) {
					return build(filepath.Join(base, sc.Host.Name)), nil
				}}
		}
		return &runner.Playbook{Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
			step("first", func(d string) modules.Module {
				return &commands.Command{Argv: []string{"true"}, Changed: ptr(false)}
			}),
			step("dir", func(d string) modules.Module { return &files.File{Path: d + "/a", State: "directory"} }),
			step("look", func(d string) modules.Module {
				return &commands.Shell{Cmd: "if [ -d " + d + "/a ]; then echo seen; else echo early; fi >> " + d + ".log", Changed: ptr(false)}
			}),
			step("stat", func(d string) modules.Module { return &files.Stat{Path: d + "/a"} }),
			step("look again", func(d string) modules.Module {
				return &commands.Shell{Cmd: "echo again >> " + d + ".log", Changed: ptr(false)}
			}),
		}}}}
	}
	statuses := func(base string, noAhead bool) []string {
		var mu sync.Mutex
		var out []string
		_, err := runner.Run(context.Background(), workload(base), runner.Options{
			Inventory: localInventory(t, 3), Connector: noConnector{}, NoCheckAhead: noAhead,
			Events: func(e runner.Event) {
				if e.Type == runner.EventHostResult && e.Host == "h01" {
					mu.Lock()
					out = append(out, e.Step+" "+string(e.Status)+" "+e.Error)
					mu.Unlock()
				}
			},
		})
		require.NoError(t, err)
		return out
	}
	seq, ahead := t.TempDir(), t.TempDir()
	for range 2 {
		require.Equal(t, statuses(seq, true), statuses(ahead, false))
	}
	for _, h := range []string{"h01", "h02", "h03"} {
		b, err := os.ReadFile(filepath.Join(ahead, h+".log"))
		require.NoError(t, err)
		require.Equal(t, "seen\nagain\nseen\nagain\n", string(b))
	}
}

// TestCheckAheadInterrupt cancels a run while a gated command runs: the run
// ends at once, that step fails, the step after it is not reported, and no
// host counts as unreachable, as when steps run one by one.
func TestCheckAheadInterrupt(t *testing.T) {
	dir := t.TempDir()
	stat := func(name string) runner.Step {
		return runner.Step{Name: name, Module: "stat", Source: "test.hcl:1", Build: func(*runner.StepContext) (modules.Module, error) {
			return &files.Stat{Path: dir}, nil
		}}
	}
	slow := runner.Step{Name: "slow", Module: "shell", Source: "test.hcl:2", Build: func(*runner.StepContext) (modules.Module, error) {
		return &commands.Shell{Cmd: "sleep 30", Changed: ptr(false)}, nil
	}}
	pb := &runner.Playbook{Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{stat("a"), stat("b"), slow, stat("c")}}}}
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	got := map[string][]string{}
	// Interrupt once both hosts have ended b (slow's gate opens right
	// after), not after a fixed time: on a loaded machine a and b may take
	// longer than any guess.
	bDone := 0
	start := time.Now()
	recap, err := runner.Run(ctx, pb, runner.Options{
		Inventory: localInventory(t, 2), Connector: noConnector{},
		Events: func(e runner.Event) {
			if e.Type == runner.EventHostResult && e.Step == "b" {
				mu.Lock()
				if bDone++; bDone == 2 {
					time.AfterFunc(300*time.Millisecond, cancel)
				}
				mu.Unlock()
			}
			if e.Type == runner.EventHostResult {
				mu.Lock()
				got[e.Host] = append(got[e.Host], e.Step+" "+string(e.Status))
				mu.Unlock()
			}
		},
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Less(t, time.Since(start), 20*time.Second, "waited for the 30 s sleep")
	for _, h := range recap.Hosts {
		require.Equal(t, []string{"a ok", "b ok", "slow failed"}, got[h.Host])
		require.Zero(t, h.Unreachable)
	}
}

// TestCheckAheadGatedCommandSeesResultsRegisteredBeforeIt: a gated command
// whose arguments read a result that a step before it in the batch registers
// again runs with the new value, never with the one it was built with.
func TestCheckAheadGatedCommandSeesResultsRegisteredBeforeIt(t *testing.T) {
	dir := t.TempDir()
	echo := func(name, word string) runner.Step {
		return runner.Step{Name: name, Module: "command", Register: "v", Source: "test.hcl:1",
			Build: func(*runner.StepContext) (modules.Module, error) {
				return &commands.Command{Argv: []string{"echo", word}, Changed: ptr(false)}, nil
			}}
	}
	use := runner.Step{Name: "use", Module: "shell", Source: "test.hcl:2",
		Build: func(sc *runner.StepContext) (modules.Module, error) {
			v := strings.TrimSpace(sc.Results[sc.Host.Name]["v"].GetAttr("stdout").AsString())
			return &commands.Shell{Cmd: "printf %s " + v + " >> " + filepath.Join(dir, sc.Host.Name), Changed: ptr(false)}, nil
		}}
	pb := &runner.Playbook{Plays: []runner.Play{
		{Name: "one", Hosts: "all", Steps: []runner.Step{echo("set", "old")}},
		{Name: "two", Hosts: "all", Steps: []runner.Step{echo("set again", "new"), use}},
	}}
	recap, err := runner.Run(context.Background(), pb, runner.Options{Inventory: localInventory(t, 2), Connector: noConnector{}})
	require.NoError(t, err)
	for _, h := range recap.Hosts {
		require.Zero(t, h.Failed, h.Error)
		b, err := os.ReadFile(filepath.Join(dir, h.Host))
		require.NoError(t, err)
		require.Equal(t, "new", string(b))
	}
}

// deployWorkload is a deploy that writes rev into a file and then checks
// four paths, the last of them the file just written.
func deployWorkload(base, rev string) *runner.Playbook {
	step := func(name string, build func(d string) modules.Module) runner.Step {
		return runner.Step{Name: name, Module: "m", Source: "test.hcl:1",
			Build: func(sc *runner.StepContext) (modules.Module, error) {
				return build(filepath.Join(base, sc.Host.Name)), nil
			}}
	}
	return &runner.Playbook{Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
		step("dir", func(d string) modules.Module { return &files.File{Path: d, State: "directory"} }),
		step("conf", func(d string) modules.Module {
			return &files.Copy{Dest: d + "/app.conf", Content: ptr("rev = " + rev + "\n")}
		}),
		step("data", func(d string) modules.Module { return &files.File{Path: d + "/data", State: "directory"} }),
		step("logs", func(d string) modules.Module { return &files.File{Path: d + "/logs", State: "directory"} }),
		step("line", func(d string) modules.Module {
			return &files.Line{Path: d + "/app.conf", Line: "port = 8080", Create: true}
		}),
	}}}}
}

// TestCheckAheadAfterAChangeRechecksTheRestInOneBatch: a batch cut short by
// a change is followed by one batch of the steps that found nothing to do
// before it and the first that found something, not by single steps. Every
// step ends as it does without check-ahead, on a first run (every step
// changes: the steps go one by one after the first change, as before) and
// on deploys where conf and line change.
func TestCheckAheadAfterAChangeRechecksTheRestInOneBatch(t *testing.T) {
	seq, ahead := t.TempDir(), t.TempDir()
	for i, rev := range []string{"1", "2", "3"} {
		a := runPlaybook(t, deployWorkload(seq, rev), seq, true, false)
		b := runPlaybook(t, deployWorkload(ahead, rev), ahead, false, false)
		require.Equal(t, a.statuses, b.statuses, "rev %s", rev)
		var got []string
		for _, st := range b.statuses["h1"] {
			f := strings.Fields(st)
			got = append(got, f[0]+" "+f[1])
		}
		if i == 0 {
			require.Equal(t, []string{"dir changed", "conf changed", "data changed", "logs changed", "line changed"}, got)
			// The batch of 5 is cut by dir; conf found a change, so it
			// goes alone, and so on: as many round trips as one by one.
			require.EqualValues(t, a.runs, b.runs, "first run")
			require.EqualValues(t, 3*9, b.runs, "first run")
			continue
		}
		require.Equal(t, []string{"dir ok", "conf changed", "data ok", "logs ok", "line changed"}, got, "rev %s", rev)
		// One batch of 5, cut by conf; conf's apply sets the replaced
		// file's owner (one command); one batch of data, logs and line,
		// which had found nothing to do before conf's change; line's apply
		// (its owner, one command). Without the batch after the change it
		// was 5: data alone, then logs and line.
		require.EqualValues(t, 3*4, b.runs, "rev %s: round trips", rev)
		require.EqualValues(t, 3*7, a.runs, "rev %s: without check-ahead", rev)
	}
}

// twoRounds is a read-only check of two commands, the second sent only once
// wait is closed; each command appends a line to log.
type twoRounds struct {
	log  string
	wait <-chan struct{}
}

func (m *twoRounds) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if _, err := c.Run(ctx, "echo first >> "+m.log); err != nil {
		return nil, err
	}
	<-m.wait
	_, err := c.Run(ctx, "echo second >> "+m.log)
	return nil, err
}
func (m *twoRounds) Apply(context.Context, modules.Conn, *modules.Change) error { return nil }
func (m *twoRounds) CheckAhead() modules.CheckAhead                             { return modules.CheckAheadReadOnly }

// TestCheckAheadCutBatchSendsNothingMore: once a batch is cut by a change,
// a check of it still running sends no more commands to the host; its step
// is checked again in its turn, so each of its commands runs once for that.
func TestCheckAheadCutBatchSendsNothingMore(t *testing.T) {
	dir := t.TempDir()
	waits := map[string]chan struct{}{"h01": make(chan struct{}), "h02": make(chan struct{})}
	pb := &runner.Playbook{Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
		{Name: "conf", Module: "copy", Source: "test.hcl:1", Build: func(sc *runner.StepContext) (modules.Module, error) {
			return &files.Copy{Dest: filepath.Join(dir, sc.Host.Name+".conf"), Content: ptr("x\n")}, nil
		}},
		{Name: "two rounds", Module: "m", Source: "test.hcl:2", Build: func(sc *runner.StepContext) (modules.Module, error) {
			return &twoRounds{log: filepath.Join(dir, sc.Host.Name+".log"), wait: waits[sc.Host.Name]}, nil
		}},
	}}}}
	recap, err := runner.Run(context.Background(), pb, runner.Options{
		Inventory: localInventory(t, 2), Connector: noConnector{},
		Events: func(e runner.Event) {
			if e.Type == runner.EventHostResult && e.Step == "conf" {
				close(waits[e.Host]) // conf is applied: the batch was cut before
			}
		},
	})
	require.NoError(t, err)
	for _, h := range recap.Hosts {
		require.Zero(t, h.Failed, h.Error)
		require.Equal(t, 1, h.Changed)
		b, err := os.ReadFile(filepath.Join(dir, h.Host+".log"))
		require.NoError(t, err)
		require.Equal(t, "first\nfirst\nsecond\n", string(b), h.Host)
	}
}
