package main

// Fault matrix through the real binary against real OpenSSH sshd servers
// (internal/sshtest), each host on a server of its own so that one host's
// sshd can be killed alone:
//
//	TestFaultCLISSHDKilledMidStep      case 3: a host's sshd dies mid-step
//	TestFaultCLIMaxSessionsOne         case 6: a busy sshd (MaxSessions 1)
//	TestFaultCLITwoPlaysOneLock        case 8: two `iklim play` at once, one lock
//	TestFaultCLIKeepaliveFlags         the keepalive defaults (≤ 60s) and flags
//
// The lab cases (a cut link, a healed partition, an unreachable lock host)
// are in fault_lab_test.go; a connection dropped between record and apply
// is runner's TestFaultConnectionDropsBetweenRecordAndApply; iklim killed
// with SIGKILL mid-run is runner/backup's TestSIGKILLMidRunThenRollback.
// Every case ends with `iklim rollback --run ID` and compares file hashes
// (content, mode, owner) with those taken before the run.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iklimco/iklim/internal/recordtest"
	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/stretchr/testify/require"
)

// faultCmdTimeout bounds one command: a hang fails the test, not the package.
const faultCmdTimeout = 3 * time.Minute

// faultEnv is one test's control machine: a state dir shared by every
// command of the test (the backup key and journals must outlive each run),
// and a directory the hosts' login user may write.
type faultEnv struct {
	t   *testing.T
	dir string
	env []string
}

func newFaultEnv(t *testing.T) *faultEnv {
	t.Helper()
	dir, err := os.MkdirTemp("", "iklim-fault-cli-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o777))
	state := filepath.Join(dir, "state")
	return &faultEnv{t: t, dir: dir, env: []string{"IKLIM_STATE_DIR=" + state,
		"IKLIM_CONTROL_BACKUP_ROOT=" + filepath.Join(state, "backups"), "NO_COLOR=1"}}
}

// faultHost is an inventory host on one test sshd.
type faultHost struct {
	name, addr string
	srv        *sshtest.Server
	become     bool
}

// inventory writes an inventory of hosts, each with its own backup root
// under the test dir, and makes each host's file directory.
func (f *faultEnv) inventory(hosts []faultHost) string {
	f.t.Helper()
	var b strings.Builder
	for _, h := range hosts {
		h.srv.AddKnownHost(h.addr)
		fmt.Fprintf(&b, "host %q {\n  address = %q\n  port = %d\n  user = %q\n  key = %q\n  known_hosts = %q\n  backup_root = %q\n  become = %t\n}\n",
			h.name, h.addr, h.srv.Port, h.srv.User, h.srv.KeyPath, h.srv.KnownHostsPath, filepath.Join(f.dir, "backups", h.name), h.become)
		fd := filepath.Join(f.dir, "files", h.name)
		require.NoError(f.t, os.MkdirAll(fd, 0o777))
		require.NoError(f.t, os.Chmod(fd, 0o777))
	}
	p := filepath.Join(f.dir, "inventory.hcl")
	require.NoError(f.t, os.WriteFile(p, []byte(b.String()), 0o644))
	return p
}

func (f *faultEnv) file(host, name string) string { return filepath.Join(f.dir, "files", host, name) }

// writeFile puts a file on a loopback host, owned by the login user.
func (f *faultEnv) writeFile(host, name, content string) {
	f.t.Helper()
	recordtest.WriteUserFile(f.t, f.file(host, name), content)
}

// hashes is sha256, mode and owner of each host's files names, or "absent".
func (f *faultEnv) hashes(hosts []string, names ...string) map[string]string {
	out := map[string]string{}
	for _, h := range hosts {
		for _, n := range names {
			out[h+"/"+n] = recordtest.FileState(f.t, f.file(h, n))
		}
	}
	return out
}

// cliRun is one running iklim process whose JSON events are read as they
// come.
type cliRun struct {
	t      *testing.T
	cmd    *exec.Cmd
	cancel context.CancelFunc
	start  time.Time
	events chan runner.Event

	mu             sync.Mutex
	stdout, stderr bytes.Buffer
	all            []runner.Event
	readDone       chan struct{}
	ended          time.Time // when stdout closed: the process ended
}

// start runs the binary with args; with --output json its events can be
// waited for.
func (f *faultEnv) start(args ...string) *cliRun {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), faultCmdTimeout)
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), f.env...)
	r := &cliRun{t: f.t, cmd: cmd, cancel: cancel, events: make(chan runner.Event, 10000), readDone: make(chan struct{})}
	out, err := cmd.StdoutPipe()
	require.NoError(f.t, err)
	cmd.Stderr = &lockedWriter{mu: &r.mu, w: &r.stderr}
	r.start = time.Now()
	require.NoError(f.t, cmd.Start())
	go func() {
		defer close(r.readDone)
		defer close(r.events)
		defer func() { r.mu.Lock(); r.ended = time.Now(); r.mu.Unlock() }()
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			r.mu.Lock()
			r.stdout.Write(sc.Bytes())
			r.stdout.WriteByte('\n')
			r.mu.Unlock()
			var ev runner.Event
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Type != "" {
				r.mu.Lock()
				r.all = append(r.all, ev)
				r.mu.Unlock()
				r.events <- ev
			}
		}
	}()
	return r
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// waitEvent returns the first event from now on that match accepts.
func (r *cliRun) waitEvent(match func(runner.Event) bool) runner.Event {
	r.t.Helper()
	for ev := range r.events {
		if match(ev) {
			return ev
		}
	}
	r.t.Fatalf("iklim ended without the awaited event\nstdout:\n%s\nstderr:\n%s", r.out(), r.errOut())
	return runner.Event{}
}

