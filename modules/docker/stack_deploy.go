package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// stackDeployInfo is the stack_deploy module's registry entry.
func stackDeployInfo() modules.Info {
	return modules.Info{
		Name: "stack_deploy",
		Doc:  "Deploy a Docker swarm stack from base + overlay compose files; only changed services are redeployed, failures are rolled back",
		Example: `step "app stack" {
  module    = "stack_deploy"
  name      = "app"
  compose   = ["${path.dir}/compose/base.yml", "${path.dir}/compose/prod.yml"]
  env_files = ["${path.dir}/app.env"]
  run_once  = true
}`,
		Outputs: []modules.Output{
			{Name: "stack", Type: "string", Doc: "the stack name"},
			{Name: "hash", Type: "string", Doc: "hash of the rendered compose files and env"},
			{Name: "services", Type: "list(string)", Doc: "every service the compose files define"},
			{Name: "deployed", Type: "list(string)", Doc: "services this step (re)deployed"},
			{Name: "pruned", Type: "list(string)", Doc: "services removed"},
		},
		Diff:  "the rendered compose files and the services that would change",
		Files: true,
		New:   func() modules.Module { return &StackDeploy{} },
	}
}

// StackDeploy deploys a swarm stack from local compose files (a base then
// overlays, merged as `docker stack deploy -c a -c b` would) and waits until
// it converges. Run it on ONE manager: a play over a single manager host, or
// run_once on the managers group.
//
// Idempotency follows seed 003: a SHA-256 over the compose files and the
// interpolation env is kept on the host in <remote_dir>/.iklim-hash; when it
// matches and every service exists, Check costs one round trip and reports
// no change. Otherwise `docker stack config` on the host validates and
// merges the files (interpolating env) and each merged service is compared
// with the running one (`docker service inspect`): image, replicas, env,
// labels, placement constraints, and a per-service spec hash label
// (io.iklim.spec-hash) that catches every other field.
//
// Only the services that differ are deployed: the merged config is filtered
// to them and fed to `docker stack deploy -c -`, so the others keep their
// spec version and UpdatedAt (a plain stack deploy updates every service).
// The step then polls, one round trip per poll, until every service of the
// stack runs its replicas. A paused update, a swarm auto-rollback
// (UpdateStatus rollback_*; docker itself exits 0 then, docker/cli#6752),
// repeated task failures or the timeout fail the step after restoring the
// stack: changed services go back to their previous spec (`docker service
// update --rollback`, verified by spec hash) and new services are removed.
// The compose files and hash are written only after success.
type StackDeploy struct {
	Name             string            `hcl:"name" doc:"stack name"`
	Compose          []string          `hcl:"compose" doc:"local compose files on the control machine: the base first, then overlays"`
	EnvFiles         []string          `hcl:"env_files,optional" doc:"local KEY=VALUE files whose variables interpolate the compose files"`
	Env              map[string]string `hcl:"env,optional" sensitive:"true" doc:"variables that interpolate the compose files (win over env_files)"`
	RemoteDir        string            `hcl:"remote_dir,optional" doc:"where the compose files are kept on the host; relative paths in them resolve here (default /opt/iklim/stacks/<name>)"`
	WithRegistryAuth *bool             `hcl:"with_registry_auth,optional" doc:"send registry credentials to the swarm agents (default true)"`
	ResolveImage     string            `hcl:"resolve_image,optional" doc:"always, changed or never: query the registry for image digests (docker's default: always)"`
	ConvergeTimeout  string            `hcl:"converge_timeout,optional" doc:"how long the stack may take to converge (default 420s)"`
	Prune            bool              `hcl:"prune,optional" doc:"remove services of the stack that the compose files no longer define (not restored by rollback)"`

	files    []composeFile
	env      map[string]string
	hash     string
	dirOK    bool   // Check ran docker stack config inside remote_dir
	merged   []byte // docker stack config output
	plan     []svcPlan
	services []string // full names of every service the compose files define
	deployed []string
	pruned   []string
}

// svcPlan is what a deploy does to one service.
type svcPlan struct {
	Key     string   `json:"key"`  // name in the compose file
	Name    string   `json:"name"` // <stack>_<key>
	Action  string   `json:"action"`
	Reasons []string `json:"reasons,omitempty"`
	Hash    string   `json:"-"`
	before  string
	after   string
}

