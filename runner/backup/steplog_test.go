package backup_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/backup"
	"github.com/stretchr/testify/require"
)

func TestStepLogKeepsEventsBesideTheJournal(t *testing.T) {
	t.Setenv("IKLIM_STATE_DIR", t.TempDir())
	id, err := backup.ClaimRunID(time.Now().UTC())
	require.NoError(t, err)
	_, err = backup.ReadStepLog(id)
	require.True(t, errors.Is(err, fs.ErrNotExist), "a run without a log: %v", err)

	log, err := backup.OpenStepLog(id)
	require.NoError(t, err)
	log.Event(runner.Event{Type: runner.EventStepStart, Host: "a", Step: "s"})
	log.Event(runner.Event{Type: runner.EventHostResult, Host: "a", Step: "s", Status: runner.StatusChanged,
		Duration: 1500 * time.Millisecond, Diff: &modules.Diff{Label: "/etc/x", Before: "1\n", After: "2\n"}})
	require.NoError(t, log.Close())

	p := filepath.Join(backup.JournalDir(id), "events.jsonl")
	st, err := os.Stat(p)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	// A line cut short by a crash is skipped, not fatal.
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(`{"type":"host_res`)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	evs, err := backup.ReadStepLog(id)
	require.NoError(t, err)
	require.Len(t, evs, 2)
	require.Equal(t, runner.EventHostResult, evs[1].Type)
	require.Equal(t, 1500*time.Millisecond, evs[1].Duration)
	require.Equal(t, &modules.Diff{Label: "/etc/x", Before: "1\n", After: "2\n"}, evs[1].Diff)

	_, err = backup.OpenStepLog("../etc")
	require.Error(t, err, "only run ids name a log")
}
