package transport

import (
	"io/fs"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBuildCommand(t *testing.T) {
	tests := []struct {
		name   string
		cmd    string
		env    map[string]string
		become bool
		user   string
		want   string
	}{
		{"untouched", "echo hi", nil, false, "", "echo hi"},
		{"env sorted and quoted", "cmd", map[string]string{"B": "x y", "A": "1"}, false, "", "export A=1 B='x y'\ncmd"},
		{"become root", "id -un", nil, true, "", `sudo -n -u root -- /bin/sh -c 'id -un'`},
		{"become user with env inside", "echo $X", map[string]string{"X": "it's"}, true, "app",
			`sudo -n -u app -- /bin/sh -c 'export X='\''it'\''\'\'''\''s'\''` + "\n" + `echo $X'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := buildCommand(tt.cmd, tt.env, tt.become, tt.user)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
	for _, bad := range []map[string]string{{"": "x"}, {"1A": "x"}, {"A-B": "x"}, {"A B": "x"}, {"OK": "nul\x00"}} {
		_, err := buildCommand("true", bad, false, "")
		require.Error(t, err, bad)
	}
}

// TestBuildCommandRuns runs built commands through a local /bin/sh: env
// reaches every part of a compound command.
func TestBuildCommandRuns(t *testing.T) {
	env := map[string]string{"A": "it's $(x)", "B": "line\nbreak"}
	cmd, err := buildCommand(`true && printf '%s|%s' "$A" "$B"`, env, false, "")
	require.NoError(t, err)
	out, err := exec.Command("/bin/sh", "-c", cmd).Output()
	require.NoError(t, err)
	require.Equal(t, env["A"]+"|"+env["B"], string(out))
}

func TestOctalMode(t *testing.T) {
	require.Equal(t, "0644", octalMode(0o644))
	require.Equal(t, "0600", octalMode(0o600))
	require.Equal(t, "04755", octalMode(0o755|fs.ModeSetuid))
	require.Equal(t, "03775", octalMode(0o775|fs.ModeSetgid|fs.ModeSticky))
	require.Equal(t, "00", octalMode(0))
}
