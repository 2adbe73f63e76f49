package docker

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

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
		New: func() modules.Module { return &StackDeploy{} },
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

type composeFile struct {
	local, base string
	content     []byte
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
		return fmt.Errorf("stack_deploy: bad stack name %q", m.Name)
	}
	if len(m.Compose) == 0 {
		return errors.New("stack_deploy: compose needs at least one file")
	}
	seen := map[string]bool{}
	for _, f := range m.Compose {
		b := filepath.Base(f)
		if seen[b] {
			return fmt.Errorf("stack_deploy: two compose files named %s; they would overwrite each other in remote_dir", b)
		}
		seen[b] = true
	}
	if m.RemoteDir != "" && !path.IsAbs(m.RemoteDir) {
		return fmt.Errorf("stack_deploy: remote_dir %q must be absolute", m.RemoteDir)
	}
	switch m.ResolveImage {
	case "", "always", "changed", "never":
	default:
		return fmt.Errorf("stack_deploy: resolve_image %q is not always, changed or never", m.ResolveImage)
	}
	_, err := remote.ParseDuration("stack_deploy: converge_timeout", m.ConvergeTimeout, 0)
	return err
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

// load reads the local compose and env files and computes the deploy hash.
func (m *StackDeploy) load() error {
	m.files = nil
	keys := map[string]bool{}
	for _, f := range m.Compose {
		b, err := remote.ReadLocal(f)
		if err != nil {
			return fmt.Errorf("stack_deploy: %w", err)
		}
		var doc struct {
			Services map[string]any `yaml:"services"`
		}
		if err := yaml.Unmarshal(b, &doc); err != nil {
			return fmt.Errorf("stack_deploy: %s: %w", f, err)
		}
		for k := range doc.Services {
			keys[k] = true
		}
		m.files = append(m.files, composeFile{local: f, base: filepath.Base(f), content: b})
	}
	m.services = nil
	for _, k := range sortedKeys(keys) {
		m.services = append(m.services, m.Name+"_"+k)
	}
	m.env = map[string]string{}
	for _, f := range m.EnvFiles {
		b, err := remote.ReadLocal(f)
		if err != nil {
			return fmt.Errorf("stack_deploy: %w", err)
		}
		vars, err := parseEnvFile(b)
		if err != nil {
			return fmt.Errorf("stack_deploy: %s: %w", f, err)
		}
		maps.Copy(m.env, vars)
	}
	maps.Copy(m.env, m.Env)
	h := newHasher()
	h.add("stack", m.Name)
	for _, f := range m.files {
		h.add("compose:"+f.base, string(f.content))
	}
	for _, k := range sortedKeys(m.env) {
		h.add("env:"+k, m.env[k])
	}
	h.add("registry-auth", strconv.FormatBool(m.registryAuth()))
	h.add("resolve-image", m.ResolveImage)
	h.add("prune", strconv.FormatBool(m.Prune))
	m.hash = h.sum()
	return nil
}

type hasher struct{ b bytes.Buffer }

func newHasher() *hasher { return &hasher{} }

// add feeds a length-prefixed key and value, so no two inputs collide.
func (h *hasher) add(k, v string) { fmt.Fprintf(&h.b, "%d:%s%d:%s", len(k), k, len(v), v) }
func (h *hasher) sum() string     { return remote.SHA256String(h.b.String()) }

// parseEnvFile reads KEY=VALUE lines: # comments, blank lines, an optional
// "export ", and one level of matching quotes around the value.
func parseEnvFile(b []byte) (map[string]string, error) {
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || !remote.IsEnvName(k) {
			return nil, fmt.Errorf("line %d: not KEY=VALUE", n)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		vars[k] = v
	}
	return vars, sc.Err()
}

