package runner_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/iklimco/iklim/internal/recordtest"
	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/commands"
	"github.com/iklimco/iklim/modules/files"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/backup"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/stretchr/testify/require"
	"github.com/zclconf/go-cty/cty"
)

// TestFinishRidesTheLastBatch: a deploy whose last steps find nothing to do
// finishes the host's record in the batch that checks them, not in a
// session of its own after the plays. The record reads as Finish writes it,
// old runs are pruned as Finish prunes them, and a last step that fails
// leaves the finish to the run's end, which records the failure.
func TestFinishRidesTheLastBatch(t *testing.T) {
	f := newFaultHosts(t, []string{"h1"}, transport.SSHOptions{}, sshtest.CountSessions())
	srv := f.servers["h1"]
	h, _ := f.inv.Host("h1")
	h.Vars = map[string]cty.Value{backup.KeepVar: cty.NumberIntVal(2)}
	conf := f.file("h1", "app.conf")
	rev, last := 0, "true"
	pb := &runner.Playbook{File: "finish.hcl", Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
		step("conf", func(h *inventories.Host) modules.Module {
			return &files.Copy{Dest: conf, Content: ptr(string(rune('a'+rev)) + "\n"), Mode: "0644"}
		}),
		step("stat", func(h *inventories.Host) modules.Module { return &files.Stat{Path: conf} }),
		step("last", func(h *inventories.Host) modules.Module {
			return &commands.Shell{Cmd: last, Changed: ptr(false)}
		}),
	}}}}
	readRun := func(id string) backup.RunRecord {
		t.Helper()
		dirs := recordtest.RunDirs(t, h.BackupRoot, id)
		require.Len(t, dirs, 1)
		p := filepath.Join(dirs[0], "run.json")
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		fi, err := os.Stat(p)
		require.NoError(t, err)
		require.Zero(t, fi.Mode().Perm()&0o077, "run.json is private")
		var rr backup.RunRecord
		require.NoError(t, json.Unmarshal(b, &rr), string(b))
		return rr
	}

	var ids []string
	for range 3 {
		rev++
		before := srv.SettledSessions(t)
		id, got := f.runRecorded(pb, f.conn)
		ids = append(ids, id)
		require.Equal(t, map[string]runner.Status{"conf": runner.StatusChanged, "stat": runner.StatusOK, "last": runner.StatusOK}, got)
		// The checks, cut at conf; conf's apply, answering the stat; the
		// last command with the finish. Without it: one more, at the end.
		require.Equal(t, 3, srv.SettledSessions(t)-before, "sessions on the host")
		rr := readRun(id)
		require.Equal(t, backup.StatusOK, rr.Status)
		require.NotNil(t, rr.Finished)
		require.NotNil(t, rr.Result)
		require.Equal(t, runner.HostRecap{Host: "h1", OK: 2, Changed: 1}, *rr.Result)
		require.Equal(t, 1, rr.Changes)
	}
	runs, err := os.ReadDir(backup.HostDir(h.BackupRoot, "h1"))
	require.NoError(t, err)
	var kept []string
	for _, r := range runs {
		if r.IsDir() {
			kept = append(kept, r.Name())
		}
	}
	require.Equal(t, ids[1:], kept, "the finish pruned the runs past backup_keep")

	// A last step that fails shuts the finish's gate: the run's end
	// finishes the host, in a session of its own, and records the failure.
	rev++
	last = "false"
	before := srv.SettledSessions(t)
	id, recap, _, err := f.play(pb, nil)
	require.NoError(t, err)
	require.Equal(t, 1, recap.Hosts[0].Failed)
	require.Equal(t, 4, srv.SettledSessions(t)-before, "sessions on the host")
	rr := readRun(id)
	require.Equal(t, backup.StatusFailed, rr.Status)
	require.Equal(t, runner.HostRecap{Host: "h1", OK: 1, Changed: 1, Failed: 1, Error: rr.Result.Error}, *rr.Result)
	require.NotEmpty(t, rr.Result.Error)
}
