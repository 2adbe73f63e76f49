package runner_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/commands"
	"github.com/iklimco/iklim/modules/files"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/stretchr/testify/require"
)

// sshInventory is an inventory of n hosts on one real sshd.
func sshInventory(t *testing.T, srv *sshtest.Server, n int) *inventories.Inventory {
	inv := inventories.New()
	for _, h := range srv.Hosts(n) {
		require.NoError(t, inv.Add(h))
	}
	return inv
}

// sharedDir is a directory the test sshd's (non-root) login user may write.
func sharedDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "iklim-runner-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o777))
	return dir
}

// fileWorkload is a small per-host workload of generic modules.
func fileWorkload(base string) *runner.Playbook {
	dir := func(sc *runner.StepContext) string { return filepath.Join(base, sc.Host.Name) }
	step := func(name, module string, build func(sc *runner.StepContext) modules.Module) runner.Step {
		return runner.Step{Name: name, Module: module, Build: func(sc *runner.StepContext) (modules.Module, error) { return build(sc), nil }}
	}
	return &runner.Playbook{Plays: []runner.Play{{Name: "files", Hosts: "all", Steps: []runner.Step{
		step("dir", "file", func(sc *runner.StepContext) modules.Module {
			return &files.File{Path: dir(sc), State: "directory", Mode: "0755"}
		}),
		step("conf", "copy", func(sc *runner.StepContext) modules.Module {
			c := "host=" + sc.Host.Name + "\n"
			return &files.Copy{Dest: filepath.Join(dir(sc), "app.conf"), Content: &c, Mode: "0600"}
		}),
		step("line", "line", func(sc *runner.StepContext) modules.Module {
			return &files.Line{Path: filepath.Join(dir(sc), "env"), Line: "A=1", Create: true}
		}),
		step("link", "file", func(sc *runner.StepContext) modules.Module {
			return &files.File{Path: filepath.Join(dir(sc), "current"), State: "link", Src: "app.conf"}
		}),
		step("stat", "stat", func(sc *runner.StepContext) modules.Module {
			return &files.Stat{Path: filepath.Join(dir(sc), "app.conf")}
		}),
	}}}}
}

func TestRunManyHostsOverSSHTwice(t *testing.T) {
	srv := sshtest.Start(t, sshtest.MaxSessions(20))
	const hosts = 60
	inv := sshInventory(t, srv, hosts)
	base := sharedDir(t)
	pb := fileWorkload(base)
	connector := transport.NewSSHConnector(transport.SSHOptions{MaxHandshakes: 16})
	defer connector.Close()
	opts := runner.Options{Inventory: inv, Connector: connector}

	first, err := runner.Run(context.Background(), pb, opts)
	require.NoError(t, err)
	require.False(t, first.Failed(), "%+v", first.Hosts)
	require.Len(t, first.Hosts, hosts)
	require.Equal(t, hosts*4, first.Changed())
	got, err := os.ReadFile(filepath.Join(base, "h060", "app.conf"))
	require.NoError(t, err)
	require.Equal(t, "host=h060\n", string(got))

	second, err := runner.Run(context.Background(), pb, opts)
	require.NoError(t, err)
	require.False(t, second.Failed())
	require.Zero(t, second.Changed(), "the second run must change nothing")
	for _, h := range second.Hosts {
		require.Equal(t, 5, h.OK, h.Host)
	}
}

func TestRunInterruptSignalsRemoteCommand(t *testing.T) {
	srv := sshtest.Start(t)
	inv := sshInventory(t, srv, 3)
	marker := fmt.Sprintf("sleep 3%d", time.Now().UnixNano()%1000)
	pb := &runner.Playbook{Plays: []runner.Play{{Name: "slow", Hosts: "all", Steps: []runner.Step{{
		Name: "sleep", Module: "shell",
		Build: func(*runner.StepContext) (modules.Module, error) { return &commands.Shell{Cmd: marker}, nil },
	}}}}}
	connector := transport.NewSSHConnector(transport.SSHOptions{})
	defer connector.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(700*time.Millisecond, cancel)
	start := time.Now()
	recap, err := runner.Run(ctx, pb, runner.Options{Inventory: inv, Connector: connector})
	require.ErrorIs(t, err, context.Canceled)
	// The bound is far below the remote command's 3000 s: not a speed claim.
	require.Less(t, time.Since(start), 60*time.Second, "interrupt must not wait for the remote command")
	require.True(t, recap.Failed())
	// As the CLI does, close the connections at once: the remote commands
	// got SIGINT (or, if sshd dropped it because it came before the
	// command's process group existed, SIGKILL before the close) and are gone.
	require.NoError(t, connector.Close())
	require.Eventually(t, func() bool {
		out, _ := exec.Command("pgrep", "-u", srv.User, "-f", marker).Output()
		return strings.TrimSpace(string(out)) == ""
	}, 30*time.Second, 100*time.Millisecond)
}
