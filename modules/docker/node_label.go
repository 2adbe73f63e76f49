package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// nodeLabelInfo is the node_label module's registry entry.
func nodeLabelInfo() modules.Info {
	return modules.Info{
		Name: "node_label",
		Doc:  "Set Docker swarm node labels on the host's own node, through a manager",
		Example: `step "node labels" {
  module         = "node_label"
  labels         = { tier = "db" }
  from_inventory = true
}`,
		Outputs: []modules.Output{
			{Name: "node_id", Type: "string", Doc: "the host's node id"},
			{Name: "labels", Type: "map(string)", Doc: "the labels wanted"},
		},
		Diff: "the node's labels before and after",
		New:  func() modules.Module { return &NodeLabel{} },
	}
}

// NodeLabel sets the labels of the host's swarm node. The node is found by
// its own NodeID (`docker info` on the host); labels are read and changed
// through a manager: the host itself when it is one, else the manager
// argument, else the first host of the play that is an active manager.
//
// Docker stores `--label-add key=` and `--label-add key` alike as an empty
// value; an empty string in labels sets such a label.
type NodeLabel struct {
	modules.RunPeers // the manager that sets the labels, the inventory labels

	Labels        map[string]string `hcl:"labels,optional" doc:"labels to set (key = value; an empty value is allowed)"`
	FromInventory bool              `hcl:"from_inventory,optional" doc:"also set the host's inventory labels (labels wins on a conflict)"`
	Mode          string            `hcl:"mode,optional" doc:"merge (default): keep other labels; replace: the node ends with exactly these labels"`
	Remove        []string          `hcl:"remove,optional" doc:"label keys to remove"`
	Manager       string            `hcl:"manager,optional" doc:"inventory host to change labels through; default: this host if it is a manager, else the first manager of the play"`

	nodeID  string
	manager string
	want    map[string]string
}

// nodeLabelBefore records the labels a change replaces.
type nodeLabelBefore struct {
	NodeID  string            `json:"node_id"`
	Manager string            `json:"manager"`
	Labels  map[string]string `json:"labels"`
}

// Validate implements Validator.
func (m *NodeLabel) Validate() error {
	switch m.Mode {
	case "", "merge", "replace":
	default:
		return modules.ArgErrorf("mode", "node_label: mode %q is not merge or replace", m.Mode)
	}
	if len(m.Labels) == 0 && !m.FromInventory && len(m.Remove) == 0 && m.Mode != "replace" {
		return errors.New("node_label: nothing to do: set labels, from_inventory or remove")
	}
	for k := range m.Labels {
		if k == "" || strings.ContainsAny(k, "= \t\n") {
			return modules.ArgErrorf("labels", "node_label: bad label key %q", k)
		}
	}
	return nil
}

// HostArgs implements modules.HostNamer: manager is an inventory host name.
func (m *NodeLabel) HostArgs() map[string][]string {
	if m.Manager == "" {
		return nil
	}
	return map[string][]string{"manager": {m.Manager}}
}

// desired computes the labels the node should end with.
func (m *NodeLabel) desired(ctx context.Context, current map[string]string) map[string]string {
	add := map[string]string{}
	if m.FromInventory {
		if p := m.Peers(); p != nil {
			maps.Copy(add, p.Self().Labels)
		}
	}
	maps.Copy(add, m.Labels)
	out := map[string]string{}
	if m.Mode != "replace" {
		maps.Copy(out, current)
	}
	maps.Copy(out, add)
	for _, k := range m.Remove {
		delete(out, k)
	}
	return out
}

// nodeLabels reads a node's labels through manager mc.
func nodeLabels(ctx context.Context, mc modules.Conn, nodeID string) (map[string]string, error) {
	if n, found, err := engineNode(ctx, mc, nodeID); !errors.Is(err, errNoEngine) {
		switch {
		case err != nil:
			return nil, fmt.Errorf("%s: docker node inspect: %w", mc.Host(), err)
		case !found:
			return nil, fmt.Errorf("%s: docker node inspect: no such node: %s", mc.Host(), nodeID)
		case n.Spec.Labels == nil:
			return map[string]string{}, nil
		}
		return n.Spec.Labels, nil
	}
	res, err := dockerRun(ctx, mc, "docker node inspect", "docker node inspect --format '{{json .Spec.Labels}}' "+remote.Quote(nodeID))
	if err != nil {
		return nil, err
	}
	labels := map[string]string{}
	if s := strings.TrimSpace(res.Stdout); s != "" && s != "null" {
		if err := json.Unmarshal([]byte(lastJSONLine(s)), &labels); err != nil {
			return nil, fmt.Errorf("read labels of node %s: %w", nodeID, err)
		}
	}
	return labels, nil
}

