package runner_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iklimco/iklim/internal/recordtest"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/files"
	"github.com/iklimco/iklim/modules/remote"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/transport"
)

// fileStep is a step of the file module, which rollback undoes through
// the run's registry.
func fileStep(name string, build func() *files.File) runner.Step {
	s := step(name, func(*inventories.Host) modules.Module { return build() })
	s.Module = "file"
	return s
}

// chainRecords is the change records of run id on h1, in order: "seq step
// outcome", the outcome "none" when the change has no after record.
func (f *faultHosts) chainRecords(id string) []string {
	f.t.Helper()
	dirs := recordtest.RunDirs(f.t, filepath.Join(f.dir, "backups", "h1"), id)
	require.Len(f.t, dirs, 1)
	recs, err := filepath.Glob(filepath.Join(dirs[0], "changes", "[0-9]*.json"))
	require.NoError(f.t, err)
	slices.Sort(recs)
	var out []string
	for _, r := range recs {
		if strings.HasSuffix(r, ".after.json") {
			continue
		}
		var rec struct {
			Seq  int    `json:"seq"`
			Step string `json:"step"`
		}
		b, err := os.ReadFile(r)
		require.NoError(f.t, err)
		require.NoError(f.t, json.Unmarshal(b, &rec))
		outcome := "none"
		if b, err := os.ReadFile(strings.TrimSuffix(r, ".json") + ".after.json"); err == nil {
			var after struct {
				Outcome string `json:"outcome"`
			}
			require.NoError(f.t, json.Unmarshal(b, &after))
			outcome = after.Outcome
		}
		require.Equal(f.t, fmt.Sprintf("%04d.json", rec.Seq), filepath.Base(r))
		out = append(out, fmt.Sprintf("%d %s %s", rec.Seq, rec.Step, outcome))
	}
	return out
}

// lstate is what is at p: "absent", "dir", "link to T" or the file's
// content.
func lstate(t *testing.T, p string) string {
	t.Helper()
	fi, err := os.Lstat(p)
	switch {
	case os.IsNotExist(err):
		return "absent"
	case err != nil:
		t.Fatal(err)
	case fi.Mode()&os.ModeSymlink != 0:
		target, err := os.Readlink(p)
		require.NoError(t, err)
		return "link to " + target
	case fi.IsDir():
		return "dir"
	}
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}

// TestChainAppliesAFirstRunInOneCommand: on a first run, where each step
// creates what is not there yet, the changes after the first go in its
// round trip: one command for a batch of checks, one for the four applies
// (each recorded whole before it runs, with its outcome after), one for the
// run's end. Each step is reported in its turn. A second run changes
// nothing, and rollback takes every path away again.
func TestChainAppliesAFirstRunInOneCommand(t *testing.T) {
	f := newFaultHosts(t, []string{"h1"}, transport.SSHOptions{})
	content := func(s string) *string { return &s }
	app := f.file("h1", "app")
	pb := &runner.Playbook{File: "chain.hcl", Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
		fileStep("app", func() *files.File {
			return &files.File{Path: app, State: "directory", Mode: "0755"}
		}),
		step("a", func(*inventories.Host) modules.Module {
			return &files.Copy{Dest: filepath.Join(app, "a.conf"), Content: content("a = 1\n"), Mode: "0640"}
		}),
		step("b", func(*inventories.Host) modules.Module {
			return &files.Copy{Dest: filepath.Join(app, "b.conf"), Content: content("b = 1\n")}
		}),
		fileStep("current", func() *files.File {
			return &files.File{Path: f.file("h1", "current"), State: "link", Src: app}
		}),
		step("stat", func(*inventories.Host) modules.Module {
			return &files.Stat{Path: filepath.Join(app, "a.conf")}
		}),
	}}}}
	var order []string
	f.onEvent = func(ev runner.Event) {
		if ev.Type == runner.EventHostResult {
			order = append(order, ev.Step+" "+string(ev.Status))
		}
	}
	id, recap, _, err := f.play(pb, nil)
	require.NoError(t, err)
	require.Zero(t, recap.Hosts[0].Failed, recap.Hosts[0].Error)
	require.Equal(t, []string{"app changed", "a changed", "b changed", "current changed", "stat ok"}, order, "each step reported in its turn")
	require.Equal(t, []string{"1 app applied", "2 a applied", "3 b applied", "4 current applied"}, f.chainRecords(id))
	f.requireRecordsWhole(id, "h1")
	require.Equal(t, "a = 1\n", lstate(t, filepath.Join(app, "a.conf")))
	require.Equal(t, "b = 1\n", lstate(t, filepath.Join(app, "b.conf")))
	require.Equal(t, "link to "+app, lstate(t, f.file("h1", "current")))
	fi, err := os.Stat(filepath.Join(app, "a.conf"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o640), fi.Mode().Perm())

	// The same first run again, counted: three commands.
	require.NotZero(t, f.rollback(id, "").Hosts[0].Changed)
	for _, p := range []string{app, f.file("h1", "current")} {
		require.Equal(t, "absent", lstate(t, p), "rollback takes %s away", p)
	}
	cc := &countingConnector{Connector: f.conn, n: map[string]int{}}
	_, got := f.runRecorded(pb, cc)
	ch := runner.StatusChanged
	require.Equal(t, map[string]runner.Status{"app": ch, "a": ch, "b": ch, "current": ch, "stat": runner.StatusOK}, got)
	require.Equal(t, 3, cc.count("h1"), "commands on the host: the checks, the four applies, the run's end")
	chained := 0
	for _, s := range cc.scripts {
		chained = max(chained, strings.Count(s, "IKLIM-RECORDED "))
	}
	require.Equal(t, 4, chained, "the four changes in one command")

	// Idempotent: nothing to change, one command.
	cc = &countingConnector{Connector: f.conn, n: map[string]int{}}
	_, got = f.runRecorded(pb, cc)
	ok := runner.StatusOK
	require.Equal(t, map[string]runner.Status{"app": ok, "a": ok, "b": ok, "current": ok, "stat": ok}, got)
}

