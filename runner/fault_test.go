package runner_test

// Fault matrix, transport cases against real OpenSSH sshd (internal/sshtest):
// a host that stops answering (its sshd processes frozen with SIGSTOP), a
// connection that drops between a change's record and its apply (the sshd
// processes of that connection killed), and a server whose MaxSessions is 1.
// The CLI and lab cases are in cmd/iklim/fault_test.go and
// cmd/iklim/fault_lab_test.go; SIGKILL of iklim itself mid-run is
// runner/backup's TestSIGKILLMidRunThenRollback.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iklimco/iklim/internal/recordtest"
	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/stock"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/backup"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKeepaliveDefaultBoundAtMostAMinute(t *testing.T) {
	def := transport.SSHOptions{}
	require.Positive(t, def.UnreachableWithin(), "keepalives are on by default")
	require.LessOrEqual(t, def.UnreachableWithin(), time.Minute, "a vanished host must be reported within a minute by default")
	require.Equal(t, (transport.DefaultKeepaliveCount+1)*transport.DefaultKeepaliveInterval, def.UnreachableWithin())

	short := transport.SSHOptions{KeepaliveInterval: 500 * time.Millisecond, KeepaliveCount: 2}
	require.Equal(t, 1500*time.Millisecond, short.UnreachableWithin())
	require.Zero(t, transport.SSHOptions{KeepaliveInterval: -1}.UnreachableWithin(), "negative turns keepalives off")
	require.Equal(t, 30*time.Minute, runner.DefaultStepTimeout)
}

// putFile is the test's workload module: it writes content to path over
// the host's real Conn and names path in its Change, so the runner records
// and snapshots it before Apply (rollback restores it from that snapshot).
type putFile struct {
	path, content string
}

func (m *putFile) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	var buf bytes.Buffer
	if err := c.Download(ctx, m.path, &buf); err == nil && buf.String() == m.content {
		return nil, nil
	}
	return &modules.Change{Summary: "put " + m.path, Files: []string{m.path}}, nil
}

func (m *putFile) Apply(ctx context.Context, c modules.Conn, _ *modules.Change) error {
	return c.Upload(ctx, m.path, strings.NewReader(m.content), 0o644)
}

// shellStep runs cmd; it changes nothing that needs recording.
type shellStep struct{ cmd string }

func (m *shellStep) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	res, err := c.Run(ctx, m.cmd)
	if err != nil {
		return nil, err
	}
	return nil, res.Err(m.cmd)
}

func (m *shellStep) Apply(context.Context, modules.Conn, *modules.Change) error { return nil }

func step(name string, build func(h *inventories.Host) modules.Module) runner.Step {
	return runner.Step{Name: name, Module: "fault_" + name, Source: "fault_test.go:" + name,
		Build: func(sc *runner.StepContext) (modules.Module, error) { return build(sc.Host), nil }}
}

// faultHosts is a test setup: hosts on their own sshd servers (so that one
// host's sshd can be frozen or killed alone), files in a directory the
// login user may write, backups under it, and the control machine's state.
type faultHosts struct {
	t       *testing.T
	dir     string
	inv     *inventories.Inventory
	servers map[string]*sshtest.Server
	control *inventories.Host
	conn    *transport.SSHConnector
	onEvent func(runner.Event) // sees every event as it is emitted
	via     runner.Connector   // play's, when set, instead of conn
}

