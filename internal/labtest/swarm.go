package labtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SwarmLockFile is the lock, under the lab's state directory, that every
// test taking the lab's swarm over holds (LockSwarm).
const SwarmLockFile = ".swarm-test.lock"

// SwarmLockWait bounds how long LockSwarm waits for another holder.
const SwarmLockWait = 45 * time.Minute

// LockSwarm makes the test the only user of the lab's swarm until it ends:
// it takes an exclusive flock on <Dir>/.swarm-test.lock, waiting up to
// SwarmLockWait for another holder (another package's test binary in
// `go test ./...`, or a test in another shell), and releases it in
// t.Cleanup. Tests that reset or reshape the swarm must hold it.
//
// flock locks belong to the open file, so two tests of one process
// serialise on it as well.
func (l *Lab) LockSwarm(t testing.TB) {
	t.Helper()
	flockWait(t, filepath.Join(l.Dir, SwarmLockFile), syscall.LOCK_EX)
}

// ResetSwarm takes every lab host out of any swarm (docker swarm leave
// --force, which also ends the hosts' stack tasks) and removes iptables
// rules a swarm test may have left in a host's namespace (a DROP of the
// swarm port 2377). A host in no swarm is fine; a dockerd whose leave does
// not return within 30 s is wedged (its swarm stays unusable until it
// restarts) and fails the test. Hold LockSwarm first.
func (l *Lab) ResetSwarm(t testing.TB) {
	t.Helper()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		wedged []string
	)
	for _, h := range l.Hosts {
		wg.Add(1)
		go func(h LabHost) {
			defer wg.Done()
			out, _ := l.Exec(t, h.Name, "timeout 30 docker swarm leave --force >/dev/null 2>&1; echo $?")
			if out == "124" {
				mu.Lock()
				wedged = append(wedged, h.Name)
				mu.Unlock()
			}
			if os.Geteuid() == 0 {
				for exec.Command("nsenter", "--net=/run/netns/"+h.Name, "iptables", "-D", "OUTPUT",
					"-p", "tcp", "--dport", "2377", "-j", "DROP").Run() == nil {
				}
			}
		}(h)
	}
	wg.Wait()
	// A run that was killed leaves the examples' deploy lock behind, and
	// the next run would refuse it as stale. Every lab user of that lock
	// holds the swarm lock, so none of them is live now.
	if _, err := l.Exec(t, l.Hosts[0].Name, "sudo -n rm -rf /var/lib/iklim/locks/prod-deploy.lock"); err != nil {
		t.Fatalf("lab: clear the examples' deploy lock: %v", err)
	}
	// A dockerd whose leave hung, or whose network agent leaked the gossip
	// port after leaving (moby/moby#38824, #31913), would break the next
	// swarm: restart it, as an operator would, and check again.
	heal := append(wedged, l.GossipPortHeld(t, 10*time.Second)...)
	if len(heal) > 0 {
		sort.Strings(heal)
		t.Logf("lab: restarting dockerd on %v (a wedged swarm leave or a leaked gossip port)", heal)
		if err := l.RestartDockerd(heal...); err != nil {
			t.Fatalf("lab: %v", err)
		}
		for _, h := range wedged {
			if out, _ := l.Exec(t, h, "timeout 30 docker swarm leave --force >/dev/null 2>&1; echo $?"); out == "124" {
				t.Fatalf("lab: `docker swarm leave --force` still hangs on %s after a dockerd restart", h)
			}
		}
		if leaks := l.GossipPortHeld(t, 10*time.Second); len(leaks) > 0 {
			t.Fatalf("lab: dockerd of %v still holds the swarm gossip port 7946 after a restart", leaks)
		}
	}
}

// DockerdLockFile is the lock, under the lab's state directory, that tests
// using a host's dockerd without the swarm lock hold shared (UseDockerd),
// and that lab.sh restart-dockerd takes exclusive before a restart.
const DockerdLockFile = ".dockerd.lock"

// UseDockerd keeps the lab's dockerds from being restarted until the test
// ends. A swarm test's ResetSwarm restarts a wedged dockerd, and the
// containers and logins of a test on that host go with it. Tests that hold
// LockSwarm need it not and must not take it: their own restart would wait
// for them.
func (l *Lab) UseDockerd(t testing.TB) {
	t.Helper()
	flockWait(t, filepath.Join(l.Dir, DockerdLockFile), syscall.LOCK_SH)
}

// RestartDockerd restarts the dockerd of the named hosts with lab.sh, once
// no test holds UseDockerd.
func (l *Lab) RestartDockerd(hosts ...string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	args := append([]string{filepath.Join(root, "internal", "lab", "lab.sh"), "restart-dockerd"}, hosts...)
	if out, err := exec.Command("bash", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("restart dockerd on %v: %w\n%s", hosts, err, out)
	}
	return nil
}

// GossipPortHeld returns the hosts that are in no swarm but whose dockerd
// still listens on the swarm gossip port 7946 after waiting up to wait for
// it to let go. Docker releases the port a few seconds after `docker swarm
// leave`; a dockerd whose network agent leaked (a leave while the agent was
// still starting) never does, and every later swarm on that host runs
// without its network agent: tasks start, but overlay service discovery
// (DNS) and cross-host routing do not work.
func (l *Lab) GossipPortHeld(t testing.TB, wait time.Duration) []string {
	t.Helper()
	// 1F0A is 7946; 0A is LISTEN.
	const probe = `[ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = inactive ] || exit 0
cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk '$2 ~ /:1F0A$/ && $4 == "0A" { n++ } END { if (n) print "held" }'`
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		held []string
	)
	for _, h := range l.Hosts {
		wg.Add(1)
		go func(h LabHost) {
			defer wg.Done()
			for deadline := time.Now().Add(wait); ; {
				out, err := l.Exec(t, h.Name, probe)
				if err != nil || out != "held" {
					return
				}
				if time.Now().After(deadline) {
					mu.Lock()
					held = append(held, h.Name)
					mu.Unlock()
					return
				}
				time.Sleep(500 * time.Millisecond)
			}
		}(h)
	}
	wg.Wait()
	sort.Strings(held)
	return held
}

// SwarmStates returns each host's `docker info` LocalNodeState (active,
// inactive, pending, ...).
func (l *Lab) SwarmStates(t testing.TB) (map[string]string, error) {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	out := map[string]string{}
	for _, h := range l.Hosts {
		wg.Add(1)
		go func(h LabHost) {
			defer wg.Done()
			s, err := l.Docker(t, h.Name, "info", "--format", "{{.Swarm.LocalNodeState}}")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			out[h.Name] = s
		}(h)
	}
	wg.Wait()
	if len(errs) > 0 {
		return out, errors.Join(errs...)
	}
	return out, nil
}
