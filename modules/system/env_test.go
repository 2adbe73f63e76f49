package system_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/system"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/backup"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/stretchr/testify/require"
)

// familyRegistry is the family's modules and rollback: the rollback
// playbook finds modules by name in the run's registry.
func familyRegistry(t *testing.T) *modules.Registry {
	t.Helper()
	reg, err := modules.NewRegistry(append(system.Modules(), backup.Modules()...)...)
	require.NoError(t, err)
	return reg
}

// env is one host reached over a real sshd as iklimtest with sudo, a
// backup recorder, and the control machine, like `iklim play`.
type env struct {
	t         *testing.T
	tmp       string
	host      *inventories.Host
	inv       *inventories.Inventory
	connector runner.Connector
	control   *inventories.Host
	secrets   *modules.Secrets
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := sshtest.Start(t)
	sshtest.RequireSudo(t)
	tmp := t.TempDir()
	t.Setenv("IKLIM_STATE_DIR", filepath.Join(tmp, "state"))
	h := srv.Hosts(1)[0]
	h.Become = true
	h.BackupRoot = filepath.Join(tmp, "backups")
	cfg := filepath.Join(tmp, "ssh_config")
	require.NoError(t, os.WriteFile(cfg, nil, 0o600))
	connector := transport.NewSSHConnector(transport.SSHOptions{SSHConfigFile: cfg})
	t.Cleanup(func() { _ = connector.Close() })
	return &env{
		t: t, tmp: tmp, host: h, inv: &inventories.Inventory{Hosts: []*inventories.Host{h}}, connector: connector,
		control: &inventories.Host{Name: "localhost", Address: "localhost", Local: true, BackupRoot: filepath.Join(tmp, "control")},
		secrets: modules.NewSecrets(),
	}
}

// conn is a Conn to the host, as root through sudo.
func (e *env) conn() modules.Conn {
	c, err := e.connector.Connect(context.Background(), e.host)
	require.NoError(e.t, err)
	return c
}

// result is what a run reported.
type result struct {
	id      string
	recap   *runner.Recap
	err     error
	events  []runner.Event
	changed int
}

// summaries lists the summaries of changed steps.
func (r result) summaries() []string {
	var s []string
	for _, ev := range r.events {
		if ev.Summary != "" && ev.Status == runner.StatusChanged {
			s = append(s, ev.Summary)
		}
	}
	return s
}

// output is the registered output of the first step that has one.
func (r result) output() map[string]any {
	for _, ev := range r.events {
		if ev.Output != nil {
			return ev.Output
		}
	}
	return nil
}

func (r result) diffs() []*modules.Diff {
	var d []*modules.Diff
	for _, ev := range r.events {
		if ev.Diff != nil {
			d = append(d, ev.Diff)
		}
	}
	return d
}

// play runs steps on the host, recorded, in check mode when check is set.
func (e *env) play(check bool, steps ...runner.Step) result {
	e.t.Helper()
	return e.playbook(check, &runner.Playbook{File: "/srv/deploy/site.hcl", Plays: []runner.Play{{Name: "test", Hosts: "all", Steps: steps}}})
}

func (e *env) playbook(check bool, pb *runner.Playbook) result {
	e.t.Helper()
	id, err := backup.ClaimRunID(time.Now())
	require.NoError(e.t, err)
	info := runner.RunInfo{ID: id, User: "test@ctl", Started: time.Now().UTC(), Playbook: pb.File, Inventory: "/srv/deploy/test.hcl", GitCommit: "abc1234"}
	var mu sync.Mutex
	var events []runner.Event
	opts := runner.Options{
		Inventory: e.inv, Connector: e.connector, Run: info, Control: e.control, Secrets: e.secrets,
		Modules: familyRegistry(e.t), Check: check, Diff: true, Verbose: true,
		Events: func(ev runner.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() },
	}
	if !check {
		opts.Recorder = backup.NewRecorder(backup.RecorderOptions{Info: info})
	}
	ctx := context.Background()
	start := time.Now()
	recap, err := runner.Run(ctx, pb, opts)
	e.t.Logf("run %s (check=%v): %s", id, check, time.Since(start).Round(time.Millisecond))
	if !check {
		require.NoError(e.t, backup.WriteJournal(info, recap, backup.WithRunError(err)))
	}
	r := result{id: id, recap: recap, err: err, events: events}
	if recap != nil {
		r.changed = recap.Changed()
	}
	return r
}

// rollback runs `iklim rollback --run id`.
func (e *env) rollback(id string) result {
	e.t.Helper()
	return e.playbook(false, backup.RollbackPlaybook(id, false))
}

// requireOK fails unless the run succeeded.
func requireOK(t *testing.T, r result) {
	t.Helper()
	require.NoError(t, r.err)
	require.NotNil(t, r.recap)
	for _, h := range r.recap.Hosts {
		require.Zero(t, h.Failed+h.Unreachable, "%s: %s", h.Host, h.Error)
	}
}

// step wraps a ready module as a step.
func step(name, module string, m modules.Module) runner.Step {
	return runner.Step{Name: name, Module: module, Source: "site.hcl:1", Register: "r", Build: func(*runner.StepContext) (modules.Module, error) {
		if v, ok := m.(modules.Validator); ok {
			if err := v.Validate(); err != nil {
				return nil, err
			}
		}
		return m, nil
	}}
}