// configScript runs `docker stack config` on the files, passed as here
// documents (stdin and fds 3…), from inside dir so that relative paths
// resolve there as they do on deploy. mkdir creates dir first (Apply only).
func (m *StackDeploy) configScript(mkdir bool) (string, error) {
	var delim string
	for {
		var r [8]byte
		_, _ = rand.Read(r[:])
		delim = "IKLIM_EOF_" + hex.EncodeToString(r[:])
		clash := false
		for _, f := range m.files {
			clash = clash || bytes.Contains(f.content, []byte(delim))
		}
		if !clash {
			break
		}
	}
	var b strings.Builder
	if mkdir {
		fmt.Fprintf(&b, "mkdir -p %s && cd %s || exit 1\n", remote.Quote(m.dir()), remote.Quote(m.dir()))
	} else {
		fmt.Fprintf(&b, "if cd %s 2>/dev/null; then echo dir-ok; else cd / && echo dir-missing; fi\n", remote.Quote(m.dir()))
	}
	b.WriteString("docker stack config")
	for i := range m.files {
		if i == 0 {
			b.WriteString(" -c -")
		} else {
			fmt.Fprintf(&b, " -c /dev/fd/%d", i+2)
		}
	}
	for i := range m.files {
		if i == 0 {
			fmt.Fprintf(&b, " <<'%s_0'", delim)
		} else {
			fmt.Fprintf(&b, " %d<<'%s_%d'", i+2, delim, i)
		}
	}
	b.WriteString(" || exit 1\n")
	for i, f := range m.files {
		b.Write(f.content)
		if !bytes.HasSuffix(f.content, []byte("\n")) {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s_%d\n", delim, i)
	}
	if len(m.files) > 7 {
		return "", errors.New("stack_deploy: at most 7 compose files")
	}
	return b.String(), nil
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
	quick := "cat " + remote.Quote(m.hashPath()) + " 2>/dev/null; echo; echo " + probeSep +
		"\ndocker service ls " + m.stackFilter() + " --format '{{.Name}}'"
	res, err := dockerRun(ctx, c, "read stack "+m.Name, quick)
	if err != nil {
		return nil, fmt.Errorf("stack_deploy: %w", err)
	}
	parts := sections(res.Stdout, probeSep)
	oldHash := strings.TrimSpace(parts[0])
	running := map[string]bool{}
	if len(parts) > 1 {
		for _, n := range strings.Fields(parts[1]) {
			running[n] = true
		}
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
	res, err = retryTransient(ctx, func() (modules.Result, error) {
		return dockerRun(ctx, c, "docker stack config", script, modules.WithEnv(m.env))
	})
	if err != nil {
		return nil, fmt.Errorf("stack_deploy: merge compose files %v and read stack %s: %w", m.Compose, m.Name, err)
	}
	parts = sections(res.Stdout, probeSep)
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

// svcInspect is the part of `docker service inspect` the module reads. Spec
// is kept raw too, to fingerprint it.
type svcInspect struct {
	ID      string `json:"ID"`
	Version struct {
		Index uint64 `json:"Index"`
	} `json:"Version"`
	UpdatedAt    string          `json:"UpdatedAt"`
	Spec         swarmSpec       `json:"Spec"`
	RawSpec      json.RawMessage `json:"-"`
	PreviousSpec json.RawMessage `json:"PreviousSpec"`
	UpdateStatus *struct {
		State   string `json:"State"`
		Message string `json:"Message"`
	} `json:"UpdateStatus"`
}

type swarmSpec struct {
	Name         string            `json:"Name"`
	Labels       map[string]string `json:"Labels"`
	TaskTemplate struct {
		ContainerSpec struct {
			Image string   `json:"Image"`
			Env   []string `json:"Env"`
		} `json:"ContainerSpec"`
		Placement *struct {
			Constraints []string `json:"Constraints"`
		} `json:"Placement"`
	} `json:"TaskTemplate"`
	Mode struct {
		Replicated *struct {
			Replicas *uint64 `json:"Replicas"`
		} `json:"Replicated"`
		Global *struct{} `json:"Global"`
	} `json:"Mode"`
}

func (s swarmSpec) image() string {
	img, _, _ := strings.Cut(s.TaskTemplate.ContainerSpec.Image, "@")
	return img
}

func (s swarmSpec) replicas() *uint64 {
	if s.Mode.Replicated != nil {
		return s.Mode.Replicated.Replicas
	}
	return nil
}

func (s swarmSpec) constraints() []string {
	if s.TaskTemplate.Placement == nil {
		return nil
	}
	return s.TaskTemplate.Placement.Constraints
}

// userLabels are the service labels the compose file sets.
func (s swarmSpec) userLabels() map[string]string {
	out := map[string]string{}
	for k, v := range s.Labels {
		if strings.HasPrefix(k, "com.docker.stack.") || k == specHashLabel {
			continue
		}
		out[k] = v
	}
	return out
}

// specSHA fingerprints the spec as docker returns it; a rollback restores
// it byte for byte.
func (s *svcInspect) specSHA() string { return compactSHA(s.RawSpec) }

// compactSHA fingerprints a service spec as JSON. `docker service inspect`
// fills daemon defaults into Spec but not into PreviousSpec, so both are
// normalised first: zero values dropped, the defaulted fields filled in.
func compactSHA(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return remote.SHA256String(string(raw))
	}
	v = normalizeSpec(v)
	b, _ := json.Marshal(v) // map keys come out sorted
	return remote.SHA256String(string(b))
}

var (
	updateDefaults = map[string]any{"Parallelism": 1.0, "FailureAction": "pause", "Monitor": 5e9, "Order": "stop-first"}
	specDefaults   = map[string]map[string]any{
		"UpdateConfig":   updateDefaults,
		"RollbackConfig": updateDefaults,
	}
	taskDefaults      = map[string]map[string]any{"RestartPolicy": {"Condition": "any", "Delay": 5e9}}
	containerDefaults = map[string]any{"StopGracePeriod": 1e10}
)

func normalizeSpec(v any) any {
	v = dropZero(v)
	spec, ok := v.(map[string]any)
	if !ok {
		return v
	}
	fill := func(m map[string]any, key string, defs map[string]any) {
		sub, _ := m[key].(map[string]any)
		if sub == nil {
			sub = map[string]any{}
		}
		for k, d := range defs {
			if _, ok := sub[k]; !ok {
				sub[k] = d
			}
		}
		m[key] = sub
	}
	for k, defs := range specDefaults {
		fill(spec, k, defs)
	}
	tt, _ := spec["TaskTemplate"].(map[string]any)
	if tt == nil {
		return spec
	}
	for k, defs := range taskDefaults {
		fill(tt, k, defs)
	}
	if cs, _ := tt["ContainerSpec"].(map[string]any); cs != nil {
		for k, d := range containerDefaults {
			if _, ok := cs[k]; !ok {
				cs[k] = d
			}
		}
	}
	return spec
}

// dropZero removes nulls, zeros, false, "" and empty objects and lists.
func dropZero(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if e = dropZero(e); e == nil {
				delete(x, k)
			} else {
				x[k] = e
			}
		}
		if len(x) == 0 {
			return nil
		}
		return x
	case []any:
		out := x[:0]
		for _, e := range x {
			if e = dropZero(e); e != nil {
				out = append(out, e)
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	case string:
		if x == "" {
			return nil
		}
	case float64:
		if x == 0 {
			return nil
		}
	case bool:
		if !x {
			return nil
		}
	}
	return v
}

func parseServiceInspect(out string) (map[string]*svcInspect, error) {
	out = strings.TrimSpace(out)
	if i := strings.Index(out, "["); i > 0 {
		out = out[i:]
	}
	var raws []json.RawMessage
	if err := json.Unmarshal([]byte(out), &raws); err != nil {
		return nil, fmt.Errorf("read docker service inspect: %w", err)
	}
	svcs := map[string]*svcInspect{}
	for _, r := range raws {
		var s svcInspect
		if err := json.Unmarshal(r, &s); err != nil {
			return nil, fmt.Errorf("read docker service inspect: %w", err)
		}
		var spec struct {
			Spec json.RawMessage `json:"Spec"`
		}
		_ = json.Unmarshal(r, &spec)
		s.RawSpec = spec.Spec
		svcs[s.Spec.Name] = &s
	}
	return svcs, nil
}

// composeService is the part of a merged compose service that is compared.
type composeService struct {
	Image       string         `yaml:"image"`
	Environment map[string]any `yaml:"environment"`
	Deploy      struct {
		Mode      string            `yaml:"mode"`
		Replicas  *uint64           `yaml:"replicas"`
		Labels    map[string]string `yaml:"labels"`
		Placement struct {
			Constraints []string `yaml:"constraints"`
		} `yaml:"placement"`
	} `yaml:"deploy"`
}

func (s composeService) env() []string {
	var out []string
	for _, k := range sortedKeys(s.Environment) {
		if v := s.Environment[k]; v != nil {
			out = append(out, fmt.Sprintf("%s=%v", k, v))
		} else {
			out = append(out, k)
		}
	}
	return out
}

// makePlan compares each merged service with the running one.
func (m *StackDeploy) makePlan(merged []byte, current map[string]*svcInspect) ([]svcPlan, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(merged, &root); err != nil {
		return nil, fmt.Errorf("stack_deploy: read docker stack config output: %w", err)
	}
	svcs := mapValue(docNode(&root), "services")
	if svcs == nil || svcs.Kind != yaml.MappingNode {
		return nil, errors.New("stack_deploy: merged config has no services")
	}
	var plan []svcPlan
	for i := 0; i+1 < len(svcs.Content); i += 2 {
		key, node := svcs.Content[i].Value, svcs.Content[i+1]
		raw, err := yaml.Marshal(node)
		if err != nil {
			return nil, err
		}
		var want composeService
		if err := node.Decode(&want); err != nil {
			return nil, fmt.Errorf("stack_deploy: service %s: %w", key, err)
		}
		p := svcPlan{Key: key, Name: m.Name + "_" + key, Hash: remote.SHA256String(string(raw))}
		p.after = describeWanted(p.Name, want)
		cur, ok := current[p.Name]
		switch {
		case !ok:
			p.Action = "create"
			p.before = p.Name + ": (absent)\n"
		default:
			p.before = describeRunning(p.Name, cur.Spec)
			p.Reasons = compareService(want, cur.Spec)
			if cur.Spec.Labels[specHashLabel] != p.Hash && len(p.Reasons) == 0 {
				p.Reasons = []string{"spec"}
			}
			p.Action = "update"
			if len(p.Reasons) == 0 {
				p.Action = "unchanged"
			}
		}
		plan = append(plan, p)
	}
	return plan, nil
}

func docNode(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		return n.Content[0]
	}
	return n
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// setMapValue sets key to val in mapping n, appending it when missing.
func setMapValue(n *yaml.Node, key string, val *yaml.Node) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			n.Content[i+1] = val
			return
		}
	}
	n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, val)
}

