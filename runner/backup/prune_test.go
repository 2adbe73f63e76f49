package backup

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/transport"

	"github.com/stretchr/testify/require"
)

func TestPruneSet(t *testing.T) {
	done := func(id string) runEntry { return runEntry{ID: id, Rec: &RunRecord{Status: StatusOK}} }
	running := func(id string) runEntry { return runEntry{ID: id, Rec: &RunRecord{Status: StatusRunning}} }
	rollback := func(id, of string) runEntry { e := done(id); e.RollbackOf = of; return e }
	id := func(n string) string { return "2026-11-21T10-15-" + n + "Z" }

	tests := []struct {
		name string
		runs []runEntry
		keep int
		want []string
	}{
		{"keeps the newest", []runEntry{done(id("01")), done(id("02")), done(id("03")), done(id("04"))}, 2, []string{id("01"), id("02")}},
		{"collision suffixes sort numerically", []runEntry{done(id("01") + "-10"), done(id("01") + "-9"), done(id("01") + "-2"), done(id("02"))}, 2, []string{id("01") + "-2", id("01") + "-9"}},
		{"running and interrupted stay and do not count", []runEntry{running(id("01")), done(id("02")), running(id("03")), done(id("04"))}, 2, nil},
		{"a rolled-back interrupted run may go", []runEntry{{ID: id("01"), Rec: &RunRecord{Status: StatusRunning}, RolledBack: true}, done(id("02")), done(id("03"))}, 2, []string{id("01")}},
		{"rollback targets stay, down the chain", []runEntry{done(id("01")), rollback(id("02"), id("01")), rollback(id("03"), id("02")), done(id("04")), done(id("05"))}, 3, nil},
		{"the target of a pruned rollback goes too", []runEntry{done(id("01")), rollback(id("02"), id("01")), done(id("03")), done(id("04")), done(id("05"))}, 3, []string{id("01"), id("02")}},
		{"a dir without run.json stays", []runEntry{{ID: id("01")}, done(id("02")), done(id("03"))}, 1, []string{id("02")}},
		{"the current run is always kept", []runEntry{done(id("09")), done(id("05"))}, 1, []string{id("09")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			current := tt.runs[len(tt.runs)-1].ID
			require.Equal(t, tt.want, pruneSet(tt.runs, current, tt.keep))
		})
	}
}

func TestParseFrames(t *testing.T) {
	out := "R 2026-11-21T10-15-04Z\nF run.json 5\na\nb\nc\nN 3\nC files/0001/1.path {\"exists\":false}\nNORUN\n"
	frames, err := parseFrames(out)
	require.NoError(t, err)
	require.Equal(t, []frame{
		{Kind: "R", Name: "2026-11-21T10-15-04Z"},
		{Kind: "F", Name: "run.json", Data: []byte("a\nb\nc")},
		{Kind: "N", Name: "3"},
		{Kind: "C", Name: "files/0001/1.path", Data: []byte(`{"exists":false}`)},
		{Kind: "NORUN"},
	}, frames)
	_, err = parseFrames("F x 100\nshort\n")
	require.Error(t, err)
}

func TestSealRoundTrip(t *testing.T) {
	dir := t.TempDir()
	k1, err := loadKey(dir, true)
	require.NoError(t, err)
	k2, err := loadKey(dir, false)
	require.NoError(t, err)
	require.Equal(t, k1, k2)
	s, err := seal(k1, []byte("hello"))
	require.NoError(t, err)
	require.NotContains(t, string(s), "hello")
	p, err := unseal(k2, s)
	require.NoError(t, err)
	require.Equal(t, "hello", string(p))
	other, _ := loadKey(t.TempDir(), true)
	_, err = unseal(other, s)
	require.ErrorContains(t, err, "backup key")
}

// TestRunDirClaimedOnce: two control machines that picked the same run id
// cannot write into one run directory.
func TestRunDirClaimedOnce(t *testing.T) {
	t.Setenv("IKLIM_STATE_DIR", t.TempDir())
	ctx := context.Background()
	h := &inventories.Host{Name: "h", BackupRoot: filepath.Join(t.TempDir(), "backups")}
	conn := transport.NewLocalConn("h")
	info := runner.RunInfo{ID: "2026-11-21T10-15-04Z"}
	rec := func(seq int) *runner.ChangeRecord {
		return &runner.ChangeRecord{RunID: info.ID, Seq: seq, Host: "h", Module: "x", Change: modules.Changef("change %d", seq)}
	}
	a, b := NewRecorder(RecorderOptions{Info: info}), NewRecorder(RecorderOptions{Info: info})
	require.NoError(t, a.Before(ctx, conn, h, rec(1)))
	require.ErrorContains(t, b.Before(ctx, conn, h, rec(1)), "belongs to another run")
	require.NoError(t, a.Before(ctx, conn, h, rec(2)))
	require.NoError(t, a.Finish(ctx, conn, h, runner.HostRecap{Host: "h", Changed: 2}))
	rr, err := os.ReadFile(filepath.Join(RunDir(h.BackupRoot, "h", info.ID), "run.json"))
	require.NoError(t, err)
	require.Contains(t, string(rr), `"changes": 2`)
	require.Contains(t, string(rr), `"status": "ok"`)

	// A run directory another run has claimed but not filled yet gets
	// nothing from this one: not even the subdirectories.
	info2 := runner.RunInfo{ID: "2026-11-21T10-15-05Z"}
	dir := RunDir(h.BackupRoot, "h", info2.ID)
	require.NoError(t, os.Mkdir(dir, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "owner"), []byte("elsewhere pid 1 0123456789abcdef\n"), 0o600))
	rec2 := &runner.ChangeRecord{RunID: info2.ID, Seq: 1, Host: "h", Module: "x", Change: modules.Changef("change")}
	require.ErrorContains(t, NewRecorder(RecorderOptions{Info: info2}).Before(ctx, conn, h, rec2), "belongs to another run")
	left, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, left, 1)
	require.Equal(t, "owner", left[0].Name())
}

