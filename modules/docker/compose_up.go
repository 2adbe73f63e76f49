package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// composeUpInfo is the compose_up module's registry entry.
func composeUpInfo() modules.Info {
	return modules.Info{
		Name: "compose_up",
		Doc:  "docker compose up -d a project, recreating only the services whose config or image changed, and wait for its containers' health",
		Example: `step "app up" {
  module   = "compose_up"
  project  = "app"
  files    = ["/srv/app/docker-compose.yml", "/srv/app/docker-compose.prod.yml"]
  env      = { APP_TAG = "abc1234" }
  max_wait = "60s"
  metadata = { image_tag = "abc1234", git_commit = "abc1234567890" }
}`,
		Outputs: []modules.Output{
			{Name: "project", Type: "string", Doc: "the compose project name"},
			{Name: "recreated", Type: "list(string)", Doc: "the services the step created or recreated"},
			{Name: "health", Type: "map(string)", Doc: "per container: healthy, running (no healthcheck), or what it was when the wait ended"},
		},
		Diff: "the rendered compose config before (the one the last compose_up brought up) and after",
		New:  func() modules.Module { return &ComposeUp{} },
	}
}

// ComposeUp brings a compose project up like `docker compose up -d`
// (seed 001's "Application Stack neu starten"), but idempotently and
// without --force-recreate: compose itself recreates only the services whose
// config hash (com.docker.compose.config-hash, which covers the image ID)
// differs from what runs, and Check compares the same hashes
// (`config --hash '*'`) so check mode names those services.
//
// The compose command is the docker CLI plugin (`docker compose`) when the
// host has it, else Debian's docker-compose. env interpolates the files; it
// reaches the host inside the script on stdin, never in a command line.
//
// After up, Apply waits up to max_wait for every container of the project to
// run and, where it has a healthcheck, to be healthy. The rendered config it
// brought up is kept on the host (<project_dir>/.iklim-compose-<project>.yml,
// mode 0600), so the next change records it as the config to go back to.
// Rollback brings that previous config up again, with the image IDs its
// containers ran re-tagged where a tag has since moved, or removes the
// project's containers when it had none. When the containers do not become
// healthy, Apply does that rollback itself (rollback_on_failure, default on)
// and fails naming the container and its failing check. The change's
// record keeps the config brought up, the containers it replaced (service,
// config hash, image, state) and the step's metadata.
type ComposeUp struct {
	Files             []string          `hcl:"files" doc:"compose files on the host (absolute paths), merged in order like -f a -f b"`
	Project           string            `hcl:"project" doc:"compose project name (-p)"`
	ProjectDir        string            `hcl:"project_dir,optional" doc:"project directory (default: the first file's directory)"`
	Env               map[string]string `hcl:"env,optional" sensitive:"true" doc:"variables that interpolate the compose files; passed on stdin, never in argv"`
	RemoveOrphans     bool              `hcl:"remove_orphans,optional" doc:"remove containers of services no longer in the files"`
	MaxWait           string            `hcl:"max_wait,optional" doc:"how long to wait for the containers to run and be healthy, a Go duration (default 120s)"`
	Metadata          map[string]string `hcl:"metadata,optional" doc:"deployment facts (timestamp, git commit, image…) kept in the change's record in the run directory, beside the config brought up and the containers replaced"`
	RollbackOnFailure *bool             `hcl:"rollback_on_failure,optional" doc:"when up fails or a container does not become healthy, bring the previous config back up and fail the step (default true)"`

	maxWait   time.Duration
	config    string // the files rendered by Check
	before    composeBefore
	recreated []string
	health    map[string]string
	changed   bool
}