// stackBefore is what stack_deploy records before it deploys: enough to put
// every service back, kept compact (no specs, which may hold secrets).
type stackBefore struct {
	Stack     string      `json:"stack"`
	RemoteDir string      `json:"remote_dir"`
	Hash      string      `json:"hash,omitempty"`
	Services  []svcRecord `json:"services"`
	Deploy    []string    `json:"deploy"`
	Tasks     []taskInfo  `json:"tasks,omitempty"`
}

// svcRecord identifies a service's spec before the change.
type svcRecord struct {
	Name      string  `json:"name"`
	ID        string  `json:"id"`
	SpecSHA   string  `json:"spec_sha256"`
	Version   uint64  `json:"version"`
	UpdatedAt string  `json:"updated_at"`
	Image     string  `json:"image"`
	Replicas  *uint64 `json:"replicas,omitempty"`
}

const (
	specHashLabel  = "io.iklim.spec-hash"
	stackNamespace = "com.docker.stack.namespace"
	hashFileName   = ".iklim-hash"
	maxTaskRecords = 100
)

// Validate implements Validator.
func (m *StackDeploy) Validate() error {
	if m.Name == "" || strings.ContainsAny(m.Name, " /\t\n'\"") {
		return modules.ArgErrorf("name", "stack_deploy: bad stack name %q", m.Name)
	}
	if len(m.Compose) == 0 {
		return modules.ArgErrorf("compose", "stack_deploy: compose needs at least one file")
	}
	seen := map[string]bool{}
	for _, f := range m.Compose {
		b := filepath.Base(f)
		if seen[b] {
			return modules.ArgErrorf("compose", "stack_deploy: two compose files named %s; they would overwrite each other in remote_dir", b)
		}
		seen[b] = true
		// The files are read on the control machine at check time; a
		// missing one is an argument error, found before any host is touched.
		if err := remote.LocalFile(f); err != nil {
			return modules.ArgErrorf("compose", "stack_deploy: %w", err)
		}
	}
	for _, f := range m.EnvFiles {
		if err := remote.LocalFile(f); err != nil {
			return modules.ArgErrorf("env_files", "stack_deploy: %w", err)
		}
	}
	if m.RemoteDir != "" && !path.IsAbs(m.RemoteDir) {
		return modules.ArgErrorf("remote_dir", "stack_deploy: remote_dir %q must be absolute", m.RemoteDir)
	}
	switch m.ResolveImage {
	case "", "always", "changed", "never":
	default:
		return modules.ArgErrorf("resolve_image", "stack_deploy: resolve_image %q is not always, changed or never", m.ResolveImage)
	}
	if _, err := remote.ParseDuration("stack_deploy: converge_timeout", m.ConvergeTimeout, 0); err != nil {
		return &modules.ArgError{Arg: "converge_timeout", Err: err}
	}
	return nil
}

func (m *StackDeploy) dir() string {
	if m.RemoteDir != "" {
		return strings.TrimRight(m.RemoteDir, "/")
	}
	return "/opt/iklim/stacks/" + m.Name
}

func (m *StackDeploy) hashPath() string { return m.dir() + "/" + hashFileName }

func (m *StackDeploy) registryAuth() bool { return m.WithRegistryAuth == nil || *m.WithRegistryAuth }

func (m *StackDeploy) stackFilter() string {
	return "--filter label=" + remote.Quote(stackNamespace+"="+m.Name)
}

// Check implements Module. Unchanged hash and every service present: one
// round trip. Otherwise a second one merges the files on the host and reads
// the running services.
func (m *StackDeploy) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if err := m.load(); err != nil {
		return nil, err
	}
	oldHash, running, err := m.quickProbe(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("stack_deploy: %w", err)
	}
	allThere := true
	for _, s := range m.services {
		allThere = allThere && running[s]
	}
	if oldHash == m.hash && allThere {
		return nil, nil
	}

	// Full probe: merged config, current specs and tasks, one round trip.
	cfg, err := m.configScript(false)
	if err != nil {
		return nil, err
	}
	script := cfg + "echo " + probeSep + "\n" +
		"ids=$(docker service ls -q " + m.stackFilter() + ") || exit 1\n" +
		`if [ -n "$ids" ]; then docker service inspect $ids; else echo '[]'; fi` + "\n" +
		"echo " + probeSep + "\n" +
		`[ -n "$ids" ] && docker service ps --no-trunc --format '{{json .}}' $ids` + "\nexit 0\n"
	res, err := retryTransient(ctx, func() (modules.Result, error) {
		return dockerRun(ctx, c, "docker stack config", script, modules.WithEnv(m.env))
	})
	if err != nil {
		return nil, fmt.Errorf("stack_deploy: merge compose files %v and read stack %s: %w", m.Compose, m.Name, err)
	}
	parts := sections(res.Stdout, probeSep)
	if len(parts) < 3 {
		return nil, fmt.Errorf("stack_deploy: unexpected probe output %q", remote.TrimOutput(res.Stdout))
	}
	first, merged, _ := strings.Cut(parts[0], "\n")
	m.dirOK = strings.TrimSpace(first) == "dir-ok"
	m.merged = []byte(merged)
	current, err := parseServiceInspect(parts[1])
	if err != nil {
		return nil, fmt.Errorf("stack_deploy: %w", err)
	}
	tasks, err := jsonLines[taskInfo](parts[2])
	if err != nil {
		return nil, fmt.Errorf("stack_deploy: %w", err)
	}
	if m.plan, err = m.makePlan(m.merged, current); err != nil {
		return nil, err
	}
	return m.change(oldHash, current, tasks)
}

