package docker

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// dockerSecretInfo is the docker_secret module's registry entry.
func dockerSecretInfo() modules.Info {
	return modules.Info{
		Name: "docker_secret",
		Doc:  "Create a Docker swarm secret if missing, optionally versioned (<name>_v<N>) with old unused versions pruned",
		Example: `step "db password" {
  module   = "docker_secret"
  name     = "db_password"
  generate = 32
  run_once = true
}`,
		Outputs: []modules.Output{
			{Name: "name", Type: "string", Doc: "the current (versioned) secret name"},
			{Name: "version", Type: "number", Doc: "its version (0 when not versioned)"},
			{Name: "created", Type: "bool", Doc: "whether this step created it"},
			{Name: "pruned", Type: "list(string)", Doc: "old versions removed"},
		},
		Diff: "the secret's name and labels it would create, never its value",
		New:  func() modules.Module { return &DockerSecret{kind: "secret"} },
	}
}

// dockerConfigInfo is the docker_config module's registry entry.
func dockerConfigInfo() modules.Info {
	return modules.Info{
		Name: "docker_config",
		Doc:  "Create a Docker swarm config if missing, optionally versioned (<name>_v<N>) with old unused versions pruned",
		Example: `step "nginx config" {
  module    = "docker_config"
  name      = "nginx_conf"
  file      = "${path.dir}/nginx.conf"
  versioned = true
  run_once  = true
}`,
		Outputs: []modules.Output{
			{Name: "name", Type: "string", Doc: "the current (versioned) config name"},
			{Name: "version", Type: "number", Doc: "its version (0 when not versioned)"},
			{Name: "created", Type: "bool", Doc: "whether this step created it"},
			{Name: "pruned", Type: "list(string)", Doc: "old versions removed"},
		},
		Diff: "the config it would create",
		New:  func() modules.Module { return NewDockerConfig() },
	}
}

// DockerSecret creates a swarm secret (docker_secret) or config
// (docker_config). Both are immutable in Docker, so a changed value needs a
// new name: with versioned = true the module creates <name>_v<N+1> when the
// content differs from the newest version and prunes older versions that no
// service uses, keeping `keep` of them. Output.name is the name the compose
// file should use (pass it through the env of stack_deploy).
//
// Secrets cannot be read back, so the module labels what it creates with a
// salted SHA-256 fingerprint (io.iklim.sha256) and compares that. A secret
// created outside iklim (no fingerprint) counts as present. Run it on one
// manager (run_once).
type DockerSecret struct {
	modules.RunSecrets // secret values join them

	Name      string            `hcl:"name" doc:"secret or config name; with versioned, the base of <name>_v<N>"`
	Value     string            `hcl:"value,optional" sensitive:"true" doc:"content (set value, file or generate)"`
	File      string            `hcl:"file,optional" doc:"local file on the control machine holding the content"`
	Generate  int               `hcl:"generate,optional" doc:"when missing, create it from this many random bytes, hex-encoded (like openssl rand -hex N); never replaced"`
	Versioned bool              `hcl:"versioned,optional" doc:"name versions <name>_v<N> and create a new one when the content changes"`
	Keep      *int              `hcl:"keep,optional" doc:"versioned: older versions to keep besides the current one (default 2); unused ones beyond that are removed"`
	Labels    map[string]string `hcl:"labels,optional" doc:"labels for new objects"`

	kind    string // secret or config
	content []byte
	current string
	version int
	created bool
	pruned  []string
}

// dockerObject is what `docker secret|config inspect` says about one object.
type dockerObject struct {
	ID   string `json:"ID"`
	Spec struct {
		Name   string            `json:"Name"`
		Labels map[string]string `json:"Labels"`
		Data   string            `json:"Data"` // configs only: base64
	} `json:"Spec"`
}

type secretBefore struct {
	Kind    string         `json:"kind"`
	Created string         `json:"created"`
	Prune   []prunedObject `json:"prune,omitempty"`
}

type prunedObject struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	Data   string            `json:"data,omitempty"` // configs: base64 content, to recreate on rollback
}