// TestChainStopsWhereAPathAppeared: a change taken into a chain runs only
// if its paths are still absent when its turn comes. Here the link made
// before it puts the copy's path, absent when checked, through to a file
// that exists: the chain stops there, unrecorded, and the copy is checked
// again and replaces that file, with a record of what it held.
func TestChainStopsWhereAPathAppeared(t *testing.T) {
	f := newFaultHosts(t, []string{"h1"}, transport.SSHOptions{})
	content := func(s string) *string { return &s }
	shared := f.file("h1", "shared")
	require.NoError(t, os.Mkdir(shared, 0o777))
	require.NoError(t, os.Chmod(shared, 0o777))
	f.writeFile("h1", "shared/x.conf", "old\n")
	via := f.file("h1", "via")
	pb := &runner.Playbook{File: "guard.hcl", Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
		fileStep("link", func() *files.File {
			return &files.File{Path: via, State: "link", Src: shared}
		}),
		step("copy", func(*inventories.Host) modules.Module {
			return &files.Copy{Dest: filepath.Join(via, "x.conf"), Content: content("new\n")}
		}),
	}}}}
	cc := &countingConnector{Connector: f.conn, n: map[string]int{}}
	id, got := f.runRecorded(pb, cc)
	require.Equal(t, map[string]runner.Status{"link": runner.StatusChanged, "copy": runner.StatusChanged}, got)
	stopped, alone := false, false
	for _, s := range cc.scripts {
		stopped = stopped || strings.Count(s, "IKLIM-RECORDED ") == 2
		alone = alone || strings.Count(s, "IKLIM-RECORDED ") == 1 && strings.Contains(s, "x.conf")
	}
	require.True(t, stopped, "the copy went with the link's apply, behind its guard")
	require.True(t, alone, "stopped at its guard, the copy was checked again and applied alone")
	require.Equal(t, "new\n", lstate(t, filepath.Join(shared, "x.conf")))
	// Numbered without a gap: the chain gave back the number it did not use.
	require.Equal(t, []string{"1 link applied", "2 copy applied"}, f.chainRecords(id))
	f.requireRecordsWhole(id, "h1")

	rb := f.rollback(id, "")
	require.Zero(t, rb.Hosts[0].Failed, rb.Hosts[0].Error)
	require.Equal(t, "old\n", lstate(t, filepath.Join(shared, "x.conf")), "the file the copy replaced is back")
	require.Equal(t, "absent", lstate(t, via))
}

