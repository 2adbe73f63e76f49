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
	"github.com/iklimco/iklim/modules/files"
	"github.com/iklimco/iklim/playbooks"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/backup"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/stretchr/testify/require"
	"github.com/zclconf/go-cty/cty"
)

// TestRestoreChangedCreatedDeleted: a run replaces a binary file (new
// content, mode and owner), creates one and deletes one on two hosts over
// real SSH; rollback restores all three byte-exact with mode and owner.
func TestRestoreChangedCreatedDeleted(t *testing.T) {
	e := newEnv(t, 2)
	nuid, ngid := nobody(t)
	old := make([]byte, 70000)
	_, _ = rand.Read(old)
	old[10], old[11] = 0, '\n'
	newBin := []byte("replaced\x00content\n")

	a := func(h *inventories.Host) string { return e.path(h, "a.bin") }
	b := func(h *inventories.Host) string { return e.path(h, "sub dir/b.conf") }
	c := func(h *inventories.Host) string { return e.path(h, "c's.conf") }
	before := map[string]fileState{}
	for _, h := range e.hosts {
		writeFile(t, a(h), old, 0o640, 0, 0)
		writeFile(t, c(h), []byte("keep me\n"), 0o600, nuid, ngid)
		for _, p := range []string{a(h), b(h), c(h)} {
			before[p] = stateOf(t, p)
		}
	}

	id, recap, err := e.play(
		putStep("replace a", a, newBin, 0o4755, "nobody"),
		putStep("create b", b, []byte("created\n"), 0o644, "root"),
		rmStep("delete c", c),
	)
	requireOK(t, recap, err)
	require.Equal(t, 6, recap.Changed())
	for _, h := range e.hosts {
		require.Equal(t, string(newBin), stateOf(t, a(h)).Content)
		require.Equal(t, uint32(nuid), stateOf(t, a(h)).UID)
		require.True(t, stateOf(t, b(h)).Exists)
		require.False(t, stateOf(t, c(h)).Exists)
	}

	// The records on the host: layout, permissions, metadata.
	h := e.hosts[0]
	dir := backup.RunDir(h.BackupRoot, h.Name, id)
	for p, mode := range map[string]os.FileMode{
		dir: 0o700, filepath.Join(dir, "changes"): 0o700, filepath.Join(dir, "files"): 0o700,
		filepath.Join(dir, "run.json"): 0o600, filepath.Join(dir, "changes", "0001.json"): 0o600,
		filepath.Join(dir, "changes", "0001.after.json"): 0o600, filepath.Join(dir, "files", "0001-1.data"): 0o600,
		filepath.Join(dir, "files", "0001-1.meta.json"): 0o600,
	} {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		require.Equal(t, mode, fi.Mode().Perm(), p)
	}
	snap, err := os.ReadFile(filepath.Join(dir, "files", "0001-1.data"))
	require.NoError(t, err)
	require.Equal(t, old, snap)
	var meta backup.FileMeta
	mb, _ := os.ReadFile(filepath.Join(dir, "files", "0001-1.meta.json"))
	require.NoError(t, json.Unmarshal(mb, &meta))
	// The hash is the data's, taken when the run is read, not when recorded.
	require.Equal(t, backup.FileMeta{Path: a(h), Exists: true, Type: "file", Mode: "640"}, meta)
	hr, err := backup.ReadHostRecords(context.Background(), transport.NewLocalConn(h.Name), h.BackupRoot, h.Name, id)
	require.NoError(t, err)
	require.Equal(t, []backup.FileMeta{{Path: a(h), Exists: true, Type: "file", Mode: "640", SHA256: sha(old)}}, hr.Changes[0].Snapshots)
	mb, _ = os.ReadFile(filepath.Join(dir, "files", "0002-1.meta.json"))
	var meta2 backup.FileMeta
	require.NoError(t, json.Unmarshal(mb, &meta2))
	require.Equal(t, backup.FileMeta{Path: b(h), Exists: false}, meta2)

	var rec runner.ChangeRecord
	cb, _ := os.ReadFile(filepath.Join(dir, "changes", "0003.json"))
	require.NoError(t, json.Unmarshal(cb, &rec))
	require.Equal(t, "test_rm", rec.Module)
	require.Equal(t, "delete c", rec.Step)
	require.Equal(t, "site.hcl:20", rec.Source)
	require.Equal(t, "remove "+c(h), rec.Change.Summary)

	rr := readRunRecord(t, h, id)
	require.Equal(t, backup.StatusOK, rr.Status)
	require.Equal(t, "alice@ctl", rr.User)
	require.Equal(t, "/srv/deploy/site.hcl", rr.Playbook)
	require.Equal(t, "/srv/deploy/prod.hcl", rr.Inventory)
	require.Equal(t, "abc1234", rr.GitCommit)
	require.Equal(t, 3, rr.Changes)
	require.Equal(t, 3, rr.Result.Changed)
	require.NotNil(t, rr.Finished)

	j, err := backup.ReadJournal(id)
	require.NoError(t, err)
	require.Equal(t, backup.StatusOK, j.Status)
	require.Len(t, j.Hosts, 2)

	rid, recap, err := e.rollback(id, false)
	requireOK(t, recap, err)
	require.Equal(t, 2, recap.Changed())
	for p, want := range before {
		require.Equal(t, want, stateOf(t, p), p)
	}
	rr = readRunRecord(t, h, rid)
	require.Equal(t, id, rr.RollbackOf)
	rb, err := os.ReadFile(filepath.Join(backup.RunDir(h.BackupRoot, h.Name, rid), "rollback_of"))
	require.NoError(t, err)
	require.Equal(t, id+"\n", string(rb))

	// `iklim backups list`
	runs, err := backup.List(context.Background(), e.sites())
	require.NoError(t, err)
	require.Len(t, runs, 2)
	require.Equal(t, id, runs[0].ID)
	require.Equal(t, []string{"h001", "h002"}, runs[0].Hosts)
	require.Equal(t, 6, runs[0].Changes)
	require.Equal(t, backup.StatusOK, runs[0].Status)
	require.True(t, runs[0].RolledBack)
	require.Equal(t, rid, runs[1].ID)
	require.Equal(t, id, runs[1].RollbackOf)
	require.Equal(t, 2, runs[1].Changes)
	out := backup.FormatSummaries(runs)
	require.Contains(t, out, id)
	require.Contains(t, out, "rollback of "+id)

	// Rolling back again finds the state the rollback left and changes
	// nothing harmful: the files are already as before the run.
	_, recap, err = e.rollback(id, false)
	require.NoError(t, err)
	require.True(t, recap.Failed(), "a second rollback of the same run sees the first one as drift")
	require.Contains(t, hostErrors(recap), "changed since that run")
}

