package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// slowPlaybook writes an inventory of the local machine and a playbook
// whose step "slow" runs for about secs seconds; more is HCL of steps
// after it.
func slowPlaybook(t *testing.T, secs string, more ...string) (inv, pb string) {
	t.Helper()
	dir := t.TempDir()
	inv = writeFile(t, dir, "inv.hcl", fmt.Sprintf(`host "me" {
  local       = true
  backup_root = %q
}
`, filepath.Join(dir, "backups")))
	pb = writeFile(t, dir, "pb.hcl", fmt.Sprintf(`play "p" {
  hosts = "all"
  step "slow" {
    module  = "shell"
    cmd     = "sleep %s"
    timeout = "1m"
  }
%s}
`, secs, strings.Join(more, "")))
	return inv, pb
}

// TestLiveProgressOnATerminal runs iklim play in a real terminal (a tmux
// pane) and reads the screen: while a step runs, its host, name and elapsed
// time of its deadline are shown, and a wait says what it waits for; when
// it ends, the live line is gone and the result is there, coloured unless
// NO_COLOR is set.
func TestLiveProgressOnATerminal(t *testing.T) {
	tmux, err := exec.LookPath("tmux")
	require.NoError(t, err, "tmux is installed by .ci/install")
	ready := filepath.Join(t.TempDir(), "ready")
	inv, pb := slowPlaybook(t, "4", fmt.Sprintf(`  step "ready" {
    module   = "wait_for"
    path     = %q
    max_wait = "1m"
  }
`, ready))
	waiting := regexp.MustCompile(`me  \[ready\] waiting for ` + regexp.QuoteMeta(ready) + `, (\d+)s of 1m0s`)
	var sock string // one tmux server per terminal
	tm := func(args ...string) string {
		cmd := exec.Command(tmux, append([]string{"-L", sock}, args...)...)
		cmd.Env = append(os.Environ(), "TERM=xterm")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "tmux %v: %s", args, out)
		return string(out)
	}
	screenHas := func(s string, args ...string) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			screen := tm(append([]string{"capture-pane", "-p"}, args...)...)
			if strings.Contains(screen, s) {
				return screen
			}
			require.True(t, time.Now().Before(deadline), "the screen never showed %q:\n%s", s, screen)
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, noColor := range []bool{false, true} {
		state := t.TempDir()
		env := "env -u NO_COLOR"
		if noColor {
			env = "env NO_COLOR=1"
		}
		script := fmt.Sprintf("%s IKLIM_STATE_DIR=%s IKLIM_CONTROL_BACKUP_ROOT=%s/b %s play -i %s %s; echo EXIT=$?; sleep 60",
			env, state, state, binary, inv, pb)
		sock = fmt.Sprintf("iklim-progress-%d", time.Now().UnixNano())
		server := sock
		t.Cleanup(func() { _ = exec.Command(tmux, "-L", server, "kill-server").Run() })
		tm("new-session", "-d", "-x", "120", "-y", "40", script)
		// The live line counts the seconds while the step runs.
		first := screenMatches(t, tm, live)
		require.NotContains(t, first[0], "changed:", "the step is still running")
		for {
			next := screenMatches(t, tm, live)
			if next[1] != first[1] {
				require.NotContains(t, next[0], "changed:", "the step is still running")
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		// The wait's live line says what it waits for, until it is there.
		screenMatches(t, tm, waiting)
		require.NoError(t, os.WriteFile(ready, nil, 0o644))
		screen := screenHas("EXIT=")
		require.Contains(t, screen, "EXIT=0")
		require.Regexp(t, `changed:\s+me \[slow\] run sleep 4`, screen)
		require.Regexp(t, `ok:\s+me \[ready\]`, screen)
		require.NotContains(t, screen, "me  [slow]", "the live line is erased when the step ends")
		require.NotContains(t, screen, "me  [ready]", "the live line is erased when the step ends")
		require.NoError(t, os.Remove(ready))
		require.NotContains(t, screen, "still waiting", "a terminal gets the live line, not still-waiting lines")
		colored := tm("capture-pane", "-p", "-e")
		if noColor {
			require.NotContains(t, colored, "\x1b[33m", "NO_COLOR: no colour")
		} else {
			require.Contains(t, colored, "\x1b[33mchanged", "the changed status is coloured on a terminal")
		}
	}
}

// live is the live line of the running step; its group is the seconds.
var live = regexp.MustCompile(`me  \[slow\] (\d)s of 1m0s`)

// screenMatches waits until the tmux pane shows re and returns the screen
// and re's first group.
func screenMatches(t *testing.T, tm func(...string) string, re *regexp.Regexp) [2]string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		screen := tm("capture-pane", "-p")
		if m := re.FindStringSubmatch(screen); m != nil {
			return [2]string{screen, m[1]}
		}
		require.True(t, time.Now().Before(deadline), "the screen never showed %s:\n%s", re, screen)
		time.Sleep(50 * time.Millisecond)
	}
}

// TestProgressWithoutATerminal: in a pipe, a step past --still-waiting
// gets plain "still waiting" lines, with no control codes, unless
// --color=always asks for colour.
func TestProgressWithoutATerminal(t *testing.T) {
	inv, pb := slowPlaybook(t, "2.5")
	stdout, stderr, code := iklim(t, nil, "play", "--still-waiting", "1s", "-i", inv, pb)
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", stdout, stderr)
	still := regexp.MustCompile(`(?m)^still waiting: me \[slow\] \(shell\) ([1-9])s of 1m0s$`).FindAllStringSubmatch(stdout, -1)
	require.GreaterOrEqual(t, len(still), 2, "a line after 1 s and another after 2 s: %s", stdout)
	require.Less(t, still[0][1], still[1][1], "the lines count the time waited")
	require.NotContains(t, stdout, "\x1b", "no control codes in a pipe")

	stdout, _, code = iklim(t, nil, "play", "--color=always", "-i", inv, pb)
	require.Equal(t, 0, code)
	require.Contains(t, stdout, "\x1b[33mchanged\x1b[0m:")
	require.NotContains(t, stdout, "still waiting", "the step ends before the default 10 s")
	require.NotContains(t, stdout, "\x1b[1A", "no live block in a pipe, even in colour")

	_, stderr, code = iklim(t, nil, "play", "--color=pink", "-i", inv, pb)
	require.Equal(t, exitInvalid, code)
	require.Contains(t, stderr, "--color must be auto, always or never")
}
