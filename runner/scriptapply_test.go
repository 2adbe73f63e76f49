package runner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iklimco/iklim/internal/recordtest"
	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/commands"
	"github.com/iklimco/iklim/modules/files"
	"github.com/iklimco/iklim/modules/remote"
	"github.com/iklimco/iklim/modules/stock"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/backup"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/stretchr/testify/require"
)

// countingConnector counts the commands and transfers each host's Conn
// runs (a wrapper: check-ahead batches nothing through it).
type countingConnector struct {
	runner.Connector
	mu      sync.Mutex
	n       map[string]int
	scripts []string // every command run, in order
	outputs []string // their stdouts, likewise
}

func (c *countingConnector) Connect(ctx context.Context, h *inventories.Host) (modules.Conn, error) {
	conn, err := c.Connector.Connect(ctx, h)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, c: c}, nil
}

func (c *countingConnector) count(host string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[host]
}

type countingConn struct {
	modules.Conn
	c *countingConnector
}

func (cc *countingConn) add() {
	cc.c.mu.Lock()
	cc.c.n[cc.Host()]++
	cc.c.mu.Unlock()
}

func (cc *countingConn) Run(ctx context.Context, cmd string, opts ...modules.RunOption) (modules.Result, error) {
	cc.add()
	res, err := cc.Conn.Run(ctx, cmd, opts...)
	cc.c.mu.Lock()
	cc.c.scripts = append(cc.c.scripts, cmd)
	cc.c.outputs = append(cc.c.outputs, res.Stdout)
	cc.c.mu.Unlock()
	return res, err
}

func (cc *countingConn) Upload(ctx context.Context, p string, r io.Reader, mode fs.FileMode) error {
	cc.add()
	return cc.Conn.Upload(ctx, p, r, mode)
}

func (cc *countingConn) Download(ctx context.Context, p string, w io.Writer) error {
	cc.add()
	return cc.Conn.Download(ctx, p, w)
}

