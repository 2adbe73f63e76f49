package files_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/files"
	"github.com/iklimco/iklim/modules/internal/modtest"
	"github.com/iklimco/iklim/modules/remote"
	"github.com/stretchr/testify/require"
)

func TestFileConverges(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string)
		m       func(dir string) *files.File
		summary string
		verify  func(t *testing.T, dir string)
	}{
		{
			name: "directory with mode and owner",
			m: func(dir string) *files.File {
				return &files.File{Path: dir + "/a/b", State: "directory", Mode: "0750", Owner: "nobody", Group: "nogroup"}
			},
			summary: "create directory",
			verify: func(t *testing.T, dir string) {
				require.DirExists(t, dir+"/a/b")
				require.Equal(t, uint32(0o750), modtest.ModeOf(t, dir+"/a/b"))
				uid, gid := modtest.OwnerOf(t, dir+"/a/b")
				require.Equal(t, [2]uint32{modtest.Nobody, modtest.Nobody}, [2]uint32{uid, gid})
			},
		},
		{
			name:    "directory with a mode only: mkdir sets it",
			m:       func(dir string) *files.File { return &files.File{Path: dir + "/d", State: "directory", Mode: "2750"} },
			summary: "create directory",
			verify: func(t *testing.T, dir string) {
				require.Equal(t, uint32(0o2750), modtest.ModeOf(t, dir+"/d"))
			},
		},
		{
			name: "directory with a mode only, parents missing",
			m: func(dir string) *files.File {
				return &files.File{Path: dir + "/p/q", State: "directory", Mode: "0700"}
			},
			summary: "create directory",
			verify: func(t *testing.T, dir string) {
				require.Equal(t, uint32(0o700), modtest.ModeOf(t, dir+"/p/q"))
			},
		},
		{
			name:    "touch creates an empty file",
			m:       func(dir string) *files.File { return &files.File{Path: dir + "/t", State: "touch", Mode: "0600"} },
			summary: "create empty file",
			verify: func(t *testing.T, dir string) {
				require.Equal(t, "", modtest.ReadFile(t, dir+"/t"))
				require.Equal(t, uint32(0o600), modtest.ModeOf(t, dir+"/t"))
			},
		},
		{
			name:  "file sets mode and owner by numeric id",
			setup: func(t *testing.T, dir string) { modtest.WriteFile(t, dir+"/f", "data", 0o644) },
			m: func(dir string) *files.File {
				return &files.File{Path: dir + "/f", Mode: "2640", Owner: "65534", Group: "root"}
			},
			summary: "set",
			verify: func(t *testing.T, dir string) {
				require.Equal(t, uint32(0o2640), modtest.ModeOf(t, dir+"/f"))
				uid, gid := modtest.OwnerOf(t, dir+"/f")
				require.Equal(t, [2]uint32{modtest.Nobody, 0}, [2]uint32{uid, gid})
				require.Equal(t, "data", modtest.ReadFile(t, dir+"/f"))
			},
		},
		{
			name:    "absent removes a tree",
			setup:   func(t *testing.T, dir string) { require.NoError(t, os.MkdirAll(dir+"/gone/x/y", 0o755)) },
			m:       func(dir string) *files.File { return &files.File{Path: dir + "/gone", State: "absent"} },
			summary: "remove",
			verify:  func(t *testing.T, dir string) { require.NoDirExists(t, dir+"/gone") },
		},
		{
			name: "link",
			m: func(dir string) *files.File {
				return &files.File{Path: dir + "/l", State: "link", Src: "/etc/hostname"}
			},
			summary: "link",
			verify: func(t *testing.T, dir string) {
				target, err := os.Readlink(dir + "/l")
				require.NoError(t, err)
				require.Equal(t, "/etc/hostname", target)
			},
		},
		{
			name:  "relink",
			setup: func(t *testing.T, dir string) { require.NoError(t, os.Symlink("/old", dir+"/l")) },
			m: func(dir string) *files.File {
				return &files.File{Path: dir + "/l", State: "link", Src: "new target"}
			},
			summary: "relink",
			verify: func(t *testing.T, dir string) {
				target, err := os.Readlink(dir + "/l")
				require.NoError(t, err)
				require.Equal(t, "new target", target)
				entries, err := os.ReadDir(dir)
				require.NoError(t, err)
				require.Len(t, entries, 1, "no temp link left")
			},
		},
		{
			name:  "link replaces a file with force",
			setup: func(t *testing.T, dir string) { modtest.WriteFile(t, dir+"/l", "x", 0o644) },
			m: func(dir string) *files.File {
				return &files.File{Path: dir + "/l", State: "link", Src: "/etc", Force: true, Owner: "nobody"}
			},
			summary: "replace",
			verify: func(t *testing.T, dir string) {
				target, err := os.Readlink(dir + "/l")
				require.NoError(t, err)
				require.Equal(t, "/etc", target)
				uid, _ := modtest.OwnerOf(t, dir+"/l")
				require.Equal(t, uint32(modtest.Nobody), uid, "the link itself is chowned")
				uid, _ = modtest.OwnerOf(t, "/etc")
				require.Equal(t, uint32(0), uid, "not its target")
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.setup != nil {
				tc.setup(t, dir)
			}
			m, ch := modtest.Converge(t, func() modules.Module { return tc.m(dir) })
			require.Contains(t, ch.Summary, tc.summary)
			require.Equal(t, true, m.(modules.Outputter).Output()["changed"])
			tc.verify(t, dir)
		})
	}
}