// TestChainStopsAtAFailedApply: a change of a chain that fails is recorded
// as failed; the chain and the host stop there, the changes before it
// stay applied and recorded, the one after it is neither, and rollback
// undoes what was applied.
func TestChainStopsAtAFailedApply(t *testing.T) {
	f := newFaultHosts(t, []string{"h1"}, transport.SSHOptions{})
	content := func(s string) *string { return &s }
	locked := f.file("h1", "locked")
	require.NoError(t, os.Mkdir(locked, 0o555)) // root's: the login user cannot write in it
	pb := &runner.Playbook{File: "fail.hcl", Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
		step("a", func(*inventories.Host) modules.Module {
			return &files.Copy{Dest: f.file("h1", "a.conf"), Content: content("a\n")}
		}),
		fileStep("sub", func() *files.File {
			return &files.File{Path: filepath.Join(locked, "sub"), State: "directory"}
		}),
		step("c", func(*inventories.Host) modules.Module {
			return &files.Copy{Dest: f.file("h1", "c.conf"), Content: content("c\n")}
		}),
	}}}}
	var results []string
	f.onEvent = func(ev runner.Event) {
		if ev.Type == runner.EventHostResult {
			results = append(results, ev.Step+" "+string(ev.Status))
		}
	}
	cc := &countingConnector{Connector: f.conn, n: map[string]int{}}
	f.via = cc
	id, recap, _, err := f.play(pb, nil)
	require.NoError(t, err)
	require.Equal(t, 1, recap.Hosts[0].Failed)
	chained := 0
	for _, s := range cc.scripts {
		chained = max(chained, strings.Count(s, "IKLIM-RECORDED "))
	}
	require.Equal(t, 3, chained, "the three changes went in one command")
	require.Contains(t, recap.Hosts[0].Error, "sub")
	require.Equal(t, []string{"a changed", "sub failed"}, results)
	require.Equal(t, []string{"1 a applied", "2 sub failed"}, f.chainRecords(id))
	require.Equal(t, "a\n", lstate(t, f.file("h1", "a.conf")))
	require.Equal(t, "absent", lstate(t, f.file("h1", "c.conf")))
	f.requireRecordsWhole(id, "h1")

	rb := f.rollback(id, "")
	require.Zero(t, rb.Hosts[0].Failed, rb.Hosts[0].Error)
	require.Equal(t, "absent", lstate(t, f.file("h1", "a.conf")))
}

// slowAbsent is a module a chain may take: its check asks only whether its
// path is there; its apply script marks that it started, waits, then
// writes its file only while its output still goes somewhere.
type slowAbsent struct{ path, marker string }

func (m *slowAbsent) CheckAhead() modules.CheckAhead { return modules.CheckAheadReadOnly }

func (m *slowAbsent) Check(ctx context.Context, conn modules.Conn) (*modules.Change, error) {
	res, ok, err := remote.ProbeStat(ctx, conn, remote.Probe{Path: m.path})
	if err != nil || ok && res.Stat.Exists {
		return nil, err
	}
	return &modules.Change{Summary: "slow " + m.path, Files: []string{m.path}}, nil
}

func (m *slowAbsent) Apply(context.Context, modules.Conn, *modules.Change) error {
	panic("slowAbsent: Apply must not run: the recorder runs its script")
}

func (m *slowAbsent) ApplyScript(*modules.Change) *modules.ScriptApply {
	return &modules.ScriptApply{Script: ": > " + remote.Quote(m.marker) + "\nsleep 3\necho alive || exit 1\nprintf 'applied\\n' > " + remote.Quote(m.path) + "\n"}
}

func (m *slowAbsent) ScriptApplied() {}

// TestChainCutOffLeavesRecordsRollbackCanUse: the connection drops while a
// chain's second change is being applied: the first stays applied with its
// outcome recorded, the second is recorded (not applied), the third is
// neither; the host is unreachable, the records are whole, and rollback
// takes the first back.
func TestChainCutOffLeavesRecordsRollbackCanUse(t *testing.T) {
	f := newFaultHosts(t, []string{"victim"}, transport.SSHOptions{})
	content := func(s string) *string { return &s }
	marker := f.file("victim", "started")
	cc := &countingConnector{Connector: f.conn, n: map[string]int{}}
	f.via = cc
	pb := &runner.Playbook{File: "cut.hcl", Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
		step("a", func(h *inventories.Host) modules.Module {
			return &files.Copy{Dest: f.file(h.Name, "a.conf"), Content: content("a\n")}
		}),
		step("slow", func(h *inventories.Host) modules.Module {
			return &slowAbsent{path: f.file(h.Name, "b.conf"), marker: marker}
		}),
		step("c", func(h *inventories.Host) modules.Module {
			return &files.Copy{Dest: f.file(h.Name, "c.conf"), Content: content("c\n")}
		}),
	}}}}
	dropped := f.dropWhenMarked("victim", marker)
	id, _, evs, err := f.play(pb, nil)
	require.NoError(t, err)
	require.NoError(t, <-dropped)
	chained := 0
	for _, s := range cc.scripts {
		chained = max(chained, strings.Count(s, "IKLIM-RECORDED "))
	}
	require.Equal(t, 3, chained, "the three changes went in one command")
	ev, ok := eventFor(evs, "victim", "a")
	require.True(t, ok)
	require.Equal(t, runner.StatusUnreachable, ev.Status, "the host went away before a's outcome came back")
	for _, step := range []string{"slow", "c"} {
		_, ok := eventFor(evs, "victim", step)
		require.False(t, ok, "%s is not reported: the run stopped on the host before its turn", step)
	}

	time.Sleep(4 * time.Second) // the cut-off script never writes (its output is gone)
	require.Equal(t, "a\n", lstate(t, f.file("victim", "a.conf")))
	require.Equal(t, "absent", lstate(t, f.file("victim", "b.conf")), "recorded, never applied")
	require.Equal(t, "absent", lstate(t, f.file("victim", "c.conf")))
	dirs := recordtest.RunDirs(t, filepath.Join(f.dir, "backups", "victim"), id)
	require.Len(t, dirs, 1)
	recordtest.RequireRunDirWhole(t, dirs[0])
	recs, err := filepath.Glob(filepath.Join(dirs[0], "changes", "*.json"))
	require.NoError(t, err)
	for i := range recs {
		recs[i] = filepath.Base(recs[i])
	}
	require.Equal(t, []string{"0001.after.json", "0001.json", "0002.json"}, recs, "a recorded with its outcome, slow recorded before its apply, c not at all")

	rb := f.rollback(id, "")
	require.Zero(t, rb.Hosts[0].Failed+rb.Hosts[0].Unreachable, rb.Hosts[0].Error)
	for _, n := range []string{"a.conf", "b.conf", "c.conf"} {
		require.Equal(t, "absent", lstate(t, f.file("victim", n)), n)
	}
}