// wait waits for the process and returns its exit code.
func (r *cliRun) wait() int {
	r.t.Helper()
	<-r.readDone
	err := r.cmd.Wait()
	r.cancel()
	var exitErr *exec.ExitError
	code := 0
	if errors.As(err, &exitErr) {
		code = exitErr.ExitCode()
	} else {
		require.NoError(r.t, err)
	}
	require.Less(r.t, r.took(), faultCmdTimeout, "iklim %v did not end in time\nstdout:\n%s\nstderr:\n%s", r.cmd.Args[1:], r.out(), r.errOut())
	r.t.Logf("iklim %s: exit %d in %s", strings.Join(r.cmd.Args[1:], " "), code, r.took().Round(time.Millisecond))
	return code
}

// took is how long the process ran (so far, while it runs).
func (r *cliRun) took() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended.IsZero() {
		return time.Since(r.start)
	}
	return r.ended.Sub(r.start)
}

func (r *cliRun) out() string    { r.mu.Lock(); defer r.mu.Unlock(); return r.stdout.String() }
func (r *cliRun) errOut() string { r.mu.Lock(); defer r.mu.Unlock(); return r.stderr.String() }

// result is the host_result event of host's step, if any.
func (r *cliRun) result(host, step string) (runner.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.all {
		if ev.Type == runner.EventHostResult && ev.Host == host && ev.Step == step {
			return ev, true
		}
	}
	return runner.Event{}, false
}

// recap is the run's final recap by host.
func (r *cliRun) recap() map[string]runner.HostRecap {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]runner.HostRecap{}
	for _, ev := range r.all {
		if ev.Type == runner.EventRecap && ev.Recap != nil {
			for _, h := range ev.Recap.Hosts {
				out[h.Host] = h
			}
		}
	}
	return out
}

// runID is the id the run announced.
func (r *cliRun) runID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.all {
		if ev.Type == runner.EventRunStart {
			return ev.RunID
		}
	}
	if m := regexp.MustCompile(`(?m)^RUN (\S+)$`).FindStringSubmatch(r.stdout.String()); m != nil {
		return m[1]
	}
	r.t.Fatalf("no run id in:\n%s", r.stdout.String())
	return ""
}

// run runs the binary to its end.
func (f *faultEnv) run(args ...string) (*cliRun, int) {
	f.t.Helper()
	r := f.start(args...)
	for range r.events {
	}
	return r, r.wait()
}

// requireRecordsWhole checks the records of run id on each host: one run
// directory, every JSON file in it parses, no temp file is left.
func (f *faultEnv) requireRecordsWhole(id string, hosts ...string) {
	f.t.Helper()
	for _, host := range hosts {
		dirs := recordtest.RunDirs(f.t, filepath.Join(f.dir, "backups", host), id)
		require.Len(f.t, dirs, 1, "%s: one directory for run %s", host, id)
		recordtest.RequireRunDirWhole(f.t, dirs[0])
	}
}