func TestFileCheckChangesNothing(t *testing.T) {
	dir := t.TempDir()
	modtest.WriteFile(t, dir+"/f", "data", 0o644)
	require.NoError(t, os.MkdirAll(dir+"/d/sub", 0o755))
	modtest.WriteFile(t, dir+"/d/sub/g", "g", 0o644)
	require.NoError(t, os.Symlink("/x", dir+"/l"))
	before := modtest.Snapshot(t, dir)
	for _, m := range []*files.File{
		{Path: dir + "/f", Mode: "0600", Owner: "nobody"},
		{Path: dir + "/f", State: "absent"},
		{Path: dir + "/d", State: "directory", Mode: "0700", Recurse: true, Owner: "nobody"},
		{Path: dir + "/new", State: "directory"},
		{Path: dir + "/new", State: "touch"},
		{Path: dir + "/l", State: "link", Src: "/y"},
		{Path: dir + "/l", State: "absent"},
	} {
		ch, err := m.Check(context.Background(), modtest.NewCountConn())
		require.NoError(t, err)
		require.NotNil(t, ch, m.Path)
	}
	require.Equal(t, before, modtest.Snapshot(t, dir))
}

func TestFileDiffAndFiles(t *testing.T) {
	dir := t.TempDir()
	modtest.WriteFile(t, dir+"/f", "data", 0o644)
	m := &files.File{Path: dir + "/f", Mode: "0600", Owner: "nobody"}
	ch, err := m.Check(context.Background(), modtest.NewCountConn())
	require.NoError(t, err)
	require.Equal(t, "state: file\nmode: 0644\nowner: root\n", ch.Diff.Before)
	require.Equal(t, "state: file\nmode: 0600\nowner: nobody\n", ch.Diff.After)
	require.Empty(t, ch.Files, "attribute changes are undone by Rollback, not by snapshot")

	m = &files.File{Path: dir + "/new", State: "directory", Mode: "0755"}
	ch, err = m.Check(context.Background(), modtest.NewCountConn())
	require.NoError(t, err)
	require.Equal(t, "state: absent\n", ch.Diff.Before)
	require.Equal(t, "state: directory\nmode: 0755\n", ch.Diff.After)
	require.Equal(t, []string{dir + "/new"}, ch.Files)
}

// A change that writes a link tells the recorder its target, whose hash
// is the link's after it (no readlink), and whether it leaves the link as
// made (no owner to set); one that only sets the link's owner does not.
func TestFileLinkApplyScriptNamesItsTarget(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.Symlink("old", dir+"/was"))
	require.NoError(t, os.Symlink("same", dir+"/same"))
	modtest.WriteFile(t, dir+"/file", "data", 0o644)
	for _, tc := range []struct {
		m    *files.File
		want []modules.ScriptLink
	}{
		{&files.File{Path: dir + "/new", State: "link", Src: "t1"}, []modules.ScriptLink{{Path: dir + "/new", Target: "t1", Own: true}}},
		{&files.File{Path: dir + "/was", State: "link", Src: "t2"}, []modules.ScriptLink{{Path: dir + "/was", Target: "t2", Own: true}}},
		{&files.File{Path: dir + "/file", State: "link", Src: "t3", Force: true}, []modules.ScriptLink{{Path: dir + "/file", Target: "t3", Own: true}}},
		{&files.File{Path: dir + "/new", State: "link", Src: "t4", Group: "nogroup"}, []modules.ScriptLink{{Path: dir + "/new", Target: "t4"}}},
		{&files.File{Path: dir + "/same", State: "link", Src: "same", Owner: "nobody"}, nil},
	} {
		ch, err := tc.m.Check(context.Background(), modtest.NewCountConn())
		require.NoError(t, err)
		require.NotNil(t, ch, tc.m.Path)
		ap := tc.m.ApplyScript(ch)
		require.NotNil(t, ap, tc.m.Path)
		require.Equal(t, tc.want, ap.Links, tc.m.Path)
	}
}