func newFaultHosts(t *testing.T, names []string, opts transport.SSHOptions, sshd ...sshtest.Option) *faultHosts {
	t.Helper()
	dir, err := os.MkdirTemp("", "iklim-fault-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o777))
	t.Setenv("IKLIM_STATE_DIR", filepath.Join(dir, "state"))
	f := &faultHosts{t: t, dir: dir, inv: inventories.New(), servers: map[string]*sshtest.Server{},
		control: &inventories.Host{Name: "localhost", Address: "localhost", Local: true, BackupRoot: filepath.Join(dir, "control")}}
	for i, name := range names {
		srv := sshtest.Start(t, sshd...)
		h := srv.Host(name, sshtest.HostAddr(i))
		h.BackupRoot = filepath.Join(dir, "backups", name)
		require.NoError(t, os.MkdirAll(filepath.Join(dir, "files", name), 0o777))
		require.NoError(t, os.Chmod(filepath.Join(dir, "files", name), 0o777))
		require.NoError(t, f.inv.Add(h))
		f.servers[name] = srv
	}
	cfg := filepath.Join(dir, "ssh_config")
	require.NoError(t, os.WriteFile(cfg, nil, 0o600))
	opts.SSHConfigFile = cfg
	f.conn = transport.NewSSHConnector(opts)
	t.Cleanup(func() { _ = f.conn.Close() })
	return f
}

func (f *faultHosts) file(host, name string) string { return filepath.Join(f.dir, "files", host, name) }

// writeFile puts a file on host owned by the login user.
func (f *faultHosts) writeFile(host, name, content string) {
	f.t.Helper()
	recordtest.WriteUserFile(f.t, f.file(host, name), content)
}

// hashes is sha256, mode and owner of every file the test watches, or
// "absent".
func (f *faultHosts) hashes(names ...string) map[string]string {
	out := map[string]string{}
	for _, h := range f.inv.Hosts {
		for _, n := range names {
			out[h.Name+"/"+n] = recordtest.FileState(f.t, f.file(h.Name, n))
		}
	}
	return out
}

// play runs pb recorded, as `iklim play` does, and returns the run id, the
// recap, every event and the run error.
func (f *faultHosts) play(pb *runner.Playbook, rec func(runner.Recorder) runner.Recorder) (string, *runner.Recap, []runner.Event, error) {
	f.t.Helper()
	id, err := backup.ClaimRunID(time.Now())
	require.NoError(f.t, err)
	info := runner.RunInfo{ID: id, User: "fault@test", Started: time.Now().UTC(), Playbook: pb.File}
	var r runner.Recorder = backup.NewRecorder(backup.RecorderOptions{Info: info})
	if rec != nil {
		r = rec(r)
	}
	var connector runner.Connector = f.conn
	if f.via != nil {
		connector = f.via
	}
	var mu sync.Mutex
	var events []runner.Event
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	recap, err := runner.Run(ctx, pb, runner.Options{
		Inventory: f.inv, Connector: connector, Recorder: r, Run: info, Control: f.control,
		Events: func(ev runner.Event) {
			if f.onEvent != nil {
				f.onEvent(ev)
			}
			mu.Lock()
			events = append(events, ev)
			mu.Unlock()
		},
	})
	require.NotNil(f.t, recap, "run error: %v", err)
	require.NoError(f.t, backup.WriteJournal(info, recap, backup.WithRunError(err)))
	return id, recap, events, err
}

// rollback runs `iklim rollback --run id` over the hosts in limit (all
// when empty) on a fresh connector.
func (f *faultHosts) rollback(id, limit string) *runner.Recap {
	f.t.Helper()
	rbID, err := backup.ClaimRunID(time.Now())
	require.NoError(f.t, err)
	info := runner.RunInfo{ID: rbID, User: "fault@test", Started: time.Now().UTC(), Playbook: "rollback"}
	conn := transport.NewSSHConnector(transport.SSHOptions{SSHConfigFile: filepath.Join(f.dir, "ssh_config")})
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	recap, err := runner.Run(ctx, backup.RollbackPlaybook(id, false), runner.Options{
		Inventory: f.inv, Connector: conn, Limit: limit, Run: info, Control: f.control,
		Recorder: backup.NewRecorder(backup.RecorderOptions{Info: info}),
		Modules:  stock.Registry(), // for the changes a module undoes (the file module's)
	})
	require.NoError(f.t, err)
	return recap
}

// requireRecordsWhole checks every record of run id under the backup roots:
// each change record and run.json parses, no temp file is left, and the
// run's directory exists for every host in want.
func (f *faultHosts) requireRecordsWhole(id string, want ...string) {
	f.t.Helper()
	for _, host := range want {
		dirs := recordtest.RunDirs(f.t, filepath.Join(f.dir, "backups", host), id)
		require.Len(f.t, dirs, 1, "%s: one directory for run %s", host, id)
		recordtest.RequireRunDirWhole(f.t, dirs[0])
	}
}

// dropWhenMarked kills host's sshd connections once the file marker
// appears (an apply script's first act), and tells how that went.
func (f *faultHosts) dropWhenMarked(host, marker string) <-chan error {
	dropped := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			if _, err := os.Stat(marker); err == nil {
				_, err := signalSSHD(f.servers[host], syscall.SIGKILL)
				dropped <- err
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		dropped <- os.ErrDeadlineExceeded
	}()
	return dropped
}

// sshdProcs returns the connection processes of srv, an error if none.
func sshdProcs(srv *sshtest.Server) ([]int, error) {
	out, err := srv.Procs()
	if err == nil && len(out) == 0 {
		err = fmt.Errorf("sshd %d has no connection processes", srv.PID())
	}
	return out, err
}

// signalAll sends sig to pids (processes this test started, through its
// own sshd) and, for SIGKILL, waits until they are gone.
func signalAll(pids []int, sig syscall.Signal) error {
	for _, p := range pids {
		_ = syscall.Kill(p, sig)
	}
	if sig != syscall.SIGKILL {
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range pids {
		for {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
			if err != nil || bytes.Contains(b[bytes.LastIndexByte(b, ')'):], []byte(") Z")) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("pid %d still alive 10s after SIGKILL", p)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// signalSSHD sends sig to every connection process of srv.
func signalSSHD(srv *sshtest.Server, sig syscall.Signal) ([]int, error) {
	pids, err := sshdProcs(srv)
	if err != nil {
		return nil, err
	}
	return pids, signalAll(pids, sig)
}

func eventFor(evs []runner.Event, host, step string) (runner.Event, bool) {
	for _, ev := range evs {
		if ev.Type == runner.EventHostResult && ev.Host == host && ev.Step == step {
			return ev, true
		}
	}
	return runner.Event{}, false
}

// TestFaultHostStopsAnsweringMidStep: a host whose sshd stops answering in
// the middle of a step (its processes frozen: the TCP connection stays up,
// nothing replies, as with a vanished network) is reported unreachable
// within the keepalive bound, naming host and step; the other host finishes;
// the records are whole and rollback restores both hosts byte-exact.
func TestFaultHostStopsAnsweringMidStep(t *testing.T) {
	ka := transport.SSHOptions{KeepaliveInterval: 500 * time.Millisecond, KeepaliveCount: 2}
	f := newFaultHosts(t, []string{"ok1", "frozen"}, ka)
	for _, h := range f.inv.Hosts {
		f.writeFile(h.Name, "a.conf", "orig "+h.Name+"\n")
	}
	before := f.hashes("a.conf", "b.conf")

	pb := &runner.Playbook{File: "fault.hcl", Plays: []runner.Play{{Name: "fault", Hosts: "all", Steps: []runner.Step{
		step("a", func(h *inventories.Host) modules.Module {
			return &putFile{path: f.file(h.Name, "a.conf"), content: "new " + h.Name + "\n"}
		}),
		step("sleep", func(*inventories.Host) modules.Module { return &shellStep{cmd: "sleep 4"} }),
		step("b", func(h *inventories.Host) modules.Module {
			return &putFile{path: f.file(h.Name, "b.conf"), content: "b\n"}
		}),
	}}}}

	type freeze struct {
		at   time.Time
		pids []int
		err  error
	}
	froze := make(chan freeze, 1)
	sleeping := make(chan struct{})
	var once sync.Once
	f.onEvent = func(ev runner.Event) {
		if ev.Type == runner.EventStepStart && ev.Host == "frozen" && ev.Step == "sleep" {
			once.Do(func() { close(sleeping) })
		}
	}
	go func() {
		// Freeze the host inside its sleep step.
		select {
		case <-sleeping:
		case <-time.After(time.Minute):
			froze <- freeze{err: errors.New("the sleep step never started on the host")}
			return
		}
		time.Sleep(500 * time.Millisecond)
		pids, err := signalSSHD(f.servers["frozen"], syscall.SIGSTOP)
		froze <- freeze{at: time.Now(), pids: pids, err: err}
	}()
	start := time.Now()
	id, recap, evs, err := f.play(pb, nil)
	require.NoError(t, err)
	t.Logf("run took %s", time.Since(start).Round(time.Millisecond))
	fz := <-froze
	t.Cleanup(func() { _ = signalAll(fz.pids, syscall.SIGCONT) })
	require.NoError(t, fz.err)
	frozenAt := fz.at

	started := false
	for _, ev := range evs {
		if ev.Type == runner.EventStepStart && ev.Host == "frozen" && ev.Step == "sleep" {
			started = true
			require.Equal(t, runner.DefaultStepTimeout.String(), ev.Extra["timeout"], "the step's deadline is shown when it starts")
		}
	}
	require.True(t, started, "no step_start for frozen/sleep")
	ev, ok := eventFor(evs, "frozen", "sleep")
	require.True(t, ok, "no result for frozen/sleep")
	require.Equal(t, runner.StatusUnreachable, ev.Status, ev.Error)
	require.Contains(t, ev.Error, "frozen")
	require.Contains(t, ev.Error, "keepalive")
	noticed := ev.Time.Sub(frozenAt)
	t.Logf("frozen host reported unreachable %s after it stopped answering: %s", noticed.Round(time.Millisecond), ev.Error)
	// The slack is for a loaded machine; without keepalives the host would
	// be waited for until the step's deadline.
	require.LessOrEqual(t, noticed, ka.UnreachableWithin()+15*time.Second)

	rec := map[string]runner.HostRecap{}
	for _, h := range recap.Hosts {
		rec[h.Host] = h
	}
	require.Equal(t, 1, rec["frozen"].Unreachable)
	require.Zero(t, rec["frozen"].Failed, "unreachable is not failed (exit 4, not 1)")
	require.Equal(t, 2, rec["ok1"].Changed, "the other host finishes its work")
	require.Zero(t, rec["ok1"].Failed+rec["ok1"].Unreachable)

	// Thaw: the frozen processes find their connection closed and end.
	require.NoError(t, signalAll(fz.pids, syscall.SIGCONT))
	f.requireRecordsWhole(id, "ok1", "frozen")
	rb := f.rollback(id, "")
	for _, h := range rb.Hosts {
		require.Zero(t, h.Failed+h.Unreachable, "%s: %s", h.Host, h.Error)
	}
	require.Equal(t, before, f.hashes("a.conf", "b.conf"), "rollback restores every file byte-exact")
}

// dropAfterBefore is a Recorder that, right after the change record of a
// step on host victim is durably written, kills the sshd processes of that
// host's connection: the connection drops between record and apply.
type dropAfterBefore struct {
	runner.Recorder
	victim  string
	srv     *sshtest.Server
	dropped bool
}

func (d *dropAfterBefore) Before(ctx context.Context, conn modules.Conn, h *inventories.Host, rec *runner.ChangeRecord) error {
	if err := d.Recorder.Before(ctx, conn, h, rec); err != nil {
		return err
	}
	if h.Name == d.victim && !d.dropped {
		d.dropped = true
		if _, err := signalSSHD(d.srv, syscall.SIGKILL); err != nil {
			return fmt.Errorf("test: drop the connection: %w", err)
		}
	}
	return nil
}

// TestFaultConnectionDropsBetweenRecordAndApply: the record of the change
// is on the host, the change is not applied; the host is unreachable (not
// failed), its record stays whole and is finished on a new connection, the
// other host completes, and rollback restores every file byte-exact.
func TestFaultConnectionDropsBetweenRecordAndApply(t *testing.T) {
	f := newFaultHosts(t, []string{"ok1", "victim"}, transport.SSHOptions{})
	for _, h := range f.inv.Hosts {
		f.writeFile(h.Name, "a.conf", "orig "+h.Name+"\n")
	}
	before := f.hashes("a.conf", "b.conf")
	pb := &runner.Playbook{File: "fault.hcl", Plays: []runner.Play{{Name: "fault", Hosts: "all", Steps: []runner.Step{
		step("a", func(h *inventories.Host) modules.Module {
			return &putFile{path: f.file(h.Name, "a.conf"), content: "new " + h.Name + "\n"}
		}),
		step("b", func(h *inventories.Host) modules.Module {
			return &putFile{path: f.file(h.Name, "b.conf"), content: "b\n"}
		}),
	}}}}
	var drop *dropAfterBefore
	start := time.Now()
	id, recap, evs, err := f.play(pb, func(r runner.Recorder) runner.Recorder {
		drop = &dropAfterBefore{Recorder: r, victim: "victim", srv: f.servers["victim"]}
		return drop
	})
	require.NoError(t, err)
	t.Logf("run took %s", time.Since(start).Round(time.Millisecond))
	require.True(t, drop.dropped)

	ev, ok := eventFor(evs, "victim", "a")
	require.True(t, ok)
	require.Equal(t, runner.StatusUnreachable, ev.Status, ev.Error)
	require.Contains(t, ev.Error, "victim")
	_, ranB := eventFor(evs, "victim", "b")
	require.False(t, ranB, "an unreachable host takes no further step")
	ev, _ = eventFor(evs, "ok1", "b")
	require.Equal(t, runner.StatusChanged, ev.Status)
	for _, h := range recap.Hosts {
		switch h.Host {
		case "victim":
			require.Equal(t, 1, h.Unreachable)
			require.Zero(t, h.Failed)
		default:
			require.Zero(t, h.Failed+h.Unreachable, h.Error)
		}
	}
	require.Equal(t, before["victim/a.conf"], recordtest.FileState(t, f.file("victim", "a.conf")), "the change was recorded, never applied")

	f.requireRecordsWhole(id, "ok1", "victim")
	rb := f.rollback(id, "")
	for _, h := range rb.Hosts {
		require.Zero(t, h.Failed+h.Unreachable, "%s: %s", h.Host, h.Error)
	}
	require.Equal(t, before, f.hashes("a.conf", "b.conf"), "rollback restores every file byte-exact")
}

// TestFaultServerMaxSessionsOne: a busy host's sshd allows one session per
// connection (MaxSessions 1) while iklim assumes 10. "open failed" is
// backpressure: concurrent commands and transfers on one connection all
// succeed, in turn, and an idle sftp session makes room for commands
// instead of blocking them until the refusal limit.
func TestFaultServerMaxSessionsOne(t *testing.T) {
	f := newFaultHosts(t, []string{"busy"}, transport.SSHOptions{}, sshtest.MaxSessions(1))
	h, _ := f.inv.Host("busy")
	conn, err := f.conn.Connect(context.Background(), h)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	start := time.Now()
	// sftp takes the only session and keeps it open.
	p := f.file("busy", "x")
	require.NoError(t, conn.Upload(ctx, p, strings.NewReader("x\n"), 0o644))
	res, err := conn.Run(ctx, "cat "+p)
	require.NoError(t, err, "a command after a transfer must not wait for the refusal limit")
	require.Equal(t, "x\n", res.Stdout)
	require.Less(t, time.Since(start), 40*time.Second, "waited for the refusal limit (a minute)")

	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, 2*n)
	outs := make([]string, n)
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			res, err := conn.Run(ctx, fmt.Sprintf("sleep 0.2; echo %d", i))
			errs[i], outs[i] = err, res.Stdout
		}()
		go func() {
			defer wg.Done()
			q := f.file("busy", fmt.Sprintf("f%d", i))
			if err := conn.Upload(ctx, q, strings.NewReader(q), 0o644); err != nil {
				errs[n+i] = err
				return
			}
			var buf bytes.Buffer
			errs[n+i] = conn.Download(ctx, q, &buf)
			if errs[n+i] == nil && buf.String() != q {
				errs[n+i] = fmt.Errorf("read back %q", buf.String())
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	for i, err := range errs {
		assert.NoError(t, err, i)
	}
	for i := range n {
		assert.Equal(t, fmt.Sprintf("%d\n", i), outs[i])
	}
	t.Logf("%d commands and %d transfers over one session slot in %s", n, 2*n, elapsed.Round(time.Millisecond))
	// The sleeps alone take n × 0.2s in turn; the refusal limit is a minute.
	require.Less(t, elapsed, 30*time.Second)
}
