package main

// Fault matrix on the six-host lab (internal/lab) through the real binary:
// iklim-db-03's link (veth il-db-03 on bridge iklimlab0) is cut from
// outside, as a network that goes away would be.
//
//	TestFaultLabLinkCutNeverReturns   case 1: the link goes mid-step for good
//	TestFaultLabPartitionHeals        case 2: the link comes back in time
//	TestFaultLabLockHostUnreachable   case 7: the lock host is cut off at start
//
// Only iklim-db-03's link is ever cut, and it is brought back in t.Cleanup
// even when the test fails. The tests hold the lab's swarm lock while the
// link may be down, so that no swarm test runs across the cut; they change
// nothing of the swarm. Files go to /etc/iklim/fault-<unique>/ on each host
// and are removed at the end. Run with:
//
//	IKLIM_LAB=required go test -race -count=1 -run TestFaultLab ./cmd/iklim/

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iklimco/iklim/internal/labtest"
	"github.com/iklimco/iklim/internal/recordtest"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/stretchr/testify/require"
)

// cutHost is the only host whose link the tests cut, and cutLink its veth.
const (
	cutHost = "iklim-db-03"
	cutLink = "il-db-03"
)

// faultLab is the lab for one fault test: a unique directory of files on
// every host, and the means to cut iklim-db-03 off.
type faultLab struct {
	*faultEnv
	lab   *labtest.Lab
	dir   string // on every host, e.g. /etc/iklim/fault-123
	hosts []string

	linkMu   sync.Mutex
	linkDown bool
}

func newFaultLab(t *testing.T) *faultLab {
	t.Helper()
	lab := labtest.Require(t)
	lab.LockExclusive(t) // no other lab test may run while a host is cut off
	lab.LockSwarm(t)
	f := &faultLab{faultEnv: newFaultEnv(t), lab: lab, dir: fmt.Sprintf("/etc/iklim/fault-%d", time.Now().UnixNano())}
	for _, h := range lab.Hosts {
		f.hosts = append(f.hosts, h.Name)
	}
	require.NoError(t, exec.Command("ip", "link", "show", cutLink).Run(), "the lab has no link %s", cutLink)
	// Registered before any cut: cleanups run last-first, so the link is
	// back before the files are removed.
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, h := range f.hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := lab.Exec(t, h, "sudo rm -rf "+f.dir); err != nil {
					t.Logf("cleanup: %v", err)
				}
			}()
		}
		wg.Wait()
	})
	t.Cleanup(f.restoreLink)
	return f
}

// local is where path p of host h lies on this machine: the lab binds each
// host's /etc/iklim and /var/backups from <lab>/hosts/NAME/fs/.
func (f *faultLab) local(h, p string) string {
	for from, to := range map[string]string{"/etc/iklim/": "etc-iklim/", "/var/backups/": "backups/"} {
		if rest, ok := strings.CutPrefix(p, from); ok {
			return filepath.Join(f.lab.Dir, "hosts", h, "fs", to, rest)
		}
	}
	f.t.Fatalf("%s is not in a lab host's private dirs", p)
	return ""
}

func (f *faultLab) hostFile(name string) string { return path.Join(f.dir, name) }

// prepare writes a.conf (0640) on every host, through ssh as the lab user
// with sudo, and returns the hashes of a.conf and b.conf (absent).
func (f *faultLab) prepare() map[string]string {
	f.t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(f.hosts))
	for i, h := range f.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = f.lab.Exec(f.t, h, fmt.Sprintf("sudo sh -c 'mkdir -p %[1]s && printf \"orig %[2]s\\n\" > %[1]s/a.conf && chmod 0640 %[1]s/a.conf'", f.dir, h))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(f.t, err)
	}
	return f.labHashes()
}

// labHashes is sha256, mode and owner of a.conf and b.conf on every host.
func (f *faultLab) labHashes() map[string]string {
	f.t.Helper()
	out := map[string]string{}
	for _, h := range f.hosts {
		for _, n := range []string{"a.conf", "b.conf"} {
			out[h+"/"+n] = recordtest.FileState(f.t, f.local(h, f.hostFile(n)))
		}
	}
	return out
}

// cut takes iklim-db-03's link down.
func (f *faultLab) cut() time.Time {
	f.t.Helper()
	f.linkMu.Lock()
	defer f.linkMu.Unlock()
	out, err := exec.Command("ip", "link", "set", cutLink, "down").CombinedOutput()
	require.NoError(f.t, err, "%s", out)
	f.linkDown = true
	return time.Now()
}