// TestRollbackRefusesDrift: when a host changed since the run, rollback
// refuses and shows the drift (content, mode, owner, module state);
// force rolls back anyway.
func TestRollbackRefusesDrift(t *testing.T) {
	e := newEnv(t, 2)
	a := func(h *inventories.Host) string { return e.path(h, "app.conf") }
	kv := func(h *inventories.Host) string { return e.path(h, "kv") }
	for _, h := range e.hosts {
		writeFile(t, a(h), []byte("v1\n"), 0o644, 0, 0)
		writeFile(t, kv(h), []byte("blue"), 0o644, 0, 0)
	}
	id, recap, err := e.play(
		putStep("config", a, []byte("v2\n"), 0o644, "root"),
		runner.Step{Name: "kv", Module: "test_kv", Build: func(sc *runner.StepContext) (modules.Module, error) {
			return &kvMod{File: kv(sc.Host), Value: "green"}, nil
		}},
	)
	requireOK(t, recap, err)

	h1, h2 := e.hosts[0], e.hosts[1]
	require.NoError(t, os.WriteFile(a(h1), []byte("v2 edited by hand\n"), 0o644))
	require.NoError(t, os.Chmod(a(h2), 0o600))
	require.NoError(t, os.WriteFile(kv(h2), []byte("red"), 0o644))

	_, recap, err = e.rollback(id, false)
	require.NoError(t, err)
	require.True(t, recap.Failed())
	errs := map[string]string{}
	for _, hr := range recap.Hosts {
		errs[hr.Host] = hr.Error
	}
	require.Contains(t, errs["h001"], a(h1)+": content changed")
	require.Contains(t, errs["h002"], a(h2)+": mode 0644 → 0600")
	require.Contains(t, errs["h002"], `kv is "red", the run left "green"`)
	require.Contains(t, errs["h001"], "force = true")
	// Nothing was restored.
	require.Equal(t, "v2 edited by hand\n", stateOf(t, a(h1)).Content)
	require.Equal(t, "red", stateOf(t, kv(h2)).Content)

	_, recap, err = e.rollback(id, true)
	requireOK(t, recap, err)
	for _, h := range e.hosts {
		require.Equal(t, fileState{Exists: true, Content: "v1\n", Mode: 0o644}, stateOf(t, a(h)))
		require.Equal(t, "blue", stateOf(t, kv(h)).Content, "the module's own Rollback undid kv")
	}
}