// TestScriptApplyOneCommandPerChange: with the backup recorder, a copy, a
// line and a mode change are each recorded, applied and recorded after in
// one command; the records hold the before-state and the applied outcome,
// and rollback restores every file byte-exact.
func TestScriptApplyOneCommandPerChange(t *testing.T) {
	f := newFaultHosts(t, []string{"h1"}, transport.SSHOptions{})
	f.writeFile("h1", "a.conf", "old a\n")
	f.writeFile("h1", "l.conf", "x = 1\n")
	f.writeFile("h1", "m.conf", "mode only\n")
	before := f.hashes("a.conf", "l.conf", "m.conf", "new.conf")
	content := func(s string) *string { return &s }
	steps := []runner.Step{
		step("copy", func(h *inventories.Host) modules.Module {
			return &files.Copy{Dest: f.file(h.Name, "a.conf"), Content: content("new a\n"), Mode: "0600"}
		}),
		step("create", func(h *inventories.Host) modules.Module {
			return &files.Copy{Dest: f.file(h.Name, "new.conf"), Content: content("created\n")}
		}),
		step("line", func(h *inventories.Host) modules.Module {
			return &files.Line{Path: f.file(h.Name, "l.conf"), Line: "y = 2"}
		}),
		step("mode", func(h *inventories.Host) modules.Module {
			return &files.Copy{Dest: f.file(h.Name, "m.conf"), Content: content("mode only\n"), Mode: "0604"}
		}),
	}
	cc := &countingConnector{Connector: f.conn, n: map[string]int{}}
	id, err := backup.ClaimRunID(time.Now())
	require.NoError(t, err)
	info := runner.RunInfo{ID: id, User: "script@test", Started: time.Now().UTC(), Playbook: "script.hcl"}
	var evs []runner.Event
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	recap, err := runner.Run(ctx, &runner.Playbook{File: "script.hcl", Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: steps}}}, runner.Options{
		Inventory: f.inv, Connector: cc, Run: info, Control: f.control, NoCheckAhead: true,
		Recorder: backup.NewRecorder(backup.RecorderOptions{Info: info}),
		Modules:  stock.Registry(),
		Events:   func(ev runner.Event) { evs = append(evs, ev) },
	})
	require.NoError(t, err)
	for _, ev := range evs {
		if ev.Type == runner.EventHostResult {
			require.Equal(t, runner.StatusChanged, ev.Status, "%s: %s", ev.Step, ev.Error)
		}
	}
	require.Equal(t, 4, recap.Hosts[0].Changed)
	// A check, then one command per change, then the run's end.
	require.Equal(t, 4+4+1, cc.count("h1"), "commands and transfers on the host")

	got := func(name string) string {
		b, err := os.ReadFile(f.file("h1", name))
		require.NoError(t, err)
		return string(b)
	}
	require.Equal(t, "new a\n", got("a.conf"))
	require.Equal(t, "created\n", got("new.conf"))
	require.Equal(t, "x = 1\ny = 2\n", got("l.conf"))
	fi, err := os.Stat(f.file("h1", "a.conf"))
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o600), fi.Mode().Perm())
	fi, err = os.Stat(f.file("h1", "m.conf"))
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o604), fi.Mode().Perm())
	require.Equal(t, before["h1/a.conf"][64:], recordtest.FileState(t, f.file("h1", "l.conf"))[64:], "the line keeps mode and owner")
	leftovers, err := filepath.Glob(filepath.Join(f.dir, "files", "h1", ".iklim-*"))
	require.NoError(t, err)
	require.Empty(t, leftovers, "no temp file left beside the files")

	f.requireRecordsWhole(id, "h1")
	afters, err := filepath.Glob(filepath.Join(f.dir, "backups", "h1", "*", id, "changes", "*.after.json"))
	require.NoError(t, err)
	require.Len(t, afters, 4)
	for _, p := range afters {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		var a struct {
			Outcome string `json:"outcome"`
			Files   []struct {
				SHA256 string `json:"sha256"`
			} `json:"files"`
		}
		require.NoError(t, json.Unmarshal(b, &a), p)
		require.Equal(t, "applied", a.Outcome, p)
		require.Len(t, a.Files, 1, p)
		require.NotEmpty(t, a.Files[0].SHA256, "the state after is recorded: %s", p)
	}

	rb := f.rollback(id, "")
	for _, h := range rb.Hosts {
		require.Zero(t, h.Failed+h.Unreachable, "%s: %s", h.Host, h.Error)
	}
	require.Equal(t, before, f.hashes("a.conf", "l.conf", "m.conf", "new.conf"), "rollback restores every file byte-exact")
}

// slowApply is a module whose apply script marks that it started, waits,
// then writes its file only while its output still goes somewhere.
type slowApply struct {
	path, marker string
	applied      bool
}

func (m *slowApply) Check(context.Context, modules.Conn) (*modules.Change, error) {
	return &modules.Change{Summary: "slow " + m.path, Files: []string{m.path}}, nil
}

func (m *slowApply) Apply(context.Context, modules.Conn, *modules.Change) error {
	panic("slowApply: Apply must not run: the recorder runs its script")
}

func (m *slowApply) ApplyScript(*modules.Change) *modules.ScriptApply {
	return &modules.ScriptApply{Script: ": > " + remote.Quote(m.marker) + "\nsleep 3\necho alive || exit 1\nprintf 'applied\\n' > " + remote.Quote(m.path) + "\n"}
}

func (m *slowApply) ScriptApplied() { m.applied = true }