// killAll SIGKILLs pids (the test's own sshd and what it started) and waits
// until they are gone or zombies.
func killAll(t *testing.T, pids []int) {
	t.Helper()
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	require.Eventually(t, func() bool {
		for _, p := range pids {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
			if err == nil && !bytes.Contains(b[bytes.LastIndexByte(b, ')'):], []byte(") Z")) {
				return false
			}
		}
		return true
	}, 30*time.Second, 10*time.Millisecond)
}

// restartSSHD starts sshd again with srv's config (same port and host key)
// after the test killed it, and stops it when the test ends.
func restartSSHD(t *testing.T, srv *sshtest.Server) {
	t.Helper()
	cmd := exec.Command(sshtest.SSHDPath, "-D", "-e", "-f", srv.ConfigPath)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	require.Eventually(t, func() bool {
		conn, err := net.DialTimeout("tcp", srv.Addr(), time.Second)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	}, 30*time.Second, 20*time.Millisecond, "restarted sshd: %s", &log)
}

func requireNoFailure(t *testing.T, recap map[string]runner.HostRecap, hosts ...string) {
	t.Helper()
	for _, h := range hosts {
		r, ok := recap[h]
		require.True(t, ok, "%s is not in the recap", h)
		require.Zero(t, r.Failed+r.Unreachable, "%s: %s", h, r.Error)
	}
}

// TestFaultCLISSHDKilledMidStep: the sshd of one host is killed (the
// listener and every connection process) while that host runs a step.
// iklim reports the host unreachable at once, naming it and the step, and
// exits 4; the other hosts finish; every record is whole. A rollback while
// the host is still down restores the others and exits 4; once its sshd is
// back, a rollback of that host restores it: every file byte-exact.
func TestFaultCLISSHDKilledMidStep(t *testing.T) {
	f := newFaultEnv(t)
	shared, victimSrv := sshtest.Start(t), sshtest.Start(t)
	hosts := []faultHost{
		{name: "web-1", addr: "127.0.1.1", srv: shared},
		{name: "web-2", addr: "127.0.1.2", srv: shared},
		{name: "victim", addr: "127.0.1.3", srv: victimSrv},
	}
	inv := f.inventory(hosts)
	names := []string{"web-1", "web-2", "victim"}
	for _, h := range names {
		f.writeFile(h, "a.conf", "orig "+h+"\n")
	}
	before := f.hashes(names, "a.conf", "b.conf")
	pb := writeFile(t, f.dir, "site.hcl", fmt.Sprintf(`
play "fault" {
  hosts = "all"
  step "a" {
    module  = "copy"
    dest    = "%[1]s/${host.name}/a.conf"
    content = "new ${host.name}\n"
    mode    = "0644"
  }
  step "sleep" {
    module = "shell"
    cmd    = "sleep 3"
  }
  step "b" {
    module  = "copy"
    dest    = "%[1]s/${host.name}/b.conf"
    content = "b\n"
  }
}
`, filepath.Join(f.dir, "files")))

	r := f.start("play", "-i", inv, "--output", "json", pb)
	r.waitEvent(func(ev runner.Event) bool {
		return ev.Type == runner.EventStepStart && ev.Host == "victim" && ev.Step == "sleep"
	})
	time.Sleep(time.Second) // inside the sleep
	pid := victimSrv.PID()
	killed := time.Now()
	procs, err := victimSrv.Procs()
	require.NoError(t, err)
	killAll(t, append([]int{pid}, procs...))
	for range r.events {
	}
	code := r.wait()
	require.Equal(t, 4, code, "a host unreachable, none failed\nstdout:\n%s\nstderr:\n%s", r.out(), r.errOut())

	ev, ok := r.result("victim", "sleep")
	require.True(t, ok, r.out())
	require.Equal(t, runner.StatusUnreachable, ev.Status, ev.Error)
	require.Contains(t, ev.Error, "victim")
	t.Logf("victim reported %s after its sshd was killed: %s", ev.Time.Sub(killed).Round(time.Millisecond), ev.Error)
	require.Less(t, ev.Time.Sub(killed), 5*time.Second, "a closed connection needs no keepalive to be noticed")
	_, ranB := r.result("victim", "b")
	require.False(t, ranB)
	recap := r.recap()
	requireNoFailure(t, recap, "web-1", "web-2")
	require.Equal(t, 3, recap["web-1"].Changed)
	require.Equal(t, 1, recap["victim"].Unreachable)
	require.Zero(t, recap["victim"].Failed)

	id := r.runID()
	f.requireRecordsWhole(id, names...)

	// Rollback while the host is down: the others come back, exit 4.
	rb, code := f.run("rollback", "--run", id, "-i", inv, "--output", "json")
	require.Equal(t, 4, code, "stdout:\n%s\nstderr:\n%s", rb.out(), rb.errOut())
	requireNoFailure(t, rb.recap(), "web-1", "web-2")
	require.Equal(t, 1, rb.recap()["victim"].Unreachable)
	for _, h := range []string{"web-1", "web-2"} {
		for _, n := range []string{"a.conf", "b.conf"} {
			require.Equal(t, before[h+"/"+n], recordtest.FileState(t, f.file(h, n)), "%s/%s", h, n)
		}
	}
	require.NotEqual(t, before["victim/a.conf"], recordtest.FileState(t, f.file("victim", "a.conf")), "not reached yet")

	// The host is back: its rollback restores it.
	restartSSHD(t, victimSrv)
	rb, code = f.run("rollback", "--run", id, "-i", inv, "-l", "victim", "--output", "json")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", rb.out(), rb.errOut())
	require.Equal(t, before, f.hashes(names, "a.conf", "b.conf"), "every file byte-exact on every host")
}