// TestRollbackOfRollback: a rollback is a run like any other, so it can be
// rolled back, and that again.
func TestRollbackOfRollback(t *testing.T) {
	e := newEnv(t, 1)
	nuid, ngid := nobody(t)
	h := e.hosts[0]
	a := func(h *inventories.Host) string { return e.path(h, "app.conf") }
	n := func(h *inventories.Host) string { return e.path(h, "new.conf") }
	writeFile(t, a(h), []byte("v1\n"), 0o640, nuid, ngid)
	v1 := stateOf(t, a(h))

	id, recap, err := e.play(
		putStep("config", a, []byte("v2\n"), 0o600, "root"),
		putStep("new", n, []byte("new\n"), 0o644, "root"),
	)
	requireOK(t, recap, err)
	v2, n2 := stateOf(t, a(h)), stateOf(t, n(h))

	r1, recap, err := e.rollback(id, false)
	requireOK(t, recap, err)
	require.Equal(t, v1, stateOf(t, a(h)))
	require.False(t, stateOf(t, n(h)).Exists)

	r2, recap, err := e.rollback(r1, false)
	requireOK(t, recap, err)
	require.Equal(t, v2, stateOf(t, a(h)))
	require.Equal(t, n2, stateOf(t, n(h)))
	require.Equal(t, r1, readRunRecord(t, h, r2).RollbackOf)

	_, recap, err = e.rollback(r2, false)
	requireOK(t, recap, err)
	require.Equal(t, v1, stateOf(t, a(h)))
	require.False(t, stateOf(t, n(h)).Exists)
}

// TestRollbackPhasesAcrossHosts: a run's later play depends on an earlier
// play on another host (nodes join a cluster whose service the manager
// created). Its rollback undoes the later play on every host before it
// undoes the earlier one: the leaving node still sees the service.
func TestRollbackPhasesAcrossHosts(t *testing.T) {
	e := newEnv(t, 2)
	mgr, node := e.hosts[0], e.hosts[1]
	service, member := e.path(mgr, "service"), e.path(node, "member")
	id, recap, err := e.playbook(&runner.Playbook{File: "/srv/deploy/site.hcl", Plays: []runner.Play{
		{Name: "service", Hosts: mgr.Name, Steps: []runner.Step{{Name: "create", Module: "test_kv", Build: func(*runner.StepContext) (modules.Module, error) {
			return &kvMod{File: service, Value: "up"}, nil
		}}}},
		{Name: "cluster", Hosts: node.Name, Steps: []runner.Step{{Name: "join", Module: "test_leave", Build: func(*runner.StepContext) (modules.Module, error) {
			return &leaveMod{File: member, Watch: service}, nil
		}}}},
	}})
	requireOK(t, recap, err)

	phases, err := backup.RollbackPhases(context.Background(), id, runner.Options{
		Inventory: e.inv, Connector: e.connector, Control: e.control, Secrets: e.secrets, Modules: e.modules,
	})
	require.NoError(t, err)
	require.Equal(t, []int{1, 2}, phases, "one phase per play")
	pb := backup.RollbackPlaybook(id, false, phases...)
	require.Len(t, pb.Plays[0].Steps, 2)
	require.Contains(t, pb.Plays[0].Steps[0].Name, "phase 2", "newest phase first")

	_, recap, err = e.rollback(id, false)
	requireOK(t, recap, err)
	require.Equal(t, "left while watch=up", stateOf(t, member).Content, "the node left before the service was removed")
	require.False(t, stateOf(t, service).Exists, "the service's change was undone too")
}

// TestRollbackPlaybookHCL: playbooks/rollback.hcl compiled with -e run=ID
// does what `iklim rollback` does.
func TestRollbackPlaybookHCL(t *testing.T) {
	e := newEnv(t, 2)
	a := func(h *inventories.Host) string { return e.path(h, "app.conf") }
	for _, h := range e.hosts {
		writeFile(t, a(h), []byte("v1\n"), 0o644, 0, 0)
	}
	id, recap, err := e.play(putStep("config", a, []byte("v2\n"), 0o644, "root"))
	requireOK(t, recap, err)

	f, diags := playbooks.Load("../../playbooks/rollback.hcl")
	require.False(t, diags.HasErrors(), diags.Error())
	pb, diags := playbooks.Compile(f, playbooks.Options{Inventory: e.inv, ExtraVars: map[string]string{"run": id}, Modules: e.modules})
	require.False(t, diags.HasErrors(), diags.Error())
	_, recap, err = e.playbook(pb)
	requireOK(t, recap, err)
	for _, h := range e.hosts {
		require.Equal(t, "v1\n", stateOf(t, a(h)).Content)
	}

	// A bad run id is a compile-time error, before any host is touched.
	_, diags = playbooks.Compile(f, playbooks.Options{Inventory: e.inv, ExtraVars: map[string]string{"run": "yesterday"}, Modules: e.modules})
	require.True(t, diags.HasErrors())
	require.Contains(t, diags.Error(), "not a run id")
}

