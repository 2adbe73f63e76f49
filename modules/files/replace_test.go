package files_test

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
	"github.com/iklimco/iklim/modules/files"
	"github.com/iklimco/iklim/modules/internal/modtest"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/backup"
	"github.com/iklimco/iklim/runner/printer"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/stretchr/testify/require"
)

const composeV1 = `services:
  app:
    image: registry.michaelschiemer.de/framework:latest
    depends_on: [redis]
  nginx:
    image: nginx:1.25-alpine
  queue-worker:
    image: registry.michaelschiemer.de/framework:latest
  redis:
    image: redis:7-alpine
  scheduler:
    image:   registry.michaelschiemer.de/framework:git-0ld
`

const composeV2 = `services:
  app:
    image: registry.michaelschiemer.de/framework:abc1234-1696234567
    depends_on: [redis]
  nginx:
    image: nginx:1.25-alpine
  queue-worker:
    image: registry.michaelschiemer.de/framework:abc1234-1696234567
  redis:
    image: redis:7-alpine
  scheduler:
    image:   registry.michaelschiemer.de/framework:abc1234-1696234567
`

// replaceRun runs one replace step on h over a real sshd, recorded like
// `iklim play` (check mode unrecorded), and returns the run id, the recap
// and the events.
func replaceRun(t *testing.T, inv *inventories.Inventory, conn runner.Connector, pb *runner.Playbook, check bool) (string, *runner.Recap, []runner.Event) {
	t.Helper()
	id, err := backup.ClaimRunID(time.Now())
	require.NoError(t, err)
	info := runner.RunInfo{ID: id, User: "test@ctl", Started: time.Now().UTC(), Playbook: pb.File, Inventory: "/srv/test.hcl"}
	var mu sync.Mutex
	var events []runner.Event
	opts := runner.Options{Inventory: inv, Connector: conn, Run: info, Check: check, Diff: true, Verbose: true,
		Control: &inventories.Host{Name: "localhost", Address: "localhost", Local: true, BackupRoot: filepath.Join(t.TempDir(), "control")},
		Events:  func(ev runner.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() },
	}
	if !check {
		opts.Recorder = backup.NewRecorder(backup.RecorderOptions{Info: info})
	}
	recap, err := runner.Run(context.Background(), pb, opts)
	require.NoError(t, err)
	if !check {
		require.NoError(t, backup.WriteJournal(info, recap, backup.WithRunError(err)))
	}
	return id, recap, events
}

