package docker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iklimco/iklim/internal/labtest"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/docker"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/backup"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/stretchr/testify/require"
)

// The lab's registry (internal/lab/lab.sh registry_up).
const (
	labRegistry     = "iklim-db-02:5000"
	labRegistryUser = "iklim"
)

// regLab runs steps on one lab host through the engine, recorded, with its
// own backup root and docker config dir under the host's private /srv.
type regLab struct {
	t        *testing.T
	lab      *labtest.Lab
	host     *inventories.Host
	inv      *inventories.Inventory
	conn     runner.Connector
	control  *inventories.Host
	secrets  *modules.Secrets
	dir      string // on the host: backups, docker config
	password string
}

func requireRegistryLab(t *testing.T, hostName string) *regLab {
	t.Helper()
	if testing.Short() && os.Getenv("IKLIM_LAB") != "required" {
		t.Skip("lab tests disabled by -short")
	}
	l := labtest.Require(t)
	pw, err := os.ReadFile(filepath.Join(l.Dir, "registry", "password"))
	if err != nil {
		if os.Getenv("IKLIM_LAB") == "required" {
			t.Fatalf("the lab has no registry (bash internal/lab/lab.sh up starts it): %v", err)
		}
		t.Skipf("the lab has no registry (bash internal/lab/lab.sh up starts it): %v", err)
	}
	inv, diags := inventories.LoadStock("lab")
	require.False(t, diags.HasErrors(), "%s", diags)
	h, ok := inv.Host(hostName)
	require.True(t, ok)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	dir := "/srv/iklim-regtest-" + hex.EncodeToString(b)
	h.BackupRoot = dir + "/backups"
	tmp := t.TempDir()
	t.Setenv("IKLIM_STATE_DIR", filepath.Join(tmp, "state"))
	conn := transport.NewSSHConnector(transport.SSHOptions{})
	t.Cleanup(func() { _ = conn.Close() })
	r := &regLab{
		t: t, lab: l, host: h, inv: &inventories.Inventory{Hosts: []*inventories.Host{h}}, conn: conn,
		control: &inventories.Host{Name: "localhost", Address: "localhost", Local: true, BackupRoot: filepath.Join(tmp, "control")},
		secrets: modules.NewSecrets(), dir: dir, password: strings.TrimSpace(string(pw)),
	}
	t.Cleanup(func() { _, _ = l.Exec(t, hostName, "sudo rm -rf "+dir) })
	return r
}

// config is the docker CLI config dir the test's steps use.
func (r *regLab) config() string { return r.dir + "/docker" }

type regRun struct {
	id     string
	recap  *runner.Recap
	events []runner.Event
}

func (r regRun) changed() int { return r.recap.Changed() }

func (r regRun) err() string { return r.recap.Hosts[0].Error }

func (r regRun) summaries() []string {
	var s []string
	for _, ev := range r.events {
		if ev.Status == runner.StatusChanged && ev.Summary != "" {
			s = append(s, ev.Summary)
		}
	}
	return s
}

func (r regRun) diffs() []*modules.Diff {
	var d []*modules.Diff
	for _, ev := range r.events {
		if ev.Diff != nil {
			d = append(d, ev.Diff)
		}
	}
	return d
}

func (r regRun) output() map[string]any {
	for _, ev := range r.events {
		if ev.Output != nil {
			return ev.Output
		}
	}
	return nil
}

// play runs one module step (or, with pb, a playbook) on the host.
func (r *regLab) play(check bool, name string, m modules.Module) regRun {
	r.t.Helper()
	return r.playbook(check, &runner.Playbook{File: "/srv/site.hcl", Plays: []runner.Play{{Name: "deploy", Hosts: "all", Steps: []runner.Step{{
		Name: name, Module: name, Source: "site.hcl:1", Register: "r",
		Build: func(*runner.StepContext) (modules.Module, error) { return m, m.(modules.Validator).Validate() },
	}}}}})
}

func (r *regLab) playbook(check bool, pb *runner.Playbook) regRun {
	r.t.Helper()
	id, err := backup.ClaimRunID(time.Now())
	require.NoError(r.t, err)
	info := runner.RunInfo{ID: id, User: "test@ctl", Started: time.Now().UTC(), Playbook: pb.File, Inventory: "lab.hcl"}
	var mu sync.Mutex
	var events []runner.Event
	// Rollback finds a module's own Rollback through the run's registry.
	reg, err := modules.NewRegistry(append(docker.Modules(), backup.Modules()...)...)
	require.NoError(r.t, err)
	opts := runner.Options{Inventory: r.inv, Connector: r.conn, Run: info, Control: r.control, Secrets: r.secrets,
		Modules: reg, Check: check, Diff: true, Verbose: true,
		Events: func(ev runner.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() }}
	if !check {
		opts.Recorder = backup.NewRecorder(backup.RecorderOptions{Info: info})
	}
	recap, err := runner.Run(context.Background(), pb, opts)
	require.NoError(r.t, err)
	if !check {
		require.NoError(r.t, backup.WriteJournal(info, recap, backup.WithRunError(err)))
	}
	for _, ev := range events {
		b := ev.Summary + ev.Error
		if ev.Diff != nil {
			b += ev.Diff.Before + ev.Diff.After
		}
		require.NotContains(r.t, b, r.password, "the registry password leaked into an event")
	}
	return regRun{id: id, recap: recap, events: events}
}

