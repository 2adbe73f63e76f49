// Package labtest gives tests the six-host lab of internal/lab: real
// OpenSSH and real dockerd per host, each host its own network, mount and
// UTS namespace on 10.77.0.0/24 (see internal/lab/README.md).
//
//	func TestSomething(t *testing.T) {
//		lab := labtest.Require(t) // skips (or fails, see below) without a lab
//		out, err := lab.Exec(t, "iklim-app-01", "hostname")
//		...
//	}
//
// Require skips the test when the lab cannot be used: not root, ssh missing,
// or the lab not up. The environment variable IKLIM_LAB changes that:
//
//	IKLIM_LAB=required  any of those fails the test instead of skipping it
//	                    (CI sets this, so lab tests can never skip silently)
//	IKLIM_LAB=1         like required, but a lab that is down is first
//	                    brought up with internal/lab/lab.sh up
//
// Exec and Docker run commands through the system ssh binary, so assertions
// do not depend on iklim's own SSH code. This package imports only the
// standard library.
package labtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultDir is the lab's state directory unless IKLIM_LAB_DIR says otherwise.
const DefaultDir = "/var/lib/iklim-lab"

// User is the login user on every lab host (passwordless sudo, group docker).
const User = "iklim"

// ExecTimeout bounds one Exec or Docker call.
const ExecTimeout = 5 * time.Minute

// LabHost is one lab host: its name (also its hostname and swarm node name)
// and its address on the lab bridge. sshd listens on port 22.
type LabHost struct {
	Name    string
	Address string
}

// DefaultHosts are the six lab hosts, as in inventories/lab.hcl.
var DefaultHosts = []LabHost{
	{"iklim-app-01", "10.77.0.11"},
	{"iklim-app-02", "10.77.0.12"},
	{"iklim-app-03", "10.77.0.13"},
	{"iklim-db-01", "10.77.0.21"},
	{"iklim-db-02", "10.77.0.22"},
	{"iklim-db-03", "10.77.0.23"},
}

// Lab describes a running lab.
type Lab struct {
	Dir            string // state directory, e.g. /var/lib/iklim-lab
	InventoryPath  string // absolute path of inventories/lab.hcl
	KeyPath        string // client private key for User
	KnownHostsPath string // known_hosts with every host's address (and name)
	Hosts          []LabHost
	User           string

	shared *os.File // the test's shared hold on the lab (Require)
}

// Mode values of the IKLIM_LAB environment variable.
const (
	modeOptional = iota
	modeRequired
	modeStart
)

func labMode() int {
	switch strings.ToLower(strings.TrimSpace(os.Getenv("IKLIM_LAB"))) {
	case "required":
		return modeRequired
	case "1", "true", "yes", "up", "start":
		return modeStart
	}
	return modeOptional
}

// Require returns the lab, or skips the test (fails it with IKLIM_LAB=required
// or IKLIM_LAB=1) when the lab cannot be used.
func Require(t testing.TB) *Lab {
	t.Helper()
	mode := labMode()
	unusable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if mode == modeOptional {
			t.Skipf("lab: %s (start it with `just lab up` or `bash internal/lab/lab.sh up` as root; IKLIM_LAB=1 starts it, IKLIM_LAB=required fails instead of skipping)", msg)
		}
		t.Fatalf("lab: %s (IKLIM_LAB=%s)", msg, os.Getenv("IKLIM_LAB"))
	}

	if os.Geteuid() != 0 {
		unusable("not root: the lab's key and state belong to root")
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		unusable("the ssh client is not installed")
	}
	lab, err := newLab()
	if err != nil {
		unusable("%v", err)
	}
	// Every lab test shares the lab; a test that cuts a host off takes it
	// alone (LockExclusive), so no other package's test sees that host gone.
	lab.shared = flockWait(t, filepath.Join(lab.Dir, labLockFile), syscall.LOCK_SH)
	if err := lab.checkUp(t); err != nil {
		if mode != modeStart {
			unusable("lab is not up: %v", err)
		}
		if err := startLab(t); err != nil {
			unusable("lab was down and `lab.sh up` failed: %v", err)
		}
		if err := lab.checkUp(t); err != nil {
			unusable("lab is not up after `lab.sh up`: %v", err)
		}
	}
	return lab
}

// checkUp is check between dockerd restarts: lab.sh restart-dockerd (a
// swarm test's ResetSwarm, or TestRestartWaitsForDockerdUsers) holds
// .dockerd.lock alone while a host's dockerd, and its pid file, are gone,
// and a test starting then must not be told the lab is down.
func (l *Lab) checkUp(t testing.TB) error {
	t.Helper()
	f := flockWait(t, filepath.Join(l.Dir, DockerdLockFile), syscall.LOCK_SH)
	defer f.Close() // released now: a test that restarts a dockerd itself must not wait for its own hold
	return l.check()
}

// labLockFile, under the lab's state directory, is shared by every lab test
// and taken alone by tests that cut a host off.
const labLockFile = ".lab-test.lock"

// LockExclusive makes the test the lab's only user until it ends: it gives
// up the test's shared hold and waits (up to SwarmLockWait) until no other
// lab test runs. Take it before LockSwarm.
func (l *Lab) LockExclusive(t testing.TB) {
	t.Helper()
	if l.shared != nil {
		_ = l.shared.Close()
		l.shared = nil
	}
	flockWait(t, filepath.Join(l.Dir, labLockFile), syscall.LOCK_EX)
}

