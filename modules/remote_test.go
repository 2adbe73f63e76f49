package modules_test

// Helpers for the generic modules' tests: a LocalConn that counts round
// trips, a converge helper (apply, then a fresh Check must find nothing to
// do in one round trip) and a file tree snapshot for "check changes
// nothing".

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/runner"
	"github.com/stretchr/testify/require"
)

// countConn is a LocalConn that counts its round trips.
type countConn struct {
	modules.Conn
	runs, uploads, downloads atomic.Int32
}

func newCountConn() *countConn { return &countConn{Conn: runner.NewLocalConn("local")} }

func (c *countConn) Run(ctx context.Context, cmd string, opts ...modules.RunOption) (modules.Result, error) {
	c.runs.Add(1)
	return c.Conn.Run(ctx, cmd, opts...)
}

func (c *countConn) Upload(ctx context.Context, p string, r io.Reader, mode fs.FileMode) error {
	c.uploads.Add(1)
	return c.Conn.Upload(ctx, p, r, mode)
}

func (c *countConn) Download(ctx context.Context, p string, w io.Writer) error {
	c.downloads.Add(1)
	return c.Conn.Download(ctx, p, w)
}

// trips returns the round trips so far and resets the counters.
func (c *countConn) trips() int {
	return int(c.runs.Swap(0) + c.uploads.Swap(0) + c.downloads.Swap(0))
}

// checkOnce validates and checks a fresh module.
func checkOnce(t *testing.T, c modules.Conn, mk func() modules.Module) (modules.Module, *modules.Change, error) {
	t.Helper()
	m := mk()
	if v, ok := m.(modules.Validator); ok {
		if err := v.Validate(); err != nil {
			return m, nil, err
		}
	}
	ch, err := m.Check(context.Background(), c)
	return m, ch, err
}

// converge checks (a change is expected), applies, then checks a fresh
// module: it must find nothing to do, in exactly one round trip. It returns
// the first module and its change.
func converge(t *testing.T, mk func() modules.Module) (modules.Module, *modules.Change) {
	t.Helper()
	c := newCountConn()
	m, ch, err := checkOnce(t, c, mk)
	require.NoError(t, err)
	require.NotNil(t, ch, "first check must report a change")
	require.NotEmpty(t, ch.Summary)
	require.NoError(t, m.Apply(context.Background(), c, ch))
	c.trips()
	_, again, err := checkOnce(t, c, mk)
	require.NoError(t, err)
	require.Nil(t, again, "second check must find nothing to do (idempotency)")
	require.Equal(t, 1, c.trips(), "a no-change check costs one round trip")
	return m, ch
}

// entry is what a snapshot records about one path.
type entry struct {
	Mode     fs.FileMode
	UID, GID uint32
	Content  string
	Link     string
}

// snapshot records every path under dir.
func snapshot(t *testing.T, dir string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		e := entry{Mode: fi.Mode(), UID: st.Uid, GID: st.Gid}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			e.Link, err = os.Readlink(p)
		case fi.Mode().IsRegular():
			var b []byte
			b, err = os.ReadFile(p)
			e.Content = string(b)
		}
		out[p] = e
		return err
	})
	require.NoError(t, err)
	return out
}

// ownerOf returns a path's uid and gid, not following a symlink.
func ownerOf(t *testing.T, p string) (uid, gid uint32) {
	t.Helper()
	fi, err := os.Lstat(p)
	require.NoError(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}

// modeOf returns a path's permission bits as octal digits.
func modeOf(t *testing.T, p string) uint32 {
	t.Helper()
	fi, err := os.Lstat(p)
	require.NoError(t, err)
	return fi.Sys().(*syscall.Stat_t).Mode & 0o7777
}

func writeFile(t *testing.T, p, content string, mode fs.FileMode) {
	t.Helper()
	require.NoError(t, os.WriteFile(p, []byte(content), mode))
	require.NoError(t, os.Chmod(p, mode))
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}

func strp(s string) *string { return &s }
func boolp(b bool) *bool    { return &b }

const nobody = 65534 // uid of nobody and gid of nogroup on Debian

func TestGenericModulesRegistered(t *testing.T) {
	for _, name := range []string{"command", "shell", "file", "copy", "line", "template", "wait_for", "stat"} {
		info, ok := modules.Lookup(name)
		require.True(t, ok, name)
		require.NotEmpty(t, info.Doc, name)
		args := info.Args()
		require.NotEmpty(t, args, name)
		for _, a := range args {
			require.NotEmpty(t, a.Doc, "%s.%s has no doc", name, a.Name)
		}
		_, isOut := info.New().(modules.Outputter)
		require.True(t, isOut, "%s should register output", name)
		_, isVal := info.New().(modules.Validator)
		require.True(t, isVal, "%s should validate", name)
	}
	// copy's content is sensitive only when it holds a marked value, so no
	// argument of copy is sensitive by declaration.
	info, _ := modules.Lookup("copy")
	for _, a := range info.Args() {
		require.False(t, a.Sensitive, a.Name)
	}
}