// TestFaultCLIMaxSessionsOne: every host's sshd allows one session per
// connection (a busy host; iklim assumes OpenSSH's 10). The run completes
// with the right result, in far less than the refusal limit of a minute:
// "open failed" is backpressure, and the sftp session a copy left open
// makes room for the next command. Rollback restores byte-exact.
func TestFaultCLIMaxSessionsOne(t *testing.T) {
	f := newFaultEnv(t)
	srv := sshtest.Start(t, sshtest.MaxSessions(1))
	var hosts []faultHost
	var names []string
	for i := range 3 {
		n := fmt.Sprintf("busy-%d", i+1)
		hosts = append(hosts, faultHost{name: n, addr: sshtest.HostAddr(i), srv: srv})
		names = append(names, n)
	}
	inv := f.inventory(hosts)
	for _, h := range names {
		f.writeFile(h, "a.conf", "orig "+h+"\n")
	}
	before := f.hashes(names, "a.conf", "b.conf")
	pb := writeFile(t, f.dir, "site.hcl", fmt.Sprintf(`
play "busy" {
  hosts = "all"
  step "a" {
    module  = "copy"
    dest    = "%[1]s/${host.name}/a.conf"
    content = "new ${host.name}\n"
  }
  step "work" {
    module = "shell"
    cmd    = "sleep 0.5; cat %[1]s/${host.name}/a.conf"
  }
  step "b" {
    module  = "copy"
    dest    = "%[1]s/${host.name}/b.conf"
    content = "b\n"
  }
  step "read" {
    module  = "command"
    cmd     = "cat %[1]s/${host.name}/b.conf"
    changed = false
  }
}
`, filepath.Join(f.dir, "files")))
	r, code := f.run("play", "-i", inv, "--output", "json", pb)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", r.out(), r.errOut())
	requireNoFailure(t, r.recap(), names...)
	for _, h := range names {
		require.Equal(t, 3, r.recap()[h].Changed, h)
		b, err := os.ReadFile(f.file(h, "a.conf"))
		require.NoError(t, err)
		require.Equal(t, "new "+h+"\n", string(b))
	}
	require.Less(t, r.took(), 30*time.Second, "sessions were refused until the limit instead of taken in turn")

	rb, code := f.run("rollback", "--run", r.runID(), "-i", inv, "--output", "json")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", rb.out(), rb.errOut())
	require.Equal(t, before, f.hashes(names, "a.conf", "b.conf"))
}

