// Package recordtest holds the checks that fault and rollback tests make on
// what a run left on a loopback host: a file's content, mode and owner, and
// whether the records of a run directory are whole.
package recordtest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/stretchr/testify/require"
)

// FileState is the sha256, mode and owner of the file at p, or "absent".
func FileState(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		return "absent"
	}
	require.NoError(t, err)
	fi, err := os.Stat(p)
	require.NoError(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	sum := sha256.Sum256(b)
	return fmt.Sprintf("%s %o %d:%d", hex.EncodeToString(sum[:]), fi.Mode().Perm(), st.Uid, st.Gid)
}

// WriteUserFile writes content to p (mode 0640) owned by the test servers'
// login user, as if an earlier run had made it: without become, rollback
// cannot give root's files back.
func WriteUserFile(t testing.TB, p, content string) {
	t.Helper()
	u, err := user.Lookup(sshtest.User)
	require.NoError(t, err)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o640))
	require.NoError(t, os.Chmod(p, 0o640))
	require.NoError(t, os.Chown(p, uid, gid))
}

// RunDirs finds the directories of run id under root, whatever the layout
// below root.
func RunDirs(t testing.TB, root, id string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if d.IsDir() && d.Name() == id {
			out = append(out, p)
			return fs.SkipDir
		}
		return nil
	})
	require.NoError(t, err)
	return out
}

// RequireRunDirWhole checks a run directory: every JSON file in it parses,
// no temp file is left, and it holds run.json and a change record.
func RequireRunDirWhole(t testing.TB, dir string) {
	t.Helper()
	changes := 0
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		require.False(t, strings.HasSuffix(d.Name(), ".tmp"), "half-written record left: %s", p)
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".json") {
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			require.True(t, json.Valid(b), "%s does not parse: %q", p, b)
			if filepath.Base(filepath.Dir(p)) == "changes" && !strings.Contains(d.Name(), "after") {
				changes++
			}
		}
		return nil
	}))
	require.FileExists(t, filepath.Join(dir, "run.json"))
	require.Positive(t, changes, "%s holds no change record", dir)
}
