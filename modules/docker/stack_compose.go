package docker

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/iklimco/iklim/modules/remote"
)

// The compose side of stack_deploy: reading the compose and env files on the
// control machine, the config hash, the per-service plan (what would change
// and why) and the compose file edited for `docker stack deploy`.

type composeFile struct {
	local, base string
	content     []byte
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
