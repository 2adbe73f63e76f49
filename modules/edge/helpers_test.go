package edge_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/edge"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/backup"
	"github.com/iklimco/iklim/runner/transport"
)

// familyRegistry is the family's modules and rollback: the rollback module
// finds a change's module by name in the run's registry.
func familyRegistry(t *testing.T) *modules.Registry {
	t.Helper()
	reg, err := modules.NewRegistry(append(edge.Modules(), backup.Modules()...)...)
	require.NoError(t, err)
	return reg
}

// env is one real sshd host (this machine, through sudo) with its own
// backup root, the control machine, and the engine with a recorder: the
// same path `iklim play` and `iklim rollback` take.
type env struct {
	t         *testing.T
	tmp       string
	host      *inventories.Host
	inv       *inventories.Inventory
	connector *transport.SSHConnector
	control   *inventories.Host
	secrets   *modules.Secrets
	events    []runner.Event
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := sshtest.Start(t)
	sshtest.RequireSudo(t)
	tmp := t.TempDir()
	t.Setenv("IKLIM_STATE_DIR", filepath.Join(tmp, "state"))
	h := srv.Host("edge-web", sshtest.HostAddr(0))
	h.Become = true
	h.BackupRoot = filepath.Join(tmp, "host-backups")
	cfg := filepath.Join(tmp, "ssh_config")
	require.NoError(t, os.WriteFile(cfg, nil, 0o600))
	connector := transport.NewSSHConnector(transport.SSHOptions{SSHConfigFile: cfg})
	t.Cleanup(func() { _ = connector.Close() })
	return &env{
		t: t, tmp: tmp, host: h, inv: &inventories.Inventory{Hosts: []*inventories.Host{h}}, connector: connector,
		control: &inventories.Host{Name: "localhost", Address: "localhost", Local: true, BackupRoot: filepath.Join(tmp, "control-backups")},
		secrets: modules.NewSecrets(),
	}
}

// conn is the host's connection, for reading the host in assertions and
// for calling a module's Check directly.
func (e *env) conn() modules.Conn {
	c, err := e.connector.Connect(context.Background(), e.host)
	require.NoError(e.t, err)
	return c
}

// play runs one step on the host, recorded (or in check mode), and returns
// the run id and the host's recap.
func (e *env) play(check bool, s runner.Step) (string, runner.HostRecap) {
	e.t.Helper()
	return e.playbook(check, &runner.Playbook{File: "/srv/edge/site.hcl", Plays: []runner.Play{{Name: "edge", Hosts: "all", Steps: []runner.Step{s}}}})
}

func (e *env) playbook(check bool, pb *runner.Playbook) (string, runner.HostRecap) {
	e.t.Helper()
	id, err := backup.ClaimRunID(time.Now())
	require.NoError(e.t, err)
	info := runner.RunInfo{ID: id, User: "test@ctl", Started: time.Now().UTC(), Playbook: pb.File, Inventory: "/srv/edge/inv.hcl", Check: check}
	opts := runner.Options{
		Inventory: e.inv, Connector: e.connector, Run: info, Control: e.control, Secrets: e.secrets,
		Modules: familyRegistry(e.t), Check: check, Diff: true, Events: func(ev runner.Event) { e.events = append(e.events, ev) },
	}
	if !check {
		opts.Recorder = backup.NewRecorder(backup.RecorderOptions{Info: info})
	}
	ctx := context.Background()
	recap, err := runner.Run(ctx, pb, opts)
	require.NoError(e.t, err)
	if !check {
		require.NoError(e.t, backup.WriteJournal(info, recap, backup.WithRunError(err)))
	}
	require.Len(e.t, recap.Hosts, 1)
	return id, recap.Hosts[0]
}

// rollback runs the stock rollback of run id.
func (e *env) rollback(id string) runner.HostRecap {
	e.t.Helper()
	_, r := e.playbook(false, backup.RollbackPlaybook(id, false))
	return r
}

func step(name, module string, m modules.Module) runner.Step {
	return runner.Step{Name: name, Module: module, Source: "site.hcl:1", Build: func(*runner.StepContext) (modules.Module, error) { return m, nil }}
}

// lastDiff is the diff of the last event that had one.
func (e *env) lastDiff() *modules.Diff {
	for i := len(e.events) - 1; i >= 0; i-- {
		if e.events[i].Diff != nil {
			return e.events[i].Diff
		}
	}
	return nil
}

// grepTree lists files under root whose content contains needle.
func grepTree(t *testing.T, root, needle string) []string {
	t.Helper()
	var hits []string
	_ = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), needle) {
			hits = append(hits, p)
		}
		return nil
	})
	return hits
}