// TestToldChainStopsWhereAPathIsTheWrittenFile: a step whose check read a
// path that a change before it in the chain writes under another name (a
// symlinked directory) cannot be told: the guard of its link finds the
// path is the written file, and the chain stops there. Here a copy
// rewrites app.conf, then a stat and a line read it through alias/: told
// from before the copy, the stat would report the old content and the
// line would write the old content back with its line. Both are checked
// again instead, on the file the copy wrote. The stat's link is quiet (it
// changes nothing); its guard goes with the next link's, so it holds the
// chain back even where that link's own guard holds (a line in another
// file).
func TestToldChainStopsWhereAPathIsTheWrittenFile(t *testing.T) {
	for _, other := range []bool{false, true} {
		name := map[bool]string{false: "the line reads it", true: "only the stat reads it"}[other]
		t.Run(name, func(t *testing.T) {
			f := newFaultHosts(t, []string{"h1"}, transport.SSHOptions{})
			f.writeFile("h1", "app.conf", "old\nx = 1\n")
			f.writeFile("h1", "b.conf", "b\n")
			conf := f.file("h1", "app.conf")
			alias := f.file("h1", "alias")
			require.NoError(t, os.Symlink(filepath.Dir(conf), alias))
			lined, want := filepath.Join(alias, "app.conf"), map[string]string{conf: "new\ny = 1\n"}
			if other {
				lined = f.file("h1", "b.conf")
				want = map[string]string{conf: "new\n", lined: "b\ny = 1\n"}
			}
			var stat *files.Stat
			pb := &runner.Playbook{File: "told.hcl", Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
				step("conf", func(*inventories.Host) modules.Module {
					return &files.Copy{Dest: conf, Content: ptr("new\n")}
				}),
				step("stat", func(*inventories.Host) modules.Module {
					stat = &files.Stat{Path: filepath.Join(alias, "app.conf")}
					return stat
				}),
				step("line", func(*inventories.Host) modules.Module {
					return &files.Line{Path: lined, Line: "y = 1"}
				}),
			}}}}
			cc := &countingConnector{Connector: f.conn, n: map[string]int{}}
			id, got := f.runRecorded(pb, cc)
			ch := runner.StatusChanged
			require.Equal(t, map[string]runner.Status{"conf": ch, "stat": runner.StatusOK, "line": ch}, got)
			for p, content := range want {
				require.Equal(t, content, lstate(t, p))
			}
			sum := sha256.Sum256([]byte("new\n"))
			require.Equal(t, hex.EncodeToString(sum[:]), stat.Output()["sha256"], "the stat saw what the copy wrote")
			guarded := slices.ContainsFunc(cc.scripts, func(s string) bool {
				return strings.Count(s, "IKLIM-RECORDED ") == 2 && strings.Contains(s, " -ef ")
			})
			require.True(t, guarded, "the line was chained behind the copy, behind a guard")
			require.Equal(t, []string{"1 conf applied", "2 line applied"}, f.chainRecords(id), "numbered without a gap")
		})
	}
}
