package backup_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/backup"
	"github.com/stretchr/testify/require"
)

// shareRoot gives every host of e one backup root, as an NFS home or a
// storage box mounted on every machine would.
func (e *env) shareRoot(name string) string {
	root := filepath.Join(e.tmp, name)
	for _, h := range e.hosts {
		h.BackupRoot = root
	}
	return root
}

// tmpFiles lists files under root that look like a writer's leftovers.
func tmpFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	_ = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && (strings.Contains(fi.Name(), ".tmp") || strings.HasPrefix(fi.Name(), ".owner.")) {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// TestSharedBackupRoot: 24 inventory hosts on one sshd (one machine, one
// filesystem) record into ONE backup root. Two runs succeed everywhere,
// each host's records live in its own directory, retention prunes one
// host's runs without touching the others', and rollback restores every
// host's own bytes.
func TestSharedBackupRoot(t *testing.T) {
	const n = 24
	e := newEnv(t, n)
	root := e.shareRoot("shared-backups")
	conf := func(h *inventories.Host) string { return e.path(h, "app.conf") }
	version := func(v string) func(*runner.StepContext) []byte {
		return func(sc *runner.StepContext) []byte { return []byte(v + " of " + sc.Host.Name + "\n") }
	}
	for _, h := range e.hosts {
		writeFile(t, conf(h), []byte("orig of "+h.Name+"\n"), 0o640, 0, 0)
	}
	deploy := func(v string) string {
		t.Helper()
		id, recap, err := e.play(putStepFunc("config", conf, version(v), 0o644, "root"))
		requireOK(t, recap, err)
		require.Equal(t, len(e.inv.Hosts), recap.Changed())
		return id
	}
	run1 := deploy("v1")
	run2 := deploy("v2")
	for _, h := range e.hosts {
		require.Equal(t, "v2 of "+h.Name+"\n", stateOf(t, conf(h)).Content)
	}

	// Layout: <root>/<host>/owner and <root>/<host>/<run-id>/, 0700 and 0600;
	// each record is the host's own, with the host's own before-bytes.
	machine, err := os.ReadFile("/etc/machine-id")
	require.NoError(t, err)
	ctl, _ := os.Hostname()
	ents, err := os.ReadDir(root)
	require.NoError(t, err)
	require.Len(t, ents, n, "one directory per host, nothing else")
	for _, h := range e.hosts {
		hd := backup.HostDir(root, h.Name)
		require.Equal(t, filepath.Join(root, h.Name), hd)
		owner, err := os.ReadFile(filepath.Join(hd, "owner"))
		require.NoError(t, err)
		require.Equal(t, "host="+h.Name+" machine="+strings.TrimSpace(string(machine))+" control="+ctl+"\n", string(owner))
		require.ElementsMatch(t, []string{run1, run2}, runDirs(t, h))
		for p, mode := range map[string]os.FileMode{hd: 0o700, filepath.Join(hd, "owner"): 0o600} {
			fi, err := os.Stat(p)
			require.NoError(t, err)
			require.Equal(t, mode, fi.Mode().Perm(), p)
		}
		for id, before := range map[string]string{run1: "orig", run2: "v1"} {
			dir := backup.RunDir(root, h.Name, id)
			var rec runner.ChangeRecord
			b, err := os.ReadFile(filepath.Join(dir, "changes", "0001.json"))
			require.NoError(t, err)
			require.NoError(t, json.Unmarshal(b, &rec))
			require.Equal(t, h.Name, rec.Host)
			require.Equal(t, conf(h), rec.Change.Files[0])
			snap, err := os.ReadFile(filepath.Join(dir, "files", "0001-1.data"))
			require.NoError(t, err)
			require.Equal(t, before+" of "+h.Name+"\n", string(snap))
			require.Equal(t, h.Name, readRunRecord(t, h, id).Host)
			_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
				require.NoError(t, err)
				want := os.FileMode(0o600)
				if fi.IsDir() {
					want = 0o700
				}
				require.Equal(t, want, fi.Mode().Perm(), p)
				return nil
			})
		}
	}
	require.Empty(t, tmpFiles(t, root))

	runs, err := backup.ListHosts(context.Background(), e.connector, e.hosts, e.control)
	require.NoError(t, err)
	require.Len(t, runs, 2)
	for i, id := range []string{run1, run2} {
		require.Equal(t, id, runs[i].ID)
		require.Len(t, runs[i].Hosts, n)
		require.Equal(t, n, runs[i].Changes, "each host counts its own change once")
		require.Equal(t, backup.StatusOK, runs[i].Status)
	}

	// Retention is per host: the first half keeps 1 run, the others are
	// not in the run and keep everything.
	half, rest := e.hosts[:n/2], e.hosts[n/2:]
	e.inv = &inventories.Inventory{Hosts: half}
	e.keep = 1
	run3 := deploy("v3")
	e.keep = 0
	e.inv = &inventories.Inventory{Hosts: e.hosts}
	for _, h := range half {
		require.Equal(t, []string{run3}, runDirs(t, h), h.Name)
	}
	for _, h := range rest {
		require.ElementsMatch(t, []string{run1, run2}, runDirs(t, h), h.Name)
	}

	// Every host gets its own bytes back: the first half from run 3, the
	// rest from run 2, then run 1.
	_, recap, err := e.rollback(run3, false)
	requireOK(t, recap, err)
	require.Equal(t, n/2, recap.Changed())
	_, recap, err = e.rollback(run2, false)
	requireOK(t, recap, err)
	require.Equal(t, n-n/2, recap.Changed(), "run 2 is gone from the first half")
	for _, h := range half {
		require.Equal(t, fileState{Exists: true, Content: "v2 of " + h.Name + "\n", Mode: 0o644}, stateOf(t, conf(h)))
	}
	for _, h := range rest {
		require.Equal(t, fileState{Exists: true, Content: "v1 of " + h.Name + "\n", Mode: 0o644}, stateOf(t, conf(h)))
	}
	e.inv = &inventories.Inventory{Hosts: rest}
	_, recap, err = e.rollback(run1, false)
	requireOK(t, recap, err)
	for _, h := range rest {
		require.Equal(t, fileState{Exists: true, Content: "orig of " + h.Name + "\n", Mode: 0o640}, stateOf(t, conf(h)))
	}
	require.Empty(t, tmpFiles(t, root))
}

