package commands_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/commands"
	"github.com/iklimco/iklim/modules/internal/modtest"
	"github.com/stretchr/testify/require"
)

func TestCommandRuns(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name   string
		m      *commands.Command
		stdout string
	}{
		{"argv is passed as is", &commands.Command{Argv: []string{"printf", "%s|", "a b", "it's", "$HOME", "*"}}, "a b|it's|$HOME|*|"},
		{"cmd is split without expansion", &commands.Command{Cmd: `printf '%s|' "a b" c\ d $HOME 'x"y' "q\"z"`}, `a b|c d|$HOME|x"y|q"z|`},
		{"chdir", &commands.Command{Argv: []string{"pwd"}, Chdir: dir}, dir + "\n"},
		{"env", &commands.Command{Argv: []string{"sh", "-c", `printf %s "$GREETING"`}, Env: map[string]string{"GREETING": "hello 'world'"}}, "hello 'world'"},
		{"stdin", &commands.Command{Argv: []string{"cat"}, Stdin: "from stdin\n"}, "from stdin\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := modtest.NewCountConn()
			require.NoError(t, tc.m.Validate())
			ch, err := tc.m.Check(context.Background(), c)
			require.NoError(t, err)
			require.NotNil(t, ch, "command reports a change like Ansible's")
			require.Equal(t, 0, c.Trips(), "check of an unguarded command needs no round trip")
			require.NoError(t, tc.m.Apply(context.Background(), c, ch))
			require.Equal(t, 1, c.Trips())
			out := tc.m.Output()
			require.Equal(t, tc.stdout, out["stdout"])
			require.Equal(t, 0, out["rc"])
		})
	}
}

func TestCommandOutputLines(t *testing.T) {
	m := &commands.Command{Argv: []string{"printf", `a\nb\n`}}
	c := modtest.NewCountConn()
	ch, err := m.Check(context.Background(), c)
	require.NoError(t, err)
	require.NoError(t, m.Apply(context.Background(), c, ch))
	require.Equal(t, []string{"a", "b"}, m.Output()["stdout_lines"])
}

func TestCommandCreatesRemoves(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "done")

	// creates: runs until the marker exists, then is skipped.
	modtest.Converge(t, func() modules.Module {
		return &commands.Command{Argv: []string{"touch", marker}, Creates: marker}
	})
	require.FileExists(t, marker)

	// removes: runs while the path exists.
	modtest.Converge(t, func() modules.Module {
		return &commands.Command{Argv: []string{"rm", marker}, Removes: marker}
	})
	require.NoFileExists(t, marker)

	m := &commands.Command{Argv: []string{"false"}, Removes: marker}
	ch, err := m.Check(context.Background(), modtest.NewCountConn())
	require.NoError(t, err)
	require.Nil(t, ch)
	require.Equal(t, true, m.Output()["skipped"])
}

func TestCommandFailure(t *testing.T) {
	m := &commands.Command{Argv: []string{"sh", "-c", "echo partial; echo boom >&2; exit 3"}}
	c := modtest.NewCountConn()
	ch, err := m.Check(context.Background(), c)
	require.NoError(t, err)
	err = m.Apply(context.Background(), c, ch)
	require.Error(t, err)
	require.Contains(t, err.Error(), "exit 3")
	require.Contains(t, err.Error(), "boom")
	out := m.Output()
	require.Equal(t, 3, out["rc"])
	require.Equal(t, "partial\n", out["stdout"])
}

func TestCommandReadOnly(t *testing.T) {
	dir := t.TempDir()
	c := modtest.NewCountConn()

	// changed = false: it runs in Check, reports no change.
	m := &commands.Command{Argv: []string{"echo", "hi"}, Changed: modtest.Boolp(false)}
	ch, err := m.Check(context.Background(), c)
	require.NoError(t, err)
	require.Nil(t, ch)
	require.Equal(t, 1, c.Trips())
	require.Equal(t, "hi\n", m.Output()["stdout"])

	// with a guard, still one round trip; the marker line is not output.
	m = &commands.Command{Argv: []string{"echo", "hi"}, Changed: modtest.Boolp(false), Removes: dir}
	ch, err = m.Check(context.Background(), c)
	require.NoError(t, err)
	require.Nil(t, ch)
	require.Equal(t, 1, c.Trips())
	require.Equal(t, "hi\n", m.Output()["stdout"])
	require.Equal(t, false, m.Output()["skipped"])

	m = &commands.Command{Argv: []string{"echo", "hi"}, Changed: modtest.Boolp(false), Creates: dir}
	ch, err = m.Check(context.Background(), c)
	require.NoError(t, err)
	require.Nil(t, ch)
	require.Equal(t, "", m.Output()["stdout"])
	require.Equal(t, true, m.Output()["skipped"])

	// a failing read-only command fails the check.
	m = &commands.Command{Argv: []string{"sh", "-c", "echo nope >&2; exit 2"}, Changed: modtest.Boolp(false)}
	_, err = m.Check(context.Background(), c)
	require.ErrorContains(t, err, "nope")
	_, statErr := os.Stat(filepath.Join(dir, "x"))
	require.True(t, os.IsNotExist(statErr))
}

func TestCommandValidate(t *testing.T) {
	tests := []struct {
		name string
		m    *commands.Command
		err  string
	}{
		{"ok argv", &commands.Command{Argv: []string{"true"}}, ""},
		{"ok cmd", &commands.Command{Cmd: "true"}, ""},
		{"both", &commands.Command{Argv: []string{"true"}, Cmd: "true"}, "argv or cmd, not both"},
		{"neither", &commands.Command{}, "argv or cmd is required"},
		{"empty program", &commands.Command{Argv: []string{""}}, "argv[0]"},
		{"unterminated quote", &commands.Command{Cmd: `echo "hi`}, `unterminated "`},
		{"bad env", &commands.Command{Cmd: "true", Env: map[string]string{"A-B": "x"}}, `env name "A-B"`},
		{"creates and removes", &commands.Command{Cmd: "true", Creates: "/a", Removes: "/b"}, "creates or removes"},
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

func TestCommandSensitiveOutput(t *testing.T) {
	s := modules.NewSecrets()
	ctx := context.Background()
	m := &commands.Command{Argv: []string{"printf", `DB_PASSWORD="hunter2-x"\nTOKEN=abcd1234\n`}, Changed: modtest.Boolp(false), Secret: true}
	m.UseSecrets(s)
	ch, err := m.Check(ctx, modtest.NewCountConn())
	require.NoError(t, err)
	require.Nil(t, ch)
	require.True(t, s.Contains(m.Output()["stdout"].(string)), "the whole output is secret")
	require.Equal(t, "pw="+modules.Redacted, s.Redact("pw=hunter2-x"), "each value is secret on its own")
	require.Equal(t, modules.Redacted, s.Redact("TOKEN=abcd1234"))

	// without sensitive_output nothing is added.
	s2 := modules.NewSecrets()
	m = &commands.Command{Argv: []string{"echo", "TOKEN=abcd1234"}, Changed: modtest.Boolp(false)}
	m.UseSecrets(s2)
	_, err = m.Check(context.Background(), modtest.NewCountConn())
	require.NoError(t, err)
	require.False(t, s2.Contains("abcd1234"))
}