const fingerprintLabel = "io.iklim.sha256"

// NewDockerConfig returns the docker_config module: a DockerSecret that
// manages swarm configs. A zero DockerSecret manages secrets.
func NewDockerConfig() *DockerSecret { return &DockerSecret{kind: "config"} }

func (m *DockerSecret) mod() string {
	if m.kind == "" {
		m.kind = "secret"
	}
	return "docker_" + m.kind
}

// Validate implements Validator.
func (m *DockerSecret) Validate() error {
	m.mod() // defaults kind
	if m.Name == "" {
		return modules.ArgErrorf("name", "%s: name is required", m.mod())
	}
	n := 0
	for _, set := range []bool{m.Value != "", m.File != "", m.Generate > 0} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("%s: set exactly one of value, file or generate", m.mod())
	}
	if m.Generate < 0 || m.Generate > 4096 {
		return modules.ArgErrorf("generate", "%s: generate must be between 1 and 4096 bytes", m.mod())
	}
	if m.Keep != nil && *m.Keep < 0 {
		return modules.ArgErrorf("keep", "%s: keep must not be negative", m.mod())
	}
	if m.File != "" {
		// Read at check time on the control machine: a missing file or a
		// directory is an argument error, found before any host is touched.
		if err := remote.LocalFile(m.File); err != nil {
			return modules.ArgErrorf("file", "%s: %w", m.mod(), err)
		}
	}
	return nil
}

func (m *DockerSecret) keep() int {
	if m.Keep != nil {
		return *m.Keep
	}
	return 2
}

// fingerprint is a salted SHA-256 of the content.
func (m *DockerSecret) fingerprint(content []byte) string {
	return remote.SHA256String("iklim-" + m.kind + ":" + m.Name + ":" + string(content))
}

// load reads the wanted content; a generated one is made in Apply.
func (m *DockerSecret) load(ctx context.Context) error {
	switch {
	case m.Value != "":
		m.content = []byte(m.Value)
	case m.File != "":
		b, err := remote.ReadLocal(m.File)
		if err != nil {
			return fmt.Errorf("%s: %w", m.mod(), err)
		}
		m.content = b
	}
	if m.kind == "secret" && m.content != nil {
		m.MarkSensitive(string(m.content))
	}
	return nil
}

// list finds name and its versions: one round trip (GET /secrets or
// /configs over the engine API, else the CLI).
func (m *DockerSecret) list(ctx context.Context, c modules.Conn) (exact *dockerObject, versions map[int]dockerObject, err error) {
	objs, err := m.engineList(ctx, c)
	if errors.Is(err, errNoEngine) {
		objs, err = m.cliList(ctx, c)
	}
	if err != nil {
		return nil, nil, err
	}
	re := regexp.MustCompile("^" + regexp.QuoteMeta(m.Name) + `_v([0-9]+)$`)
	versions = map[int]dockerObject{}
	for i, o := range objs {
		if o.Spec.Name == m.Name {
			exact = &objs[i]
		}
		if g := re.FindStringSubmatch(o.Spec.Name); g != nil {
			n, _ := strconv.Atoi(g[1])
			versions[n] = o
		}
	}
	return exact, versions, nil
}

// cliList is list's `docker secret|config ls` and inspect.
func (m *DockerSecret) cliList(ctx context.Context, c modules.Conn) ([]dockerObject, error) {
	script := fmt.Sprintf(`ids=$(docker %[1]s ls -q --filter name=%[2]s) || exit 1; [ -z "$ids" ] && echo '[]' && exit 0; docker %[1]s inspect $ids`, m.kind, remote.Quote(m.Name))
	res, err := dockerRun(ctx, c, "docker "+m.kind+" ls", script)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.mod(), err)
	}
	var objs []dockerObject
	if err := json.Unmarshal([]byte(strings.TrimSpace(res.Stdout)), &objs); err != nil {
		return nil, fmt.Errorf("%s: read docker %s inspect: %w", m.mod(), m.kind, err)
	}
	return objs, nil
}

