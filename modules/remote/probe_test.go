package remote_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iklimco/iklim/modules/remote"
	"github.com/stretchr/testify/require"
)

// runSh runs script with the system's /bin/sh, as a host would.
func runSh(t *testing.T, script string) string {
	t.Helper()
	out, err := exec.Command("/bin/sh", "-c", script).Output()
	require.NoError(t, err, "script:\n%s", script)
	return string(out)
}

// TestProbeScriptAnswersAsStat: one probe script answers every probe as the
// per-check _st script does: stat, sums, link targets, contents and the
// before side of a diff, for paths that exist, are absent, are links or
// directories, or have spaces and quotes in their names.
func TestProbeScriptAnswersAsStat(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), mode))
		require.NoError(t, os.Chmod(p, mode))
		return p
	}
	a := write("a.conf", "alpha\n", 0o640)
	b := write("it's b.conf", "beta\nline two\n", 0o600)
	empty := write("empty", "", 0o644)
	big := write("big", strings.Repeat("x", remote.MaxDiff+10), 0o644)
	link := filepath.Join(dir, "cur")
	require.NoError(t, os.Symlink(a, link))
	sub := filepath.Join(dir, "sub")
	require.NoError(t, os.Mkdir(sub, 0o750))
	require.NoError(t, os.Chmod(sub, 0o750))
	absent := filepath.Join(dir, "absent")

	ps := []remote.Probe{
		{Path: a, Sum: true},
		{Path: b, Content: true},
		{Path: a, DiffWant: remote.SHA256String("other\n")},
		{Path: b, DiffWant: remote.SHA256String("beta\nline two\n")},
		{Path: big, DiffWant: remote.SHA256String("other\n")},
		{Path: empty, Content: true},
		{Path: link},
		{Path: link, Content: true},
		{Path: sub},
		{Path: absent, Sum: true, Content: true},
	}
	for _, p := range ps {
		require.True(t, remote.Probeable(p), p.Path)
	}
	res, errs, err := remote.ParseProbes(ps, runSh(t, remote.ProbeScript(ps)))
	require.NoError(t, err)
	require.Len(t, res, len(ps))

	// Each stat is what the per-check script says.
	for i, p := range ps {
		if errs[i] != nil {
			continue
		}
		st, _, err := remote.ParseStat(runSh(t, remote.StatFunc+remote.StatCall(p.Path, true)))
		require.NoError(t, err)
		got := res[i].Stat
		if got.SHA256 == "" {
			st.SHA256 = ""
		}
		require.Equal(t, st, got, p.Path)
	}
	require.Equal(t, remote.SHA256String("alpha\n"), res[0].Stat.SHA256)
	require.Equal(t, "beta\nline two\n", string(res[1].Content))
	require.Equal(t, "alpha\n", string(res[2].Content), "a differing small file: its content for the diff")
	require.Nil(t, res[3].Content, "the same content: none")
	require.Nil(t, res[4].Content, "a large file: none")
	require.Equal(t, []byte{}, res[5].Content)
	require.Equal(t, "link", res[6].Stat.Type)
	require.Equal(t, a, res[6].Stat.LinkTarget)
	require.ErrorIs(t, errs[7], remote.ErrNoProbe, "a link's content: the check resolves it")
	require.Equal(t, "directory", res[8].Stat.Type)
	require.Equal(t, uint32(0o750), res[8].Stat.Mode)
	require.False(t, res[9].Stat.Exists)
	require.Nil(t, res[9].Content)
}

// TestProbeScriptDiffOfAFileWhoseContentIsAskedReadsItOnce: when a batch
// reads a file's whole content, the before side of a diff of that file
// comes from it (no head of its own), and is what it is alone: the content
// of a small file that differs, nothing for the same or a large file.
func TestProbeScriptDiffOfAFileWhoseContentIsAskedReadsItOnce(t *testing.T) {
	dir := t.TempDir()
	small, big := filepath.Join(dir, "app.conf"), filepath.Join(dir, "big")
	require.NoError(t, os.WriteFile(small, []byte("rev = 1\n"), 0o644))
	require.NoError(t, os.WriteFile(big, []byte(strings.Repeat("y", remote.MaxDiff+1)), 0o644))
	diffs := []remote.Probe{
		{Path: small, DiffWant: remote.SHA256String("rev = 2\n")},
		{Path: small, DiffWant: remote.SHA256String("rev = 1\n")},
		{Path: big, DiffWant: remote.SHA256String("other\n")},
	}
	ps := append([]remote.Probe{{Path: small, Content: true}, {Path: big, Content: true}}, diffs...)
	script := remote.ProbeScript(ps)
	require.NotContains(t, script, "head -c", "the content is read once")
	require.NotContains(t, script, "$(", "and the sums are not kept: a command substitution is a fork")
	res, errs, err := remote.ParseProbes(ps, runSh(t, script))
	require.NoError(t, err)
	for i, p := range diffs {
		alone, aloneErrs, err := remote.ParseProbes([]remote.Probe{p}, runSh(t, remote.ProbeScript([]remote.Probe{p})))
		require.NoError(t, err)
		require.Equal(t, aloneErrs[0], errs[2+i])
		require.Equal(t, alone[0], res[2+i], "diff probe %d", i)
	}
	require.Equal(t, "rev = 1\n", string(res[2].Content))
	require.Nil(t, res[3].Content)
	require.Nil(t, res[4].Content)
}