// countConn counts the commands run through it: round trips to the host.
type countConn struct {
	modules.Conn
	runs int
}

func (c *countConn) Run(ctx context.Context, cmd string, opts ...modules.RunOption) (modules.Result, error) {
	c.runs++
	return c.Conn.Run(ctx, cmd, opts...)
}

// TestRoundTrips: a host's fixed cost per run is the first Before (owner
// marker, run directory, run.json, record and snapshots, the listing for
// retention) and Finish (run.json and pruning); each change costs Before
// and After.
func TestRoundTrips(t *testing.T) {
	t.Setenv("IKLIM_STATE_DIR", t.TempDir())
	ctx := context.Background()
	h := &inventories.Host{Name: "h", BackupRoot: filepath.Join(t.TempDir(), "backups")}
	file := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o600))
	run := func(id string, changes int) int {
		conn := &countConn{Conn: transport.NewLocalConn("h")}
		r := NewRecorder(RecorderOptions{Info: runner.RunInfo{ID: id}, Keep: 1})
		for seq := 1; seq <= changes; seq++ {
			rec := &runner.ChangeRecord{RunID: id, Seq: seq, Host: "h", Step: "s", Module: "x",
				Change: &modules.Change{Summary: "change", Files: []string{file}}}
			require.NoError(t, r.Before(ctx, conn, h, rec))
			require.NoError(t, r.After(ctx, conn, h, rec, nil))
		}
		require.NoError(t, r.Finish(ctx, conn, h, runner.HostRecap{Host: "h", Changed: changes}))
		return conn.runs
	}
	require.Equal(t, 2*1+1, run("2026-11-21T10-15-04Z", 1))
	require.Equal(t, 2*3+1, run("2026-11-21T10-15-05Z", 3), "pruning the first run costs no round trip")
	ents, err := os.ReadDir(HostDir(h.BackupRoot, "h"))
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	require.Equal(t, []string{"2026-11-21T10-15-05Z", "owner"}, names)
}

func TestHostDirName(t *testing.T) {
	for in, want := range map[string]string{
		"iklim-app-01":         "iklim-app-01",
		"web_1.example.com":    "web_1.example.com",
		"a b/c":                "a%20b%2Fc",
		"..":                   "%2E.",
		".hidden":              "%2Ehidden",
		"2026-11-21T10-15-04Z": "%32026-11-21T10-15-04Z",
		"":                     "%",
	} {
		require.Equal(t, want, hostDirName(in), in)
		require.False(t, ValidRunID(hostDirName(in)))
	}
}

// TestRecorderSealsSensitiveArgs: a change of a module that takes a
// sensitive argument (the engine marks its record) has its file snapshots
// sealed, though no secret of the run's list is in them; the same change
// of a module without one is kept plain.
func TestRecorderSealsSensitiveArgs(t *testing.T) {
	t.Setenv("IKLIM_STATE_DIR", t.TempDir())
	ctx := context.Background()
	h := &inventories.Host{Name: "h", BackupRoot: filepath.Join(t.TempDir(), "backups")}
	file := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(file, []byte("token=s3cr3t\n"), 0o600))
	for _, tc := range []struct {
		id        string
		sensitive bool
		ext       string
	}{{"2026-11-21T10-15-06Z", true, ".data.enc"}, {"2026-11-21T10-15-07Z", false, ".data"}} {
		conn := transport.NewLocalConn("h")
		r := NewRecorder(RecorderOptions{Info: runner.RunInfo{ID: tc.id}})
		rec := &runner.ChangeRecord{RunID: tc.id, Seq: 1, Host: "h", Step: "s", Module: "x", SensitiveArgs: tc.sensitive,
			Change: &modules.Change{Summary: "change", Files: []string{file}}}
		require.NoError(t, r.Before(ctx, conn, h, rec))
		require.NoError(t, r.After(ctx, conn, h, rec, nil))
		data, err := os.ReadFile(filepath.Join(RunDir(h.BackupRoot, "h", tc.id), "files", "0001-1"+tc.ext))
		require.NoError(t, err, "sensitive args %v", tc.sensitive)
		require.Equal(t, !tc.sensitive, string(data) == "token=s3cr3t\n", "sensitive args %v", tc.sensitive)
	}
}
