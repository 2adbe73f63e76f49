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
	"syscall"
	"testing"
	"time"

	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "iklim-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "iklim")
	if out, err := exec.Command("go", "build", "-buildvcs=auto", "-o", binary, ".").CombinedOutput(); err != nil {
		panic(fmt.Sprintf("build iklim: %v\n%s", err, out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// iklim runs the built binary and returns stdout, stderr and the exit code.
func iklim(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	return iklimIn(t, "", env, args...)
}

// iklimIn is iklim run in dir.
func iklimIn(t *testing.T, dir string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
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

// TestHostileInputExitsTwoAndTouchesNoHost runs the binary on bad flags,
// limits, inventories and playbooks: each must exit 2, promptly, naming the
// problem, without a single connection to the inventory's host.
func TestHostileInputExitsTwoAndTouchesNoHost(t *testing.T) {
	port, accepted := countingListener(t)
	dir := t.TempDir()
	inv := writeFile(t, dir, "inv.hcl", fmt.Sprintf(`
host "web-1" {
  address = "127.0.0.1"
  port    = %d
  user    = "nobody"
}
`, port))
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	good := writeFile(t, dir, "good.hcl", `play "p" {
  hosts = "all"
  step "s" {
    module = "command"
    cmd    = "true"
  }
}`)
	step := func(args string) string {
		return fmt.Sprintf("play \"p\" {\n  hosts = \"all\"\n  step \"s\" {\n    %s\n  }\n}\n", args)
	}
	badInv := func(attr string) string {
		return writeFile(t, t.TempDir(), "inv.hcl", fmt.Sprintf("host \"web-1\" {\n  address = \"127.0.0.1\"\n  port = %d\n}\nhost \"other\" {\n  %s\n}\n", port, attr))
	}
	cases := []struct {
		name     string
		args     []string
		playbook string // written to pb.hcl and appended to args when set
		want     string
	}{
		{"unknown limit", []string{"-l", "nosuch", good}, "", `--limit: `},
		{"limit selecting nothing", []string{"-l", "!web-1", good}, "", `selects no host`},
		{"bad flag value", []string{"--forks", "abc", good}, "", `invalid value "abc" for flag -forks`},
		{"unknown flag", []string{"--nosuch", good}, "", `flag provided but not defined`},
		{"empty module", nil, step(`module = ""`), `pb.hcl:4:14: `},
		{"bad lock name", nil, "lock \"bad name!\" {\n  host = \"web-1\"\n}\n" + step(`module = "command"
    cmd = "true"`), `pb.hcl:1:6: `},
		{"zero lock ttl", nil, "lock \"l\" {\n  host = \"web-1\"\n  ttl = \"0s\"\n}\n" + step(`module = "command"
    cmd = "true"`), `pb.hcl:3:9: `},
		{"NUL in an argument", nil, step(`module = "command"
    cmd = "true\u0000"`), `pb.hcl:5:11: `},
		{"/dev/zero", nil, step(`module = "copy"
    dest = "/tmp/x"
    content = file("/dev/zero")`), `/dev/zero is not a regular file`},
		{"FIFO", nil, step(fmt.Sprintf(`module = "copy"
    dest = "/tmp/x"
    content = file(%q)`, fifo)), `is not a regular file`},
		{"format width", nil, step(`module = "command"
    cmd = format("%2000000000s", "x")`), `larger than 16 MiB`},
		{"indent", nil, step(`module = "command"
    cmd = indent(2e9, "a\nb")`), `larger than 16 MiB`},
		{"setproduct", nil, step(`module = "command"
    cmd = jsonencode(setproduct(range(1000), range(1000), range(1000)))`), `larger than 16 MiB`},
		{"deep nesting", nil, step(`module = "command"
    cmd = ` + strings.Repeat("(", 100000) + `"true"` + strings.Repeat(")", 100000)), `Nesting too deep`},
		{"swarm manager not in the inventory", nil, step(`module = "swarm_init"
    managers = ["web-1", "ghost"]`), `pb.hcl:5:26: `},
		{"node_label manager not in the inventory", nil, step(`module = "node_label"
    labels = { a = "b" }
    manager = "ghost"`), `pb.hcl:6:15: `},
		{"playbook is /dev/zero", []string{"/dev/zero"}, "", `/dev/zero is not a regular file`},
		{"playbook is a FIFO", []string{fifo}, "", `is not a regular file`},
		{"inventory address with port", []string{"-i", badInv(`address = "127.0.0.1:2299"`), good}, "", `inv.hcl:6:13: `},
		{"blank address", []string{"-i", badInv(`address = " "`), good}, "", `Invalid address`},
		{"empty address", []string{"-i", badInv(`address = ""`), good}, "", `Invalid address`},
		{"empty user", []string{"-i", badInv(`user = ""`), good}, "", `Invalid user`},
		{"bad proxy_jump hop", []string{"-i", badInv(`proxy_jump = "a,,b"`), good}, "", `Invalid proxy_jump`},
		{"bad proxy_jump port", []string{"-i", badInv(`proxy_jump = "h:notaport"`), good}, "", `Invalid proxy_jump`},
		{"inventory is a FIFO", []string{"-i", fifo, good}, "", `is not a regular file`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"play", "-i", inv}, tc.args...)
			if tc.playbook != "" {
				args = append(args, writeFile(t, t.TempDir(), "pb.hcl", tc.playbook))
			}
			start := time.Now()
			stdout, stderr, code := iklim(t, nil, args...)
			require.Equal(t, 2, code, "stdout: %s\nstderr: %s", stdout, stderr)
			require.Contains(t, stderr, tc.want)
			require.Less(t, time.Since(start), 30*time.Second)
		})
	}
	require.Zero(t, accepted.Load(), "a connection was opened despite invalid input")
}

// TestDiagnosticsAreCappedAndEscaped: a playbook with a hundred errors
// shows twenty of them, and a source line with terminal escapes is quoted
// escaped.
func TestDiagnosticsAreCappedAndEscaped(t *testing.T) {
	dir := t.TempDir()
	inv := writeFile(t, dir, "inv.hcl", "host \"web-1\" {\n  address = \"127.0.0.1\"\n}\n")
	var sb strings.Builder
	sb.WriteString("play \"p\" {\n  hosts = \"all\"\n  step \"s\" {\n    module = \"command\"\n    cmd = \"true\"\n")
	sb.WriteString("    bogus = 1 # \x1b]0;owned\x07\x1b[2J\n")
	for i := range 100 {
		fmt.Fprintf(&sb, "    bad%d = 1\n", i)
	}
	sb.WriteString("  }\n}\n")
	pb := writeFile(t, dir, "pb.hcl", sb.String())
	_, stderr, code := iklim(t, nil, "play", "-i", inv, pb)
	require.Equal(t, 2, code)
	require.Equal(t, 20, strings.Count(stderr, "Error: "), stderr)
	require.Contains(t, stderr, "… and 81 more (101 errors in all).")
	require.Contains(t, stderr, `bogus = 1 # \x1b]0;owned\x07\x1b[2J`)
	require.NotContains(t, stderr, "\x1b")
	require.NotContains(t, stderr, "\x07")
}

// TestCrashIsNotBadInput: a panic exits with exitCrash, not with Go's 2,
// which scripts would read as bad input.
func TestCrashIsNotBadInput(t *testing.T) {
	boom := &cli.Command{Name: "boom", Action: func(*cli.Context) error { panic("boom") }}
	require.Equal(t, exitCrash, run([]string{"iklim", "boom"}, boom))
	require.NotEqual(t, exitInvalid, exitCrash)
	ok := &cli.Command{Name: "ok", Action: func(*cli.Context) error { return nil }}
	require.Equal(t, 0, run([]string{"iklim", "ok"}, ok))
	require.Equal(t, exitInvalid, run([]string{"iklim", "nosuch"}, ok))
	require.Equal(t, exitInvalid, run([]string{"iklim", "ok", "--nosuch"}, ok))
}

// TestLockCommandsRefuseBadNamesBeforeConnecting: lock status and release
// check the name first (exit 2), with no connection.
func TestLockCommandsRefuseBadNamesBeforeConnecting(t *testing.T) {
	port, accepted := countingListener(t)
	inv := writeFile(t, t.TempDir(), "inv.hcl", fmt.Sprintf("host \"web-1\" {\n  address = \"127.0.0.1\"\n  port = %d\n}\n", port))
	for _, args := range [][]string{
		{"lock", "status", "-i", inv, "bad name!"},
		{"lock", "release", "-i", inv, "--host", "web-1", "../x"},
	} {
		_, stderr, code := iklim(t, nil, args...)
		require.Equal(t, 2, code, stderr)
		require.Contains(t, stderr, "lock name")
	}
	require.Zero(t, accepted.Load())
}

func TestInterspersedFlags(t *testing.T) {
	cmds := commands()
	for _, tc := range []struct{ in, want string }{
		{"iklim play site.hcl -e k=v --check", "iklim play -e k=v --check site.hcl"},
		{"iklim play -i inv site.hcl -e k=v -C", "iklim play -i inv -e k=v -C site.hcl"},
		{"iklim play site.hcl --extra-vars=k=v", "iklim play --extra-vars=k=v site.hcl"},
		{"iklim play -i inv -- -odd.hcl --check", "iklim play -i inv -- -odd.hcl --check"},
		{"iklim play site.hcl -e -- --check", "iklim play -e -- --check site.hcl"}, // -e's value is "--"
		{"iklim lock status prod -i inv", "iklim lock status -i inv prod"},
		{"iklim modules copy", "iklim modules copy"},
		{"iklim __complete play -i", "iklim __complete play -i"},
		{"iklim nosuch -x y", "iklim nosuch -x y"},
	} {
		require.Equal(t, strings.Fields(tc.want), interspersed(strings.Fields(tc.in), cmds), tc.in)
	}
}

// TestFlagsAfterPlaybook parses with the real flag parser: flags after
// PLAYBOOK take effect and -- ends them.
func TestFlagsAfterPlaybook(t *testing.T) {
	var got *cli.Context
	cmds := parseOnly(commands(), &got)
	require.Equal(t, 0, run(strings.Fields("iklim play -i inv site.hcl -e k=v --check -t a -v"), cmds...))
	require.Equal(t, []string{"site.hcl"}, got.Args().Slice())
	require.Equal(t, "inv", got.String("inventory"))
	require.Equal(t, []string{"k=v"}, got.StringSlice("extra-vars"))
	require.True(t, got.Bool("check"))
	require.True(t, got.Bool("verbose"), "-v is --verbose")
	require.Equal(t, []string{"a"}, got.StringSlice("tags"))

	require.Equal(t, 0, run(strings.Fields("iklim play -i inv -- -odd.hcl"), cmds...))
	require.Equal(t, []string{"-odd.hcl"}, got.Args().Slice())
	require.Equal(t, exitInvalid, run(strings.Fields("iklim play -i inv -- a.hcl --check"), commands()...), "after --, --check is a second PLAYBOOK")
	require.Equal(t, exitInvalid, run(strings.Fields("iklim play site.hcl --nosuch"), cmds...))
}

// TestPlayDryOptionsContactNoHost: --syntax-check, --list-hosts and
// --list-steps after --limit, --tags and --start-at-step, all with no
// connection to the inventory's hosts.
func TestPlayDryOptionsContactNoHost(t *testing.T) {
	port, accepted := countingListener(t)
	dir := t.TempDir()
	inv := writeFile(t, dir, "inv.hcl", fmt.Sprintf(`
defaults { port = %d }
host "web-1" { address = "127.0.0.1" }
host "web-2" { address = "127.0.0.1" }
host "db-1" { address = "127.0.0.1" }
group "web" { hosts = ["web-1", "web-2"] }
`, port))
	pb := writeFile(t, dir, "pb.hcl", `
play "one" {
  hosts = "web"
  step "first" {
    module = "command"
    cmd    = "true"
    tags   = ["a"]
  }
  step "second" {
    module = "command"
    cmd    = "true"
    tags   = ["b"]
  }
}
play "two" {
  hosts = "all"
  step "third" {
    module = "command"
    cmd    = "true"
    tags   = ["always"]
  }
}
`)
	out, errOut, code := iklim(t, nil, "play", pb, "-i", inv, "--syntax-check")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "syntax OK (2 play(s), 3 step(s))")

	out, errOut, code = iklim(t, nil, "play", pb, "-i", inv, "--list-hosts", "-l", "web-2:db-1")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "play \"one\" (web): 1 host(s)\n  web-2\nplay \"two\" (all): 2 host(s)\n  web-2\n  db-1\n", out)

	out, errOut, code = iklim(t, nil, "play", pb, "-i", inv, "--list-steps", "-t", "b")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "  second\tcommand\ttags=b\t")
	require.Contains(t, out, "  third\tcommand\ttags=always\t", "always runs whatever the tags")
	require.NotContains(t, out, "first")

	out, errOut, code = iklim(t, nil, "play", pb, "-i", inv, "--list-steps", "--start-at-step", "second")
	require.Equal(t, 0, code, errOut)
	require.NotContains(t, out, "first")
	require.Contains(t, out, "second")
	require.Contains(t, out, "third")

	_, errOut, code = iklim(t, nil, "play", pb, "-i", inv, "--start-at-step", "secnd")
	require.Equal(t, exitInvalid, code)
	require.Contains(t, errOut, `no step "secnd"; did you mean "second"?`)

	// A playbook error is reported by --syntax-check with file:line.
	bad := writeFile(t, dir, "bad.hcl", "play \"p\" {\n  hosts = \"all\"\n  step \"s\" {\n    module = \"nosuch\"\n  }\n}\n")
	_, errOut, code = iklim(t, nil, "play", bad, "-i", inv, "--syntax-check")
	require.Equal(t, exitInvalid, code)
	require.Contains(t, errOut, "bad.hcl:4")

	// --step needs a terminal: the test's stdin is not one.
	_, errOut, code = iklim(t, nil, "play", pb, "-i", inv, "--step")
	require.Equal(t, exitInvalid, code)
	require.Contains(t, errOut, "--step asks before each step and needs a terminal on stdin")
	require.Zero(t, accepted.Load(), "no host may be contacted")
}

