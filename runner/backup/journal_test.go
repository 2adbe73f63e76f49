package backup_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/backup"
	"github.com/stretchr/testify/require"
)

// journalRuns claims n run ids a minute apart, oldest first.
func journalRuns(t *testing.T, n int) []string {
	t.Helper()
	start := time.Now().UTC().Add(-time.Duration(n+10) * time.Minute)
	ids := make([]string, n)
	for i := range ids {
		id, err := backup.ClaimRunID(start.Add(time.Duration(i) * time.Minute))
		require.NoError(t, err)
		ids[i] = id
	}
	return ids
}

func TestPruneJournalsKeepsTheNewestAndTheLiveOnes(t *testing.T) {
	t.Setenv("IKLIM_STATE_DIR", t.TempDir())
	ids := journalRuns(t, 7)
	// 0: a run of this process, still going.
	backup.NewRecorder(backup.RecorderOptions{Info: runner.RunInfo{ID: ids[0]}})
	// 1: claimed a moment ago, no journal yet (starting). 2: claimed two
	// hours ago and never written (its process died before it began).
	old := time.Now().Add(-2 * time.Hour)
	require.NoError(t, os.Chtimes(backup.JournalDir(ids[2]), old, old))
	// 3: says running, but its process is gone.
	host, _ := os.Hostname()
	dead := `{"id":"` + ids[3] + `","status":"running","control":"` + host + `","pid":2147483646}`
	require.NoError(t, os.WriteFile(filepath.Join(backup.JournalDir(ids[3]), "run.json"), []byte(dead), 0o600))
	for _, id := range ids[4:] {
		require.NoError(t, backup.WriteJournal(runner.RunInfo{ID: id}, &runner.Recap{RunID: id}))
	}
	other := filepath.Join(backup.StateDir(), "runs", "notes")
	require.NoError(t, os.Mkdir(other, 0o700))

	pruned, err := backup.PruneJournals(2, ids[4])
	require.NoError(t, err)
	require.ElementsMatch(t, []string{ids[2], ids[3]}, pruned)
	for i, id := range ids {
		if i == 2 || i == 3 {
			require.NoDirExists(t, backup.JournalDir(id))
		} else {
			require.DirExists(t, backup.JournalDir(id), "run %d", i)
		}
	}
	require.DirExists(t, other, "a directory that is not a run's is left alone")

	// Again: nothing more to prune.
	pruned, err = backup.PruneJournals(2, ids[4])
	require.NoError(t, err)
	require.Empty(t, pruned)
}

func TestRecorderWriteJournalPrunesOldJournals(t *testing.T) {
	t.Setenv("IKLIM_STATE_DIR", t.TempDir())
	ids := journalRuns(t, 4)
	for _, id := range ids[:3] {
		require.NoError(t, backup.WriteJournal(runner.RunInfo{ID: id}, &runner.Recap{RunID: id}))
	}
	rec := backup.NewRecorder(backup.RecorderOptions{Info: runner.RunInfo{ID: ids[3]}, KeepJournals: 2})
	require.NoError(t, rec.WriteJournal(&runner.Recap{RunID: ids[3]}, nil))
	for i, id := range ids {
		if i < 2 {
			require.NoDirExists(t, backup.JournalDir(id), "run %d", i)
		} else {
			require.DirExists(t, backup.JournalDir(id), "run %d", i)
		}
	}
	j, err := backup.ReadJournal(ids[3])
	require.NoError(t, err)
	require.Equal(t, backup.StatusOK, j.Status)

	// Negative: never prune.
	next, err := backup.ClaimRunID(time.Now().UTC())
	require.NoError(t, err)
	rec = backup.NewRecorder(backup.RecorderOptions{Info: runner.RunInfo{ID: next}, KeepJournals: -1})
	require.NoError(t, rec.WriteJournal(&runner.Recap{RunID: next}, nil))
	require.DirExists(t, backup.JournalDir(ids[2]))
}