// TestScriptApplyConnectionDropsBetweenRecordAndApply: the connection drops
// after the change record was written in the one command that records and
// applies, before the apply: the host is unreachable, the file untouched,
// the record whole, and rollback restores it byte-exact.
func TestScriptApplyConnectionDropsBetweenRecordAndApply(t *testing.T) {
	f := newFaultHosts(t, []string{"ok1", "victim"}, transport.SSHOptions{})
	for _, h := range f.inv.Hosts {
		f.writeFile(h.Name, "a.conf", "orig "+h.Name+"\n")
	}
	before := f.hashes("a.conf")
	marker := func(host string) string { return f.file(host, "started") }
	pb := &runner.Playbook{File: "fault.hcl", Plays: []runner.Play{{Name: "fault", Hosts: "all", Steps: []runner.Step{
		step("a", func(h *inventories.Host) modules.Module {
			return &slowApply{path: f.file(h.Name, "a.conf"), marker: marker(h.Name)}
		}),
	}}}}
	dropped := f.dropWhenMarked("victim", marker("victim"))
	id, recap, evs, err := f.play(pb, nil)
	require.NoError(t, err)
	require.NoError(t, <-dropped)

	ev, ok := eventFor(evs, "victim", "a")
	require.True(t, ok)
	require.Equal(t, runner.StatusUnreachable, ev.Status, ev.Error)
	ev, _ = eventFor(evs, "ok1", "a")
	require.Equal(t, runner.StatusChanged, ev.Status, ev.Error)
	for _, h := range recap.Hosts {
		if h.Host == "victim" {
			require.Equal(t, 1, h.Unreachable)
		}
	}
	// The script, cut off, never writes (its output is gone).
	time.Sleep(4 * time.Second)
	require.Equal(t, before["victim/a.conf"], recordtest.FileState(t, f.file("victim", "a.conf")), "recorded, never applied")

	f.requireRecordsWhole(id, "ok1", "victim")
	recs, err := filepath.Glob(filepath.Join(f.dir, "backups", "victim", "*", id, "changes", "*.json"))
	require.NoError(t, err)
	var changes []string
	for _, r := range recs {
		if !strings.HasSuffix(r, ".after.json") {
			changes = append(changes, r)
		}
	}
	require.Len(t, changes, 1, "the change was recorded before the apply began")

	rb := f.rollback(id, "")
	for _, h := range rb.Hosts {
		require.Zero(t, h.Failed+h.Unreachable, "%s: %s", h.Host, h.Error)
	}
	require.Equal(t, before, f.hashes("a.conf"), "rollback restores every file byte-exact")
}