func TestVersionFromBuildInfo(t *testing.T) {
	out, errOut, code := iklim(t, nil, "version")
	require.Equal(t, 0, code, errOut)
	flagOut, _, code := iklim(t, nil, "--version")
	require.Equal(t, 0, code)
	require.Equal(t, out, flagOut)
	// What the toolchain says it stamped into the binary.
	info, err := exec.Command("go", "version", "-m", binary).Output()
	require.NoError(t, err)
	var mod, rev string
	for _, l := range strings.Split(string(info), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[0] == "mod":
			mod = f[2]
		case len(f) == 2 && strings.HasPrefix(f[1], "vcs.revision="):
			rev = strings.TrimPrefix(f[1], "vcs.revision=")
		}
	}
	require.NotEmpty(t, mod)
	require.Contains(t, out, "iklim "+mod+"\n")
	if rev != "" { // a checkout without git builds without it
		require.Contains(t, out, "commit "+rev)
	}
	require.NotContains(t, out, "dev\n")

	_, errOut, code = iklim(t, nil, "-v")
	require.Equal(t, exitInvalid, code, "-v is not --version")
	require.Contains(t, errOut, "-v is --verbose")
}

// TestStepAsksOnATerminal runs `iklim play --step` in a real terminal (a
// tmux pane) against the local machine: it answers y to the first step and
// n to the second, and only the first one runs.
func TestStepAsksOnATerminal(t *testing.T) {
	tmux, err := exec.LookPath("tmux")
	require.NoError(t, err, "tmux is installed by .ci/install")
	dir := t.TempDir()
	inv := writeFile(t, dir, "inv.hcl", fmt.Sprintf(`host "me" {
  local       = true
  backup_root = %q
}
`, filepath.Join(dir, "backups")))
	pb := writeFile(t, dir, "pb.hcl", fmt.Sprintf(`play "p" {
  hosts = "all"
  step "one" {
    module  = "shell"
    cmd     = "touch one"
    chdir   = %[1]q
    creates = "%[1]s/one"
  }
  step "two" {
    module  = "shell"
    cmd     = "touch two"
    chdir   = %[1]q
    creates = "%[1]s/two"
  }
}
`, dir))
	sock := fmt.Sprintf("iklim-step-%d", time.Now().UnixNano())
	tm := func(args ...string) string {
		cmd := exec.Command(tmux, append([]string{"-L", sock}, args...)...)
		cmd.Env = append(os.Environ(), "TERM=xterm")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "tmux %v: %s", args, out)
		return string(out)
	}
	state := t.TempDir()
	script := fmt.Sprintf("IKLIM_STATE_DIR=%s IKLIM_CONTROL_BACKUP_ROOT=%s/b %s play --step -i %s %s; echo EXIT=$?; sleep 60",
		state, state, binary, inv, pb)
	tm("new-session", "-d", "-x", "200", "-y", "50", script)
	t.Cleanup(func() { _ = exec.Command(tmux, "-L", sock, "kill-server").Run() })
	screenHas := func(s string) string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			screen := tm("capture-pane", "-p")
			if strings.Contains(screen, s) {
				return screen
			}
			require.True(t, time.Now().Before(deadline), "the screen never showed %q:\n%s", s, screen)
			time.Sleep(50 * time.Millisecond)
		}
	}
	screenHas("Perform step p / one (shell)? (y)es/(n)o/(c)ontinue:")
	tm("send-keys", "y", "Enter")
	screenHas("Perform step p / two (shell)? (y)es/(n)o/(c)ontinue:")
	tm("send-keys", "n", "Enter")
	screen := screenHas("EXIT=")
	require.Contains(t, screen, "EXIT=0")
	require.FileExists(t, filepath.Join(dir, "one"))
	require.NoFileExists(t, filepath.Join(dir, "two"), "step two was declined")
}