// TestReplaceSeed001 is seed 001's image tag rewrite over a real sshd
// (sudo): check mode and diff name the changed lines, the file keeps its
// mode and owner, a rerun changes nothing, and rollback restores the file
// byte-exact from the runner's snapshot.
func TestReplaceSeed001(t *testing.T) {
	srv := sshtest.Start(t)
	sshtest.RequireSudo(t)
	tmp := t.TempDir()
	t.Setenv("IKLIM_STATE_DIR", filepath.Join(tmp, "state"))
	h := srv.Hosts(1)[0]
	h.Become = true
	h.BackupRoot = filepath.Join(tmp, "backups")
	inv := &inventories.Inventory{Hosts: []*inventories.Host{h}}
	cfg := filepath.Join(tmp, "ssh_config")
	require.NoError(t, os.WriteFile(cfg, nil, 0o600))
	conn := transport.NewSSHConnector(transport.SSHOptions{SSHConfigFile: cfg})
	t.Cleanup(func() { _ = conn.Close() })

	dir := filepath.Join(tmp, "app")
	require.NoError(t, os.Mkdir(dir, 0o755))
	p := filepath.Join(dir, "docker-compose.yml")
	modtest.WriteFile(t, p, composeV1, 0o640)
	require.NoError(t, os.Chown(p, modtest.Nobody, modtest.Nobody))
	before := modtest.Snapshot(t, dir)

	play := func(re, repl string, allow bool) *runner.Playbook {
		return &runner.Playbook{File: "/srv/site.hcl", Plays: []runner.Play{{Name: "deploy", Hosts: "all", Steps: []runner.Step{{
			Name: "image tag", Module: "replace", Source: "site.hcl:12", Register: "tag",
			Build: func(*runner.StepContext) (modules.Module, error) {
				m := &files.Replace{Path: p, Regexp: re, Replace: repl, AllowNoMatch: allow}
				return m, m.Validate()
			},
		}}}}}
	}
	// Seed 001's task, as written for Ansible (YAML single quotes).
	seed := play(`^(\s+image:\s+registry.michaelschiemer.de/framework):.*$`, `\1:abc1234-1696234567`, false)

	_, recap, events := replaceRun(t, inv, conn, seed, true)
	require.Equal(t, 1, recap.Changed())
	var summary string
	var diff *modules.Diff
	for _, ev := range events {
		if ev.Status == runner.StatusChanged {
			summary, diff = ev.Summary, ev.Diff
		}
	}
	require.Equal(t, "replace 3 matches in "+p+" (lines 3, 8, 12)", summary)
	require.NotNil(t, diff)
	require.Equal(t, "3:     image: registry.michaelschiemer.de/framework:latest\n"+
		"8:     image: registry.michaelschiemer.de/framework:latest\n"+
		"12:     image:   registry.michaelschiemer.de/framework:git-0ld\n", diff.Before)
	require.Equal(t, "3:     image: registry.michaelschiemer.de/framework:abc1234-1696234567\n"+
		"8:     image: registry.michaelschiemer.de/framework:abc1234-1696234567\n"+
		"12:     image:   registry.michaelschiemer.de/framework:abc1234-1696234567\n", diff.After)
	ud := printer.UnifiedDiff(diff.Label, diff.Before, diff.After)
	require.NotContains(t, ud, "nginx")
	require.Equal(t, before, modtest.Snapshot(t, dir), "check mode changes nothing")

	id, recap, events := replaceRun(t, inv, conn, seed, false)
	require.Equal(t, 1, recap.Changed(), recap.Hosts[0].Error)
	require.Equal(t, composeV2, modtest.ReadFile(t, p))
	require.Equal(t, uint32(0o640), modtest.ModeOf(t, p))
	uid, gid := modtest.OwnerOf(t, p)
	require.Equal(t, [2]uint32{modtest.Nobody, modtest.Nobody}, [2]uint32{uid, gid})
	var out map[string]any
	for _, ev := range events {
		if ev.Output != nil {
			out = ev.Output
		}
	}
	require.Equal(t, 3, out["matches"])
	require.Equal(t, true, out["changed"])

	_, recap, _ = replaceRun(t, inv, conn, seed, false)
	require.Zero(t, recap.Changed(), "the regexp matches its own result: a rerun is no change")
	require.Zero(t, recap.Hosts[0].Failed)

	// Zero matches: an error naming the regexp, unless allowed.
	_, recap, _ = replaceRun(t, inv, conn, play(`^\s+image:\s+ghcr.io/.*$`, "x", false), false)
	require.Equal(t, 1, recap.Hosts[0].Failed)
	require.Contains(t, recap.Hosts[0].Error, `replace `+p+`: regexp "^\\s+image:\\s+ghcr.io/.*$" matches nothing (set allow_no_match = true`)
	_, recap, _ = replaceRun(t, inv, conn, play(`^\s+image:\s+ghcr.io/.*$`, "x", true), false)
	require.Zero(t, recap.Hosts[0].Failed)
	require.Zero(t, recap.Changed())

	_, recap, _ = replaceRun(t, inv, conn, backup.RollbackPlaybook(id, false), false)
	require.Zero(t, recap.Hosts[0].Failed, recap.Hosts[0].Error)
	require.Equal(t, before, modtest.Snapshot(t, dir), "rollback restores content, mode and owner")
}