// TestPrefetchChecksNextStepsInTheApplysRoundTrip: with check-ahead, the
// round trip that applies a change also answers the probes of the steps
// after it, so that a run where each step changes takes one command per
// change, not two (a check and an apply). The steps see the host as each
// change left it: the line edits the file the copy before it wrote. A
// second run changes nothing, and rollback restores every file.
func TestPrefetchChecksNextStepsInTheApplysRoundTrip(t *testing.T) {
	f := newFaultHosts(t, []string{"h1"}, transport.SSHOptions{})
	for _, n := range []string{"a.conf", "b.conf", "c.conf"} {
		f.writeFile("h1", n, "old\n")
	}
	before := f.hashes("a.conf", "b.conf", "c.conf", "d.conf")
	content := func(s string) *string { return &s }
	pb := &runner.Playbook{File: "prefetch.hcl", Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
		step("a", func(h *inventories.Host) modules.Module {
			return &files.Copy{Dest: f.file(h.Name, "a.conf"), Content: content("a = 1\n")}
		}),
		step("b", func(h *inventories.Host) modules.Module {
			return &files.Copy{Dest: f.file(h.Name, "b.conf"), Content: content("b = 1\n")}
		}),
		step("line", func(h *inventories.Host) modules.Module {
			return &files.Line{Path: f.file(h.Name, "a.conf"), Line: "x = 1"}
		}),
		step("c", func(h *inventories.Host) modules.Module {
			return &files.Copy{Dest: f.file(h.Name, "c.conf"), Content: content("c = 1\n")}
		}),
		step("d", func(h *inventories.Host) modules.Module {
			return &files.Copy{Dest: f.file(h.Name, "d.conf"), Content: content("d = 1\n")}
		}),
	}}}}
	run := func() (string, map[string]runner.Status, int) {
		cc := &countingConnector{Connector: f.conn, n: map[string]int{}}
		id, got := f.runRecorded(pb, cc)
		return id, got, cc.count("h1")
	}
	ch, ok := runner.StatusChanged, runner.StatusOK

	id, got, n := run()
	require.Equal(t, map[string]runner.Status{"a": ch, "b": ch, "line": ch, "c": ch, "d": ch}, got)
	// A batch of the five checks; the five applies in one command, since
	// the checks of b, line and c read only what a's apply writes or
	// leaves alone, made again on that state as told (known.go), and d's
	// file was not there (chain.go); the run's end. Without told checks it
	// was 6 (an apply per change, each answering the checks of the steps
	// after it); without those answers, 11.
	require.Equal(t, 3, n, "commands on the host")
	b, err := os.ReadFile(f.file("h1", "a.conf"))
	require.NoError(t, err)
	require.Equal(t, "a = 1\nx = 1\n", string(b), "the line saw the copy's content")
	rb := f.rollback(id, "")
	require.Zero(t, rb.Hosts[0].Failed+rb.Hosts[0].Unreachable, rb.Hosts[0].Error)
	require.Equal(t, before, f.hashes("a.conf", "b.conf", "c.conf", "d.conf"), "rollback restores every file")

	// A deploy: the copy of a and the line change on every run. A batch of
	// five checks; a's apply with the line's (b between them found
	// unchanged on what a writes, chain.go), answering the rest, which take
	// no round trip; the run's end.
	run()
	_, got, n = run()
	require.Equal(t, map[string]runner.Status{"a": ch, "b": ok, "line": ch, "c": ok, "d": ok}, got)
	require.Equal(t, 3, n, "commands on the host")
}

// TestPrefetchAsksAPathOnceOnAFirstRun: on a first run, where step after
// step changes, an apply asks the probes of the steps after it only past
// the ones whose checks found a change: a stat after three changes reads
// its file after the last of them, not after each (here the three go in
// one command, chain.go). When the guess is wrong, as when the next step
// finds nothing left to do, the stat still sees the host as it is.
func TestPrefetchAsksAPathOnceOnAFirstRun(t *testing.T) {
	f := newFaultHosts(t, []string{"h1"}, transport.SSHOptions{})
	f.writeFile("h1", "x.conf", "x = 1\n")
	content := func(s string) *string { return &s }
	copyStep := func(name, file, text string) runner.Step {
		return step(name, func(h *inventories.Host) modules.Module {
			return &files.Copy{Dest: f.file(h.Name, file), Content: content(text)}
		})
	}
	var seen *files.Stat
	stat := step("stat", func(h *inventories.Host) modules.Module {
		seen = &files.Stat{Path: f.file(h.Name, "x.conf")}
		return seen
	})
	run := func(steps ...runner.Step) (map[string]runner.Status, []string) {
		pb := &runner.Playbook{File: "first.hcl", Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: steps}}}
		cc := &countingConnector{Connector: f.conn, n: map[string]int{}}
		_, got := f.runRecorded(pb, cc)
		return got, cc.scripts
	}
	// readsAfterApply counts the applies whose probes after the change
	// read x.conf.
	readsAfterApply := func(scripts []string) int {
		n := 0
		for _, s := range scripts {
			if _, then, ok := strings.Cut(s, "IKLIM-THEN "); ok && strings.Contains(then, f.file("h1", "x.conf")) {
				n++
			}
		}
		return n
	}
	ch, ok := runner.StatusChanged, runner.StatusOK

	got, scripts := run(copyStep("a", "a.conf", "a\n"), copyStep("b", "b.conf", "b\n"), copyStep("c", "c.conf", "c\n"), stat)
	require.Equal(t, map[string]runner.Status{"a": ch, "b": ch, "c": ch, "stat": ok}, got)
	// A batch of the four checks, the three applies in one command
	// (chain.go), the run's end: the stat took its answers from that
	// command.
	require.Len(t, scripts, 3, "commands on the host")
	require.Equal(t, 1, readsAfterApply(scripts), "x.conf read after c's apply, not after each of the three")
	require.Equal(t, remote.SHA256String("x = 1\n"), seen.Output()["sha256"])

	// d writes what e then finds already there, though e's check on the
	// host as it was found a change: the stat sees x.conf as it is now.
	f.writeFile("h1", "x.conf", "x = 2\n")
	got, _ = run(copyStep("d", "e.conf", "e\n"), copyStep("e", "e.conf", "e\n"), stat)
	require.Equal(t, map[string]runner.Status{"d": ch, "e": ok, "stat": ok}, got)
	require.Equal(t, remote.SHA256String("x = 2\n"), seen.Output()["sha256"], "the stat read the file as it is now")
}