// TestOwnerMarkerRefuses: a host directory written by another machine
// under the same inventory name, or by another control machine, is
// refused with both owners named, before the change is applied.
func TestOwnerMarkerRefuses(t *testing.T) {
	e := newEnv(t, 2)
	root := e.shareRoot("shared")
	h1, h2 := e.hosts[0], e.hosts[1]
	conf := func(h *inventories.Host) string { return e.path(h, "app.conf") }
	for _, h := range e.hosts {
		writeFile(t, conf(h), []byte("orig\n"), 0o644, 0, 0)
	}
	// Another machine called h001 in some inventory wrote here first.
	theirs := "host=h001 machine=0123456789abcdef0123456789abcdef control=ci-runner-7\n"
	require.NoError(t, os.MkdirAll(backup.HostDir(root, h1.Name), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(backup.HostDir(root, h1.Name), "owner"), []byte(theirs), 0o600))

	_, recap, err := e.play(putStep("config", conf, []byte("new\n"), 0o644, "root"))
	require.NoError(t, err)
	errs := map[string]string{}
	for _, hr := range recap.Hosts {
		errs[hr.Host] = hr.Error
	}
	require.Contains(t, errs["h001"], `backup on h001, step "config"`)
	require.Contains(t, errs["h001"], "belongs to \""+strings.TrimSpace(theirs)+"\"")
	require.Contains(t, errs["h001"], "but this run is \"host=h001 machine=")
	require.Contains(t, errs["h001"], "two hosts or two control machines")
	require.Empty(t, errs["h002"])
	require.Equal(t, "orig\n", stateOf(t, conf(h1)).Content, "never changed without a record")
	require.Equal(t, "new\n", stateOf(t, conf(h2)).Content)
	require.Empty(t, runDirs(t, h1))
	b, err := os.ReadFile(filepath.Join(backup.HostDir(root, h1.Name), "owner"))
	require.NoError(t, err)
	require.Equal(t, theirs, string(b), "the other owner's marker is left alone")

	// Two control machines: h002's directory is ctl-a's; ctl-b is refused.
	ctx := context.Background()
	conn, err := e.connector.Connect(ctx, h2)
	require.NoError(t, err)
	rec := func(ctl string) error {
		id, err := backup.ClaimRunID(time.Now())
		require.NoError(t, err)
		r := backup.NewRecorder(backup.RecorderOptions{Info: runner.RunInfo{ID: id}, Control: ctl})
		return r.Before(ctx, conn, h2, &runner.ChangeRecord{RunID: id, Seq: 1, Host: h2.Name, Step: "s", Module: "test_put",
			Change: modules.Changef("change by %s", ctl)})
	}
	require.NoError(t, os.Remove(filepath.Join(backup.HostDir(root, h2.Name), "owner")))
	require.NoError(t, rec("ctl-a"))
	err = rec("ctl-b")
	require.ErrorIs(t, err, backup.ErrOwnerConflict)
	require.Contains(t, err.Error(), "control=ctl-a")
	require.Contains(t, err.Error(), "control=ctl-b")
	require.Contains(t, err.Error(), "remove "+backup.HostDir(root, h2.Name)+"/owner")
}