// TestSecretsNeverInRecords: a change whose module takes a sensitive value
// and replaces a file holding an older secret leaves neither secret in
// clear text anywhere in the backup roots or the journal, and can still be
// rolled back (and that rollback too).
func TestSecretsNeverInRecords(t *testing.T) {
	e := newEnv(t, 1)
	h := e.hosts[0]
	const oldSecret, newSecret = "s3cr3t-OLD-1a2b3c4d", "s3cr3t-NEW-9f8e7d6c"
	e.secrets.Add(newSecret)
	p := e.path(h, "env.secrets")
	writeFile(t, p, []byte("PASSWORD="+oldSecret+"\n"), 0o600, 0, 0)
	orig := stateOf(t, p)
	vault := e.path(h, "vault")
	writeFile(t, filepath.Join(vault, "keys", "unseal"), []byte("key: "+oldSecret+"\n"), 0o600, 0, 0)
	origVault := tree(t, vault)

	id, recap, err := e.play(
		runner.Step{Name: "secret", Module: "test_secret", Build: func(sc *runner.StepContext) (modules.Module, error) {
			return &secretMod{Path: p, Value: newSecret}, nil
		}},
		runner.Step{Name: "rm vault", Module: "test_secret_rmtree", Build: func(sc *runner.StepContext) (modules.Module, error) {
			return &secretRmTree{Path: vault}, nil
		}},
	)
	requireOK(t, recap, err)
	require.Equal(t, "PASSWORD="+newSecret+"\n", stateOf(t, p).Content)
	require.NoDirExists(t, vault)

	roots := []string{h.BackupRoot, e.control.BackupRoot, backup.StateDir()}
	require.Empty(t, grepTree(t, newSecret, roots...))
	require.Empty(t, grepTree(t, oldSecret, roots...))

	dir := backup.RunDir(h.BackupRoot, h.Name, id)
	rb, err := os.ReadFile(filepath.Join(dir, "changes", "0001.json"))
	require.NoError(t, err)
	require.Contains(t, string(rb), modules.Redacted)
	require.FileExists(t, filepath.Join(dir, "changes", "0001.json.enc"))
	require.FileExists(t, filepath.Join(dir, "files", "0001-1.data.enc"))
	require.NoFileExists(t, filepath.Join(dir, "files", "0001-1.data"))
	var meta backup.FileMeta
	mb, _ := os.ReadFile(filepath.Join(dir, "files", "0001-1.meta.json"))
	require.NoError(t, json.Unmarshal(mb, &meta))
	require.True(t, meta.Encrypted)
	fi, err := os.Stat(backup.KeyFile(backup.StateDir()))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	require.FileExists(t, filepath.Join(dir, "files", "0002-1.tar.enc"))
	require.NoFileExists(t, filepath.Join(dir, "files", "0002-1.tar"))

	r1, recap, err := e.rollback(id, false)
	requireOK(t, recap, err)
	require.Equal(t, orig, stateOf(t, p))
	require.Equal(t, origVault, tree(t, vault))
	require.Empty(t, grepTree(t, newSecret, roots...), "the rollback's own snapshot is sealed too")
	require.Empty(t, grepTree(t, oldSecret, roots...))

	_, recap, err = e.rollback(r1, false)
	requireOK(t, recap, err)
	require.Equal(t, "PASSWORD="+newSecret+"\n", stateOf(t, p).Content)
	require.Empty(t, grepTree(t, newSecret, roots...))
	require.Empty(t, grepTree(t, oldSecret, roots...))
}