// TestGatedCheckAfterPrefetchWaitsForItsTurnOffTheHost: the bench's
// steady deploy (bench/workload-steady.hcl), where a copy and a line edit
// the same file on every run. The read-only commands after the line,
// behind a gate, open no session while a step before them may still change
// the host: one opened for them to wait in was wasted whenever the line
// changed it. Each runs once per run, in its turn.
func TestGatedCheckAfterPrefetchWaitsForItsTurnOffTheHost(t *testing.T) {
	f := newFaultHosts(t, []string{"h1"}, transport.SSHOptions{}, sshtest.CountSessions())
	srv := f.servers["h1"]
	d := f.file("h1", "d")
	conf, log := d+"/app/app.conf", f.file("h1", "ran.log")
	rev := 0
	ran := func(name string) string { return "echo " + name + " >> " + log }
	pb := &runner.Playbook{File: "gate.hcl", Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
		step("kernel", func(h *inventories.Host) modules.Module {
			return &commands.Shell{Cmd: ran("kernel"), Changed: ptr(false)}
		}),
		step("app", func(h *inventories.Host) modules.Module {
			return &files.File{Path: d + "/app", State: "directory", Mode: "0755"}
		}),
		step("conf", func(h *inventories.Host) modules.Module {
			return &files.Copy{Dest: conf, Content: ptr(fmt.Sprintf("rev = %d\n", rev)), Mode: "0644"}
		}),
		step("secret", func(h *inventories.Host) modules.Module {
			return &files.Copy{Dest: d + "/app/secret.env", Content: ptr("TOKEN=x\n"), Mode: "0600"}
		}),
		step("line", func(h *inventories.Host) modules.Module {
			return &files.Line{Path: conf, Line: "x = 1", Create: true}
		}),
		step("data", func(h *inventories.Host) modules.Module {
			return &files.File{Path: d + "/data", State: "directory", Mode: "0750"}
		}),
		step("stat", func(h *inventories.Host) modules.Module { return &files.Stat{Path: conf} }),
		step("present", func(h *inventories.Host) modules.Module {
			return &commands.Shell{Cmd: "grep -q 'x = 1' " + conf + " && " + ran("present"), Changed: ptr(false)}
		}),
		step("link", func(h *inventories.Host) modules.Module {
			return &files.File{Path: d + "/current", State: "link", Src: d + "/app"}
		}),
		step("noop", func(h *inventories.Host) modules.Module {
			return &commands.Shell{Cmd: ran("noop"), Changed: ptr(false)}
		}),
	}}}}
	run := func() (map[string]runner.Status, int) {
		rev++
		before := srv.SettledSessions(t)
		_, got := f.runRecorded(pb, f.conn)
		return got, srv.SettledSessions(t) - before
	}
	ch, ok := runner.StatusChanged, runner.StatusOK

	run()
	require.NoError(t, os.Remove(log))
	got, n := run()
	require.Equal(t, map[string]runner.Status{"kernel": ok, "app": ok, "conf": ch, "secret": ok, "line": ch,
		"data": ok, "stat": ok, "present": ok, "link": ok, "noop": ok}, got)
	// The checks of all ten, cut at conf; conf's apply with the line's, its
	// check made again on the app.conf conf writes, with secret between
	// them found unchanged so (chain.go), answering the checks of data and
	// stat; present, link and noop, with the run's end (finish.go).
	// Without the wait, the round of present, link and noop could open a
	// session behind the line and be cut by its change.
	require.Equal(t, 3, n, "sessions on the host")
	b, err := os.ReadFile(log)
	require.NoError(t, err)
	require.Equal(t, "kernel\npresent\nnoop\n", string(b), "each command ran once, in its turn")
}

