package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/stretchr/testify/require"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "iklim-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "iklim")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		panic(fmt.Sprintf("build iklim: %v\n%s", err, out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// iklim runs the built binary and returns stdout, stderr and the exit code.
func iklim(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	// Keep the control machine's records inside the test unless env says.
	state := t.TempDir()
	cmd.Env = append(os.Environ(), "IKLIM_STATE_DIR="+state, "IKLIM_CONTROL_BACKUP_ROOT="+filepath.Join(state, "backups"))
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		code = exitErr.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return stdout.String(), stderr.String(), code
}

// countingListener accepts TCP connections and counts them; an inventory
// pointing at it proves whether a command tried to connect.
func countingListener(t *testing.T) (int, *atomic.Int32) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, &n
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

func TestDiagnosticsNameFileLineAndTouchNoHost(t *testing.T) {
	port, accepted := countingListener(t)
	dir := t.TempDir()
	inv := writeFile(t, dir, "inv.hcl", fmt.Sprintf(`
host "web-1" {
  address = "127.0.0.1"
  port    = %d
  user    = "nobody"
}
`, port))
	cases := []struct {
		name, playbook, want string
	}{
		{"unknown module", `play "p" {
  hosts = "all"
  step "s" {
    module = "coppy"
    dest   = "/tmp/x"
  }
}`, `pb.hcl:4`},
		{"unknown argument", `play "p" {
  hosts = "all"
  step "s" {
    module = "file"
    path   = "/tmp/x"
    colour = "red"
  }
}`, `pb.hcl:6`},
		{"missing argument", `play "p" {
  hosts = "all"
  step "s" {
    module = "copy"
    content = "x"
  }
}`, `pb.hcl:3`},
		{"wrong type", `play "p" {
  hosts = "all"
  step "s" {
    module = "file"
    path   = ["a", "b"]
  }
}`, `pb.hcl:5`},
		{"undefined variable", `play "p" {
  hosts = "all"
  step "s" {
    module = "file"
    path   = var.nope
  }
}`, `pb.hcl:5`},
		{"bad host pattern", `play "p" {
  hosts = "web-1:&"
  step "s" {
    module = "file"
    path   = "/tmp/x"
  }
}`, `pb.hcl:2`},
		{"syntax error", `play "p" {
  hosts = "all"
  step "s" {
    module = "file"
    path = "/tmp/x
  }
}`, `pb.hcl:5`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pb := writeFile(t, dir, "pb.hcl", tc.playbook)
			stdout, stderr, code := iklim(t, nil, "play", "-i", inv, pb)
			require.Equal(t, 2, code, "stdout: %s\nstderr: %s", stdout, stderr)
			require.Contains(t, stderr, tc.want)
			require.Regexp(t, `pb\.hcl:\d+:\d+: `, stderr, "file:line:column")
			require.Contains(t, stderr, "no host was contacted")
		})
	}
	require.Zero(t, accepted.Load(), "a connection was opened despite invalid input")
}

func TestPlayOverRealSSHD(t *testing.T) {
	srv := sshtest.Start(t)
	inv := srv.WriteInventory(t, 4)
	base, err := os.MkdirTemp("", "iklim-cli-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	require.NoError(t, os.Chmod(base, 0o777))
	pb := writeFile(t, t.TempDir(), "site.hcl", fmt.Sprintf(`
variable "token" { sensitive = true }
play "files" {
  hosts = "all"
  step "dir" {
    module = "file"
    path   = "%[1]s/${host.name}"
    state  = "directory"
  }
  step "conf" {
    module  = "copy"
    dest    = "%[1]s/${host.name}/app.conf"
    content = "token=${var.token}\nhost=${host.name}\n"
    mode    = "0600"
  }
  step "line" {
    module = "line"
    path   = "%[1]s/${host.name}/app.env"
    line   = "extra=1"
    create = true
    tags   = ["extra"]
  }
  step "kernel" {
    module   = "command"
    cmd      = "uname -r"
    changed  = false
    register = "kernel"
  }
}
`, base))
	// One state dir for every command, so backups list sees the journal.
	state := t.TempDir()
	env := []string{"IKLIM_VAR_token=s3cr3t-t0ken-value", "IKLIM_STATE_DIR=" + state,
		"IKLIM_CONTROL_BACKUP_ROOT=" + filepath.Join(state, "backups")}

	stdout, stderr, code := iklim(t, env, "play", "-i", inv, pb)
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", stdout, stderr)
	firstRun := strings.TrimPrefix(strings.SplitN(stdout, "\n", 2)[0], "RUN ")
	require.Contains(t, stdout, "changed: ")
	require.Regexp(t, `h004\s+ok=1 changed=3 failed=0`, stdout)
	require.NotContains(t, stdout+stderr, "s3cr3t-t0ken-value")
	got, err := os.ReadFile(filepath.Join(base, "h002", "app.conf"))
	require.NoError(t, err)
	require.Equal(t, "token=s3cr3t-t0ken-value\nhost=h002\n", string(got))

	// Idempotency: the second run changes nothing.
	stdout, _, code = iklim(t, env, "play", "-i", inv, pb)
	require.Equal(t, 0, code)
	for _, h := range []string{"h001", "h002", "h003", "h004"} {
		require.Regexp(t, h+`\s+ok=4 changed=0 failed=0`, stdout)
	}

	// JSON: one event per line, ending with the recap; --limit and --tags.
	require.NoError(t, os.Remove(filepath.Join(base, "h001", "app.env")))
	require.NoError(t, os.Mkdir(filepath.Join(base, "h001", "app.env"), 0o755)) // line cannot edit a directory
	stdout, _, code = iklim(t, env, "play", "-i", inv, "-l", "odd:!h003", "-t", "extra", "--output", "json", pb)
	require.Equal(t, 1, code, "the line step fails: its path is a directory")
	var last map[string]any
	sc := bufio.NewScanner(strings.NewReader(stdout))
	lines := 0
	for sc.Scan() {
		lines++
		last = nil
		require.NoError(t, json.Unmarshal(sc.Bytes(), &last), sc.Text())
	}
	require.Greater(t, lines, 2)
	require.Equal(t, "recap", last["type"])
	hosts := last["recap"].(map[string]any)["hosts"].([]any)
	require.Len(t, hosts, 1, "only h001 is odd and not h003")
	require.Equal(t, "h001", hosts[0].(map[string]any)["host"])
	require.EqualValues(t, 1, hosts[0].(map[string]any)["failed"])

	// Check mode reports the change and makes none.
	require.NoError(t, os.Remove(filepath.Join(base, "h001", "app.env")))
	stdout, _, code = iklim(t, env, "play", "-i", inv, "-l", "h001", "-C", "-D", pb)
	require.Equal(t, 0, code, stdout)
	require.Contains(t, stdout, "check mode")
	require.Contains(t, stdout, "+extra=1")
	_, err = os.Stat(filepath.Join(base, "h001", "app.env"))
	require.True(t, os.IsNotExist(err))

	// The first run is listed, and rolling it back removes what it created.
	stdout, _, code = iklim(t, env, "backups", "list", "-i", inv)
	require.Equal(t, 0, code, stdout)
	require.Regexp(t, firstRun+`\s+ok\s+12\s+h001`, stdout)
	stdout, stderr, code = iklim(t, env, "rollback", "--run", firstRun, "-i", inv, "-l", "even")
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", stdout, stderr)
	_, err = os.Stat(filepath.Join(base, "h002"))
	require.True(t, os.IsNotExist(err), "the run created h002's directory; rollback removes it")
	_, err = os.Stat(filepath.Join(base, "h001", "app.conf"))
	require.NoError(t, err, "h001 is not in the limit")
}

func TestUnreachableHostExitsFour(t *testing.T) {
	port, _ := countingListener(t) // accepts then closes: the handshake fails
	dir := t.TempDir()
	inv := writeFile(t, dir, "inv.hcl", fmt.Sprintf(`
host "gone" {
  address = "127.0.0.1"
  port    = %d
  user    = "nobody"
  connect_timeout = "2s"
}
`, port))
	pb := writeFile(t, dir, "pb.hcl", `play "p" {
  hosts = "all"
  step "s" {
    module = "command"
    cmd    = "true"
  }
}`)
	stdout, stderr, code := iklim(t, nil, "play", "-i", inv, pb)
	require.Equal(t, 4, code, "stdout: %s\nstderr: %s", stdout, stderr)
	require.Regexp(t, `gone\s+ok=0 changed=0 failed=0 skipped=0 unreachable=1`, stdout)
}

func TestModulesCommand(t *testing.T) {
	stdout, _, code := iklim(t, nil, "modules")
	require.Equal(t, 0, code)
	for _, m := range []string{"command", "shell", "file", "copy", "line", "template", "wait_for", "stat", "swarm_init", "node_label", "stack_deploy", "rollback"} {
		require.Regexp(t, `(?m)^`+m+`\s`, stdout)
	}
	stdout, _, code = iklim(t, nil, "modules", "file")
	require.Equal(t, 0, code)
	require.Regexp(t, `path\s+string\s+yes`, stdout)
	_, stderr, code := iklim(t, nil, "modules", "fil")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, `did you mean "file"`)
}
