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
	"github.com/stretchr/testify/require"
)

func TestStat(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file with 'quotes'")
	modtest.WriteFile(t, file, "hello\n", 0o640)
	require.NoError(t, os.Chown(file, modtest.Nobody, modtest.Nobody))
	sub := filepath.Join(dir, "sub")
	require.NoError(t, os.Mkdir(sub, 0o2775))
	require.NoError(t, syscall.Chmod(sub, 0o2775)) // os.Chmod drops the setgid bit given as 0o2000
	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink("/nowhere", link))
	const helloSum = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"

	base := func(p string) map[string]any {
		return map[string]any{
			"exists": true, "path": p, "mode": "", "uid": 0, "gid": 0, "owner": "root", "group": "root",
			"size": int64(0), "sha256": "", "is_dir": false, "is_file": false, "is_link": false, "link_target": "",
		}
	}
	with := func(m map[string]any, kv ...any) map[string]any {
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	dirSize := func(p string) int64 {
		fi, err := os.Lstat(p)
		require.NoError(t, err)
		return fi.Size()
	}

	tests := []struct {
		name string
		m    *files.Stat
		want map[string]any
	}{
		{"file", &files.Stat{Path: file}, with(base(file), "mode", "0640", "uid", modtest.Nobody, "gid", modtest.Nobody,
			"owner", "nobody", "group", "nogroup", "size", int64(6), "sha256", helloSum, "is_file", true)},
		{"file without checksum", &files.Stat{Path: file, Checksum: modtest.Boolp(false)}, with(base(file), "mode", "0640",
			"uid", modtest.Nobody, "gid", modtest.Nobody, "owner", "nobody", "group", "nogroup", "size", int64(6), "is_file", true)},
		{"directory", &files.Stat{Path: sub}, with(base(sub), "mode", "2775", "size", dirSize(sub), "is_dir", true)},
		{"dangling link", &files.Stat{Path: link}, with(base(link), "mode", "0777", "size", int64(len("/nowhere")),
			"is_link", true, "link_target", "/nowhere")},
		{"missing", &files.Stat{Path: dir + "/missing"}, with(base(dir+"/missing"), "exists", false, "owner", "", "group", "")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, tc.m.Validate())
			c := modtest.NewCountConn()
			ch, err := tc.m.Check(context.Background(), c)
			require.NoError(t, err)
			require.Nil(t, ch, "stat never changes anything")
			require.Equal(t, 1, c.Trips())
			require.Equal(t, tc.want, tc.m.Output())
		})
	}
	require.ErrorContains(t, (&files.Stat{Path: "rel"}).Validate(), "absolute path")

	// the runner may call Apply only after a change, but it must be harmless.
	var m modules.Module = &files.Stat{Path: file}
	require.NoError(t, m.Apply(context.Background(), modtest.NewCountConn(), nil))
}