// TestDelegatedChangesRecordedOnControl: changes a step makes on the control
// machine in a host's name are recorded in the control machine's backup
// root, and that host's rollback undoes them.
func TestDelegatedChangesRecordedOnControl(t *testing.T) {
	e := newEnv(t, 2)
	ctl := func(h *inventories.Host) string { return filepath.Join(e.tmp, "control", "files", h.Name+".conf") }
	for _, h := range e.hosts {
		writeFile(t, ctl(h), []byte("old "+h.Name+"\n"), 0o644, 0, 0)
	}
	step := putStep("render", ctl, []byte("new\n"), 0o644, "root")
	step.Delegate = true
	id, recap, err := e.play(step)
	requireOK(t, recap, err)

	recs, err := filepath.Glob(filepath.Join(backup.RunDir(e.control.BackupRoot, e.control.Name, id), "changes", "000?.json"))
	require.NoError(t, err)
	require.Len(t, recs, 2)
	hosts := map[string]bool{}
	for _, p := range recs {
		var rec runner.ChangeRecord
		b, _ := os.ReadFile(p)
		require.NoError(t, json.Unmarshal(b, &rec))
		require.True(t, rec.Delegated)
		hosts[rec.Host] = true
	}
	require.Equal(t, map[string]bool{"h001": true, "h002": true}, hosts)
	for _, h := range e.hosts {
		require.NoDirExists(t, backup.RunDir(h.BackupRoot, h.Name, id))
	}

	_, recap, err = e.rollback(id, false)
	requireOK(t, recap, err)
	for _, h := range e.hosts {
		require.Equal(t, "old "+h.Name+"\n", stateOf(t, ctl(h)).Content)
	}
}

// killConfig is what the parent test hands the run it will SIGKILL.
type killConfig struct {
	Hosts   []*inventories.Host
	Control *inventories.Host
	Tmp     string
}

// TestKillRunHelper is the run TestSIGKILLMidRunThenRollback kills: it
// only runs as that test's child process.
func TestKillRunHelper(t *testing.T) {
	cfgPath := os.Getenv("IKLIM_KILLRUN_CONFIG")
	if cfgPath == "" {
		t.Skip("child process of TestSIGKILLMidRunThenRollback")
	}
	b, err := os.ReadFile(cfgPath)
	require.NoError(t, err)
	var cfg killConfig
	require.NoError(t, json.Unmarshal(b, &cfg))
	sshCfg := filepath.Join(cfg.Tmp, "ssh_config")
	connector := transport.NewSSHConnector(transport.SSHOptions{SSHConfigFile: sshCfg})
	e := &env{t: t, tmp: cfg.Tmp, hosts: cfg.Hosts, inv: &inventories.Inventory{Hosts: cfg.Hosts}, connector: connector,
		control: cfg.Control, secrets: modules.NewSecrets()}
	_, _, _ = e.play(
		putStep("fast", func(h *inventories.Host) string { return e.path(h, "a.conf") }, []byte("new-a\n"), 0o600, "nobody"),
		runner.Step{Name: "slow", Module: "test_slow", Build: func(sc *runner.StepContext) (modules.Module, error) {
			return &slowMod{Path: e.path(sc.Host, "b.conf"), Content: []byte("new-b\n"), Marker: e.path(sc.Host, "../marker")}, nil
		}},
	)
	t.Fatal("the run should have been killed")
}

// TestSIGKILLMidRunThenRollback: a run killed with SIGKILL while a step is
// mid-apply on every host leaves records from which rollback restores
// every host it touched.
func TestSIGKILLMidRunThenRollback(t *testing.T) {
	e := newEnv(t, 2)
	a := func(h *inventories.Host) string { return e.path(h, "a.conf") }
	b := func(h *inventories.Host) string { return e.path(h, "b.conf") }
	before := map[string]fileState{}
	for _, h := range e.hosts {
		writeFile(t, a(h), []byte("orig-a\n"), 0o644, 0, 0)
		writeFile(t, b(h), []byte("orig-b\n"), 0o640, 0, 0)
		before[a(h)], before[b(h)] = stateOf(t, a(h)), stateOf(t, b(h))
	}
	cfg, err := json.Marshal(killConfig{Hosts: e.hosts, Control: e.control, Tmp: e.tmp})
	require.NoError(t, err)
	cfgPath := filepath.Join(e.tmp, "kill.json")
	require.NoError(t, os.WriteFile(cfgPath, cfg, 0o600))

	cmd := exec.Command(os.Args[0], "-test.run=^TestKillRunHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "IKLIM_KILLRUN_CONFIG="+cfgPath)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	require.Eventually(t, func() bool {
		for _, h := range e.hosts {
			if _, err := os.Stat(e.path(h, "../marker")); err != nil {
				return false
			}
		}
		return true
	}, 60*time.Second, 50*time.Millisecond, "child output: %s", &out)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	for _, h := range e.hosts {
		require.Equal(t, "new-a\n", stateOf(t, a(h)).Content)
		require.Equal(t, "new-b\n", stateOf(t, b(h)).Content)
	}

	runs, err := backup.List(context.Background(), e.sites())
	require.NoError(t, err)
	require.Len(t, runs, 1)
	id := runs[0].ID
	require.Equal(t, backup.StatusInterrupted, runs[0].Status)
	require.Equal(t, 4, runs[0].Changes)
	for _, h := range e.hosts {
		require.Equal(t, backup.StatusRunning, readRunRecord(t, h, id).Status)
		require.NoFileExists(t, filepath.Join(backup.RunDir(h.BackupRoot, h.Name, id), "changes", "0002.after.json"), "killed mid-apply")
	}

	_, recap, err := e.rollback(id, false)
	requireOK(t, recap, err)
	for p, want := range before {
		require.Equal(t, want, stateOf(t, p), p)
	}
}