func wantReplicas(w composeService) *uint64 {
	if w.Deploy.Mode == "global" {
		return nil
	}
	if w.Deploy.Replicas != nil {
		return w.Deploy.Replicas
	}
	one := uint64(1)
	return &one
}

func fmtReplicas(r *uint64) string {
	if r == nil {
		return "global"
	}
	return strconv.FormatUint(*r, 10)
}

// compareService lists what differs between the wanted and running service.
func compareService(w composeService, cur swarmSpec) []string {
	var r []string
	if w.Image != cur.image() {
		r = append(r, fmt.Sprintf("image %s → %s", cur.image(), w.Image))
	}
	if a, b := fmtReplicas(cur.replicas()), fmtReplicas(wantReplicas(w)); a != b {
		r = append(r, fmt.Sprintf("replicas %s → %s", a, b))
	}
	curEnv := slices.Sorted(slices.Values(cur.TaskTemplate.ContainerSpec.Env))
	if !slices.Equal(curEnv, w.env()) {
		r = append(r, "env "+envChanges(curEnv, w.env()))
	}
	wl := w.Deploy.Labels
	if wl == nil {
		wl = map[string]string{}
	}
	delete(wl, specHashLabel)
	if !maps.Equal(cur.userLabels(), wl) {
		r = append(r, "labels")
	}
	cc := slices.Sorted(slices.Values(cur.constraints()))
	wc := slices.Sorted(slices.Values(w.Deploy.Placement.Constraints))
	if !slices.Equal(cc, wc) {
		r = append(r, "constraints")
	}
	return r
}

