package docker

// Shared helpers for the Docker and Swarm modules. They drive the docker CLI
// on the host over the Conn — no SDK — and read its answers as JSON
// (`--format '{{json .}}'`), one round trip per probe. Read-only probes
// ask the Engine API over the SSH connection first (engine.go).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// swarmInfoFormat makes `docker info` print only the swarm facts the modules
// need, as one JSON object. Cluster is nil on workers (only managers see the
// cluster object), hence the guard.
const swarmInfoFormat = `{"state":{{json .Swarm.LocalNodeState}},"node_id":{{json .Swarm.NodeID}},` +
	`"node_addr":{{json .Swarm.NodeAddr}},"control":{{json .Swarm.ControlAvailable}},` +
	`"error":{{json .Swarm.Error}},"managers":{{json .Swarm.RemoteManagers}},` +
	`"cluster_id":{{if .Swarm.Cluster}}{{json .Swarm.Cluster.ID}}{{else}}""{{end}}}`

// swarmInfoCmd is the shell command that prints swarmInfo as JSON.
var swarmInfoCmd = "docker info --format " + remote.Quote(swarmInfoFormat)

// swarmInfo is one node's view of its swarm membership.
type swarmInfo struct {
	State     string          `json:"state"` // inactive, pending, active, error, locked
	NodeID    string          `json:"node_id"`
	NodeAddr  string          `json:"node_addr"`
	Control   bool            `json:"control"` // an active manager
	Error     string          `json:"error"`
	Managers  []remoteManager `json:"managers"`
	ClusterID string          `json:"cluster_id"` // only set on managers
}

type remoteManager struct {
	NodeID string `json:"NodeID"`
	Addr   string `json:"Addr"`
}

// managerAddrs lists the manager addresses a node knows.
func (s swarmInfo) managerAddrs() []string {
	out := make([]string, 0, len(s.Managers))
	for _, m := range s.Managers {
		out = append(out, m.Addr)
	}
	sort.Strings(out)
	return out
}

// ownManagerAddr is the address a manager listens on for joins: its own
// entry among the remote managers, else NodeAddr:2377.
func (s swarmInfo) ownManagerAddr() string {
	for _, m := range s.Managers {
		if m.NodeID == s.NodeID {
			return m.Addr
		}
	}
	if s.NodeAddr != "" {
		return s.NodeAddr + ":2377"
	}
	return ""
}

func parseSwarmInfo(out string) (swarmInfo, error) {
	var si swarmInfo
	// docker may print warnings before the JSON line; take the last object.
	line := lastJSONLine(out)
	if line == "" {
		return si, fmt.Errorf("docker info printed no JSON: %q", remote.TrimOutput(out))
	}
	if err := json.Unmarshal([]byte(line), &si); err != nil {
		return si, fmt.Errorf("read docker info: %w", err)
	}
	return si, nil
}

// probeSwarm asks c's dockerd for its swarm facts: GET /info over the
// engine API, else `docker info`. One round trip either way.
func probeSwarm(ctx context.Context, c modules.Conn) (swarmInfo, error) {
	if si, err := engineSwarmInfo(ctx, c); !errors.Is(err, errNoEngine) {
		if err != nil {
			return si, fmt.Errorf("%s: docker info: %w", c.Host(), err)
		}
		return si, nil
	}
	res, err := c.Run(ctx, swarmInfoCmd)
	if err != nil {
		return swarmInfo{}, fmt.Errorf("%s: docker info: %w", c.Host(), err)
	}
	if err := res.Err(c.Host() + ": docker info"); err != nil {
		return swarmInfo{}, err
	}
	si, err := parseSwarmInfo(res.Stdout)
	if err != nil {
		return si, fmt.Errorf("%s: %w", c.Host(), err)
	}
	return si, nil
}

func lastJSONLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if strings.HasPrefix(l, "{") {
			return l
		}
	}
	return ""
}

// jsonLines decodes every line of out that holds a JSON object into a T;
// other lines (warnings, blanks) are skipped.
func jsonLines[T any](out string) ([]T, error) {
	var items []T
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(l, "{") {
			continue
		}
		var v T
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			return nil, fmt.Errorf("read docker output %q: %w", remote.TrimOutput(l), err)
		}
		items = append(items, v)
	}
	return items, sc.Err()
}