// quickProbe reads the recorded hash and the names of the stack's services:
// the names over the engine API when it answers, else with the hash in one
// script.
func (m *StackDeploy) quickProbe(ctx context.Context, c modules.Conn) (oldHash string, running map[string]bool, err error) {
	running = map[string]bool{}
	cat := "cat " + remote.Quote(m.hashPath()) + " 2>/dev/null; echo"
	names, err := engineServiceNames(ctx, c, map[string][]string{"label": {stackNamespace + "=" + m.Name}})
	switch {
	case err == nil:
		res, err := dockerRun(ctx, c, "read stack "+m.Name, cat)
		if err != nil {
			return "", nil, err
		}
		for _, n := range names {
			running[n] = true
		}
		return strings.TrimSpace(res.Stdout), running, nil
	case !errors.Is(err, errNoEngine):
		return "", nil, fmt.Errorf("%s: docker service ls: %w", c.Host(), err)
	}
	res, err := dockerRun(ctx, c, "read stack "+m.Name, cat+"; echo "+probeSep+
		"\ndocker service ls "+m.stackFilter()+" --format '{{.Name}}'")
	if err != nil {
		return "", nil, err
	}
	parts := sections(res.Stdout, probeSep)
	if len(parts) > 1 {
		for _, n := range strings.Fields(parts[1]) {
			running[n] = true
		}
	}
	return strings.TrimSpace(parts[0]), running, nil
}

func (m *StackDeploy) change(oldHash string, current map[string]*svcInspect, tasks []taskInfo) (*modules.Change, error) {
	b := stackBefore{Stack: m.Name, RemoteDir: m.dir(), Hash: oldHash}
	for _, name := range sortedKeys(current) {
		s := current[name]
		b.Services = append(b.Services, svcRecord{Name: name, ID: s.ID, SpecSHA: s.specSHA(), Version: s.Version.Index,
			UpdatedAt: s.UpdatedAt, Image: s.Spec.image(), Replicas: s.Spec.replicas()})
	}
	var created, updated []string
	var diffB, diffA strings.Builder
	for _, p := range m.plan {
		switch p.Action {
		case "create":
			created = append(created, p.Key)
		case "update":
			updated = append(updated, p.Key+" ("+strings.Join(p.Reasons, ", ")+")")
		default:
			continue
		}
		b.Deploy = append(b.Deploy, p.Name)
		diffB.WriteString(p.before)
		diffA.WriteString(p.after)
	}
	if len(tasks) > maxTaskRecords {
		tasks = tasks[:maxTaskRecords]
	}
	b.Tasks = tasks
	var parts []string
	if len(created) > 0 {
		parts = append(parts, "create "+strings.Join(created, ", "))
	}
	if len(updated) > 0 {
		parts = append(parts, "update "+strings.Join(updated, ", "))
	}
	if n := len(m.plan) - len(b.Deploy); n > 0 {
		parts = append(parts, fmt.Sprintf("%d unchanged", n))
	}
	if len(b.Deploy) == 0 {
		parts = append(parts, "compose files changed without service changes: record them")
	}
	if m.Prune {
		var extra []string
		for _, s := range b.Services {
			if !slices.Contains(m.services, s.Name) {
				extra = append(extra, s.Name)
			}
		}
		if len(extra) > 0 {
			parts = append(parts, "prune "+strings.Join(extra, ", "))
		}
	}
	ch := modules.Changef("deploy stack %s: %s", m.Name, strings.Join(parts, "; "))
	if err := ch.SetBefore(b); err != nil {
		return nil, err
	}
	for _, f := range m.files {
		ch.Files = append(ch.Files, m.dir()+"/"+f.base)
	}
	ch.Files = append(ch.Files, m.hashPath())
	ch.Diff = &modules.Diff{Label: "stack " + m.Name, Before: diffB.String(), After: diffA.String()}
	return ch, nil
}