// envChanges names the variables that differ, never their values.
func envChanges(cur, want []string) string {
	kv := func(list []string) map[string]string {
		out := map[string]string{}
		for _, e := range list {
			k, v, _ := strings.Cut(e, "=")
			out[k] = v
		}
		return out
	}
	a, b := kv(cur), kv(want)
	var ch []string
	for _, k := range sortedKeys(b) {
		if v, ok := a[k]; !ok {
			ch = append(ch, "+"+k)
		} else if v != b[k] {
			ch = append(ch, "~"+k)
		}
	}
	for _, k := range sortedKeys(a) {
		if _, ok := b[k]; !ok {
			ch = append(ch, "-"+k)
		}
	}
	return strings.Join(ch, " ")
}

// fingerprintEnv shows env values as short hashes: diffs name what changed
// without printing secrets.
func fingerprintEnv(env []string) string {
	var b strings.Builder
	for _, e := range env {
		k, v, ok := strings.Cut(e, "=")
		if !ok {
			fmt.Fprintf(&b, "    %s\n", k)
			continue
		}
		fmt.Fprintf(&b, "    %s=sha256:%s\n", k, remote.SHA256String(v)[:12])
	}
	return b.String()
}

func describe(name, image string, replicas *uint64, env []string, labels map[string]string, constraints []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:\n  image: %s\n  replicas: %s\n", name, image, fmtReplicas(replicas))
	if len(env) > 0 {
		b.WriteString("  env:\n" + fingerprintEnv(env))
	}
	if len(labels) > 0 {
		b.WriteString("  labels:\n")
		for _, k := range sortedKeys(labels) {
			fmt.Fprintf(&b, "    %s=%s\n", k, labels[k])
		}
	}
	if len(constraints) > 0 {
		b.WriteString("  constraints:\n")
		for _, c := range slices.Sorted(slices.Values(constraints)) {
			fmt.Fprintf(&b, "    %s\n", c)
		}
	}
	return b.String()
}