// restoreLink brings iklim-db-03's link back up, if this test took it
// down, and waits until its sshd answers again.
func (f *faultLab) restoreLink() {
	f.linkMu.Lock()
	defer f.linkMu.Unlock()
	if !f.linkDown {
		return
	}
	if out, err := exec.Command("ip", "link", "set", cutLink, "up").CombinedOutput(); err != nil {
		f.t.Errorf("restore link %s: %v: %s (bring it up by hand: ip link set %s up)", cutLink, err, out, cutLink)
		return
	}
	f.linkDown = false
	h, _ := f.lab.Host(cutHost)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(h.Address, "22"), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			f.t.Errorf("%s's sshd does not answer 30s after its link came back: %v", cutHost, err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// requireLabRecordsWhole checks run id's records on the hosts, read from
// their backup roots.
func (f *faultLab) requireLabRecordsWhole(id string, hosts ...string) {
	f.t.Helper()
	for _, h := range hosts {
		dirs := recordtest.RunDirs(f.t, f.local(h, "/var/backups/iklim"), id)
		require.Len(f.t, dirs, 1, "%s: one directory for run %s", h, id)
		recordtest.RequireRunDirWhole(f.t, dirs[0])
	}
}

func (f *faultLab) playbook(sleep string) string {
	return writeFile(f.t, f.faultEnv.dir, "site.hcl", fmt.Sprintf(`
play "fault" {
  hosts = "all"
  step "a" {
    module  = "copy"
    dest    = "%[1]s/a.conf"
    content = "new ${host.name}\n"
    mode    = "0644"
  }
  step "sleep" {
    module = "shell"
    cmd    = "sleep %[2]s"
  }
  step "b" {
    module  = "copy"
    dest    = "%[1]s/b.conf"
    content = "b\n"
  }
}
`, f.dir, sleep))
}

func (f *faultLab) others() []string {
	var out []string
	for _, h := range f.hosts {
		if h != cutHost {
			out = append(out, h)
		}
	}
	return out
}

// TestFaultLabLinkCutNeverReturns: iklim-db-03's network goes away during
// a 10s step and does not come back. With keepalives every 2s and 2 misses
// the host is reported unreachable, naming it and the step, within the
// 6s bound (not when the step would have ended, nor ever); the other five
// finish; exit 4. The records are whole. Rollback while the host is still
// cut restores the five (exit 4); once the link is back, a rollback of
// iklim-db-03 restores it: every file byte-exact on every host.
func TestFaultLabLinkCutNeverReturns(t *testing.T) {
	f := newFaultLab(t)
	before := f.prepare()
	ka := transport.SSHOptions{KeepaliveInterval: 2 * time.Second, KeepaliveCount: 2}

	r := f.start("play", "-i", f.lab.InventoryPath, "--output", "json",
		"--keepalive-interval", "2s", "--keepalive-count", "2", f.playbook("10"))
	r.waitEvent(func(ev runner.Event) bool {
		return ev.Type == runner.EventStepStart && ev.Host == cutHost && ev.Step == "sleep"
	})
	time.Sleep(time.Second) // inside the sleep
	cutAt := f.cut()
	ev := r.waitEvent(func(ev runner.Event) bool {
		return ev.Type == runner.EventHostResult && ev.Host == cutHost
	})
	noticed := ev.Time.Sub(cutAt)
	t.Logf("%s reported %s %s after its link was cut: %s", cutHost, ev.Status, noticed.Round(time.Millisecond), ev.Error)
	require.Equal(t, runner.StatusUnreachable, ev.Status, ev.Error)
	require.Equal(t, "sleep", ev.Step)
	require.Contains(t, ev.Error, cutHost)
	require.Contains(t, ev.Error, "keepalive")
	// The slack is for a loaded machine; without keepalives the run waited
	// until the link came back.
	require.LessOrEqual(t, noticed, ka.UnreachableWithin()+15*time.Second, "within the keepalive bound")
	for range r.events {
	}
	code := r.wait()
	require.Equal(t, 4, code, "stdout:\n%s\nstderr:\n%s", r.out(), r.errOut())
	recap := r.recap()
	requireNoFailure(t, recap, f.others()...)
	for _, h := range f.others() {
		require.Equal(t, 3, recap[h].Changed, "%s finishes its work", h)
	}
	require.Equal(t, 1, recap[cutHost].Unreachable)
	require.Zero(t, recap[cutHost].Failed)

	id := r.runID()
	f.requireLabRecordsWhole(id, f.hosts...)

	rb, code := f.run("rollback", "--run", id, "-i", f.lab.InventoryPath, "--output", "json")
	require.Equal(t, 4, code, "%s is still cut off\nstdout:\n%s\nstderr:\n%s", cutHost, rb.out(), rb.errOut())
	requireNoFailure(t, rb.recap(), f.others()...)
	now := f.labHashes()
	for _, h := range f.others() {
		for _, n := range []string{"a.conf", "b.conf"} {
			require.Equal(t, before[h+"/"+n], now[h+"/"+n], "%s/%s", h, n)
		}
	}

	f.restoreLink()
	rb, code = f.run("rollback", "--run", id, "-i", f.lab.InventoryPath, "-l", cutHost, "--output", "json")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", rb.out(), rb.errOut())
	require.Equal(t, before, f.labHashes(), "every file byte-exact on every host")
}

// TestFaultLabPartitionHeals: iklim-db-03's link is down for 4s during a
// 12s step, within the keepalive window (3s × 3 misses): the connection
// survives, the run completes on every host with exit 0, and its rollback
// restores every file byte-exact.
func TestFaultLabPartitionHeals(t *testing.T) {
	f := newFaultLab(t)
	before := f.prepare()

	r := f.start("play", "-i", f.lab.InventoryPath, "--output", "json",
		"--keepalive-interval", "3s", "--keepalive-count", "3", f.playbook("12"))
	r.waitEvent(func(ev runner.Event) bool {
		return ev.Type == runner.EventStepStart && ev.Host == cutHost && ev.Step == "sleep"
	})
	time.Sleep(time.Second)
	cutAt := f.cut()
	time.Sleep(4 * time.Second)
	f.restoreLink()
	t.Logf("link was down for %s", time.Since(cutAt).Round(time.Millisecond))
	for range r.events {
	}
	code := r.wait()
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", r.out(), r.errOut())
	recap := r.recap()
	requireNoFailure(t, recap, f.hosts...)
	for _, h := range f.hosts {
		require.Equal(t, 3, recap[h].Changed, h)
	}
	id := r.runID()
	f.requireLabRecordsWhole(id, f.hosts...)

	rb, code := f.run("rollback", "--run", id, "-i", f.lab.InventoryPath, "--output", "json")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", rb.out(), rb.errOut())
	require.Equal(t, before, f.labHashes(), "every file byte-exact on every host")
}

// TestFaultLabLockHostUnreachable: the playbook's lock lives on
// iklim-db-03, whose link is down when the run starts. iklim fails fast
// (within the inventory's connect_timeout, 3s here, not the lock's wait)
// with an error that names the lock and its host, exits 4 (unreachable,
// nothing failed), and no host is changed or holds a record of the run.
func TestFaultLabLockHostUnreachable(t *testing.T) {
	f := newFaultLab(t)
	before := f.prepare()
	lockName := fmt.Sprintf("fault-%d", time.Now().UnixNano())
	body, err := os.ReadFile(f.playbook("1"))
	require.NoError(t, err)
	pb := writeFile(t, f.faultEnv.dir, "locked.hcl", fmt.Sprintf("lock %q {\n  host = %q\n  wait = \"2m\"\n}\n", lockName, cutHost)+string(body))

	lab, err := os.ReadFile(f.lab.InventoryPath)
	require.NoError(t, err)
	require.Contains(t, string(lab), "defaults {")
	inv := writeFile(t, f.faultEnv.dir, "lab.hcl", strings.Replace(string(lab), "defaults {", "defaults {\n  connect_timeout = \"3s\"", 1))

	f.cut()
	r, code := f.run("play", "-i", inv, pb)
	took := r.took()
	msg := r.errOut()
	t.Logf("iklim said in %s: %s", took.Round(time.Millisecond), strings.TrimSpace(msg))
	require.Equal(t, 4, code, "stdout:\n%s\nstderr:\n%s", r.out(), msg)
	require.Contains(t, msg, fmt.Sprintf("lock %q", lockName))
	require.Contains(t, msg, cutHost+": unreachable")
	require.Contains(t, msg, "no host was changed")
	require.Less(t, took, time.Minute, "within the connect timeout (3s), not the lock's wait (2m)")
	require.NotContains(t, r.out(), "changed:")
	require.Equal(t, before, f.labHashes(), "no host changed")
	id := r.runID()
	for _, h := range f.hosts {
		require.Empty(t, recordtest.RunDirs(t, f.local(h, "/var/backups/iklim"), id), "%s holds a record of a run that never started", h)
	}
}