// TestOldLayoutRuns: run directories of the old layout, <root>/<run-id>/,
// still list and roll back; on a root shared with another host, that host
// neither lists nor restores them.
func TestOldLayoutRuns(t *testing.T) {
	e := newEnv(t, 2)
	root := e.shareRoot("shared")
	h1, h2 := e.hosts[0], e.hosts[1]
	conf := func(h *inventories.Host) string { return e.path(h, "app.conf") }
	for _, h := range e.hosts {
		writeFile(t, conf(h), []byte("orig of "+h.Name+"\n"), 0o644, 0, 0)
	}
	id, recap, err := e.play(putStepFunc("config", conf, func(sc *runner.StepContext) []byte { return []byte("new of " + sc.Host.Name + "\n") }, 0o600, "root"))
	requireOK(t, recap, err)
	// What an older iklim left: h001's run at <root>/<run-id>, none for h002.
	require.NoError(t, os.Rename(backup.RunDir(root, h1.Name, id), filepath.Join(root, id)))
	require.NoError(t, os.RemoveAll(backup.RunDir(root, h2.Name, id)))
	writeFile(t, conf(h2), []byte("by hand on h002\n"), 0o644, 0, 0)

	runs, err := backup.List(context.Background(), e.sites())
	require.NoError(t, err)
	require.Len(t, runs, 1)
	require.Equal(t, id, runs[0].ID)
	require.Equal(t, []string{"h001"}, runs[0].Hosts)
	require.Equal(t, 1, runs[0].Changes)
	require.Equal(t, backup.StatusOK, runs[0].Status)

	rid, recap, err := e.rollback(id, false)
	requireOK(t, recap, err)
	require.Equal(t, 1, recap.Changed(), "only h001 has records of the run")
	require.Equal(t, fileState{Exists: true, Content: "orig of h001\n", Mode: 0o644}, stateOf(t, conf(h1)))
	require.Equal(t, "by hand on h002\n", stateOf(t, conf(h2)).Content)
	require.FileExists(t, filepath.Join(root, id, "rolled_back"))
	require.Equal(t, []string{rid}, runDirs(t, h1), "the rollback is recorded in the new layout")

	runs, err = backup.List(context.Background(), e.sites())
	require.NoError(t, err)
	require.Len(t, runs, 2)
	require.True(t, runs[0].RolledBack)
	require.Equal(t, id, runs[1].RollbackOf)

	// An old-layout run that names another host is not h002's: its
	// records never reach h002, even when asked for it directly.
	e.inv = &inventories.Inventory{Hosts: []*inventories.Host{h2}}
	_, recap, err = e.rollback(id, true)
	requireOK(t, recap, err)
	require.Zero(t, recap.Changed())
	require.Equal(t, "by hand on h002\n", stateOf(t, conf(h2)).Content)

	// Two hosts that shared an old-layout directory overwrote each other's
	// snapshots: h001's record now sits beside a snapshot of h002's file.
	// Rollback restores no snapshot that is not of its change's own path.
	e.inv = &inventories.Inventory{Hosts: e.hosts}
	id2, recap, err := e.play(putStepFunc("config", conf, func(sc *runner.StepContext) []byte { return []byte("v2 of " + sc.Host.Name + "\n") }, 0o644, "root"))
	requireOK(t, recap, err)
	old := filepath.Join(root, id2)
	require.NoError(t, os.Rename(backup.RunDir(root, h1.Name, id2), old))
	for _, f := range []string{"0001-1.path", "0001-1.meta.json", "0001-1.data"} {
		b, err := os.ReadFile(filepath.Join(backup.RunDir(root, h2.Name, id2), "files", f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(old, "files", f), b, 0o600))
	}
	h2Before := stateOf(t, conf(h2))
	e.inv = &inventories.Inventory{Hosts: []*inventories.Host{h1}}
	_, recap, err = e.rollback(id2, true)
	requireOK(t, recap, err)
	require.Equal(t, h2Before, stateOf(t, conf(h2)), "h002's file is not h001's to restore")
	require.Equal(t, "v2 of h001\n", stateOf(t, conf(h1)).Content, "no snapshot of h001's file is left")
}