// sections splits a probe script's stdout at lines equal to sep.
func sections(out, sep string) []string {
	var parts []string
	var b strings.Builder
	for _, l := range strings.SplitAfter(out, "\n") {
		if strings.TrimRight(l, "\n") == sep {
			parts = append(parts, b.String())
			b.Reset()
			continue
		}
		b.WriteString(l)
	}
	return append(parts, b.String())
}

// findManager returns a Conn to an active swarm manager: prefer, if named,
// then self when it is one, then the play's hosts in order (probing each).
func findManager(ctx context.Context, p modules.Peers, self modules.Conn, selfInfo *swarmInfo, prefer string) (modules.Conn, string, error) {
	try := func(name string) (modules.Conn, bool, error) {
		if name == self.Host() {
			if selfInfo != nil {
				return self, selfInfo.Control, nil
			}
			si, err := probeSwarm(ctx, self)
			return self, err == nil && si.Control, err
		}
		if p == nil {
			return nil, false, fmt.Errorf("no peers: cannot reach manager %s", name)
		}
		c, err := p.Conn(ctx, name)
		if err != nil {
			return nil, false, err
		}
		si, err := probeSwarm(ctx, c)
		return c, err == nil && si.Control, err
	}
	if prefer != "" {
		c, ok, err := try(prefer)
		if err != nil {
			return nil, "", fmt.Errorf("manager %s: %w", prefer, err)
		}
		if !ok {
			return nil, "", fmt.Errorf("%s is not an active swarm manager", prefer)
		}
		return c, prefer, nil
	}
	if selfInfo == nil {
		si, err := probeSwarm(ctx, self)
		if err != nil {
			return nil, "", err
		}
		selfInfo = &si
	}
	if selfInfo.Control {
		return self, self.Host(), nil
	}
	if p == nil {
		return nil, "", errors.New("host is not a swarm manager and no peers are known: set manager")
	}
	var errs []error
	for _, h := range p.Hosts() {
		if h == self.Host() {
			continue
		}
		c, ok, err := try(h)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			return c, h, nil
		}
	}
	return nil, "", fmt.Errorf("no active swarm manager among the play's hosts %v: %w", p.Hosts(), errors.Join(errs...))
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// labelArgs renders labels as sorted `--label k=v` flags (already quoted).
func labelArgs(flag string, labels map[string]string) string {
	keys := sortedKeys(labels)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(" " + flag + " " + remote.Quote(k+"="+labels[k]))
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// fmtLabels prints labels one per line, sorted, for diffs.
func fmtLabels(labels map[string]string) string {
	var b strings.Builder
	for _, k := range sortedKeys(labels) {
		fmt.Fprintf(&b, "%s=%s\n", k, labels[k])
	}
	return b.String()
}

// dockerErr runs cmd and returns an error carrying its stderr on failure.
func dockerRun(ctx context.Context, c modules.Conn, what, cmd string, opts ...modules.RunOption) (modules.Result, error) {
	res, err := c.Run(ctx, cmd, opts...)
	if err != nil {
		return res, fmt.Errorf("%s: %s: %w", c.Host(), what, err)
	}
	if err := res.Err(c.Host() + ": " + what); err != nil {
		return res, err
	}
	return res, nil
}

// isTransient reports whether a docker error is a manager's passing state
// (raft election, a manager still joining) that a retry outlives.
func isTransient(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	for _, t := range []string{
		"is not a swarm manager", "Manager is being prepared", "has trouble connecting to the cluster",
		"code = Unavailable", "code = DeadlineExceeded", "context deadline exceeded", "rpc error: code = Unknown desc = raft",
		// An object changed between the CLI's read and its update (a node
		// the role manager is still reconciling after a demotion): the CLI
		// reads it again on the next try.
		"update out of sequence",
	} {
		if strings.Contains(s, t) {
			return true
		}
	}
	return false
}

// retryTransient runs f until it succeeds, fails for good, or 60 seconds of
// transient manager errors have passed.
func retryTransient(ctx context.Context, f func() (modules.Result, error)) (modules.Result, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := f()
		if err == nil || !isTransient(err) || time.Now().After(deadline) || ctx.Err() != nil {
			return res, err
		}
		if err := sleepCtx(ctx, 2*time.Second); err != nil {
			return res, err
		}
	}
}
