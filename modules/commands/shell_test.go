package commands_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/commands"
	"github.com/iklimco/iklim/modules/internal/modtest"
	"github.com/stretchr/testify/require"
)

func TestShell(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		m       *commands.Shell
		stdout  string
		errPart string
	}{
		{"pipes and variables", &commands.Shell{Cmd: `echo "$A b c" | tr ' ' '\n' | wc -l`, Env: map[string]string{"A": "x y"}}, "4\n", ""},
		{"chdir", &commands.Shell{Cmd: "pwd", Chdir: dir}, dir + "\n", ""},
		{"stdin", &commands.Shell{Cmd: "tr a-z A-Z", Stdin: "loud"}, "LOUD", ""},
		{"failure", &commands.Shell{Cmd: "echo to-stderr >&2; exit 7"}, "", "exit 7: to-stderr"},
		{"missing chdir", &commands.Shell{Cmd: "true", Chdir: filepath.Join(dir, "nope")}, "", "exit 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, tc.m.Validate())
			c := modtest.NewCountConn()
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
	modtest.Converge(t, func() modules.Module {
		return &commands.Shell{Cmd: "echo made > " + out, Creates: out}
	})
	require.Equal(t, "made\n", modtest.ReadFile(t, out))

	m := &commands.Shell{Cmd: "cat " + out + " | wc -c", Changed: modtest.Boolp(false)}
	ch, err := m.Check(context.Background(), modtest.NewCountConn())
	require.NoError(t, err)
	require.Nil(t, ch)
	require.Equal(t, []string{"5"}, m.Output()["stdout_lines"])
}

func TestShellValidate(t *testing.T) {
	require.ErrorContains(t, (&commands.Shell{Cmd: "  "}).Validate(), "cmd is empty")
	require.ErrorContains(t, (&commands.Shell{Cmd: "true", Env: map[string]string{"1X": ""}}).Validate(), "env name")
	require.NoError(t, (&commands.Shell{Cmd: "true", Env: map[string]string{"X_1": ""}}).Validate())
}