// labelUpdate is the `docker node update` that turns have into want, or ""
// when they are equal.
func labelUpdate(nodeID string, have, want map[string]string) string {
	var args []string
	for _, k := range sortedKeys(have) {
		if _, ok := want[k]; !ok {
			args = append(args, "--label-rm "+remote.Quote(k))
		}
	}
	for _, k := range sortedKeys(want) {
		if v, ok := have[k]; !ok || v != want[k] {
			args = append(args, "--label-add "+remote.Quote(k+"="+want[k]))
		}
	}
	if len(args) == 0 {
		return ""
	}
	return "docker node update " + strings.Join(args, " ") + " " + remote.Quote(nodeID)
}

// labelSummary lists the label changes: "+type=service -old".
func labelSummary(have, want map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(want) {
		if v, ok := have[k]; !ok || v != want[k] {
			parts = append(parts, "+"+k+"="+want[k])
		}
	}
	for _, k := range sortedKeys(have) {
		if _, ok := want[k]; !ok {
			parts = append(parts, "-"+k)
		}
	}
	return strings.Join(parts, " ")
}

// Check implements Module: docker info on the host, then (through the host
// itself when it is a manager) one node inspect.
func (m *NodeLabel) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	si, err := probeSwarm(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("node_label: %w", err)
	}
	if si.State != "active" || si.NodeID == "" {
		return nil, fmt.Errorf("node_label: %s is not an active swarm node (state %s)", c.Host(), si.State)
	}
	m.nodeID = si.NodeID
	mc, mname, err := findManager(ctx, m.Peers(), c, &si, m.Manager)
	if err != nil {
		return nil, fmt.Errorf("node_label: %w", err)
	}
	m.manager = mname
	have, err := nodeLabels(ctx, mc, m.nodeID)
	if err != nil {
		return nil, fmt.Errorf("node_label: %w", err)
	}
	m.want = m.desired(ctx, have)
	if labelUpdate(m.nodeID, have, m.want) == "" {
		return nil, nil
	}
	ch := modules.Changef("labels of node %s: %s", c.Host(), labelSummary(have, m.want))
	if err := ch.SetBefore(nodeLabelBefore{NodeID: m.nodeID, Manager: mname, Labels: have}); err != nil {
		return nil, err
	}
	ch.Diff = &modules.Diff{Label: "node labels " + c.Host(), Before: fmtLabels(have), After: fmtLabels(m.want)}
	return ch, nil
}

// Apply implements Module.
func (m *NodeLabel) Apply(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	var b nodeLabelBefore
	if err := ch.DecodeBefore(&b); err != nil {
		return err
	}
	return m.setLabels(ctx, c, b, func(have map[string]string) map[string]string { return m.desired(ctx, have) })
}

// Rollback implements Rollbacker: the node gets exactly the labels it had.
func (m *NodeLabel) Rollback(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	var b nodeLabelBefore
	if err := ch.DecodeBefore(&b); err != nil {
		return err
	}
	if b.Labels == nil {
		b.Labels = map[string]string{}
	}
	return m.setLabels(ctx, c, b, func(map[string]string) map[string]string { return b.Labels })
}

func (m *NodeLabel) setLabels(ctx context.Context, c modules.Conn, b nodeLabelBefore, want func(have map[string]string) map[string]string) error {
	mc, _, err := findManager(ctx, m.Peers(), c, nil, managerPref(c, b.Manager))
	if err != nil && b.Manager != "" {
		// The recorded manager may be gone; any manager will do.
		mc, _, err = findManager(ctx, m.Peers(), c, nil, "")
	}
	if err != nil {
		return fmt.Errorf("node_label: %w", err)
	}
	have, err := nodeLabels(ctx, mc, b.NodeID)
	if err != nil {
		return fmt.Errorf("node_label: %w", err)
	}
	m.want = want(have)
	m.nodeID = b.NodeID
	if cmd := labelUpdate(b.NodeID, have, m.want); cmd != "" {
		// A node that has just joined is still updated by the swarm (its
		// status), so the CLI's read-modify-write may be refused as "update
		// out of sequence"; it reads the node again on the next try.
		if _, err := retryTransient(ctx, func() (modules.Result, error) {
			return dockerRun(ctx, mc, "docker node update", cmd)
		}); err != nil {
			return fmt.Errorf("node_label: %w", err)
		}
	}
	return nil
}

func managerPref(c modules.Conn, recorded string) string {
	if recorded == c.Host() {
		return "" // findManager tries the host itself first
	}
	return recorded
}

// Output implements Outputter: node_id and labels.
func (m *NodeLabel) Output() map[string]any {
	return map[string]any{"node_id": m.nodeID, "labels": m.want}
}
