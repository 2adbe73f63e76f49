package backup

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
	"github.com/stretchr/testify/require"
)

// TestReceiveFilesTrapWithSpacesInPaths runs receiveFiles' script in dash
// and bash (login shells run it as they are): a temp file whose directory
// has a space in its name is removed when the apply fails, nothing else is,
// and a file the apply renamed into place stays.
func TestReceiveFilesTrapWithSpacesInPaths(t *testing.T) {
	for _, shell := range []string{"/bin/sh", "/bin/bash"} {
		if _, err := os.Stat(shell); err != nil {
			t.Fatalf("%s: %v", shell, err)
		}
		for _, applyOK := range []bool{false, true} {
			dir := t.TempDir()
			// "my app/.iklim-t" once split at its space into "…/my".
			bystander := filepath.Join(dir, "my")
			require.NoError(t, os.WriteFile(bystander, []byte("keep\n"), 0o644))
			require.NoError(t, os.Mkdir(filepath.Join(dir, "my app"), 0o755))
			tmp := filepath.Join(dir, "my app", ".iklim-t")
			dest := filepath.Join(dir, "my app", "x.conf")
			files := []modules.ScriptFile{{Path: tmp, Data: []byte("new\n"), Mode: 0o644}}

			var sb strings.Builder
			receiveFiles(&sb, files)
			if applyOK {
				sb.WriteString("mv -f -- " + remote.Quote(tmp) + " " + remote.Quote(dest) + "\n")
			} else {
				sb.WriteString("exit 1\n")
			}
			cmd := exec.Command(shell, "-c", sb.String())
			cmd.Stdin = bytes.NewReader(files[0].Data)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if applyOK {
				require.NoError(t, err, "%s: %s", shell, stderr.String())
				require.FileExists(t, dest)
			} else {
				require.Error(t, err, shell)
			}
			require.Empty(t, stderr.String(), shell)
			require.NoFileExists(t, tmp, "%s: the temp file is removed", shell)
			b, err := os.ReadFile(bystander)
			require.NoError(t, err, "%s: the file named by the path's part before its space is untouched", shell)
			require.Equal(t, "keep\n", string(b))
		}
	}
}