func (m *StackDeploy) timeout() time.Duration {
	d, _ := remote.ParseDuration("converge_timeout", m.ConvergeTimeout, 420*time.Second)
	return d
}

// Apply implements Module: deploy the changed services, wait for the stack
// to converge, restore it on failure, then record files and hash.
func (m *StackDeploy) Apply(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	var b stackBefore
	if err := ch.DecodeBefore(&b); err != nil {
		return err
	}
	if m.hash == "" {
		if err := m.load(); err != nil {
			return err
		}
	}
	if !m.dirOK || m.merged == nil {
		cfg, err := m.configScript(true)
		if err != nil {
			return err
		}
		res, err := dockerRun(ctx, c, "docker stack config", cfg, modules.WithEnv(m.env))
		if err != nil {
			return fmt.Errorf("stack_deploy: %w", err)
		}
		// Relative paths now resolve in remote_dir; Before's deploy list
		// stays authoritative.
		m.merged = []byte(res.Stdout)
	}
	keep := map[string]string{}
	plan, err := m.makePlan(m.merged, nil)
	if err != nil {
		return err
	}
	for _, p := range plan {
		if slices.Contains(b.Deploy, p.Name) {
			keep[p.Key] = p.Hash
		}
	}
	wo := waitOpts{baseline: map[string]bool{}, fresh: map[string]time.Time{}, timeout: m.timeout(), interval: 2 * time.Second}
	for _, t := range b.Tasks {
		wo.baseline[t.ID] = true
	}
	for _, s := range b.Services {
		if slices.Contains(b.Deploy, s.Name) {
			t, _ := time.Parse(time.RFC3339Nano, s.UpdatedAt)
			wo.fresh[s.Name] = t
		}
	}
	if len(keep) > 0 {
		cfg, err := deployConfig(m.merged, keep)
		if err != nil {
			return fmt.Errorf("stack_deploy: %w", err)
		}
		cmd := "docker stack deploy"
		if m.registryAuth() {
			cmd += " --with-registry-auth"
		}
		if m.ResolveImage != "" {
			cmd += " --resolve-image " + m.ResolveImage
		}
		cmd += " -c - " + remote.Quote(m.Name)
		if _, err := retryTransient(ctx, func() (modules.Result, error) {
			return dockerRun(ctx, c, "docker stack deploy "+m.Name, cmd, modules.WithStdin(bytes.NewReader(cfg)))
		}); err != nil {
			rerr := m.restore(ctx, c, b, b.Deploy)
			return fmt.Errorf("stack_deploy: %w%s", err, restoreNote(rerr))
		}
		m.deployed = slices.Clone(b.Deploy)
	}
	if _, err := waitConverged(ctx, c, m.stackFilter(), m.services, wo); err != nil {
		rerr := m.restore(ctx, c, b, b.Deploy)
		return fmt.Errorf("stack_deploy: stack %s failed to converge: %v%s", m.Name, err, restoreNote(rerr))
	}
	if m.Prune {
		for _, s := range b.Services {
			if slices.Contains(m.services, s.Name) {
				continue
			}
			if _, err := dockerRun(ctx, c, "docker service rm", "docker service rm "+remote.Quote(s.Name)); err != nil {
				return fmt.Errorf("stack_deploy: prune: %w", err)
			}
			m.pruned = append(m.pruned, s.Name)
		}
	}
	for _, f := range m.files {
		if err := c.Upload(ctx, m.dir()+"/"+f.base, bytes.NewReader(f.content), 0o644); err != nil {
			return fmt.Errorf("stack_deploy: record %s: %w", f.base, err)
		}
	}
	if err := c.Upload(ctx, m.hashPath(), strings.NewReader(m.hash+"\n"), 0o644); err != nil {
		return fmt.Errorf("stack_deploy: record hash: %w", err)
	}
	return nil
}

func restoreNote(err error) string {
	if err != nil {
		return "; restoring the previous stack ALSO failed: " + err.Error()
	}
	return "; the stack was restored to its previous services"
}