func describeWanted(name string, w composeService) string {
	labels := maps.Clone(w.Deploy.Labels)
	delete(labels, specHashLabel)
	return describe(name, w.Image, wantReplicas(w), w.env(), labels, w.Deploy.Placement.Constraints)
}

func describeRunning(name string, s swarmSpec) string {
	return describe(name, s.image(), s.replicas(), slices.Sorted(slices.Values(s.TaskTemplate.ContainerSpec.Env)), s.userLabels(), s.constraints())
}

// deployConfig is the merged config cut down to the services in names, each
// labelled with its spec hash, with every "$" doubled: the config is already
// interpolated and `docker stack deploy` would interpolate it again.
func deployConfig(merged []byte, keep map[string]string) ([]byte, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(merged, &root); err != nil {
		return nil, err
	}
	top := docNode(&root)
	svcs := mapValue(top, "services")
	if svcs == nil {
		return nil, errors.New("merged config has no services")
	}
	var content []*yaml.Node
	for i := 0; i+1 < len(svcs.Content); i += 2 {
		key, node := svcs.Content[i].Value, svcs.Content[i+1]
		hash, ok := keep[key]
		if !ok {
			continue
		}
		deploy := mapValue(node, "deploy")
		if deploy == nil {
			deploy = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			setMapValue(node, "deploy", deploy)
		}
		labels := mapValue(deploy, "labels")
		if labels == nil || labels.Kind != yaml.MappingNode {
			labels = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			setMapValue(deploy, "labels", labels)
		}
		setMapValue(labels, specHashLabel, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: hash})
		content = append(content, svcs.Content[i], node)
	}
	svcs.Content = content
	escapeDollars(top)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return nil, err
	}
	return buf.Bytes(), enc.Close()
}

func escapeDollars(n *yaml.Node) {
	switch n.Kind {
	case yaml.ScalarNode:
		n.Value = strings.ReplaceAll(n.Value, "$", "$$")
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			escapeDollars(n.Content[i])
		}
	default:
		for _, c := range n.Content {
			escapeDollars(c)
		}
	}
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
