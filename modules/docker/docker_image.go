package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

func dockerImageInfo() modules.Info {
	return modules.Info{
		Name: "docker_image",
		Doc:  "Pull an image, or tag a local one and push it, deciding by digest; check mode names the digest",
		Example: `step "pull" {
  module = "docker_image"
  name   = "registry.example.com/framework:abc1234-1696234567"
}`,
		Outputs: []modules.Output{
			{Name: "name", Type: "string", Doc: "the image reference"},
			{Name: "id_before", Type: "string", Doc: "the image id before the step"},
			{Name: "digest", Type: "string", Doc: "the digest pulled or pushed"},
		},
		Diff: "the image id and digest before and after",
		New:  func() modules.Module { return &DockerImage{} },
	}
}

// DockerImage keeps an image on the host and in its registry as wanted,
// like Ansible's docker_image, deciding by digest rather than by tag:
//   - pull (no from, no push): the local image is the one the registry's
//     manifest for name describes; otherwise docker pull. Check mode names
//     the manifest digest it would pull.
//   - from: name is a local tag of the image from names; otherwise docker tag.
//   - push: the registry's manifest for name has the local image's config
//     (the image ID); otherwise docker push.
//
// The registry is asked with `docker manifest inspect`, so the host's docker
// CLI config (see docker_login) supplies the credentials. Rollback points
// the local tag back at the image it named before (or removes a tag the run
// created), and re-pushes the image the registry had when it is still on the
// host. A tag the run pushed that the registry did not have before stays in
// the registry: the CLI cannot delete from a registry.
type DockerImage struct {
	Name   string `hcl:"name" doc:"image reference REPOSITORY:TAG, e.g. registry.example.com/app:1.2 (a missing tag means latest)"`
	From   string `hcl:"from,optional" doc:"a local image to tag as name (no pull)"`
	Push   bool   `hcl:"push,optional" doc:"push name to its registry unless the registry already has this image"`
	Config string `hcl:"config,optional" doc:"docker CLI config directory on the host (DOCKER_CONFIG), for the registry's credentials; default ~/.docker"`

	before  imageBefore
	changed bool
	id      string
	digest  string
}

// imageBefore is what Rollback needs.
type imageBefore struct {
	Name string `json:"name"`
	// LocalID is the image name pointed to before, "" when none.
	LocalID string `json:"local_id"`
	// Pushed says the change pushes; RemoteConfig is the image ID (config
	// digest) the registry had for name before, "" when none.
	Pushed       bool   `json:"pushed,omitempty"`
	RemoteConfig string `json:"remote_config,omitempty"`
	Config       string `json:"config,omitempty"`
}

