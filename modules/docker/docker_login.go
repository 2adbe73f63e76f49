package docker

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

func dockerLoginInfo() modules.Info {
	return modules.Info{
		Name: "docker_login",
		Doc:  "Log the host's docker CLI in to (or out of) a registry; the password goes over stdin, never argv",
		Example: `step "registry" {
  module   = "docker_login"
  registry = "registry.example.com"
  username = "deploy"
  password = "s3cret"
}`,
		Outputs: []modules.Output{
			{Name: "registry", Type: "string", Doc: "the registry"},
			{Name: "username", Type: "string", Doc: "the user logged in"},
			{Name: "config", Type: "string", Doc: "the docker config file written"},
		},
		Diff:  "the registry entry of the docker config file, never the password",
		Files: true,
		New:   func() modules.Module { return &DockerLogin{} },
	}
}

// DockerLogin keeps the host's docker CLI logged in to a registry (or out of
// it), like Ansible's docker_login. Check reads the CLI's config.json: the
// host is as wanted when it holds exactly these credentials (present) or
// none for the registry (absent). Apply runs `docker login
// --password-stdin` or `docker logout`. config.json is listed in
// Change.Files and the change is sensitive, so the runner keeps a sealed
// snapshot of it and rollback puts the old credentials back byte-exact.
// Credentials kept by a credential helper (credsStore) cannot be read, so
// with one the login is repeated on every run.
type DockerLogin struct {
	Registry string `hcl:"registry" doc:"registry host[:port] as in image names, e.g. registry.example.com or iklim-db-02:5000"`
	Username string `hcl:"username,optional" doc:"user name; required for state = \"present\""`
	Password string `hcl:"password,optional" sensitive:"true" doc:"password or token, passed to docker login on stdin; required for state = \"present\""`
	State    string `hcl:"state,optional" doc:"present (default): logged in with these credentials; absent: logged out"`
	Config   string `hcl:"config,optional" doc:"docker CLI config directory on the host (DOCKER_CONFIG); default ~/.docker of the user iklim runs as"`

	cfgPath string
	changed bool
	user    string // the user the config held for the registry, if any
}

var registryRe = regexp.MustCompile(`^[A-Za-z0-9.-]+(:[0-9]+)?$`)

func (m *DockerLogin) state() string {
	if m.State == "" {
		return "present"
	}
	return m.State
}

// Validate implements modules.Validator.
func (m *DockerLogin) Validate() error {
	if !registryRe.MatchString(m.Registry) {
		return modules.ArgErrorf("registry", "docker_login: %q is not a registry host[:port]", m.Registry)
	}
	switch m.state() {
	case "present":
		if m.Username == "" {
			return modules.ArgErrorf("username", "docker_login %s: state = \"present\" needs username", m.Registry)
		}
		if m.Password == "" {
			return modules.ArgErrorf("password", "docker_login %s: state = \"present\" needs password", m.Registry)
		}
		if strings.ContainsAny(m.Username, ":\n") {
			return modules.ArgErrorf("username", "docker_login %s: username holds ':' or a newline", m.Registry)
		}
	case "absent":
		if m.Username != "" || m.Password != "" {
			return modules.ArgErrorf("state", "docker_login %s: username and password are only for state = \"present\"", m.Registry)
		}
	default:
		return modules.ArgErrorf("state", "docker_login %s: state %q is not present or absent", m.Registry, m.State)
	}
	if m.Config != "" {
		if err := remote.AbsPath("config", m.Config); err != nil {
			return fmt.Errorf("docker_login: %w", err)
		}
	}
	return nil
}

// dockerConfig is the part of the CLI's config.json that matters here.
type dockerConfig struct {
	Auths      map[string]struct{ Auth string } `json:"auths"`
	CredsStore string                           `json:"credsStore"`
	CredHelper map[string]string                `json:"credHelpers"`
}

// configScript prints the config directory, then config.json (if any).
func (m *DockerLogin) configScript() string {
	dir := "${DOCKER_CONFIG:-$(getent passwd \"$(id -un)\" | cut -d: -f6)/.docker}"
	if m.Config != "" {
		dir = remote.Quote(m.Config)
	}
	return "d=" + dir + "\nprintf '%s\\n' \"$d\"\n[ ! -f \"$d/config.json\" ] || cat \"$d/config.json\"\n"
}