func (r *regLab) rollback(id string) regRun {
	r.t.Helper()
	return r.playbook(false, backup.RollbackPlaybook(id, false))
}

// sh runs cmd on the host as root and returns its output.
func (r *regLab) sh(cmd string) (string, error) {
	return r.lab.Exec(r.t, r.host.Name, "sudo sh -c "+labtest.ShellQuote(cmd))
}

// loggedIn reports whether the test's docker config holds credentials for
// the lab registry.
func (r *regLab) loggedIn() bool {
	out, _ := r.sh("cat " + r.config() + "/config.json 2>/dev/null")
	return strings.Contains(out, `"`+labRegistry+`"`)
}

// TestDockerLoginLab logs in to the lab's registry (TLS, htpasswd) and out,
// with check mode, reruns and rollback of both; the password never shows in
// events or in the host's backup records.
func TestDockerLoginLab(t *testing.T) {
	r := requireRegistryLab(t, "iklim-app-02")
	r.lab.UseDockerd(t)
	r.secrets.Add(r.password)
	login := func(pw string) *docker.DockerLogin {
		return &docker.DockerLogin{Registry: labRegistry, Username: labRegistryUser, Password: pw, Config: r.config()}
	}

	run := r.play(true, "docker_login", login(r.password))
	require.Empty(t, run.err())
	require.Equal(t, []string{"log in to " + labRegistry + " as iklim"}, run.summaries())
	require.Equal(t, labRegistry+": logged out\n", run.diffs()[0].Before)
	require.Equal(t, labRegistry+": logged in as iklim\n", run.diffs()[0].After)
	require.False(t, r.loggedIn(), "check mode logs nothing in")

	in := r.play(false, "docker_login", login(r.password))
	require.Empty(t, in.err())
	require.Equal(t, 1, in.changed())
	require.True(t, r.loggedIn())
	require.Equal(t, "iklim", in.output()["username"])
	// The credentials work: the host's docker pulls the private image.
	_, err := r.sh("docker --config " + r.config() + " pull -q " + labRegistry + "/lab/busybox:1")
	require.NoError(t, err)

	run = r.play(false, "docker_login", login(r.password))
	require.Empty(t, run.err())
	require.Zero(t, run.changed(), "rerun: the config already holds these credentials")

	bad := r.play(false, "docker_login", login("wrong-"+r.password[:4]))
	require.Contains(t, bad.err(), "docker login "+labRegistry)
	require.Contains(t, strings.ToLower(bad.err()), "unauthorized")

	out := r.play(false, "docker_login", &docker.DockerLogin{Registry: labRegistry, State: "absent", Config: r.config()})
	require.Empty(t, out.err())
	require.Equal(t, []string{"log out of " + labRegistry}, out.summaries())
	require.False(t, r.loggedIn())
	run = r.play(false, "docker_login", &docker.DockerLogin{Registry: labRegistry, State: "absent", Config: r.config()})
	require.Zero(t, run.changed())

	// The password is sealed in the records, never in clear text.
	hits, _ := r.sh("grep -rlF " + labtest.ShellQuote(r.password) + " " + r.host.BackupRoot + " || true")
	require.Empty(t, hits)

	run = r.rollback(out.id)
	require.Empty(t, run.err())
	require.True(t, r.loggedIn(), "rolling back the logout restores the credentials")
	run = r.rollback(in.id)
	require.Empty(t, run.err())
	require.False(t, r.loggedIn(), "rolling back the login removes them")
}

func TestDockerLoginValidate(t *testing.T) {
	for _, tc := range []struct {
		m   docker.DockerLogin
		arg string
	}{
		{docker.DockerLogin{Registry: "https://x/"}, "registry"},
		{docker.DockerLogin{Registry: "r.example", Password: "p"}, "username"},
		{docker.DockerLogin{Registry: "r.example", Username: "u"}, "password"},
		{docker.DockerLogin{Registry: "r.example", State: "absent", Username: "u"}, "state"},
		{docker.DockerLogin{Registry: "r.example", State: "gone"}, "state"},
	} {
		var ae *modules.ArgError
		require.ErrorAs(t, tc.m.Validate(), &ae, "%+v", tc.m)
		require.Equal(t, tc.arg, ae.Arg)
	}
	require.NoError(t, (&docker.DockerLogin{Registry: "iklim-db-02:5000", Username: "u", Password: "p"}).Validate())
}