var imageRefRe = regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$`)

// Validate implements modules.Validator.
func (m *DockerImage) Validate() error {
	if !imageRefRe.MatchString(m.Name) {
		return modules.ArgErrorf("name", "docker_image: %q is not an image reference REPOSITORY[:TAG]", m.Name)
	}
	if m.From != "" && !imageRefRe.MatchString(m.From) && !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(m.From) {
		return modules.ArgErrorf("from", "docker_image: %q is not an image reference or ID", m.From)
	}
	if m.Config != "" {
		if err := remote.AbsPath("config", m.Config); err != nil {
			return fmt.Errorf("docker_image: %w", err)
		}
	}
	return nil
}

func (m *DockerImage) ref() string {
	last := m.Name[strings.LastIndex(m.Name, "/")+1:]
	if !strings.Contains(last, ":") {
		return m.Name + ":latest"
	}
	return m.Name
}

// repo is the reference without its tag, as RepoDigests name it.
func (m *DockerImage) repo() string { r := m.ref(); return r[:strings.LastIndex(r, ":")] }

func (m *DockerImage) docker() string {
	if m.Config == "" {
		return "docker"
	}
	return "docker --config " + remote.Quote(m.Config)
}

// remoteManifest is one `docker manifest inspect -v` entry.
type remoteManifest struct {
	Descriptor struct {
		Digest   string `json:"digest"`
		Platform struct {
			Architecture string `json:"architecture"`
			OS           string `json:"os"`
		} `json:"platform"`
	} `json:"Descriptor"`
	SchemaV2Manifest struct {
		Config struct {
			Digest string `json:"digest"`
		} `json:"config"`
	} `json:"SchemaV2Manifest"`
}

type imageState struct {
	id, fromID   string
	repoDigests  []string
	remoteDigest string // manifest digest; "" when the registry has no such tag
	remoteConfig string // its config digest: the image ID a pull gives
}

// Check implements modules.Module: one round trip inspects the local images
// and asks the registry.
func (m *DockerImage) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	st, err := m.probe(ctx, c)
	if err != nil {
		return nil, err
	}
	m.id, m.digest = st.id, st.remoteDigest
	m.before = imageBefore{Name: m.ref(), LocalID: st.id, Config: m.Config}
	var parts []string
	wantID := st.id
	switch {
	case m.From != "":
		if st.fromID == "" {
			return nil, fmt.Errorf("%s: docker_image %s: the local image %s does not exist", c.Host(), m.Name, m.From)
		}
		if st.id != st.fromID {
			parts = append(parts, fmt.Sprintf("tag %s as %s (%s)", m.From, m.ref(), short(st.fromID)))
		}
		wantID = st.fromID
	case !m.Push:
		if st.remoteDigest == "" {
			return nil, fmt.Errorf("%s: docker_image %s: the registry has no such image", c.Host(), m.Name)
		}
		if !slices.Contains(st.repoDigests, m.repo()+"@"+st.remoteDigest) && st.id != st.remoteConfig {
			parts = append(parts, fmt.Sprintf("pull %s (%s)", m.ref(), st.remoteDigest))
		}
	case st.id == "":
		return nil, fmt.Errorf("%s: docker_image %s: no local image to push", c.Host(), m.Name)
	}
	if m.Push && wantID != st.remoteConfig {
		have := "nothing"
		if st.remoteConfig != "" {
			have = short(st.remoteConfig)
		}
		parts = append(parts, fmt.Sprintf("push %s (image %s; the registry has %s)", m.ref(), short(wantID), have))
		m.before.Pushed, m.before.RemoteConfig = true, st.remoteConfig
	}
	if len(parts) == 0 {
		return nil, nil
	}
	ch := &modules.Change{Summary: strings.Join(parts, ", then ")}
	before := fmt.Sprintf("local %s: %s\n", m.ref(), orNone(st.id))
	after := fmt.Sprintf("local %s: %s\n", m.ref(), orNone(wantID))
	if m.From == "" && !m.Push {
		after = fmt.Sprintf("local %s: %s (manifest %s)\n", m.ref(), orNone(st.remoteConfig), st.remoteDigest)
	}
	if m.Push {
		before += fmt.Sprintf("registry %s: %s\n", m.ref(), orNone(st.remoteConfig))
		after += fmt.Sprintf("registry %s: %s\n", m.ref(), wantID)
	}
	ch.Diff = &modules.Diff{Label: m.ref(), Before: before, After: after}
	return ch, ch.SetBefore(m.before)
}

func short(id string) string {
	if len(id) > 19 {
		return id[:19]
	}
	return id
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// probe prints three sections: name's local ID and repo digests, from's ID,
// and the registry's manifest (or nothing when it has none).
func (m *DockerImage) probe(ctx context.Context, c modules.Conn) (imageState, error) {
	const sep = "--iklim--"
	q := remote.Quote(m.ref())
	var b strings.Builder
	b.WriteString(m.docker() + " image inspect --format '{{.Id}} {{json .RepoDigests}}' " + q + " 2>/dev/null; echo " + sep + "\n")
	if m.From != "" {
		b.WriteString(m.docker() + " image inspect --format '{{.Id}}' " + remote.Quote(m.From) + " 2>/dev/null; ")
	}
	b.WriteString("echo " + sep + "\n")
	b.WriteString("uname -m; echo " + sep + "\n")
	// A missing tag is an answer, not an error; anything else is.
	b.WriteString("out=$(DOCKER_CLI_EXPERIMENTAL=enabled " + m.docker() + " manifest inspect -v " + q + " 2>&1) && printf '%s\\n' \"$out\" || " +
		"case $out in *'no such manifest'*|*'manifest unknown'*|*'not found'*) ;; *) printf '%s\\n' \"$out\" >&2; exit 3;; esac\n")
	res, err := dockerRun(ctx, c, "docker_image: inspect "+m.ref(), b.String())
	if err != nil {
		return imageState{}, err
	}
	sec := sections(res.Stdout, sep)
	if len(sec) < 4 {
		return imageState{}, fmt.Errorf("%s: docker_image: short probe output %q", c.Host(), res.Stdout)
	}
	var st imageState
	if f := strings.Fields(sec[0]); len(f) == 2 {
		st.id = f[0]
		_ = json.Unmarshal([]byte(f[1]), &st.repoDigests)
	}
	st.fromID = strings.TrimSpace(sec[1])
	arch := map[string]string{"x86_64": "amd64", "aarch64": "arm64"}[strings.TrimSpace(sec[2])]
	if body := strings.TrimSpace(sec[3]); body != "" {
		var list []remoteManifest
		if strings.HasPrefix(body, "[") {
			if err := json.Unmarshal([]byte(body), &list); err != nil {
				return imageState{}, fmt.Errorf("%s: docker_image: manifest of %s: %w", c.Host(), m.ref(), err)
			}
		} else {
			var one remoteManifest
			if err := json.Unmarshal([]byte(body), &one); err != nil {
				return imageState{}, fmt.Errorf("%s: docker_image: manifest of %s: %w", c.Host(), m.ref(), err)
			}
			list = []remoteManifest{one}
		}
		for _, e := range list {
			p := e.Descriptor.Platform
			if len(list) == 1 || (p.OS == "linux" && p.Architecture == arch) {
				st.remoteDigest, st.remoteConfig = e.Descriptor.Digest, e.SchemaV2Manifest.Config.Digest
				break
			}
		}
	}
	return st, nil
}

// Apply implements modules.Module: docker tag, pull and push as Check
// decided, in one round trip.
func (m *DockerImage) Apply(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	q := remote.Quote(m.ref())
	var cmds []string
	switch {
	case m.From != "":
		cmds = append(cmds, m.docker()+" tag "+remote.Quote(m.From)+" "+q)
	case !m.Push:
		cmds = append(cmds, m.docker()+" pull -q "+q+" >/dev/null")
	}
	if m.before.Pushed {
		cmds = append(cmds, m.docker()+" push -q "+q+" >/dev/null")
	}
	if _, err := dockerRun(ctx, c, "docker_image: "+ch.Summary, strings.Join(cmds, " && ")); err != nil {
		return err
	}
	m.changed = true
	return nil
}

// Rollback implements modules.Rollbacker: the registry gets back the image
// it had (re-pushed from the host, when the host still has it), then the
// local tag points where it pointed before, or goes when the run made it.
func (m *DockerImage) Rollback(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	var b imageBefore
	if err := ch.DecodeBefore(&b); err != nil {
		return fmt.Errorf("docker_image rollback: %w", err)
	}
	m.Config = b.Config
	q := remote.Quote(b.Name)
	var cmds []string
	if b.Pushed && b.RemoteConfig != "" {
		res, err := c.Run(ctx, m.docker()+" image inspect --format '{{.Id}}' "+remote.Quote(b.RemoteConfig))
		if err != nil {
			return fmt.Errorf("%s: docker_image rollback: %w", c.Host(), err)
		}
		if !res.OK() {
			return fmt.Errorf("%s: docker_image rollback %s: the image the registry had (%s) is no longer on the host, so it cannot be pushed back", c.Host(), b.Name, short(b.RemoteConfig))
		}
		cmds = append(cmds, m.docker()+" tag "+remote.Quote(b.RemoteConfig)+" "+q, m.docker()+" push -q "+q+" >/dev/null")
	}
	if b.LocalID != "" {
		cmds = append(cmds, m.docker()+" tag "+remote.Quote(b.LocalID)+" "+q)
	} else {
		cmds = append(cmds, m.docker()+" rmi "+q+" >/dev/null")
	}
	_, err := dockerRun(ctx, c, "docker_image rollback "+b.Name, strings.Join(cmds, " && "))
	return err
}

// Output implements modules.Outputter: name, changed, the local image ID
// before the step and the registry's manifest digest.
func (m *DockerImage) Output() map[string]any {
	return map[string]any{"name": m.Name, "changed": m.changed, "id_before": m.id, "digest": m.digest}
}