// Check implements modules.Module: one round trip reads config.json.
func (m *DockerLogin) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	res, err := dockerRun(ctx, c, "docker_login: read the docker config", m.configScript())
	if err != nil {
		return nil, err
	}
	dir, body, _ := strings.Cut(res.Stdout, "\n")
	if dir == "" || dir[0] != '/' {
		return nil, fmt.Errorf("%s: docker_login: no docker config directory (got %q)", c.Host(), dir)
	}
	m.cfgPath = strings.TrimRight(dir, "/") + "/config.json"
	var cfg dockerConfig
	if strings.TrimSpace(body) != "" {
		if err := json.Unmarshal([]byte(body), &cfg); err != nil {
			return nil, fmt.Errorf("%s: docker_login: %s: %w", c.Host(), m.cfgPath, err)
		}
	}
	entry, has := cfg.Auths[m.Registry]
	var user, pass string
	if has && entry.Auth != "" {
		if b, err := base64.StdEncoding.DecodeString(entry.Auth); err == nil {
			user, pass, _ = strings.Cut(string(b), ":")
		}
	}
	m.user = user
	helper := cfg.CredsStore != "" || cfg.CredHelper[m.Registry] != ""

	var summary, before, after string
	switch {
	case m.state() == "absent" && !has:
		return nil, nil
	case m.state() == "absent":
		summary = "log out of " + m.Registry
		before, after = loginText(m.Registry, user, true), loginText(m.Registry, "", false)
	case has && !helper && user == m.Username && pass == m.Password:
		return nil, nil
	default:
		summary = fmt.Sprintf("log in to %s as %s", m.Registry, m.Username)
		if has && user != "" && user == m.Username {
			summary += " (new password)"
		}
		before, after = loginText(m.Registry, user, has), loginText(m.Registry, m.Username, true)
	}
	ch := &modules.Change{
		Summary: summary,
		// The runner snapshots config.json sealed (it holds credentials)
		// and restores it on rollback.
		Files:     []string{m.cfgPath},
		Sensitive: true,
		Diff:      &modules.Diff{Label: m.cfgPath, Before: before, After: after},
	}
	return ch, ch.SetBefore(map[string]any{"registry": m.Registry, "logged_in": has, "user": user})
}

func loginText(reg, user string, in bool) string {
	switch {
	case !in:
		return reg + ": logged out\n"
	case user == "":
		return reg + ": logged in (credential helper)\n"
	}
	return reg + ": logged in as " + user + "\n"
}

// Apply implements modules.Module: docker login with the password on stdin,
// or docker logout.
func (m *DockerLogin) Apply(ctx context.Context, c modules.Conn, _ *modules.Change) error {
	cfgDir := remote.Quote(strings.TrimSuffix(m.cfgPath, "/config.json"))
	var err error
	if m.state() == "absent" {
		_, err = dockerRun(ctx, c, "docker logout "+m.Registry, "docker --config "+cfgDir+" logout "+remote.Quote(m.Registry))
	} else {
		cmd := "docker --config " + cfgDir + " login --username " + remote.Quote(m.Username) + " --password-stdin " + remote.Quote(m.Registry)
		_, err = dockerRun(ctx, c, "docker login "+m.Registry, cmd, modules.WithStdin(strings.NewReader(m.Password)))
	}
	if err != nil {
		return err
	}
	m.changed = true
	return nil
}

// Rollback is the runner's: config.json comes back from its sealed
// snapshot, which is all a login or logout changed.

// Output implements modules.Outputter: registry, changed, and the user the
// config holds for it now.
func (m *DockerLogin) Output() map[string]any {
	user := m.user
	if m.changed {
		user = m.Username
	}
	return map[string]any{"registry": m.Registry, "changed": m.changed, "username": user, "config": m.cfgPath}
}

// CheckAhead implements modules.CheckAheader: Check reads config.json.
func (m *DockerLogin) CheckAhead() modules.CheckAhead { return modules.CheckAheadReadOnly }