// TestRetention: after a successful run each host keeps its last N runs
// (backup_keep per host); failed runs do not prune, interrupted runs and
// rollback targets are never pruned.
func TestRetention(t *testing.T) {
	e := newEnv(t, 2)
	e.keep = 3
	h1, h2 := e.hosts[0], e.hosts[1]
	h2.Vars = map[string]cty.Value{backup.KeepVar: cty.NumberIntVal(2)}
	a := func(h *inventories.Host) string { return e.path(h, "a.conf") }
	n := 0
	deploy := func() string {
		n++
		id, recap, err := e.play(putStep("config", a, []byte(strings.Repeat("v", n)), 0o644, "root"))
		requireOK(t, recap, err)
		return id
	}
	// An interrupted run from long ago: never pruned automatically.
	stale := "2020-01-01T00-00-00Z"
	for _, h := range e.hosts {
		require.NoError(t, os.MkdirAll(filepath.Join(backup.RunDir(h.BackupRoot, h.Name, stale), "changes"), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(backup.RunDir(h.BackupRoot, h.Name, stale), "run.json"), []byte(`{"id":"`+stale+`","status":"running"}`), 0o600))
	}

	var ids []string
	for range 5 {
		ids = append(ids, deploy())
	}
	require.ElementsMatch(t, []string{stale, ids[2], ids[3], ids[4]}, runDirs(t, h1))
	require.ElementsMatch(t, []string{stale, ids[3], ids[4]}, runDirs(t, h2))

	// A failed run prunes nothing.
	failed, recap, err := e.play(putStep("config", a, []byte("x"), 0o644, "no-such-user"))
	require.NoError(t, err)
	require.True(t, recap.Failed())
	require.ElementsMatch(t, []string{stale, ids[2], ids[3], ids[4], failed}, runDirs(t, h1))
	require.Equal(t, backup.StatusFailed, readRunRecord(t, h1, failed).Status)

	// Roll back the oldest kept run on h1 (h2 drifted past it: limit).
	target := ids[2]
	var rb string
	e.inv = &inventories.Inventory{Hosts: []*inventories.Host{h1}}
	rb, recap, err = e.rollback(target, true)
	requireOK(t, recap, err)
	e.inv = &inventories.Inventory{Hosts: e.hosts}
	// Kept: rb, failed, ids[4]; ids[2] stays as rb's target.
	require.ElementsMatch(t, []string{stale, target, failed, ids[4], rb}, runDirs(t, h1))

	later := []string{deploy(), deploy()}
	// Kept: later..., rb; target still protected by rb.
	require.ElementsMatch(t, []string{stale, target, rb, later[0], later[1]}, runDirs(t, h1))
	last := deploy()
	// rb aged out, and with it the protection of its target.
	require.ElementsMatch(t, []string{stale, later[0], later[1], last}, runDirs(t, h1))
	require.ElementsMatch(t, []string{stale, later[1], last}, runDirs(t, h2))
}

func TestRunIDs(t *testing.T) {
	t.Setenv("IKLIM_STATE_DIR", t.TempDir())
	now := time.Date(2026, 11, 21, 10, 15, 4, 999, time.FixedZone("CET", 3600))
	require.Equal(t, "2026-11-21T09-15-04Z", backup.FormatRunID(now))
	var ids []string
	for range 11 {
		id, err := backup.ClaimRunID(now)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	require.Equal(t, "2026-11-21T09-15-04Z", ids[0])
	require.Equal(t, "2026-11-21T09-15-04Z-2", ids[1])
	require.Equal(t, "2026-11-21T09-15-04Z-11", ids[10])
	for i, id := range ids {
		require.True(t, backup.ValidRunID(id), id)
		require.DirExists(t, backup.JournalDir(id))
		if i > 0 {
			require.Equal(t, -1, backup.CompareRunIDs(ids[i-1], id))
		}
	}
	require.Equal(t, -1, backup.CompareRunIDs("2026-11-21T09-15-04Z-11", "2026-11-21T09-15-05Z"))
	require.Equal(t, 0, backup.CompareRunIDs(ids[3], ids[3]))
	require.False(t, backup.ValidRunID("../etc"))
	require.False(t, backup.ValidRunID("2026-11-21T09-15-04Z-0"))
	next, err := backup.ClaimRunID(now)
	require.NoError(t, err)
	require.Equal(t, "2026-11-21T09-15-04Z-12", next)
}

// tree captures a directory tree: every entry's type, mode, owner and
// content or link target.
func tree(t *testing.T, root string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	_ = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			rel, _ := filepath.Rel(root, p)
			out[rel] = stateOf(t, p)
		}
		return nil
	})
	return out
}

