package modules_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/stretchr/testify/require"
)

func TestShell(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		m       *modules.Shell
		stdout  string
		errPart string
	}{
		{"pipes and variables", &modules.Shell{Cmd: `echo "$A b c" | tr ' ' '\n' | wc -l`, Env: map[string]string{"A": "x y"}}, "4\n", ""},
		{"chdir", &modules.Shell{Cmd: "pwd", Chdir: dir}, dir + "\n", ""},
		{"stdin", &modules.Shell{Cmd: "tr a-z A-Z", Stdin: "loud"}, "LOUD", ""},
		{"failure", &modules.Shell{Cmd: "echo to-stderr >&2; exit 7"}, "", "exit 7: to-stderr"},
		{"missing chdir", &modules.Shell{Cmd: "true", Chdir: filepath.Join(dir, "nope")}, "", "exit 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, tc.m.Validate())
			c := newCountConn()
			ch, err := tc.m.Check(context.Background(), c)
			require.NoError(t, err)
			require.NotNil(t, ch)
			err = tc.m.Apply(context.Background(), c, ch)
			if tc.errPart != "" {
				require.ErrorContains(t, err, tc.errPart)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.stdout, tc.m.Output()["stdout"])
		})
	}
}

func TestShellCreatesAndReadOnly(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	converge(t, func() modules.Module {
		return &modules.Shell{Cmd: "echo made > " + out, Creates: out}
	})
	require.Equal(t, "made\n", readFile(t, out))

	m := &modules.Shell{Cmd: "cat " + out + " | wc -c", Changed: boolp(false)}
	ch, err := m.Check(context.Background(), newCountConn())
	require.NoError(t, err)
	require.Nil(t, ch)
	require.Equal(t, []string{"5"}, m.Output()["stdout_lines"])
}

func TestShellValidate(t *testing.T) {
	require.ErrorContains(t, (&modules.Shell{Cmd: "  "}).Validate(), "cmd is empty")
	require.ErrorContains(t, (&modules.Shell{Cmd: "true", Env: map[string]string{"1X": ""}}).Validate(), "env name")
	require.NoError(t, (&modules.Shell{Cmd: "true", Env: map[string]string{"X_1": ""}}).Validate())
}
