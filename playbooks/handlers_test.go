package playbooks_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/playbooks"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/stretchr/testify/require"
)

// handlerPlaybook is Ansible's handler written the iklim way: reload runs
// only when conf changed on this host.
const handlerPlaybook = `variable "dir" {}
variable "content" {}
play "p" {
  hosts = "all"
  step "conf" {
    module   = "copy"
    dest     = "${var.dir}/app.conf"
    content  = var.content
    register = "conf"
  }
  step "reload" {
    module = "shell"
    cmd    = "echo reload >> ${var.dir}/reloads"
    when   = self.conf.changed
  }
}
`

// TestReactToChange runs handlerPlaybook on the control machine with the
// real copy and shell modules: the reload step runs after the first write
// and after a change of content, and is skipped when the file is already as
// wanted and in check mode.
func TestReactToChange(t *testing.T) {
	dir := t.TempDir()
	inv, diags := inventories.Parse([]byte(`host "ctl" { local = true }`), "inv.hcl")
	require.False(t, diags.HasErrors(), diags.Error())
	f, diags := playbooks.Parse([]byte(handlerPlaybook), "handlers.hcl")
	require.False(t, diags.HasErrors(), diags.Error())
	conn := transport.NewSSHConnector(transport.SSHOptions{})
	t.Cleanup(func() { _ = conn.Close() })
	run := func(content string, check bool) map[string]runner.Status {
		t.Helper()
		pb, diags := playbooks.Compile(f, playbooks.Options{Inventory: inv, ExtraVars: map[string]string{"dir": dir, "content": content}, Modules: testRegistry(t)})
		require.False(t, diags.HasErrors(), diags.Error())
		st := map[string]runner.Status{}
		_, err := runner.Run(context.Background(), pb, runner.Options{Inventory: inv, Connector: conn, Check: check,
			Events: func(ev runner.Event) {
				if ev.Step != "" && ev.Status != "" {
					st[ev.Step] = ev.Status
				}
			}})
		require.NoError(t, err)
		return st
	}
	reloads := func() int {
		b, err := os.ReadFile(filepath.Join(dir, "reloads"))
		if os.IsNotExist(err) {
			return 0
		}
		require.NoError(t, err)
		return strings.Count(string(b), "reload\n")
	}

	st := run("a", false)
	require.Equal(t, runner.StatusChanged, st["conf"])
	require.Equal(t, runner.StatusChanged, st["reload"])
	require.Equal(t, 1, reloads())

	st = run("a", false)
	require.Equal(t, runner.StatusOK, st["conf"])
	require.Equal(t, runner.StatusSkipped, st["reload"], "conf did not change: no reload")
	require.Equal(t, 1, reloads())

	st = run("b", true)
	require.Equal(t, runner.StatusChanged, st["conf"])
	require.Equal(t, runner.StatusChanged, st["reload"], "check mode says the reload would run")
	require.Equal(t, 1, reloads(), "check mode runs nothing")

	run("b", false)
	require.Equal(t, 2, reloads())
}