// TestRestoreWithFileModule: the generic file module lists deleted
// directories, created directories and links in Change.Files and undoes
// retargeted links itself; rollback restores a deleted tree (nested files,
// modes, owners, symlinks), removes what was created and relinks. It does
// so too from a run recorded in the layout with a directory per change
// (files/0001/1.data), which runs recorded before the flat one have.
func TestRestoreWithFileModule(t *testing.T) {
	t.Run("flat", func(t *testing.T) { testRestoreWithFileModule(t, false) })
	t.Run("directory per change", func(t *testing.T) { testRestoreWithFileModule(t, true) })
}

func testRestoreWithFileModule(t *testing.T, dirPerChange bool) {
	e := newEnv(t, 2)
	nuid, ngid := nobody(t)
	for _, h := range e.hosts {
		d := e.path(h, "tree")
		writeFile(t, filepath.Join(d, "x"), []byte("x\x00x"), 0o600, nuid, ngid)
		writeFile(t, filepath.Join(d, "sub", "y"), []byte("why\n"), 0o4755, 0, 0)
		require.NoError(t, os.Chmod(d, 0o750))
		require.NoError(t, os.Chown(filepath.Join(d, "sub"), nuid, 0))
		require.NoError(t, os.Symlink("x", filepath.Join(d, "link")))
		require.NoError(t, os.Symlink("target1", e.path(h, "lnk")))
		writeFile(t, e.path(h, "plain.conf"), []byte("plain\n"), 0o644, 0, 0)
	}
	snapshot := func() map[string]map[string]fileState {
		out := map[string]map[string]fileState{}
		for _, h := range e.hosts {
			out[h.Name] = tree(t, e.path(h, ""))
		}
		return out
	}
	orig := snapshot()

	file := func(name string, mk func(h *inventories.Host) *files.File) runner.Step {
		return runner.Step{Name: name, Module: "file", Build: func(sc *runner.StepContext) (modules.Module, error) {
			return mk(sc.Host), nil
		}}
	}
	id, recap, err := e.play(
		file("rm tree", func(h *inventories.Host) *files.File {
			return &files.File{Path: e.path(h, "tree"), State: "absent"}
		}),
		file("relink", func(h *inventories.Host) *files.File {
			return &files.File{Path: e.path(h, "lnk"), State: "link", Src: "target2"}
		}),
		file("mkdir", func(h *inventories.Host) *files.File {
			return &files.File{Path: e.path(h, "newdir/deeper"), State: "directory", Mode: "0700"}
		}),
		file("rm plain", func(h *inventories.Host) *files.File {
			return &files.File{Path: e.path(h, "plain.conf"), State: "absent"}
		}),
		file("new link", func(h *inventories.Host) *files.File {
			return &files.File{Path: e.path(h, "newlink"), State: "link", Src: "/etc/hostname"}
		}),
	)
	requireOK(t, recap, err)
	require.Equal(t, 10, recap.Changed())
	require.FileExists(t, filepath.Join(backup.RunDir(e.hosts[0].BackupRoot, e.hosts[0].Name, id), "files", "0001-1.tar"))
	if dirPerChange {
		for _, h := range e.hosts {
			toDirPerChange(t, filepath.Join(backup.RunDir(h.BackupRoot, h.Name, id), "files"))
		}
	}
	// A snapshot is read with its data's hash, in either layout.
	h0 := e.hosts[0]
	hr, err := backup.ReadHostRecords(context.Background(), transport.NewLocalConn(h0.Name), h0.BackupRoot, h0.Name, id)
	require.NoError(t, err)
	require.Equal(t, "rm plain", hr.Changes[3].Step)
	require.Equal(t, []backup.FileMeta{{Path: e.path(h0, "plain.conf"), Exists: true, Type: "file", Mode: "644", SHA256: sha([]byte("plain\n"))}},
		hr.Changes[3].Snapshots)
	for _, h := range e.hosts {
		require.NoDirExists(t, e.path(h, "tree"))
		require.Equal(t, "target2", stateOf(t, e.path(h, "lnk")).Content)
		require.DirExists(t, e.path(h, "newdir/deeper"))
	}

	_, recap, err = e.rollback(id, false)
	requireOK(t, recap, err)
	got := snapshot()
	for _, h := range e.hosts {
		// mkdir -p made newdir too; only newdir/deeper was recorded, so
		// the empty parent stays (the file module lists only its path).
		delete(got[h.Name], "newdir")
		require.Equal(t, orig[h.Name], got[h.Name], h.Name)
	}
}