// TestProbeScriptDiffOfNoRegularFile: the diffs of paths that are absent,
// directories or links need no sums kept (the script prints them straight,
// without the fork of a command substitution), and answer as each alone.
func TestProbeScriptDiffOfNoRegularFile(t *testing.T) {
	dir := t.TempDir()
	conf, sub, link := filepath.Join(dir, "app.conf"), filepath.Join(dir, "sub"), filepath.Join(dir, "cur")
	require.NoError(t, os.WriteFile(conf, []byte("rev = 1\n"), 0o644))
	require.NoError(t, os.Mkdir(sub, 0o755))
	require.NoError(t, os.Symlink(conf, link))
	want := remote.SHA256String("rev = 2\n")
	ps := []remote.Probe{
		{Path: conf, Sum: true},
		{Path: filepath.Join(dir, "absent"), DiffWant: want},
		{Path: sub, DiffWant: want},
		{Path: link, DiffWant: want},
	}
	res, errs, err := remote.ParseProbes(ps, runSh(t, remote.ProbeScript(ps)))
	require.NoError(t, err)
	for i, p := range ps {
		alone, aloneErrs, err := remote.ParseProbes([]remote.Probe{p}, runSh(t, remote.ProbeScript([]remote.Probe{p})))
		require.NoError(t, err)
		require.Equal(t, aloneErrs[0], errs[i])
		require.Equal(t, alone[0], res[i], p.Path)
	}
	require.Equal(t, remote.SHA256String("rev = 1\n"), res[0].Stat.SHA256)
	for _, r := range res[1:] {
		require.Nil(t, r.Content)
	}

	// Once one of them is a regular file that differs, its content comes.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "absent"), []byte("rev = 0\n"), 0o644))
	res, _, err = remote.ParseProbes(ps, runSh(t, remote.ProbeScript(ps)))
	require.NoError(t, err)
	require.Equal(t, "rev = 0\n", string(res[1].Content))
}

// TestProbeScriptChangedFileIsNotTrusted: output that does not add up (a
// file that changed between stat and read) is an error, never a wrong answer.
func TestProbeScriptChangedFileIsNotTrusted(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(p, []byte("one\n"), 0o644))
	ps := []remote.Probe{{Path: p, Content: true}}
	out := runSh(t, remote.ProbeScript(ps))
	_, _, err := remote.ParseProbes(ps, strings.Replace(out, "one\n", "two\n", 1))
	require.Error(t, err)
	_, _, err = remote.ParseProbes(ps, out+"x")
	require.Error(t, err)
	require.False(t, remote.Probeable(remote.Probe{Path: "relative"}))
	require.False(t, remote.Probeable(remote.Probe{Path: "/a\nb"}))
	require.False(t, remote.Probeable(remote.Probe{Path: `/a"b`, DiffWant: remote.SHA256String("")}))
}

// TestProbeScriptTargetOnly: a symlink asked only its target is not stat'ed
// (its lstat mode, 0777, stays zero), unless another probe of it asks more;
// a path asked so that is not a symlink is stat'ed as any other. The answers
// stay in step with the other paths'.
func TestProbeScriptTargetOnly(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(file, []byte("x\n"), 0o640))
	require.NoError(t, os.Chmod(file, 0o640))
	link, both, notLink, dangling := filepath.Join(dir, "cur"), filepath.Join(dir, "both"), filepath.Join(dir, "dir"), filepath.Join(dir, "gone")
	require.NoError(t, os.Symlink(file, link))
	require.NoError(t, os.Symlink(file, both))
	require.NoError(t, os.Mkdir(notLink, 0o750))
	require.NoError(t, os.Chmod(notLink, 0o750))
	require.NoError(t, os.Symlink(filepath.Join(dir, "nowhere"), dangling))

	ps := []remote.Probe{
		{Path: link, Target: true},
		{Path: file, Sum: true},
		{Path: both, Target: true},
		{Path: both},
		{Path: notLink, Target: true},
		{Path: dangling, Target: true},
		{Path: filepath.Join(dir, "absent"), Target: true},
	}
	script := remote.ProbeScript(ps)
	res, errs, err := remote.ParseProbes(ps, runSh(t, script))
	require.NoError(t, err)
	for _, e := range errs {
		require.NoError(t, e)
	}
	require.Equal(t, remote.FileStat{Exists: true, Type: "link", LinkTarget: file}, res[0].Stat, "not stat'ed")
	require.Equal(t, uint32(0o640), res[1].Stat.Mode)
	require.Equal(t, remote.SHA256String("x\n"), res[1].Stat.SHA256)
	require.Equal(t, uint32(0o777), res[2].Stat.Mode, "stat'ed for the probe that asks more")
	require.Equal(t, file, res[2].Stat.LinkTarget)
	require.Equal(t, res[2].Stat, res[3].Stat)
	require.Equal(t, "directory", res[4].Stat.Type)
	require.Equal(t, uint32(0o750), res[4].Stat.Mode, "not a symlink: stat'ed")
	require.Equal(t, remote.FileStat{Exists: true, Type: "link", LinkTarget: filepath.Join(dir, "nowhere")}, res[5].Stat)
	require.False(t, res[6].Stat.Exists)
	require.Contains(t, script, "-l "+remote.Quote(link))
	require.NotContains(t, script, "-l "+remote.Quote(both))
}