// engineList is list's GET /secrets|/configs with the name filter. A
// config's content comes from inspecting it (GET /configs/{id}), as the CLI
// does; secrets carry no content anyway.
func (m *DockerSecret) engineList(ctx context.Context, c modules.Conn) ([]dockerObject, error) {
	var objs []dockerObject
	err := engineGet(ctx, c, "/"+m.kind+"s", filtersQuery(map[string][]string{"name": {m.Name}}), &objs)
	if err == nil && m.kind == "config" {
		for i := range objs {
			if err = engineGet(ctx, c, "/configs/"+url.PathEscape(objs[i].ID), nil, &objs[i]); err != nil {
				break
			}
		}
	}
	if err != nil && !errors.Is(err, errNoEngine) {
		return nil, fmt.Errorf("%s: %s: docker %s ls: %w", m.mod(), c.Host(), m.kind, err)
	}
	return objs, err
}

// sameContent reports whether object o holds the wanted content, and
// whether that could be known at all.
func (m *DockerSecret) sameContent(o dockerObject) (same, known bool) {
	if m.content == nil { // generate: any existing one is fine
		return true, true
	}
	if m.kind == "config" {
		data, err := base64.StdEncoding.DecodeString(o.Spec.Data)
		if err == nil {
			return string(data) == string(m.content), true
		}
	}
	fp, ok := o.Spec.Labels[fingerprintLabel]
	if !ok {
		return true, false
	}
	return fp == m.fingerprint(m.content), true
}

// Check implements Module: one round trip listing the object and versions.
func (m *DockerSecret) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if err := m.load(ctx); err != nil {
		return nil, err
	}
	exact, versions, err := m.list(ctx, c)
	if err != nil {
		return nil, err
	}
	if !m.Versioned {
		m.current = m.Name
		if exact == nil {
			return m.change(m.Name, nil)
		}
		if same, _ := m.sameContent(*exact); !same {
			return nil, fmt.Errorf("%s: %s %s exists with other content; %ss are immutable: use versioned = true, or remove it first",
				m.mod(), m.kind, m.Name, m.kind)
		}
		return nil, nil
	}
	nums := sortedVersions(versions)
	if len(nums) > 0 {
		latest := nums[len(nums)-1]
		if same, _ := m.sameContent(versions[latest]); same {
			m.current, m.version = versions[latest].Spec.Name, latest
			return nil, nil
		}
	}
	next := 1
	if len(nums) > 0 {
		next = nums[len(nums)-1] + 1
	}
	m.current, m.version = fmt.Sprintf("%s_v%d", m.Name, next), next
	// Candidates for pruning: versions older than the kept ones.
	var prune []prunedObject
	if old := len(nums) - m.keep(); old > 0 {
		for _, n := range nums[:old] {
			o := versions[n]
			p := prunedObject{Name: o.Spec.Name, Labels: o.Spec.Labels}
			if m.kind == "config" {
				p.Data = o.Spec.Data
			}
			prune = append(prune, p)
		}
	}
	return m.change(m.current, prune)
}

func sortedVersions(v map[int]dockerObject) []int {
	nums := make([]int, 0, len(v))
	for n := range v {
		nums = append(nums, n)
	}
	sort.Ints(nums)
	return nums
}

func (m *DockerSecret) change(name string, prune []prunedObject) (*modules.Change, error) {
	summary := fmt.Sprintf("create %s %s", m.kind, name)
	if len(prune) > 0 {
		names := make([]string, len(prune))
		for i, p := range prune {
			names[i] = p.Name
		}
		summary += fmt.Sprintf(", prune unused %s", strings.Join(names, ", "))
	}
	ch := modules.Changef("%s", summary)
	if err := ch.SetBefore(secretBefore{Kind: m.kind, Created: name, Prune: prune}); err != nil {
		return nil, err
	}
	after := fmt.Sprintf("%s %s\n", m.kind, name)
	switch {
	case m.content == nil:
		after += "content: generated\n"
	case m.kind == "secret":
		after += "content: " + modules.Redacted + "\n"
	default:
		if remote.IsText(m.content) {
			after += string(m.content)
		}
	}
	ch.Diff = &modules.Diff{Label: m.kind + " " + name, Before: "(absent)\n", After: after}
	return ch, nil
}