// toDirPerChange moves the snapshots in dir (files/<seq>-<n>.<ext>) to
// the layout with a directory per change (files/<seq>/<n>.<ext>).
func toDirPerChange(t *testing.T, dir string) {
	t.Helper()
	snaps, err := filepath.Glob(filepath.Join(dir, "*-*"))
	require.NoError(t, err)
	require.NotEmpty(t, snaps)
	for _, p := range snaps {
		seq, rest, _ := strings.Cut(filepath.Base(p), "-")
		require.NoError(t, os.MkdirAll(filepath.Join(dir, seq), 0o700))
		require.NoError(t, os.Rename(p, filepath.Join(dir, seq, rest)))
	}
}

// TestRollbackCheckMode: `iklim rollback --check --diff` shows what would be
// restored and touches nothing.
func TestRollbackCheckMode(t *testing.T) {
	e := newEnv(t, 2)
	a := func(h *inventories.Host) string { return e.path(h, "app.conf") }
	n := func(h *inventories.Host) string { return e.path(h, "new.conf") }
	for _, h := range e.hosts {
		writeFile(t, a(h), []byte("v1\n"), 0o644, 0, 0)
	}
	id, recap, err := e.play(putStep("config", a, []byte("v2\n"), 0o644, "root"), putStep("new", n, []byte("n\n"), 0o644, "root"))
	requireOK(t, recap, err)

	var diffs []string
	ctx := context.Background()
	recap, err = runner.Run(ctx, backup.RollbackPlaybook(id, false), runner.Options{
		Inventory: e.inv, Connector: e.connector, Control: e.control, Check: true, Diff: true,
		Run: runner.RunInfo{ID: "2026-11-21T10-15-04Z"}, Modules: e.modules,
		Events: func(ev runner.Event) {
			if ev.Diff != nil {
				diffs = append(diffs, ev.Host+"\n"+ev.Diff.After)
			}
		},
	})
	requireOK(t, recap, err)
	require.Equal(t, 2, recap.Changed())
	require.Len(t, diffs, 2)
	for _, d := range diffs {
		require.Contains(t, d, "restore ")
		require.Contains(t, d, "app.conf (file 0644 0:0 sha256:")
		require.Contains(t, d, "new.conf (created by the run)")
	}
	for _, h := range e.hosts {
		require.Equal(t, "v2\n", stateOf(t, a(h)).Content)
		require.True(t, stateOf(t, n(h)).Exists)
	}

	// `iklim backups list` through SSH: the check run recorded nothing.
	runs, err := backup.ListHosts(context.Background(), e.connector, e.hosts, e.control)
	require.NoError(t, err)
	require.Len(t, runs, 1)
	require.Equal(t, id, runs[0].ID)
	require.Equal(t, 4, runs[0].Changes)
	require.False(t, runs[0].RolledBack)
}

// A change made by a module this program does not have is not skipped: the
// rollback fails naming it, and nothing is restored.
func TestRollbackRefusesUnknownModule(t *testing.T) {
	e := newEnv(t, 1)
	a := func(h *inventories.Host) string { return e.path(h, "app.conf") }
	kv := func(h *inventories.Host) string { return e.path(h, "kv") }
	h := e.hosts[0]
	writeFile(t, a(h), []byte("v1\n"), 0o644, 0, 0)
	writeFile(t, kv(h), []byte("blue"), 0o644, 0, 0)
	id, recap, err := e.play(
		putStep("config", a, []byte("v2\n"), 0o644, "root"),
		runner.Step{Name: "kv", Module: "test_not_registered", Build: func(sc *runner.StepContext) (modules.Module, error) {
			return &kvMod{File: kv(sc.Host), Value: "green"}, nil
		}},
	)
	requireOK(t, recap, err)

	_, recap, err = e.rollback(id, false)
	require.NoError(t, err)
	require.True(t, recap.Failed())
	require.Contains(t, recap.Hosts[0].Error, `module "test_not_registered" is not registered`)
	require.Equal(t, "v2\n", stateOf(t, a(h)).Content, "nothing restored")
	require.Equal(t, "green", stateOf(t, kv(h)).Content)
}