// restore puts the services in touched (all of the stack when nil) back to
// the specs recorded in b: services that did not exist are removed, changed
// ones roll back to their previous spec when that is exactly the recorded
// one. It then waits for the restored services to converge.
func (m *StackDeploy) restore(ctx context.Context, c modules.Conn, b stackBefore, touched []string) error {
	res, err := retryTransient(ctx, func() (modules.Result, error) {
		return dockerRun(ctx, c, "inspect stack "+b.Stack,
			"ids=$(docker service ls -q --filter label="+remote.Quote(stackNamespace+"="+b.Stack)+") || exit 1\n"+
				`if [ -n "$ids" ]; then docker service inspect $ids; else echo '[]'; fi`)
	})
	if err != nil {
		return err
	}
	current, err := parseServiceInspect(res.Stdout)
	if err != nil {
		return err
	}
	before := map[string]svcRecord{}
	for _, s := range b.Services {
		before[s.Name] = s
	}
	var errs []error
	var cmds, rolled []string
	for _, name := range sortedKeys(current) {
		if touched != nil && !slices.Contains(touched, name) {
			continue
		}
		cur := current[name]
		rec, existed := before[name]
		switch {
		case !existed:
			cmds = append(cmds, "docker service rm "+remote.Quote(name))
		case cur.specSHA() == rec.SpecSHA:
			// Already as before (swarm may have rolled it back itself).
		case compactSHA(cur.PreviousSpec) == rec.SpecSHA:
			cmds = append(cmds, "docker service update --rollback --detach "+remote.Quote(name)+" >/dev/null")
			rolled = append(rolled, name)
		default:
			errs = append(errs, fmt.Errorf("service %s changed more than once since the recorded state; restore it by hand (recorded image %s)", name, rec.Image))
		}
	}
	for _, rec := range b.Services {
		if _, ok := current[rec.Name]; !ok && (touched == nil || slices.Contains(touched, rec.Name)) {
			errs = append(errs, fmt.Errorf("service %s was removed and cannot be recreated from the record", rec.Name))
		}
	}
	if len(cmds) > 0 {
		if _, err := dockerRun(ctx, c, "restore stack "+b.Stack, strings.Join(cmds, " && ")); err != nil {
			errs = append(errs, err)
		}
	}
	if len(rolled) > 0 {
		wait := min(m.timeout(), 180*time.Second)
		if _, err := waitRestored(ctx, c, "--filter label="+remote.Quote(stackNamespace+"="+b.Stack), rolled, wait); err != nil {
			errs = append(errs, fmt.Errorf("after rollback: %w", err))
		}
	}
	return errors.Join(errs...)
}

// waitRestored waits for services being rolled back: rollback_completed is
// success here.
func waitRestored(ctx context.Context, c modules.Conn, lsFilter string, names []string, timeout time.Duration) (map[string]*serviceState, error) {
	deadline := time.Now().Add(timeout)
	for {
		states, err := probeServices(ctx, c, lsFilter)
		if err != nil {
			return nil, err
		}
		var pending []string
		for _, n := range names {
			s, ok := states[n]
			if !ok {
				continue
			}
			switch s.Update {
			case "rollback_paused", "paused":
				return states, fmt.Errorf("service %s: %s: %s", n, s.Update, s.UpdateMsg)
			case "rollback_completed", "completed", "":
				if s.Running >= s.Desired {
					continue
				}
			}
			pending = append(pending, s.String())
		}
		if len(pending) == 0 {
			return states, nil
		}
		if time.Now().After(deadline) {
			return states, fmt.Errorf("not converged after %s: %s", timeout, strings.Join(pending, "; "))
		}
		if err := sleepCtx(ctx, 2*time.Second); err != nil {
			return states, err
		}
	}
}

// Rollback implements Rollbacker: every service of the stack goes back to
// its recorded spec and services the run created are removed. The runner
// restores the compose files and the hash file from its snapshot.
func (m *StackDeploy) Rollback(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	var b stackBefore
	if err := ch.DecodeBefore(&b); err != nil {
		return err
	}
	if err := m.restore(ctx, c, b, nil); err != nil {
		return fmt.Errorf("stack_deploy rollback %s: %w", b.Stack, err)
	}
	return nil
}

// Output implements Outputter: stack, hash, the services the compose files
// define, those deployed by this step and those pruned.
func (m *StackDeploy) Output() map[string]any {
	return map[string]any{"stack": m.Name, "hash": m.hash, "services": m.services, "deployed": m.deployed, "pruned": m.pruned}
}
