package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func completeWords(t *testing.T, dir string, words ...string) []string {
	t.Helper()
	out, errOut, code := iklimIn(t, dir, nil, append([]string{"__complete"}, words...)...)
	require.Equal(t, 0, code, errOut)
	return strings.Fields(out)
}

func TestCompleteCandidates(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "inv.hcl", originsInventory)
	require.Equal(t, []string{"play"}, completeWords(t, dir, "pl"))
	require.Contains(t, completeWords(t, dir, ""), "inventory")
	require.NotContains(t, completeWords(t, dir, ""), "__complete", "hidden")
	require.Equal(t, []string{"status"}, completeWords(t, dir, "lock", "st"))
	require.Equal(t, []string{"--syntax-check"}, completeWords(t, dir, "play", "--syn"))
	require.Contains(t, completeWords(t, dir, "play", "-"), "--start-at-step")
	require.Equal(t, []string{"copy"}, completeWords(t, dir, "modules", "cop"))
	require.Equal(t, []string{"fish"}, completeWords(t, dir, "completion", "f"))
	// Hosts and groups come from the inventory -i names.
	require.Equal(t, []string{"web", "web-1", "web-2"}, completeWords(t, dir, "play", "-i", "inv.hcl", "-l", "we"))
	require.Equal(t, []string{"web:!web-1", "web:!web-2"}, completeWords(t, dir, "play", "--inventory=inv.hcl", "--limit", "web:!web-"))
	require.Equal(t, []string{"db-1"}, completeWords(t, dir, "lock", "release", "-i", "inv.hcl", "--host", "d"))
	require.Equal(t, []string{"db", "swarm", "web"}, completeWords(t, dir, "inventory", "-i", "inv.hcl", ""))
	require.Equal(t, []string{"json"}, completeWords(t, dir, "play", "--output", "j"))
	// The playbook position falls back to file names (no candidate).
	require.Empty(t, completeWords(t, dir, "play", "-i", "inv.hcl", "si"))
}

// TestCompletionScripts loads each script into its real shell and asks it
// to complete, so a script that does not parse or call back fails.
func TestCompletionScripts(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "inv.hcl", originsInventory)
	bin := filepath.Dir(binary)
	env := append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "HOME="+dir)
	shell := func(t *testing.T, name string, args ...string) string {
		t.Helper()
		path, err := exec.LookPath(name)
		require.NoError(t, err, "%s is installed by .ci/install", name)
		cmd := exec.Command(path, args...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		return string(out)
	}
	t.Run("bash", func(t *testing.T) {
		out := shell(t, "bash", "-c", `source <(iklim completion bash)
COMP_WORDS=(iklim play -i inv.hcl -l web-); COMP_CWORD=5; _iklim; printf '%s\n' "${COMPREPLY[@]}"
COMP_WORDS=(iklim mod); COMP_CWORD=1; _iklim; printf '%s\n' "${COMPREPLY[@]}"`)
		require.Equal(t, "web-1\nweb-2\nmodules\n", out)
	})
	t.Run("zsh", func(t *testing.T) {
		// compadd only works inside completion widgets: stand in for it.
		out := shell(t, "zsh", "-f", "-c", `compadd() { shift; [[ $1 == -- ]] && shift; print -l -- "$@"; }
_files() { print FILES; }
source <(iklim completion zsh)
words=(iklim play -i inv.hcl --limit web-); CURRENT=6; _iklim
words=(iklim play -i inv.hcl si); CURRENT=5; _iklim`)
		require.Equal(t, "web-1\nweb-2\nFILES\n", out)
	})
	t.Run("fish", func(t *testing.T) {
		out := shell(t, "fish", "--no-config", "-c", `iklim completion fish | source
complete --do-complete 'iklim play -i inv.hcl -l web-'
complete --do-complete 'iklim modules cop'`)
		require.Equal(t, "web-1\nweb-2\ncopy\n", out)
	})
}
