package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/stretchr/testify/require"
)

// --keep-journals: the control machine keeps the journals (which iklim
// report reads) of its newest N runs; 0 and below -1 are refused before any
// host is touched.
func TestKeepJournals(t *testing.T) {
	srv := sshtest.Start(t)
	inv := srv.WriteInventory(t, 1)
	pb := writeFile(t, t.TempDir(), "site.hcl", `play "p" {
  hosts = "all"
  step "true" {
    module  = "command"
    argv    = ["true"]
    changed = false
  }
}
`)
	state := t.TempDir()
	env := []string{"IKLIM_STATE_DIR=" + state, "IKLIM_CONTROL_BACKUP_ROOT=" + filepath.Join(state, "backups")}
	journals := func() []string {
		entries, err := os.ReadDir(filepath.Join(state, "runs"))
		require.NoError(t, err)
		var ids []string
		for _, e := range entries {
			ids = append(ids, e.Name())
		}
		return ids
	}
	var ids []string
	for range 3 {
		stdout, stderr, code := iklim(t, env, "play", "--keep-journals", "2", "-i", inv, pb)
		require.Equal(t, 0, code, "stdout: %s\nstderr: %s", stdout, stderr)
		ids = append(ids, strings.TrimPrefix(strings.SplitN(stdout, "\n", 2)[0], "RUN "))
	}
	require.ElementsMatch(t, ids[1:], journals(), "the newest two runs' journals")

	for _, bad := range []string{"0", "-2"} {
		stdout, stderr, code := iklim(t, env, "play", "--keep-journals", bad, "-i", inv, pb)
		require.Equal(t, exitInvalid, code, "stdout: %s\nstderr: %s", stdout, stderr)
		require.Contains(t, stderr, "--keep-journals must be at least 1, or -1 to keep all")
	}
	require.ElementsMatch(t, ids[1:], journals(), "refused runs leave no journal")

	stdout, stderr, code := iklim(t, env, "play", "--keep-journals", "-1", "-i", inv, pb)
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", stdout, stderr)
	require.Len(t, journals(), 3, "-1 prunes none")
}