func TestFileRecurseAndRollback(t *testing.T) {
	dir := t.TempDir()
	root := dir + "/tree"
	require.NoError(t, os.MkdirAll(root+"/a/b", 0o755))
	modtest.WriteFile(t, root+"/a/f", "f", 0o644)
	modtest.WriteFile(t, root+"/a/b/g", "g", 0o640)
	require.NoError(t, os.Symlink("/etc/hostname", root+"/a/link"))
	before := modtest.Snapshot(t, dir)

	mk := func() modules.Module {
		return &files.File{Path: root, State: "directory", Recurse: true, Mode: "0750", Owner: "nobody", Group: "nogroup"}
	}
	m, ch := modtest.Converge(t, mk)
	require.Contains(t, ch.Summary, "recursive")
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		require.NoError(t, err)
		uid, gid := modtest.OwnerOf(t, p)
		require.Equal(t, [2]uint32{modtest.Nobody, modtest.Nobody}, [2]uint32{uid, gid}, p)
		if fi.Mode()&os.ModeSymlink == 0 {
			require.Equal(t, uint32(0o750), modtest.ModeOf(t, p), p)
		}
		return nil
	})
	require.NoError(t, err)
	hostUID, _ := modtest.OwnerOf(t, "/etc/hostname")
	require.Equal(t, uint32(0), hostUID, "symlink targets are not chowned")

	// Rollback restores every recorded mode and owner.
	require.NoError(t, m.(modules.Rollbacker).Rollback(context.Background(), modtest.NewCountConn(), ch))
	require.Equal(t, before, modtest.Snapshot(t, dir))
}

func TestFileRollbackRelink(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.Symlink("/old", dir+"/l"))
	before := modtest.Snapshot(t, dir)
	for _, m := range []*files.File{
		{Path: dir + "/l", State: "link", Src: "/new"},
		{Path: dir + "/l", State: "absent"},
	} {
		c := modtest.NewCountConn()
		ch, err := m.Check(context.Background(), c)
		require.NoError(t, err)
		require.NoError(t, m.Apply(context.Background(), c, ch))
		require.NotEqual(t, before, modtest.Snapshot(t, dir))
		require.NoError(t, m.Rollback(context.Background(), c, ch))
		require.Equal(t, before, modtest.Snapshot(t, dir))
	}
}

func TestFileErrors(t *testing.T) {
	dir := t.TempDir()
	modtest.WriteFile(t, dir+"/f", "x", 0o644)
	require.NoError(t, os.Mkdir(dir+"/d", 0o755))
	tests := []struct {
		name string
		m    *files.File
		err  string
	}{
		{"file missing", &files.File{Path: dir + "/missing", Mode: "0644"}, "does not exist"},
		{"file is a directory", &files.File{Path: dir + "/d", Mode: "0644"}, "is a directory"},
		{"directory over a file", &files.File{Path: dir + "/f", State: "directory"}, "not a directory"},
		{"link over a file without force", &files.File{Path: dir + "/f", State: "link", Src: "/x"}, "force = true"},
		{"link over a directory", &files.File{Path: dir + "/d", State: "link", Src: "/x", Force: true}, "is a directory"},
		{"unknown owner", &files.File{Path: dir + "/f", Owner: "no-such-user-xyz"}, "no user no-such-user-xyz"},
		{"unknown group, recursive", &files.File{Path: dir + "/d", State: "directory", Recurse: true, Group: "no-such-group-xyz"},
			"no group no-such-group-xyz"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := modtest.NewCountConn()
			ch, err := tc.m.Check(context.Background(), c)
			if err == nil {
				err = tc.m.Apply(context.Background(), c, ch)
			}
			require.ErrorContains(t, err, tc.err)
			require.Contains(t, err.Error(), dir, "errors name the path")
		})
	}
}

func TestFileValidate(t *testing.T) {
	tests := []struct {
		name string
		m    files.File
		err  string
	}{
		{"ok", files.File{Path: "/x", State: "directory", Mode: "0755"}, ""},
		{"relative", files.File{Path: "x", State: "absent"}, "absolute"},
		{"bad state", files.File{Path: "/x", State: "dir"}, `state "dir"`},
		{"link without src", files.File{Path: "/x", State: "link"}, "needs src"},
		{"src without link", files.File{Path: "/x", State: "touch", Src: "/y"}, "src is only"},
		{"recurse without directory", files.File{Path: "/x", State: "touch", Recurse: true}, "recurse is only"},
		{"force without link", files.File{Path: "/x", State: "absent", Force: true}, "force is only"},
		{"mode on link", files.File{Path: "/x", State: "link", Src: "/y", Mode: "0644"}, "symlink"},
		{"owner on absent", files.File{Path: "/x", State: "absent", Owner: "root"}, "do not apply"},
		{"bad mode", files.File{Path: "/x", State: "directory", Mode: "0999"}, "octal mode"},
		{"symbolic mode", files.File{Path: "/x", State: "directory", Mode: "u+x"}, "octal mode"},
		{"file without attributes", files.File{Path: "/x"}, "only sets mode"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.m.Validate()
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.err)
		})
	}
}