// flockWait takes a flock of kind how on path, waiting up to SwarmLockWait
// (and saying so in the test log, where a slow test's time went), and
// releases it in t.Cleanup.
func flockWait(t testing.TB, path string, how int) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatalf("lab: lock %s: %v", path, err)
	}
	start := time.Now()
	waited := false
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if err != syscall.EWOULDBLOCK || time.Since(start) > SwarmLockWait {
			_ = f.Close()
			t.Fatalf("lab: lock %s: %v (waited %s)", path, err, time.Since(start).Round(time.Second))
		}
		if !waited {
			t.Logf("lab: waiting for %s (another lab test holds it)", path)
			waited = true
		}
		time.Sleep(200 * time.Millisecond)
	}
	if waited {
		t.Logf("lab: got %s after %s", path, time.Since(start).Round(time.Second))
	}
	t.Cleanup(func() { _ = f.Close() }) // closing the last fd releases the flock
	return f
}

func newLab() (*Lab, error) {
	dir := os.Getenv("IKLIM_LAB_DIR")
	if dir == "" {
		dir = DefaultDir
	}
	dir = filepath.Clean(dir)
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	hosts := make([]LabHost, len(DefaultHosts))
	copy(hosts, DefaultHosts)
	return &Lab{
		Dir:            dir,
		InventoryPath:  filepath.Join(root, "inventories", "lab.hcl"),
		KeyPath:        filepath.Join(dir, "id_ed25519"),
		KnownHostsPath: filepath.Join(dir, "known_hosts"),
		Hosts:          hosts,
		User:           User,
	}, nil
}

// ModuleRoot walks up from the working directory to the directory holding
// go.mod.
func ModuleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
	}
}

// check reports why the lab is not usable, or nil: key and known_hosts
// present, every host's sshd and dockerd alive (by pid file) and port 22
// answering.
func (l *Lab) check() error {
	for _, f := range []string{l.KeyPath, l.KnownHostsPath} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("missing %s", f)
		}
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, h := range l.Hosts {
		wg.Add(1)
		go func(h LabHost) {
			defer wg.Done()
			if err := l.checkHost(h); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", h.Name, err))
				mu.Unlock()
			}
		}(h)
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (l *Lab) checkHost(h LabHost) error {
	hd := filepath.Join(l.Dir, "hosts", h.Name)
	for _, d := range []string{"sshd", "dockerd"} {
		pf := filepath.Join(hd, d+".pid")
		b, err := os.ReadFile(pf)
		if err != nil {
			return fmt.Errorf("%s not running (no %s)", d, pf)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			return fmt.Errorf("%s: bad pid file %s", d, pf)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return fmt.Errorf("%s (pid %d) is not alive", d, pid)
		}
	}
	c, err := net.DialTimeout("tcp", net.JoinHostPort(h.Address, "22"), 2*time.Second)
	if err != nil {
		return fmt.Errorf("sshd not answering: %v", err)
	}
	return c.Close()
}

var startMu sync.Mutex

func startLab(t testing.TB) error {
	t.Helper()
	startMu.Lock()
	defer startMu.Unlock()
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	script := filepath.Join(root, "internal", "lab", "lab.sh")
	t.Logf("lab: down, running bash %s up (IKLIM_LAB=1)", script)
	cmd := exec.Command("bash", script, "up")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w\n%s", err, out)
	}
	return nil
}

// Host finds a lab host by name or address.
func (l *Lab) Host(nameOrAddress string) (LabHost, bool) {
	for _, h := range l.Hosts {
		if h.Name == nameOrAddress || h.Address == nameOrAddress {
			return h, true
		}
	}
	return LabHost{}, false
}

// SSHArgs are the ssh(1) arguments that log in to host as the lab user, up to
// and including the destination; append the remote command.
func (l *Lab) SSHArgs(h LabHost) []string {
	return []string{
		"-F", "/dev/null",
		"-i", l.KeyPath,
		"-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + l.KnownHostsPath,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes",
		"-o", "ConnectTimeout=10",
		"-o", "LogLevel=ERROR",
		"-p", "22",
		l.User + "@" + h.Address,
	}
}

// Exec runs cmd (a shell command line) on host (name or address) over ssh as
// the lab user and returns its standard output without trailing newlines.
// A non-zero exit is an error that carries the exit status and stderr.
func (l *Lab) Exec(t testing.TB, host, cmd string) (string, error) {
	t.Helper()
	h, ok := l.Host(host)
	if !ok {
		return "", fmt.Errorf("labtest: unknown lab host %q", host)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ExecTimeout)
	defer cancel()
	args := append(l.SSHArgs(h), "--", cmd)
	c := exec.CommandContext(ctx, "ssh", args...)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	out := strings.TrimRight(stdout.String(), "\r\n")
	if err != nil {
		return out, fmt.Errorf("labtest: %s: %q: %w: %s", h.Name, cmd, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Docker runs `docker ARGS...` on host; every argument is shell-quoted.
func (l *Lab) Docker(t testing.TB, host string, args ...string) (string, error) {
	t.Helper()
	return l.Exec(t, host, "docker "+ShellJoin(args...))
}

// ShellJoin quotes each word for a POSIX shell and joins them with spaces.
func ShellJoin(words ...string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = ShellQuote(w)
	}
	return strings.Join(q, " ")
}

// ShellQuote quotes s for a POSIX shell (unchanged when it is plainly safe).
func ShellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./-_", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