// TestDiskFull: the filesystem holding a host's backup root is full (a
// 128 KiB tmpfs). The step fails naming the host and step, the target file
// is untouched, nothing half-written is left, and list and rollback work
// once there is room again. The other host, with room, is unaffected.
func TestDiskFull(t *testing.T) {
	e := newEnv(t, 2)
	h, other := e.hosts[0], e.hosts[1]
	mnt := filepath.Join(e.tmp, "small")
	require.NoError(t, os.MkdirAll(mnt, 0o700))
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=128k,mode=0700", "iklim-test-full", mnt).CombinedOutput()
	require.NoError(t, err, "mount tmpfs: %s", out)
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	h.BackupRoot = mnt

	conf := func(h *inventories.Host) string { return e.path(h, "app.conf") }
	big := func(h *inventories.Host) string { return e.path(h, "big.bin") }
	bigData := make([]byte, 100<<10)
	_, _ = rand.Read(bigData)
	for _, x := range e.hosts {
		writeFile(t, conf(x), []byte("orig\n"), 0o644, 0, 0)
		writeFile(t, big(x), bigData, 0o600, 0, 0)
	}
	run1, recap, err := e.play(putStep("config", conf, []byte("v1\n"), 0o644, "root"))
	requireOK(t, recap, err)

	filler := filepath.Join(mnt, "filler")
	fill := func(leave int64) {
		t.Helper()
		_ = os.Remove(filler)
		var st syscall.Statfs_t
		require.NoError(t, syscall.Statfs(mnt, &st))
		f, err := os.OpenFile(filler, os.O_CREATE|os.O_WRONLY, 0o600)
		require.NoError(t, err)
		defer f.Close()
		room := int64(st.Bavail)*st.Bsize - leave
		chunk := make([]byte, 4096)
		for room > 0 {
			if _, err := f.Write(chunk); err != nil {
				require.ErrorIs(t, err, syscall.ENOSPC)
				break
			}
			room -= int64(len(chunk))
		}
	}
	before := stateOf(t, conf(h))
	bigBefore := stateOf(t, big(h))
	leftovers := func() []string {
		var out []string
		_ = filepath.Walk(mnt, func(p string, fi os.FileInfo, err error) error {
			if err == nil && p != mnt && p != filler {
				rel, _ := filepath.Rel(mnt, p)
				out = append(out, rel)
			}
			return nil
		})
		return out
	}
	recorded := leftovers()
	require.Contains(t, recorded, filepath.Join("h001", run1, "changes", "0001.json"))

	for _, c := range []struct {
		name  string
		leave int64
		step  runner.Step
	}{
		{"full", 0, putStep("config", conf, []byte("v2\n"), 0o600, "root")},
		// Room for the owner, run.json and the record, not the snapshot.
		{"nearly full", 5 * 4096, putStep("big", big, []byte("small now\n"), 0o600, "root")},
	} {
		fill(c.leave)
		id, recap, err := e.play(c.step)
		require.NoError(t, err, c.name)
		var hr, or runner.HostRecap
		for _, r := range recap.Hosts {
			switch r.Host {
			case h.Name:
				hr = r
			case other.Name:
				or = r
			}
		}
		require.Equal(t, 1, hr.Failed, c.name)
		require.Contains(t, hr.Error, `record change before applying: backup on h001, step "`+c.step.Name+`"`, c.name)
		require.Contains(t, hr.Error, "No space left on device", c.name)
		require.Equal(t, 1, or.Changed, c.name)
		require.Equal(t, before, stateOf(t, conf(h)), c.name)
		require.Equal(t, bigBefore, stateOf(t, big(h)), c.name)
		require.Equal(t, recorded, leftovers(), "%s: run %s left nothing behind", c.name, id)

		runs, err := backup.List(context.Background(), e.sites())
		require.NoError(t, err, c.name)
		require.Equal(t, run1, runs[0].ID)
		require.Equal(t, []string{"h001", "h002"}, runs[0].Hosts)
		require.Equal(t, backup.StatusOK, runs[0].Status)
		require.Equal(t, []string{"h002"}, runs[len(runs)-1].Hosts, "%s: the failed run has no records on h001", c.name)
	}

	// A rollback is a recorded run too: refused while full, done with room.
	fill(0)
	e.inv = &inventories.Inventory{Hosts: []*inventories.Host{h}}
	_, recap, err = e.rollback(run1, false)
	require.NoError(t, err)
	require.True(t, recap.Failed())
	require.Contains(t, hostErrors(recap), "No space left on device")
	require.Equal(t, before, stateOf(t, conf(h)))
	require.NoError(t, os.Remove(filler))
	_, recap, err = e.rollback(run1, false)
	requireOK(t, recap, err)
	require.Equal(t, "orig\n", stateOf(t, conf(h)).Content)
}