// composeBefore is what Rollback needs.
type composeBefore struct {
	Project string   `json:"project"`
	Dir     string   `json:"dir"`
	Files   []string `json:"files"`
	// Config is the rendered config the last compose_up brought up, "" when
	// unknown (the containers were not started by compose_up) or none.
	Config     string             `json:"config,omitempty"`
	Containers []composeContainer `json:"containers,omitempty"`
	MaxWait    string             `json:"max_wait,omitempty"`
	// Deployed is the rendered config this change brings up and Metadata
	// the step's deployment facts: the run's record of what it deployed.
	Deployed string            `json:"deployed,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// composeContainer is one container of the project as the probe sees it.
type composeContainer struct {
	Name    string          `json:"name"`
	Service string          `json:"service"`
	Hash    string          `json:"hash"`
	OneOff  string          `json:"oneoff,omitempty"`
	Ref     string          `json:"ref"`   // the image reference it was created from
	Image   string          `json:"image"` // the image ID it runs
	Status  string          `json:"status"`
	Exit    int             `json:"exit,omitempty"`
	Health  json.RawMessage `json:"health_log,omitempty"`
}

var composeProjectRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// Validate implements modules.Validator.
func (m *ComposeUp) Validate() error {
	if !composeProjectRe.MatchString(m.Project) {
		return modules.ArgErrorf("project", "compose_up: project %q must be lower-case letters, digits, - and _", m.Project)
	}
	if len(m.Files) == 0 {
		return modules.ArgErrorf("files", "compose_up: at least one compose file is needed")
	}
	for _, f := range m.Files {
		if err := remote.AbsPath("files", f); err != nil {
			return fmt.Errorf("compose_up: %w", err)
		}
	}
	if m.ProjectDir != "" {
		if err := remote.AbsPath("project_dir", m.ProjectDir); err != nil {
			return fmt.Errorf("compose_up: %w", err)
		}
	}
	for k := range m.Env {
		if !remote.IsEnvName(k) {
			return modules.ArgErrorf("env", "compose_up: %q is not an environment variable name", k)
		}
	}
	d, err := remote.ParseDuration("max_wait", m.MaxWait, 120*time.Second)
	if err != nil {
		return modules.ArgErrorf("max_wait", "compose_up: %w", err)
	}
	m.maxWait = d
	return nil
}

func (m *ComposeUp) dir() string {
	if m.ProjectDir != "" {
		return m.ProjectDir
	}
	return path.Dir(m.Files[0])
}

// statePath is where Apply keeps the rendered config it brought up.
func statePath(dir, project string) string {
	return path.Join(dir, ".iklim-compose-"+project+".yml")
}

const composeSep = "@@iklim-compose@@"

// composePrelude picks the compose command and sets the env. It is the head
// of every script this module sends on stdin.
func composePrelude(dir string, env map[string]string) (string, error) {
	var b strings.Builder
	if len(env) > 0 {
		if err := remote.WriteExport(&b, env); err != nil {
			return "", err
		}
	}
	b.WriteString("if docker compose version >/dev/null 2>&1; then dc() { docker compose \"$@\"; }; " +
		"elif command -v docker-compose >/dev/null 2>&1; then dc() { docker-compose \"$@\"; }; " +
		"else echo 'neither docker compose nor docker-compose is installed' >&2; exit 4; fi\n")
	b.WriteString("cd " + remote.Quote(dir) + " || exit 5\n")
	return b.String(), nil
}

// containersScript prints one JSON line per container of the project.
func containersScript(project string) string {
	const format = `{"name":{{json .Name}},"service":{{json (index .Config.Labels "com.docker.compose.service")}},` +
		`"hash":{{json (index .Config.Labels "com.docker.compose.config-hash")}},` +
		`"oneoff":{{json (index .Config.Labels "com.docker.compose.oneoff")}},` +
		`"ref":{{json .Config.Image}},"image":{{json .Image}},"status":{{json .State.Status}},"exit":{{.State.ExitCode}},` +
		`"health_log":{{if .State.Health}}{{json .State.Health}}{{else}}null{{end}}}`
	return "ids=$(docker ps -aq --filter " + remote.Quote("label=com.docker.compose.project="+project) + ") || exit 6\n" +
		"[ -z \"$ids\" ] || docker inspect --format " + remote.Quote(format) + " $ids || exit 6\n"
}

func (m *ComposeUp) fileArgs() string {
	var b strings.Builder
	for _, f := range m.Files {
		b.WriteString(" -f " + remote.Quote(f))
	}
	return b.String()
}

// run sends script to the host's shell on stdin, so nothing in it (env
// values) appears in a process's argv.
func composeRun(ctx context.Context, c modules.Conn, what, script string) (modules.Result, error) {
	return dockerRun(ctx, c, what, "/bin/sh -s", modules.WithStdin(strings.NewReader(script)))
}

type composeState struct {
	config     string            // the files rendered now
	hashes     map[string]string // service → wanted config hash
	containers []composeContainer
	prev       string // the rendered config compose_up last brought up
}

func (m *ComposeUp) probe(ctx context.Context, c modules.Conn) (composeState, error) {
	pre, err := composePrelude(m.dir(), m.Env)
	if err != nil {
		return composeState{}, modules.ArgErrorf("env", "compose_up: %w", err)
	}
	p := remote.Quote(m.Project)
	var b strings.Builder
	b.WriteString(pre)
	// The two compose runs (a Python start each) go side by side.
	b.WriteString("t=$(mktemp) || exit 7\ndc -p " + p + m.fileArgs() + " config --hash '*' > \"$t\" 2>&1 & hp=$!\n")
	b.WriteString("dc -p " + p + m.fileArgs() + " config || { wait $hp; rm -f \"$t\"; exit 7; }\necho " + composeSep + "\n")
	b.WriteString("wait $hp || { cat \"$t\" >&2; rm -f \"$t\"; exit 7; }\ncat \"$t\"; rm -f \"$t\"\necho " + composeSep + "\n")
	b.WriteString(containersScript(m.Project))
	b.WriteString("echo " + composeSep + "\n")
	b.WriteString("cat " + remote.Quote(statePath(m.dir(), m.Project)) + " 2>/dev/null; exit 0\n")
	res, err := composeRun(ctx, c, "compose_up "+m.Project+": probe", b.String())
	if err != nil {
		return composeState{}, err
	}
	sec := sections(res.Stdout, composeSep)
	if len(sec) != 4 {
		return composeState{}, fmt.Errorf("%s: compose_up %s: short probe output %q", c.Host(), m.Project, remote.TrimOutput(res.Stdout))
	}
	st := composeState{config: sec[0], hashes: map[string]string{}, prev: sec[3]}
	for _, l := range strings.Split(sec[1], "\n") {
		if f := strings.Fields(l); len(f) == 2 && len(f[1]) == 64 {
			st.hashes[f[0]] = f[1]
		}
	}
	cs, err := jsonLines[composeContainer](sec[2])
	if err != nil {
		return composeState{}, fmt.Errorf("%s: compose_up %s: %w", c.Host(), m.Project, err)
	}
	for _, ct := range cs {
		if ct.OneOff != "True" {
			ct.Name = strings.TrimPrefix(ct.Name, "/")
			st.containers = append(st.containers, ct)
		}
	}
	return st, nil
}

// Check implements modules.Module: one round trip renders the files, hashes
// each service and reads the project's containers; a service changes when
// it has no running container or one whose hash differs.
func (m *ComposeUp) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	st, err := m.probe(ctx, c)
	if err != nil {
		return nil, err
	}
	running := map[string][]composeContainer{}
	for _, ct := range st.containers {
		running[ct.Service] = append(running[ct.Service], ct)
	}
	var parts []string
	m.recreated = nil
	for _, svc := range sortedKeys(st.hashes) {
		cts := running[svc]
		switch {
		case len(cts) == 0:
			parts = append(parts, "create "+svc)
		case anyContainer(cts, func(ct composeContainer) bool { return ct.Hash != st.hashes[svc] }):
			parts = append(parts, "recreate "+svc)
		case anyContainer(cts, func(ct composeContainer) bool { return ct.Status != "running" }):
			parts = append(parts, "start "+svc)
		default:
			continue
		}
		m.recreated = append(m.recreated, svc)
	}
	if m.RemoveOrphans {
		for _, svc := range sortedKeys(running) {
			if _, ok := st.hashes[svc]; !ok {
				parts = append(parts, "remove orphan "+svc)
			}
		}
	}
	m.config = st.config
	m.before = composeBefore{Project: m.Project, Dir: m.dir(), Files: m.Files, Config: st.prev, Containers: st.containers, MaxWait: m.maxWait.String(),
		Deployed: st.config, Metadata: m.Metadata}
	if len(parts) == 0 {
		return nil, nil
	}
	ch := &modules.Change{
		Summary: fmt.Sprintf("compose %s: %s", m.Project, strings.Join(parts, ", ")),
		// The snapshots keep the files this run brought up in the run's
		// record; Rollback brings up the recorded config, not these.
		Files: append([]string(nil), m.Files...),
	}
	before := st.prev
	if before == "" {
		before = "(no config brought up by compose_up)\n"
		if len(st.containers) == 0 {
			before = "(no containers)\n"
		}
	}
	ch.Diff = &modules.Diff{Label: "compose " + m.Project, Before: before, After: st.config}
	return ch, ch.SetBefore(m.before)
}

func anyContainer(cts []composeContainer, f func(composeContainer) bool) bool {
	for _, ct := range cts {
		if f(ct) {
			return true
		}
	}
	return false
}

// Apply implements modules.Module: up -d (compose recreates what Check
// named), keep the rendered config, then wait for the containers.
func (m *ComposeUp) Apply(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	pre, err := composePrelude(m.dir(), m.Env)
	if err != nil {
		return err
	}
	p := remote.Quote(m.Project)
	state := remote.Quote(statePath(m.dir(), m.Project))
	var b strings.Builder
	b.WriteString(pre)
	// The config Check rendered is kept for the next change's record; it
	// goes over sftp (it may hold env values), mode 0600.
	if err := c.Upload(ctx, statePath(m.dir(), m.Project)+".tmp", strings.NewReader(m.config), 0o600); err != nil {
		return fmt.Errorf("%s: compose_up %s: keep the rendered config: %w", c.Host(), m.Project, err)
	}
	up := "dc -p " + p + m.fileArgs() + " up -d"
	if m.RemoveOrphans {
		up += " --remove-orphans"
	}
	// The config is kept even when up fails half way: it is what the
	// project's recreated containers now run.
	b.WriteString(up + "; rc=$?\nmv -f " + state + ".tmp " + state + " || exit 8\nexit $rc\n")
	_, err = composeRun(ctx, c, "compose_up "+m.Project+": up", b.String())
	m.changed = true
	if err == nil {
		m.health, err = waitHealthy(ctx, c, m.Project, m.maxWait)
		if err == nil {
			return nil
		}
	}
	if m.RollbackOnFailure != nil && !*m.RollbackOnFailure {
		return err
	}
	if rerr := m.Rollback(ctx, c, ch); rerr != nil {
		return fmt.Errorf("%w; rolling back to the previous config failed too: %v", err, rerr)
	}
	return fmt.Errorf("%w; rolled back to the previous config", err)
}

// waitHealthy polls the project's containers until every one runs and,
// with a healthcheck, is healthy; an exited or unhealthy container ends the
// wait at once.
func waitHealthy(ctx context.Context, c modules.Conn, project string, max time.Duration) (map[string]string, error) {
	start := time.Now()
	deadline := start.Add(max)
	for {
		res, err := dockerRun(ctx, c, "compose_up "+project+": containers", containersScript(project))
		if err != nil {
			return nil, err
		}
		cts, err := jsonLines[composeContainer](res.Stdout)
		if err != nil {
			return nil, fmt.Errorf("%s: compose_up %s: %w", c.Host(), project, err)
		}
		health := map[string]string{}
		var waiting []string
		for _, ct := range cts {
			if ct.OneOff == "True" {
				continue
			}
			name := strings.TrimPrefix(ct.Name, "/")
			hs, last := healthOf(ct.Health)
			switch {
			case ct.Status == "exited" || ct.Status == "dead":
				return nil, fmt.Errorf("%s: compose_up %s: container %s (service %s) %s with code %d", c.Host(), project, name, ct.Service, ct.Status, ct.Exit)
			case hs == "unhealthy":
				return nil, fmt.Errorf("%s: compose_up %s: container %s (service %s) is unhealthy: its healthcheck said %q", c.Host(), project, name, ct.Service, last)
			case ct.Status != "running":
				health[name] = ct.Status
				waiting = append(waiting, name+" ("+ct.Status+")")
			case hs == "":
				health[name] = "running"
			default:
				health[name] = hs
				if hs != "healthy" {
					waiting = append(waiting, name+" ("+hs+")")
				}
			}
		}
		if len(waiting) == 0 {
			return health, nil
		}
		if time.Now().After(deadline) {
			return health, fmt.Errorf("%s: compose_up %s: not healthy after %s: %s", c.Host(), project, max, strings.Join(waiting, ", "))
		}
		modules.ReportStatus(c, modules.Status{Text: "waiting for healthy containers: " + strings.Join(waiting, ", "), Since: start, Max: max})
		select {
		case <-ctx.Done():
			return health, fmt.Errorf("%s: compose_up %s: wait for health: %w", c.Host(), project, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// healthOf reads State.Health: its status and the last probe's output.
func healthOf(raw json.RawMessage) (status, last string) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", ""
	}
	var h struct {
		Status string `json:"Status"`
		Log    []struct {
			ExitCode int    `json:"ExitCode"`
			Output   string `json:"Output"`
		} `json:"Log"`
	}
	if json.Unmarshal(raw, &h) != nil {
		return "", ""
	}
	if n := len(h.Log); n > 0 {
		last = fmt.Sprintf("exit %d: %s", h.Log[n-1].ExitCode, strings.TrimSpace(h.Log[n-1].Output))
	}
	return h.Status, last
}

// Rollback implements modules.Rollbacker: the previous config comes back
// up from the recorded rendering (image tags pointed back at the IDs its
// containers ran), or, when the project had no containers, its containers
// and networks go.
func (m *ComposeUp) Rollback(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	var b composeBefore
	if err := ch.DecodeBefore(&b); err != nil {
		return fmt.Errorf("compose_up rollback: %w", err)
	}
	wait, err := remote.ParseDuration("max_wait", b.MaxWait, 120*time.Second)
	if err != nil {
		return fmt.Errorf("compose_up rollback: %w", err)
	}
	lbl := remote.Quote("label=com.docker.compose.project=" + b.Project)
	state := remote.Quote(statePath(b.Dir, b.Project))
	if len(b.Containers) == 0 {
		script := "ids=$(docker ps -aq --filter " + lbl + ") && { [ -z \"$ids\" ] || docker rm -f $ids >/dev/null; } &&\n" +
			"nets=$(docker network ls -q --filter " + lbl + ") && { [ -z \"$nets\" ] || docker network rm $nets >/dev/null; } &&\n" +
			"rm -f " + state + "\n"
		_, err := dockerRun(ctx, c, "compose_up rollback "+b.Project+": remove", script)
		return err
	}
	if b.Config == "" {
		return fmt.Errorf("%s: compose_up rollback %s: the containers it replaced were not started by compose_up, so their config is unknown", c.Host(), b.Project)
	}
	pre, err := composePrelude(b.Dir, nil)
	if err != nil {
		return err
	}
	var s strings.Builder
	s.WriteString(pre)
	s.WriteString("umask 077\n")
	tags := map[string]string{}
	for _, ct := range b.Containers {
		if ct.Ref != "" && !strings.HasPrefix(ct.Ref, "sha256:") && ct.Image != "" {
			tags[ct.Ref] = ct.Image
		}
	}
	for _, ref := range sortedKeys(tags) {
		id, r := remote.Quote(tags[ref]), remote.Quote(ref)
		fmt.Fprintf(&s, "if docker image inspect %s >/dev/null 2>&1 && [ \"$(docker image inspect --format '{{.Id}}' %s 2>/dev/null)\" != %s ]; then docker tag %s %s || exit 9; fi\n", id, r, id, id, r)
	}
	s.WriteString("cat > " + state + ".tmp <<'IKLIM_COMPOSE_EOF'\n" + strings.TrimRight(b.Config, "\n") + "\nIKLIM_COMPOSE_EOF\n")
	s.WriteString("dc -p " + remote.Quote(b.Project) + " --project-directory " + remote.Quote(b.Dir) + " -f " + state + ".tmp up -d --remove-orphans; rc=$?\n")
	s.WriteString("mv -f " + state + ".tmp " + state + " || exit 8\nexit $rc\n")
	if strings.Contains(b.Config, "\nIKLIM_COMPOSE_EOF\n") {
		return fmt.Errorf("%s: compose_up rollback %s: the recorded config holds the here-document marker", c.Host(), b.Project)
	}
	if _, err := composeRun(ctx, c, "compose_up rollback "+b.Project+": up", s.String()); err != nil {
		return err
	}
	_, err = waitHealthy(ctx, c, b.Project, wait)
	return err
}

// Output implements modules.Outputter.
func (m *ComposeUp) Output() map[string]any {
	rec := make([]any, 0, len(m.recreated))
	for _, s := range m.recreated {
		rec = append(rec, s)
	}
	health := map[string]any{}
	for k, v := range m.health {
		health[k] = v
	}
	return map[string]any{"project": m.Project, "changed": m.changed, "recreated": rec, "health": health}
}