// TestReplaceBackreferences: Ansible's replacement syntax reaches Go's.
func TestReplaceBackreferences(t *testing.T) {
	tests := []struct{ re, repl, in, want string }{
		{`(\w+)=(\w+)`, `\2=\1`, "a=b\nc=d\n", "b=a\nd=c\n"},
		{`(?P<key>\w+)=(\w+)`, `\g<key>: \g<2>`, "a=b\n", "a: b\n"},
		{`^x$`, `cost $5 \\ \t`, "x\ny\n", "cost $5 \\ \t\ny\n"},
		{`^(a)$`, `\1\n\1`, "a\n", "a\na\n"},
		{`(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)`, `\11\10\1`, "abcdefghijk\n", "kja\n"},
		{`^port=\d+$`, ``, "port=1\nkeep\n", "\nkeep\n"},
	}
	for _, tc := range tests {
		t.Run(tc.repl, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "f")
			modtest.WriteFile(t, p, tc.in, 0o600)
			// Once: most of these regexps do not match their own result.
			c := modtest.NewCountConn()
			m, ch, err := modtest.CheckOnce(t, c, func() modules.Module { return &files.Replace{Path: p, Regexp: tc.re, Replace: tc.repl} })
			require.NoError(t, err)
			require.NotNil(t, ch)
			require.NoError(t, m.Apply(context.Background(), c, ch))
			require.Equal(t, tc.want, modtest.ReadFile(t, p))
			require.Equal(t, uint32(0o600), modtest.ModeOf(t, p))
		})
	}
}

func TestReplaceErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		m   files.Replace
		arg string
	}{
		{files.Replace{Path: "/x", Regexp: "("}, "regexp"},
		{files.Replace{Path: "/x"}, "regexp"},
		{files.Replace{Path: "/x", Regexp: "a", Replace: `\g<a-b>`}, "replace"},
		{files.Replace{Path: "/x", Regexp: "a", Replace: `\g1`}, "replace"},
	} {
		var ae *modules.ArgError
		require.ErrorAs(t, tc.m.Validate(), &ae, "%+v", tc.m)
		require.Equal(t, tc.arg, ae.Arg)
	}
	require.ErrorContains(t, (&files.Replace{Path: "rel", Regexp: "a"}).Validate(), "path")
	_, _, err := modtest.CheckOnce(t, modtest.NewCountConn(), func() modules.Module {
		return &files.Replace{Path: dir + "/missing", Regexp: "a"}
	})
	require.ErrorContains(t, err, "replace "+dir+"/missing: does not exist")
	_, _, err = modtest.CheckOnce(t, modtest.NewCountConn(), func() modules.Module {
		return &files.Replace{Path: dir, Regexp: "a"}
	})
	require.ErrorContains(t, err, "is a directory, not a file")
}

// TestReplaceSecretSealed: a replacement that writes a known secret makes
// the change sensitive, so the runner seals the file's snapshot.
func TestReplaceSecretSealed(t *testing.T) {
	p := filepath.Join(t.TempDir(), "app.env")
	modtest.WriteFile(t, p, "REDIS_PASSWORD=old\nMODE=prod\n", 0o600)
	sec := modules.NewSecrets()
	sec.Add("n3w-s3cret")
	ctx := context.Background()
	m := &files.Replace{Path: p, Regexp: `^(REDIS_PASSWORD)=.*$`, Replace: `\1=n3w-s3cret`}
	m.UseSecrets(sec)
	ch, err := m.Check(ctx, modtest.NewCountConn())
	require.NoError(t, err)
	require.True(t, ch.Sensitive)
	m = &files.Replace{Path: p, Regexp: `^(MODE)=.*$`, Replace: `\1=staging`}
	m.UseSecrets(sec)
	ch, err = m.Check(ctx, modtest.NewCountConn())
	require.NoError(t, err)
	require.False(t, ch.Sensitive)
}
