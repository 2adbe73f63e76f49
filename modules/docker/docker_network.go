package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// dockerNetworkInfo is the docker_network module's registry entry.
func dockerNetworkInfo() modules.Info {
	return modules.Info{
		Name: "docker_network",
		Doc:  "Create a Docker network (default: an attachable swarm overlay) if it is missing",
		Example: `step "backend network" {
  module   = "docker_network"
  name     = "backend"
  subnet   = "10.20.0.0/24"
  run_once = true
}`,
		Outputs: []modules.Output{
			{Name: "id", Type: "string", Doc: "the network id"},
			{Name: "name", Type: "string", Doc: "the network name"},
			{Name: "created", Type: "bool", Doc: "whether this step created it"},
		},
		Diff: "the network's settings it would create",
		New:  func() modules.Module { return &DockerNetwork{} },
	}
}

// DockerNetwork makes sure a Docker network exists, such as the attachable
// overlay iklimco-net that stacks declare external. Networks cannot change
// in place without disconnecting every service, so an existing network with
// other settings is an error, never a silent recreate. For an overlay, run
// it on one manager (run_once).
type DockerNetwork struct {
	Name       string            `hcl:"name" doc:"network name"`
	Driver     string            `hcl:"driver,optional" doc:"network driver (default overlay)"`
	Attachable *bool             `hcl:"attachable,optional" doc:"let standalone containers attach (default true for overlay)"`
	Internal   bool              `hcl:"internal,optional" doc:"no external connectivity"`
	Subnet     string            `hcl:"subnet,optional" doc:"IPv4 subnet in CIDR form; default: Docker picks one"`
	Labels     map[string]string `hcl:"labels,optional" doc:"labels for a new network"`

	id      string
	created bool
}

type networkBefore struct {
	Name string `json:"name"`
}

type networkInspect struct {
	ID         string            `json:"Id"`
	Name       string            `json:"Name"`
	Driver     string            `json:"Driver"`
	Scope      string            `json:"Scope"`
	Attachable bool              `json:"Attachable"`
	Internal   bool              `json:"Internal"`
	Labels     map[string]string `json:"Labels"`
	IPAM       struct {
		Config []struct {
			Subnet string `json:"Subnet"`
		} `json:"Config"`
	} `json:"IPAM"`
}

// Validate implements Validator.
func (m *DockerNetwork) Validate() error {
	if strings.TrimSpace(m.Name) == "" {
		return modules.ArgErrorf("name", "docker_network: name is required")
	}
	return nil
}

func (m *DockerNetwork) driver() string {
	if m.Driver == "" {
		return "overlay"
	}
	return m.Driver
}

func (m *DockerNetwork) attachable() bool {
	if m.Attachable != nil {
		return *m.Attachable
	}
	return m.driver() == "overlay"
}

// Check implements Module: one GET /networks/{name} over the engine API,
// else one `docker network inspect`.
func (m *DockerNetwork) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	n, found, err := m.inspect(ctx, c)
	if err != nil {
		return nil, err
	}
	if !found {
		ch := modules.Changef("create %s network %s%s", m.driver(), m.Name, map[bool]string{true: " (attachable)"}[m.attachable()])
		if err := ch.SetBefore(networkBefore{Name: m.Name}); err != nil {
			return nil, err
		}
		ch.Diff = &modules.Diff{Label: "network " + m.Name, Before: "(absent)\n", After: m.describe()}
		return ch, nil
	}
	m.id = n.ID
	var diffs []string
	if n.Driver != m.driver() {
		diffs = append(diffs, fmt.Sprintf("driver %s (want %s)", n.Driver, m.driver()))
	}
	if n.Attachable != m.attachable() {
		diffs = append(diffs, fmt.Sprintf("attachable %v (want %v)", n.Attachable, m.attachable()))
	}
	if n.Internal != m.Internal {
		diffs = append(diffs, fmt.Sprintf("internal %v (want %v)", n.Internal, m.Internal))
	}
	if m.Subnet != "" {
		found := false
		for _, cfg := range n.IPAM.Config {
			found = found || cfg.Subnet == m.Subnet
		}
		if !found {
			diffs = append(diffs, fmt.Sprintf("subnet %v (want %s)", n.IPAM.Config, m.Subnet))
		}
	}
	if len(diffs) > 0 {
		return nil, fmt.Errorf("docker_network: network %s exists with other settings: %s; networks cannot change in place — remove it (disconnecting its services) or change the arguments",
			m.Name, strings.Join(diffs, ", "))
	}
	return nil, nil
}