// TestFaultCLITwoPlaysOneLock: two `iklim play` processes start at once
// (two shells on one control machine) with a playbook that takes a lock.
// Exactly one runs; the other waits for the lock's wait, then fails naming
// the holder (run id, playbook, since when), having changed nothing. The
// winner's rollback restores byte-exact.
func TestFaultCLITwoPlaysOneLock(t *testing.T) {
	f := newFaultEnv(t)
	srv := sshtest.Start(t)
	sshtest.RequireSudo(t)
	hosts := []faultHost{
		{name: "lock-1", addr: "127.0.1.1", srv: srv, become: true},
		{name: "lock-2", addr: "127.0.1.2", srv: srv, become: true},
	}
	names := []string{"lock-1", "lock-2"}
	inv := f.inventory(hosts)
	for _, h := range names {
		f.writeFile(h, "a.conf", "orig "+h+"\n")
	}
	before := f.hashes(names, "a.conf")
	lockName := fmt.Sprintf("fault-%d", time.Now().UnixNano())
	pb := writeFile(t, f.dir, "deploy.hcl", fmt.Sprintf(`
lock %[2]q {
  host = "lock-1"
  wait = "3s"
  ttl  = "30s"
}
play "deploy" {
  hosts = "all"
  step "a" {
    module  = "copy"
    dest    = "%[1]s/${host.name}/a.conf"
    content = "new ${host.name}\n"
  }
  step "work" {
    module = "shell"
    cmd    = "sleep 6"
  }
}
`, filepath.Join(f.dir, "files"), lockName))

	runs := []*cliRun{f.start("play", "-i", inv, pb), f.start("play", "-i", inv, pb)}
	codes := make([]int, 2)
	for i, r := range runs {
		for range r.events {
		}
		codes[i] = r.wait()
	}
	win, lose := 0, 1
	if codes[0] != 0 {
		win, lose = 1, 0
	}
	require.Equal(t, 0, codes[win], "one run goes through\nstdout:\n%s\nstderr:\n%s", runs[win].out(), runs[win].errOut())
	require.Equal(t, 1, codes[lose], "the other fails\nstdout:\n%s\nstderr:\n%s", runs[lose].out(), runs[lose].errOut())
	winID, loseID := runs[win].runID(), runs[lose].runID()
	require.NotEqual(t, winID, loseID)

	msg := runs[lose].errOut()
	t.Logf("the second run said: %s", strings.TrimSpace(msg))
	require.Contains(t, msg, fmt.Sprintf("lock %q is held by", lockName))
	require.Contains(t, msg, "run "+winID, "names the holder's run")
	require.Contains(t, msg, "playbook deploy.hcl", "names the holder's playbook")
	require.Regexp(t, `since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`, msg, "says since when")
	require.Regexp(t, `gave up after waiting \d+s`, msg, "it waited for the lock first")
	require.GreaterOrEqual(t, runs[lose].took(), 3*time.Second, "it waited for the lock's wait")
	require.Less(t, runs[lose].took(), runs[win].took(), "it gave up while the holder still ran")
	require.NotContains(t, runs[lose].out(), "changed:", "the second run changed nothing")
	for _, h := range names {
		require.Empty(t, recordtest.RunDirs(t, filepath.Join(f.dir, "backups", h), loseID), "%s has records of the run that did not get the lock", h)
	}
	f.requireRecordsWhole(winID, names...)

	rb, code := f.run("rollback", "--run", winID, "-i", inv, "--output", "json")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", rb.out(), rb.errOut())
	require.Equal(t, before, f.hashes(names, "a.conf"))
}

// TestFaultCLIKeepaliveFlags: play's keepalive defaults report a vanished
// host within a minute, and the flags change them.
func TestFaultCLIKeepaliveFlags(t *testing.T) {
	stdout, _, code := iklim(t, nil, "play", "--help")
	require.Equal(t, 0, code)
	require.Regexp(t, `--keepalive-interval value\s+.*\(default: 15s\)`, stdout)
	require.Regexp(t, `--keepalive-count value\s+.*\(default: 3\)`, stdout)
	require.Regexp(t, `--step-timeout value\s+.*\(default: 30m0s\)`, stdout)
	require.LessOrEqual(t, transport.SSHOptions{KeepaliveInterval: 15 * time.Second, KeepaliveCount: 3}.UnreachableWithin(), time.Minute)
	require.Equal(t, transport.SSHOptions{}.UnreachableWithin(), transport.SSHOptions{KeepaliveInterval: 15 * time.Second, KeepaliveCount: 3}.UnreachableWithin(),
		"the flags' defaults are the library's")
}
