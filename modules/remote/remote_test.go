package remote_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/iklimco/iklim/modules/remote"
	"github.com/stretchr/testify/require"
)

func TestShellQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "''"},
		{"plain", "plain"},
		{"/etc/app.conf", "/etc/app.conf"},
		{"a=b,c:d@e%f+g-h_i.j", "a=b,c:d@e%f+g-h_i.j"},
		{"two words", "'two words'"},
		{"it's", `'it'\''s'`},
		{"'", `''\'''`},
		{"$HOME", "'$HOME'"},
		{"a\nb", "'a\nb'"},
		{"~", "'~'"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, remote.Quote(tt.in), tt.in)
	}
}

// TestShellQuoteRoundTrip feeds quoted words to a real /bin/sh and checks
// that each arrives as exactly one, unchanged argument.
func TestShellQuoteRoundTrip(t *testing.T) {
	words := []string{"", " ", "it's", `'"'"'`, "$(echo pwned)", "`echo pwned`", "${HOME}", "a\nb\n",
		`\`, `\\'\`, "*", "?", "[a]", "~root", "a;b", "a|b", "a&b", "<>", "#comment", "-n", "ğüş 日本", "!", "%s", "\t"}
	for _, w := range words {
		out, err := exec.Command("/bin/sh", "-c", "printf '%s|' "+remote.Quote(w)+" end").Output()
		require.NoError(t, err, w)
		require.Equal(t, w+"|end|", string(out), "word %q", w)
	}
}

// TestWriteFileApplyChownsOnlyWhenNeeded runs WriteFileApply's script in dash
// and bash, as root, with the temp file in place as the recorder leaves it:
// chown (a wrapper that logs its calls before running the real one) is run
// for a name or for ids that are not the shell's, and not for the shell's
// own ids; the file ends with the wanted owner, group and mode either way.
func TestWriteFileApplyChownsOnlyWhenNeeded(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the script chowns to another user")
	}
	bin := t.TempDir()
	log := filepath.Join(bin, "chown.log")
	real, err := exec.LookPath("chown")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(bin, "chown"), []byte("#!/bin/sh\necho \"$@\" >> "+log+"\nexec "+real+" \"$@\"\n"), 0o755))
	for _, sh := range []string{"dash", "bash"} {
		for _, tc := range []struct {
			owner, group string
			mode         uint32
			chown        bool
			uid, gid     int
		}{
			{"0", "0", 0o644, false, 0, 0},
			{"0", "", 0o600, false, 0, 0},
			{"", "0", 0o4755, false, 0, 0},
			{"1234", "0", 0o644, true, 1234, 0},
			{"0", "1234", 0o4750, true, 0, 1234},
			{"root", "root", 0o644, true, 0, 0},
		} {
			name := fmt.Sprintf("%s %s:%s %04o", sh, tc.owner, tc.group, tc.mode)
			dir := t.TempDir()
			dest := filepath.Join(dir, "app.conf")
			require.NoError(t, os.WriteFile(dest, []byte("old\n"), 0o644))
			ap := remote.WriteFileApply(dest, []byte("new\n"), tc.mode, tc.owner, tc.group)
			require.Len(t, ap.Files, 1)
			require.NoError(t, os.WriteFile(ap.Files[0].Path, ap.Files[0].Data, os.FileMode(ap.Files[0].Mode)))
			_ = os.Remove(log)
			cmd := exec.Command(sh, "-c", ap.Script)
			cmd.Env = []string{"PATH=" + bin + ":/usr/sbin:/usr/bin:/sbin:/bin"}
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s: %s", name, out)
			calls, _ := os.ReadFile(log)
			require.Equal(t, tc.chown, len(calls) > 0, "%s: chown calls %q", name, calls)
			b, err := os.ReadFile(dest)
			require.NoError(t, err, name)
			require.Equal(t, "new\n", string(b), name)
			fi, err := os.Stat(dest)
			require.NoError(t, err, name)
			st := fi.Sys().(*syscall.Stat_t)
			require.Equal(t, []int{tc.uid, tc.gid}, []int{int(st.Uid), int(st.Gid)}, name)
			require.Equal(t, tc.mode&0o7777, st.Mode&0o7777, name)
			_, err = os.Stat(ap.Files[0].Path)
			require.True(t, os.IsNotExist(err), "%s: the temp file is renamed over dest", name)
		}
	}
}