// inspect reads the network; found is false when there is none by the name.
func (m *DockerNetwork) inspect(ctx context.Context, c modules.Conn) (n networkInspect, found bool, err error) {
	err = engineGet(ctx, c, "/networks/"+url.PathEscape(m.Name), nil, &n)
	switch {
	case engineStatus(err) == http.StatusNotFound:
		return n, false, nil
	case err == nil:
		return n, true, nil
	case !errors.Is(err, errNoEngine):
		return n, false, fmt.Errorf("docker_network: %s: docker network inspect: %w", c.Host(), err)
	}
	res, err := c.Run(ctx, "docker network inspect --format '{{json .}}' "+remote.Quote(m.Name))
	if err != nil {
		return n, false, fmt.Errorf("docker_network: %s: %w", c.Host(), err)
	}
	if !res.OK() {
		if strings.Contains(res.Stderr, "No such network") || strings.Contains(res.Stderr, "not found") {
			return n, false, nil
		}
		return n, false, fmt.Errorf("docker_network: %w", res.Err(c.Host()+": docker network inspect"))
	}
	if err := json.Unmarshal([]byte(lastJSONLine(res.Stdout)), &n); err != nil {
		return n, false, fmt.Errorf("docker_network: read inspect of %s: %w", m.Name, err)
	}
	return n, true, nil
}

func (m *DockerNetwork) describe() string {
	s := fmt.Sprintf("driver: %s\nattachable: %v\ninternal: %v\n", m.driver(), m.attachable(), m.Internal)
	if m.Subnet != "" {
		s += "subnet: " + m.Subnet + "\n"
	}
	return s + fmtLabels(m.Labels)
}

// Apply implements Module.
func (m *DockerNetwork) Apply(ctx context.Context, c modules.Conn, _ *modules.Change) error {
	cmd := "docker network create --driver " + remote.Quote(m.driver())
	if m.attachable() {
		cmd += " --attachable"
	}
	if m.Internal {
		cmd += " --internal"
	}
	if m.Subnet != "" {
		cmd += " --subnet " + remote.Quote(m.Subnet)
	}
	cmd += labelArgs("--label", m.Labels) + " " + remote.Quote(m.Name)
	res, err := dockerRun(ctx, c, "docker network create", cmd)
	if err != nil {
		return fmt.Errorf("docker_network: %w", err)
	}
	m.id, m.created = strings.TrimSpace(res.Stdout), true
	return nil
}

// Rollback implements Rollbacker: a network the step created is removed.
func (m *DockerNetwork) Rollback(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	var b networkBefore
	if err := ch.DecodeBefore(&b); err != nil {
		return err
	}
	res, err := c.Run(ctx, "docker network rm "+remote.Quote(b.Name))
	if err != nil {
		return fmt.Errorf("docker_network rollback: %w", err)
	}
	if !res.OK() && !strings.Contains(res.Stderr, "No such network") && !strings.Contains(res.Stderr, "not found") {
		return fmt.Errorf("docker_network rollback: %w", res.Err(c.Host()+": docker network rm "+b.Name))
	}
	return nil
}

// Output implements Outputter: id and name.
func (m *DockerNetwork) Output() map[string]any {
	return map[string]any{"id": m.id, "name": m.Name, "created": m.created}
}