// Apply implements Module.
func (m *DockerSecret) Apply(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	var b secretBefore
	if err := ch.DecodeBefore(&b); err != nil {
		return err
	}
	content := m.content
	if content == nil {
		buf := make([]byte, m.Generate)
		if _, err := rand.Read(buf); err != nil {
			return fmt.Errorf("%s: generate: %w", m.mod(), err)
		}
		content = []byte(hex.EncodeToString(buf))
		m.MarkSensitive(string(content))
	}
	labels := map[string]string{}
	for k, v := range m.Labels {
		labels[k] = v
	}
	labels[fingerprintLabel] = m.fingerprint(content)
	cmd := "docker " + m.kind + " create" + labelArgs("--label", labels) + " " + remote.Quote(b.Created) + " -"
	if _, err := dockerRun(ctx, c, "docker "+m.kind+" create "+b.Created, cmd, modules.WithStdin(strings.NewReader(string(content)))); err != nil {
		return fmt.Errorf("%s: %w", m.mod(), err)
	}
	m.current, m.created = b.Created, true
	// Prune: a version still used by a service refuses removal; keep it.
	for _, p := range b.Prune {
		res, err := c.Run(ctx, "docker "+m.kind+" rm "+remote.Quote(p.Name))
		if err != nil {
			return fmt.Errorf("%s: prune %s: %w", m.mod(), p.Name, err)
		}
		if res.OK() {
			m.pruned = append(m.pruned, p.Name)
		}
	}
	return nil
}

// Rollback implements Rollbacker: the object the step created is removed
// (after stack_deploy's rollback stopped using it); pruned configs are
// recreated from their recorded content. Pruned secrets cannot be restored:
// Docker never gives their content back.
func (m *DockerSecret) Rollback(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	var b secretBefore
	if err := ch.DecodeBefore(&b); err != nil {
		return err
	}
	var errs []error
	if b.Created != "" {
		res, err := c.Run(ctx, "docker "+b.Kind+" rm "+remote.Quote(b.Created))
		if err != nil {
			errs = append(errs, err)
		} else if !res.OK() && !strings.Contains(res.Stderr, "not found") && !strings.Contains(res.Stderr, "No such") {
			errs = append(errs, res.Err(c.Host()+": docker "+b.Kind+" rm "+b.Created))
		}
	}
	exists := map[string]bool{}
	if len(b.Prune) > 0 {
		res, err := dockerRun(ctx, c, "docker "+b.Kind+" ls", "docker "+b.Kind+" ls --format '{{.Name}}'")
		if err != nil {
			return fmt.Errorf("docker_%s rollback: %w", b.Kind, err)
		}
		for _, n := range strings.Fields(res.Stdout) {
			exists[n] = true
		}
	}
	for _, p := range b.Prune {
		if exists[p.Name] {
			continue
		}
		if b.Kind != "config" || p.Data == "" {
			errs = append(errs, fmt.Errorf("secret %s was pruned and cannot be restored (Docker does not reveal secret content)", p.Name))
			continue
		}
		data, err := base64.StdEncoding.DecodeString(p.Data)
		if err != nil {
			errs = append(errs, fmt.Errorf("config %s: recorded data: %w", p.Name, err))
			continue
		}
		cmd := "docker config create" + labelArgs("--label", p.Labels) + " " + remote.Quote(p.Name) + " -"
		if _, err := dockerRun(ctx, c, "docker config create "+p.Name, cmd, modules.WithStdin(strings.NewReader(string(data)))); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("docker_%s rollback: %w", b.Kind, err)
	}
	return nil
}

// Output implements Outputter: name (what the compose file should use),
// version (0 when not versioned), created and pruned.
func (m *DockerSecret) Output() map[string]any {
	return map[string]any{"name": m.current, "version": m.version, "created": m.created, "pruned": m.pruned}
}