// TestFileCreatesWhatAppearedMeanwhileAsWanted: a directory or a link that
// appears between check and apply (another process, a host sharing the
// filesystem) still ends as wanted: the mode is set, the link replaced,
// never made inside a directory.
func TestFileCreatesWhatAppearedMeanwhileAsWanted(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	conn := modtest.NewCountConn()

	d := &files.File{Path: dir + "/d", State: "directory", Mode: "0750"}
	ch, err := d.Check(ctx, conn)
	require.NoError(t, err)
	require.NotNil(t, ch)
	require.NoError(t, os.Mkdir(dir+"/d", 0o777))
	require.NoError(t, os.Chmod(dir+"/d", 0o777))
	require.NoError(t, d.Apply(ctx, conn, ch))
	require.Equal(t, uint32(0o750), modtest.ModeOf(t, dir+"/d"))

	l := &files.File{Path: dir + "/l", State: "link", Src: "/etc/hostname"}
	ch, err = l.Check(ctx, conn)
	require.NoError(t, err)
	require.NotNil(t, ch)
	require.NoError(t, os.Symlink("/old", dir+"/l"))
	require.NoError(t, l.Apply(ctx, conn, ch))
	target, err := os.Readlink(dir + "/l")
	require.NoError(t, err)
	require.Equal(t, "/etc/hostname", target)

	ld := &files.File{Path: dir + "/ld", State: "link", Src: "/etc/hostname"}
	ch, err = ld.Check(ctx, conn)
	require.NoError(t, err)
	require.NoError(t, os.Mkdir(dir+"/ld", 0o755))
	require.Error(t, ld.Apply(ctx, conn, ch), "a directory in the way is not replaced")
	entries, err := os.ReadDir(dir + "/ld")
	require.NoError(t, err)
	require.Empty(t, entries, "no link made inside it")
}

// proberConn answers each probe with its own probe script, as a runner's
// batch does for many at once.
type proberConn struct{ *modtest.CountConn }

func (c proberConn) Probe(ctx context.Context, p remote.Probe) (remote.ProbeResult, error) {
	ps := []remote.Probe{p}
	r, err := c.Run(ctx, remote.ProbeScript(ps))
	if err != nil {
		return remote.ProbeResult{}, err
	}
	res, errs, err := remote.ParseProbes(ps, r.Stdout)
	if err != nil {
		return remote.ProbeResult{}, err
	}
	return res[0], errs[0]
}

// TestFileLinkAsksOnlyItsTarget: a link step without owner or group asks a
// prober only the link's target, so that a link already right costs no stat.
// One to relink takes the full stat after all: the link's owner goes in the
// record, and rollback gives it back.
func TestFileLinkAsksOnlyItsTarget(t *testing.T) {
	dir := t.TempDir()
	l := dir + "/l"
	require.NoError(t, os.Symlink("/old", l))
	require.NoError(t, os.Lchown(l, modtest.Nobody, modtest.Nobody))
	ctx := context.Background()

	c := proberConn{modtest.NewCountConn()}
	ch, err := (&files.File{Path: l, State: "link", Src: "/old"}).Check(ctx, c)
	require.NoError(t, err)
	require.Nil(t, ch)
	require.EqualValues(t, 1, c.Runs.Load())

	c = proberConn{modtest.NewCountConn()}
	m := &files.File{Path: l, State: "link", Src: "/new"}
	ch, err = m.Check(ctx, c)
	require.NoError(t, err)
	require.NotNil(t, ch)
	require.EqualValues(t, 2, c.Runs.Load(), "the probe, then the stat for the record")
	require.Contains(t, string(ch.Before), `"uid":65534,"gid":65534,"link":true`)
	require.NoError(t, m.Apply(ctx, c, ch))
	require.NoError(t, m.Rollback(ctx, c, ch))
	target, err := os.Readlink(l)
	require.NoError(t, err)
	require.Equal(t, "/old", target)
	fi, err := os.Lstat(l)
	require.NoError(t, err)
	require.EqualValues(t, modtest.Nobody, fi.Sys().(*syscall.Stat_t).Uid)
}