// runRecorded runs pb on the one host of f through connector, with the
// backup recorder, requires that it did not fail, and returns the run's id
// and each step's status.
func (f *faultHosts) runRecorded(pb *runner.Playbook, connector runner.Connector) (string, map[string]runner.Status) {
	t := f.t
	t.Helper()
	id, err := backup.ClaimRunID(time.Now())
	require.NoError(t, err)
	info := runner.RunInfo{ID: id, User: "test@" + pb.File, Started: time.Now().UTC(), Playbook: pb.File}
	got := map[string]runner.Status{}
	recap, err := runner.Run(context.Background(), pb, runner.Options{
		Inventory: f.inv, Connector: connector, Run: info, Control: f.control,
		Recorder: backup.NewRecorder(backup.RecorderOptions{Info: info}),
		Events: func(ev runner.Event) {
			if ev.Type == runner.EventHostResult {
				got[ev.Step] = ev.Status
			}
		},
	})
	require.NoError(t, err)
	require.Zero(t, recap.Hosts[0].Failed, recap.Hosts[0].Error)
	return id, got
}

// TestScriptApplyRunsUnderTheSessionUmask: a recorded apply runs under the
// session's umask, as the same apply alone does, while the records stay
// private: a directory's missing parents are made as a plain mkdir -p on
// the host makes them, not 0700 as the record's own umask would.
func TestScriptApplyRunsUnderTheSessionUmask(t *testing.T) {
	f := newFaultHosts(t, []string{"h1"}, transport.SSHOptions{})
	mode := func(p string) os.FileMode {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		return fi.Mode().Perm()
	}
	h, _ := f.inv.Host("h1")
	conn, err := f.conn.Connect(context.Background(), h)
	require.NoError(t, err)
	plain := f.file("h1", "plain/sub")
	res, err := conn.Run(context.Background(), "mkdir -p -- "+remote.Quote(plain))
	require.NoError(t, err)
	require.Zero(t, res.ExitCode, res.Stderr)
	want := mode(filepath.Dir(plain))
	require.NotEqual(t, os.FileMode(0o700), want, "the session's umask is not the records' 077")

	dir := f.file("h1", "made/app")
	id, got := f.runRecorded(&runner.Playbook{File: "umask.hcl", Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
		step("dir", func(h *inventories.Host) modules.Module {
			return &files.File{Path: dir, State: "directory", Mode: "0750"}
		}),
	}}}}, f.conn)
	require.Equal(t, map[string]runner.Status{"dir": runner.StatusChanged}, got)
	require.Equal(t, want, mode(filepath.Dir(dir)), "the parent as mkdir -p makes it")
	require.Equal(t, os.FileMode(0o750), mode(dir))
	runDir := recordtest.RunDirs(t, h.BackupRoot, id)[0]
	require.NoError(t, filepath.Walk(runDir, func(p string, fi os.FileInfo, err error) error {
		require.NoError(t, err)
		require.Zero(t, fi.Mode().Perm()&0o077, "%s is private", p)
		return nil
	}))
}
