package docker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// swarmInitInfo is the swarm_init module's registry entry.
func swarmInitInfo() modules.Info {
	return modules.Info{
		Name: "swarm_init",
		Doc:  "Bring the play's hosts into one Docker swarm: the first manager initialises it, the others join as managers or workers",
		Example: `step "swarm" {
  module   = "swarm_init"
  managers = ["iklim-app-01", "iklim-app-02", "iklim-app-03"]
  workers  = ["iklim-db-01", "iklim-db-02"]
  register = "swarm"
}`,
		Outputs: []modules.Output{
			{Name: "cluster_id", Type: "string", Doc: "the swarm the host ended in"},
			{Name: "node_id", Type: "string", Doc: "the host's node id"},
			{Name: "role", Type: "string", Doc: "manager or worker"},
		},
		Diff: "the host's swarm membership and role before and after",
		New:  func() modules.Module { return &SwarmInit{} },
	}
}

// SwarmInit makes every host of the step a member of one swarm, in ONE step
// over all swarm hosts. The first of managers is the bootstrap leader: it
// runs `docker swarm init` when it is in no swarm. Every other host waits
// until the leader is an active manager, reads the join token through
// Peers.Conn(leader) and joins with its own advertise address. Manager joins
// (and promotions) are serialised per cluster inside the process, so raft
// grows one member at a time.
//
// A host counts as joined only when its `docker info` says LocalNodeState
// active, it belongs to the leader's cluster (same Swarm.Cluster.ID for a
// manager; known to the leader's node list for a worker, whose docker info
// shows no cluster) and ControlAvailable matches its role. A node left
// pending fails the step after join_timeout; a node in another swarm fails
// it at once, naming that swarm. A node in the wrong role is promoted or
// demoted through the leader.
//
// Join tokens are marked sensitive the moment they are read and appear in no
// summary, diff, record or output.
type SwarmInit struct {
	modules.RunPeers   // the leader, the managers, the play's hosts
	modules.RunSecrets // join tokens join them

	Managers      []string `hcl:"managers" doc:"inventory names of the manager hosts; the first one is the bootstrap leader"`
	Workers       []string `hcl:"workers,optional" doc:"inventory names of the worker hosts"`
	AdvertiseAddr string   `hcl:"advertise_addr,optional" doc:"address this host advertises to the swarm (ip or interface); default: the host's inventory address"`
	JoinTimeout   string   `hcl:"join_timeout,optional" doc:"how long to wait for the leader to become an active manager and for a join to finish (default 60s)"`

	// learnt by Check for Apply and Output
	self      modules.HostInfo
	role      string // wanted: manager or worker
	info      swarmInfo
	leader    swarmInfo
	clusterID string // cluster id the host ended in
}

// swarmBefore is what swarm_init records before it changes a host.
type swarmBefore struct {
	// Action is init, join, promote or demote.
	Action string `json:"action"`
	// State is the host's LocalNodeState before the change.
	State  string `json:"state"`
	NodeID string `json:"node_id,omitempty"`
	Leader string `json:"leader"`
	Role   string `json:"role"` // the role the change gives the host
}

const (
	roleManager = "manager"
	roleWorker  = "worker"
)

// lockCluster serialises manager joins, promotions and demotions per
// cluster across the run's hosts (Peers.Serialize); a module running alone
// has no other host to wait for.
func lockCluster(p modules.Peers, id string) func() {
	if p == nil {
		return func() {}
	}
	return p.Serialize("swarm:" + id)
}

// Validate implements Validator.
func (m *SwarmInit) Validate() error {
	if len(m.Managers) == 0 {
		return modules.ArgErrorf("managers", "swarm_init: managers needs at least one host (the first is the bootstrap leader)")
	}
	seen := map[string]bool{}
	for _, h := range append(slices.Clone(m.Managers), m.Workers...) {
		if h == "" {
			return errors.New("swarm_init: empty host name in managers or workers")
		}
		if seen[h] {
			return fmt.Errorf("swarm_init: host %s is listed twice in managers/workers", h)
		}
		seen[h] = true
	}
	if _, err := remote.ParseDuration("swarm_init: join_timeout", m.JoinTimeout, 0); err != nil {
		return &modules.ArgError{Arg: "join_timeout", Err: err}
	}
	return nil
}

// HostArgs implements modules.HostNamer: managers and workers are
// inventory host names.
func (m *SwarmInit) HostArgs() map[string][]string {
	return map[string][]string{"managers": m.Managers, "workers": m.Workers}
}

func (m *SwarmInit) timeout() time.Duration {
	d, _ := remote.ParseDuration("join_timeout", m.JoinTimeout, 60*time.Second)
	return d
}

func (m *SwarmInit) leaderName() string { return m.Managers[0] }

func (m *SwarmInit) advertise() string {
	if m.AdvertiseAddr != "" {
		return m.AdvertiseAddr
	}
	return m.self.Address
}

func selfHost(p modules.Peers, c modules.Conn) modules.HostInfo {
	if p != nil {
		return p.Self()
	}
	return modules.HostInfo{Name: c.Host()}
}

// leaderConn reaches the bootstrap leader (c itself when this is the leader).
func (m *SwarmInit) leaderConn(ctx context.Context, c modules.Conn) (modules.Conn, error) {
	if m.leaderName() == c.Host() || m.leaderName() == m.self.Name {
		return c, nil
	}
	p := m.Peers()
	if p == nil {
		return nil, fmt.Errorf("swarm_init: %s must reach leader %s but the step has no peers", c.Host(), m.leaderName())
	}
	lc, err := p.Conn(ctx, m.leaderName())
	if err != nil {
		return nil, fmt.Errorf("swarm_init: reach leader %s: %w", m.leaderName(), err)
	}
	return lc, nil
}

// Check implements Module: one docker info on the host, one on the leader
// (run at the same time), and for an active worker one node lookup.
func (m *SwarmInit) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	m.self = selfHost(m.Peers(), c)
	switch {
	case slices.Contains(m.Managers, m.self.Name):
		m.role = roleManager
	case slices.Contains(m.Workers, m.self.Name):
		m.role = roleWorker
	default:
		return nil, fmt.Errorf("swarm_init: host %s is in neither managers %v nor workers %v", m.self.Name, m.Managers, m.Workers)
	}
	if m.self.Name == m.leaderName() {
		return m.checkLeader(ctx, c)
	}
	lc, err := m.leaderConn(ctx, c)
	if err != nil {
		return nil, err
	}
	var (
		wg   sync.WaitGroup
		lerr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.leader, lerr = probeSwarm(ctx, lc)
	}()
	m.info, err = probeSwarm(ctx, c)
	wg.Wait()
	if err != nil {
		return nil, fmt.Errorf("swarm_init: %w", err)
	}
	if lerr != nil {
		return nil, fmt.Errorf("swarm_init: leader: %w", lerr)
	}
	before := swarmBefore{State: m.info.State, NodeID: m.info.NodeID, Leader: m.leaderName(), Role: m.role}
	switch m.info.State {
	case "inactive":
		before.Action = "join"
		return m.change(before, "join swarm of %s as %s (advertise %s)", m.leaderName(), m.role, orAuto(m.advertise()))
	case "pending":
		before.Action = "join"
		return m.change(before, "finish pending join to swarm of %s as %s", m.leaderName(), m.role)
	case "active":
	default:
		return nil, m.badState(m.info)
	}
	if err := m.checkMembership(ctx, c, lc); err != nil {
		return nil, err
	}
	switch {
	case m.role == roleManager && !m.info.Control:
		before.Action = "promote"
		return m.change(before, "promote %s to manager", m.self.Name)
	case m.role == roleWorker && m.info.Control:
		before.Action = "demote"
		return m.change(before, "demote %s to worker", m.self.Name)
	}
	m.clusterID = m.leader.ClusterID
	return nil, nil
}

func orAuto(addr string) string {
	if addr == "" {
		return "auto"
	}
	return addr
}

func (m *SwarmInit) change(b swarmBefore, format string, args ...any) (*modules.Change, error) {
	ch := modules.Changef(format, args...)
	if err := ch.SetBefore(b); err != nil {
		return nil, err
	}
	ch.Diff = &modules.Diff{Label: "swarm " + m.self.Name,
		Before: fmt.Sprintf("state: %s\nrole: %s\n", b.State, roleOf(m.info)),
		After:  fmt.Sprintf("state: active\nrole: %s\ncluster: swarm of %s\n", m.role, m.leaderName())}
	return ch, nil
}

func roleOf(si swarmInfo) string {
	switch {
	case si.State != "active":
		return "none"
	case si.Control:
		return roleManager
	default:
		return roleWorker
	}
}

func (m *SwarmInit) badState(si swarmInfo) error {
	switch si.State {
	case "locked":
		return fmt.Errorf("swarm_init: %s: swarm is locked; unlock it with `docker swarm unlock` first", m.self.Name)
	default:
		return fmt.Errorf("swarm_init: %s: swarm state %q: %s", m.self.Name, si.State, si.Error)
	}
}

func (m *SwarmInit) checkLeader(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	si, err := probeSwarm(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("swarm_init: %w", err)
	}
	m.info, m.leader = si, si
	switch si.State {
	case "inactive":
		b := swarmBefore{Action: "init", State: si.State, Leader: m.self.Name, Role: roleManager}
		return m.change(b, "init swarm on %s (advertise %s)", m.self.Name, orAuto(m.advertise()))
	case "active":
		if !si.Control {
			return nil, fmt.Errorf("swarm_init: leader %s is a worker in a swarm managed by %s; make it a manager there or leave that swarm first",
				m.self.Name, strings.Join(si.managerAddrs(), ", "))
		}
		m.clusterID = si.ClusterID
		return nil, nil
	case "pending":
		return nil, fmt.Errorf("swarm_init: leader %s is pending a join to %s (%s); clear it with `docker swarm leave --force`",
			m.self.Name, strings.Join(si.managerAddrs(), ", "), si.Error)
	default:
		return nil, m.badState(si)
	}
}

// checkMembership fails when an active host is not in the leader's swarm.
func (m *SwarmInit) checkMembership(ctx context.Context, c, lc modules.Conn) error {
	si, li := m.info, m.leader
	if li.State != "active" || !li.Control {
		return m.otherSwarm(ctx, fmt.Sprintf("leader %s is not an active manager (state %s)", m.leaderName(), li.State))
	}
	if si.Control {
		if si.ClusterID != li.ClusterID {
			return m.otherSwarm(ctx, fmt.Sprintf("the swarm of %s is cluster %s", m.leaderName(), li.ClusterID))
		}
		return nil
	}
	known, err := nodeKnown(ctx, lc, si.NodeID)
	if err != nil {
		return fmt.Errorf("swarm_init: %w", err)
	}
	if !known {
		return m.otherSwarm(ctx, fmt.Sprintf("node %s is unknown to cluster %s of %s", si.NodeID, li.ClusterID, m.leaderName()))
	}
	return nil
}

// otherSwarm is the error for a host that is already in a different swarm.
// A worker cannot see its cluster id, so its managers are asked when they
// are inventory hosts.
func (m *SwarmInit) otherSwarm(ctx context.Context, why string) error {
	id := m.info.ClusterID
	if id == "" {
		id = m.lookupClusterID(ctx, m.info.Managers)
	}
	if id == "" {
		id = "unknown (the host is a worker; its managers were not reachable)"
	}
	return fmt.Errorf("swarm_init: %s is already in another swarm: cluster %s, managers %s; %s. Leave that swarm first (`docker swarm leave`) — iklim will not move a node between swarms",
		m.self.Name, id, strings.Join(m.info.managerAddrs(), ", "), why)
}

func (m *SwarmInit) lookupClusterID(ctx context.Context, managers []remoteManager) string {
	p := m.Peers()
	if p == nil {
		return ""
	}
	for _, rm := range managers {
		host := rm.Addr
		if i := strings.LastIndex(host, ":"); i >= 0 {
			host = host[:i]
		}
		for _, name := range p.Hosts() {
			hi, ok := p.Lookup(name)
			if !ok || (hi.Address != host && hi.Name != host) {
				continue
			}
			mc, err := p.Conn(ctx, name)
			if err != nil {
				continue
			}
			if si, err := probeSwarm(ctx, mc); err == nil && si.ClusterID != "" {
				return si.ClusterID
			}
		}
	}
	return ""
}

// nodeKnown reports whether the manager behind lc lists node id.
func nodeKnown(ctx context.Context, lc modules.Conn, id string) (bool, error) {
	if id == "" {
		return false, nil
	}
	if n, found, err := engineNode(ctx, lc, id); !errors.Is(err, errNoEngine) {
		if err != nil {
			return false, fmt.Errorf("%s: docker node inspect: %w", lc.Host(), err)
		}
		return found && n.ID == id, nil
	}
	res, err := lc.Run(ctx, "docker node inspect --format '{{.ID}}' "+remote.Quote(id))
	if err != nil {
		return false, fmt.Errorf("%s: docker node inspect: %w", lc.Host(), err)
	}
	if res.OK() {
		return strings.TrimSpace(res.Stdout) == id, nil
	}
	if strings.Contains(res.Stderr, "No such node") || strings.Contains(res.Stderr, "not found") {
		return false, nil
	}
	return false, res.Err(lc.Host() + ": docker node inspect")
}

// Apply implements Module.
func (m *SwarmInit) Apply(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	var b swarmBefore
	if err := ch.DecodeBefore(&b); err != nil {
		return err
	}
	switch b.Action {
	case "init":
		return m.applyInit(ctx, c)
	case "join":
		return m.applyJoin(ctx, c, b)
	case "promote", "demote":
		return m.applyRole(ctx, c, b.Action)
	}
	return fmt.Errorf("swarm_init: unknown action %q", b.Action)
}

func (m *SwarmInit) applyInit(ctx context.Context, c modules.Conn) error {
	cmd := "docker swarm init"
	if a := m.advertise(); a != "" {
		cmd += " --advertise-addr " + remote.Quote(a)
	}
	if _, err := dockerRun(ctx, c, "docker swarm init", cmd); err != nil {
		return fmt.Errorf("swarm_init: %w", err)
	}
	si, err := m.waitState(ctx, c, func(si swarmInfo) bool { return si.State == "active" && si.Control && si.ClusterID != "" })
	if err != nil {
		return fmt.Errorf("swarm_init: %s did not become an active manager after init: %w", m.self.Name, err)
	}
	m.info, m.leader, m.clusterID = si, si, si.ClusterID
	return nil
}

// waitState polls the host's docker info until ok or join_timeout.
func (m *SwarmInit) waitState(ctx context.Context, c modules.Conn, ok func(swarmInfo) bool) (swarmInfo, error) {
	start := time.Now()
	deadline := start.Add(m.timeout())
	for {
		si, err := probeSwarm(ctx, c)
		if err == nil && ok(si) {
			return si, nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return si, err
			}
			return si, fmt.Errorf("still %s (control %v) after %s%s", si.State, si.Control, m.timeout(), withErr(si.Error))
		}
		modules.ReportStatus(c, modules.Status{Text: fmt.Sprintf("waiting for the swarm: still %s (control %v)%s", si.State, si.Control, withErr(si.Error)),
			Since: start, Max: m.timeout()})
		if err := sleepCtx(ctx, time.Second); err != nil {
			return si, err
		}
	}
}

func withErr(e string) string {
	if e == "" {
		return ""
	}
	return ": " + e
}

func (m *SwarmInit) applyJoin(ctx context.Context, c modules.Conn, b swarmBefore) error {
	lc, err := m.leaderConn(ctx, c)
	if err != nil {
		return err
	}
	if b.State == "pending" {
		// A join started earlier: give it join_timeout, then fail clearly.
		si, err := m.waitState(ctx, c, func(si swarmInfo) bool { return si.State != "pending" })
		if err != nil {
			return fmt.Errorf("swarm_init: %s is stuck pending a join to %s: %w; it is NOT a member. Clear it with `docker swarm leave --force` and run again",
				m.self.Name, strings.Join(si.managerAddrs(), ", "), err)
		}
		m.info = si
		if si.State == "active" {
			return m.verifyJoined(ctx, c, lc)
		}
		if si.State != "inactive" {
			return m.badState(si)
		}
	}
	// Wait for the leader: it may be initialising the swarm right now.
	leader, err := m.waitState(ctx, lc, func(si swarmInfo) bool { return si.State == "active" && si.Control && si.ClusterID != "" })
	if err != nil {
		return fmt.Errorf("swarm_init: leader %s did not become an active manager within %s: %w", m.leaderName(), m.timeout(), err)
	}
	m.leader = leader
	if m.role == roleManager {
		defer lockCluster(m.Peers(), leader.ClusterID)()
	}
	res, err := dockerRun(ctx, lc, "docker swarm join-token", "docker swarm join-token -q "+m.role)
	if err != nil {
		return fmt.Errorf("swarm_init: read %s join token: %w", m.role, err)
	}
	token := strings.TrimSpace(res.Stdout)
	m.MarkSensitive(token)
	if !strings.HasPrefix(token, "SWMTKN-") {
		return fmt.Errorf("swarm_init: leader %s returned no join token", m.leaderName())
	}
	join := leader.ownManagerAddr()
	cmd := `docker swarm join --token "$IKLIM_SWARM_TOKEN"`
	if a := m.advertise(); a != "" {
		cmd += " --advertise-addr " + remote.Quote(a)
	}
	cmd += " " + remote.Quote(join)
	jr, err := c.Run(ctx, cmd, modules.WithEnv(map[string]string{"IKLIM_SWARM_TOKEN": token}))
	if err != nil {
		return fmt.Errorf("swarm_init: %s: docker swarm join %s: %w", m.self.Name, join, err)
	}
	if !jr.OK() && !strings.Contains(jr.Stderr, "Timeout was reached") {
		return fmt.Errorf("swarm_init: %s: docker swarm join %s: exit %d: %s", m.self.Name, join, jr.ExitCode, remote.TrimOutput(jr.Stderr))
	}
	si, err := m.waitState(ctx, c, func(si swarmInfo) bool {
		return si.State == "active" && (m.role == roleWorker || si.Control)
	})
	if err != nil {
		if si.State == "pending" {
			// We started this join: cancel it so the node is left as it was.
			_, _ = c.Run(ctx, "docker swarm leave --force")
			return fmt.Errorf("swarm_init: %s stayed pending joining %s for %s%s; the join was cancelled and the node is NOT a member",
				m.self.Name, join, m.timeout(), withErr(si.Error))
		}
		return fmt.Errorf("swarm_init: %s joining %s: %w", m.self.Name, join, err)
	}
	m.info = si
	return m.verifyJoined(ctx, c, lc)
}

// verifyJoined checks cluster id and role after a join.
func (m *SwarmInit) verifyJoined(ctx context.Context, c, lc modules.Conn) error {
	if err := m.checkMembership(ctx, c, lc); err != nil {
		return err
	}
	if got := roleOf(m.info); got != m.role {
		return m.applyRole(ctx, c, map[string]string{roleManager: "promote", roleWorker: "demote"}[m.role])
	}
	m.clusterID = m.leader.ClusterID
	return nil
}

func (m *SwarmInit) applyRole(ctx context.Context, c modules.Conn, action string) error {
	lc, err := m.leaderConn(ctx, c)
	if err != nil {
		return err
	}
	if m.leader.ClusterID != "" {
		defer lockCluster(m.Peers(), m.leader.ClusterID)()
	}
	if err := setNodeRole(ctx, lc, action, m.info.NodeID); err != nil {
		return fmt.Errorf("swarm_init: %w", err)
	}
	want := action == "promote"
	si, err := m.waitState(ctx, c, func(si swarmInfo) bool { return si.State == "active" && si.Control == want })
	if err != nil {
		return fmt.Errorf("swarm_init: %s after docker node %s: %w", m.self.Name, action, err)
	}
	m.info = si
	if want && si.ClusterID != m.leader.ClusterID {
		return m.otherSwarm(ctx, "cluster changed during promotion")
	}
	m.clusterID = m.leader.ClusterID
	return nil
}

// Rollback implements Rollbacker: a host that joined leaves (a manager is
// first demoted through another manager, so raft shrinks cleanly; the last
// manager leaves with --force), a promotion or demotion is reversed.
func (m *SwarmInit) Rollback(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	var b swarmBefore
	if err := ch.DecodeBefore(&b); err != nil {
		return err
	}
	si, err := probeSwarm(ctx, c)
	if err != nil {
		return fmt.Errorf("swarm_init rollback: %w", err)
	}
	switch b.Action {
	case "init":
		if si.State == "inactive" {
			return nil
		}
		if si.Control {
			// The other hosts of the rollback leave first: while they
			// demote themselves the leader keeps the raft quorum.
			waitPeersLeft(ctx, m.Peers(), c, peersLeaveWait)
		}
		return wrapRollback(swarmLeave(ctx, c, true))
	case "join":
		if si.State == "inactive" {
			return nil
		}
		return wrapRollback(leaveSwarm(ctx, m.Peers(), c, si))
	case "promote", "demote":
		if si.State != "active" {
			return nil
		}
		undo := map[string]string{"promote": "demote", "demote": "promote"}[b.Action]
		if (undo == "demote") != si.Control {
			return nil // already as before
		}
		mc, _, err := findManager(ctx, m.Peers(), c, nil, otherManagerPref(c, b.Leader))
		if err != nil {
			return wrapRollback(err)
		}
		return wrapRollback(setNodeRole(ctx, mc, undo, si.NodeID))
	}
	return fmt.Errorf("swarm_init rollback: unknown action %q", b.Action)
}

// setNodeRole promotes or demotes (action) node id through manager mc,
// again while the manager is in a passing state (retryTransient).
func setNodeRole(ctx context.Context, mc modules.Conn, action, id string) error {
	_, err := retryTransient(ctx, func() (modules.Result, error) {
		return dockerRun(ctx, mc, "docker node "+action, "docker node "+action+" "+remote.Quote(id))
	})
	return err
}

func wrapRollback(err error) error {
	if err != nil {
		return fmt.Errorf("swarm_init rollback: %w", err)
	}
	return nil
}

func otherManagerPref(c modules.Conn, leader string) string {
	if leader != "" && leader != c.Host() {
		return leader
	}
	return ""
}

// peersLeaveWait bounds how long the bootstrap leader's rollback waits for
// the other hosts of the play to leave the swarm.
const peersLeaveWait = 90 * time.Second

// waitPeersLeft waits, up to timeout, until no other host of the play is a
// live node of the swarm that manager c belongs to (nodes that left show
// as down, or are removed). A rollback runs on every host at once; were
// the leader to leave first, the managers that joined it would lose the
// raft quorum halfway through their demotion and could not leave cleanly.
// Hosts are matched to nodes by hostname and address; when none of the
// play's other hosts is a node, there is nothing to wait for.
func waitPeersLeft(ctx context.Context, p modules.Peers, c modules.Conn, timeout time.Duration) {
	if p == nil {
		return
	}
	self := p.Self().Name
	others := map[string]bool{} // names and addresses of the other hosts
	for _, h := range p.Hosts() {
		if h == self || h == c.Host() {
			continue
		}
		others[h] = true
		if hi, ok := p.Lookup(h); ok && hi.Address != "" {
			others[hi.Address] = true
		}
	}
	if len(others) == 0 {
		return
	}
	const probe = `ids=$(docker node ls -q) || exit 1
docker node inspect --format '{{.Status.State}} {{.Description.Hostname}} {{.Status.Addr}} {{with .ManagerStatus}}{{.Addr}}{{end}}' $ids`
	deadline := time.Now().Add(timeout)
	for {
		res, err := c.Run(ctx, probe)
		if err != nil || !res.OK() {
			return // not a manager any more, or no answer: nothing to wait for
		}
		live := false
		for _, line := range strings.Split(res.Stdout, "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] == "down" {
				continue
			}
			for _, id := range f[1:] {
				host, _, err := net.SplitHostPort(id)
				if err != nil {
					host = id
				}
				live = live || others[host]
			}
		}
		if !live || time.Now().After(deadline) {
			return
		}
		if sleepCtx(ctx, time.Second) != nil {
			return
		}
	}
}

// leaveSwarm takes the host out of its swarm as gently as possible.
func leaveSwarm(ctx context.Context, p modules.Peers, c modules.Conn, si swarmInfo) error {
	var mc modules.Conn
	if p != nil {
		for _, h := range p.Hosts() {
			if h == c.Host() {
				continue
			}
			oc, err := p.Conn(ctx, h)
			if err != nil {
				continue
			}
			if oi, err := probeSwarm(ctx, oc); err == nil && oi.Control && (si.ClusterID == "" || oi.ClusterID == si.ClusterID) {
				if known, _ := nodeKnown(ctx, oc, si.NodeID); known {
					mc = oc
					break
				}
			}
		}
	}
	force := false
	if si.Control {
		var err error
		if force, err = demoteSelf(ctx, p, c, mc, si); err != nil {
			return err
		}
	}
	if err := swarmLeave(ctx, c, force); err != nil {
		return err
	}
	if mc != nil && si.NodeID != "" {
		// Drop the departed node from the node list; it shows as down first.
		_, _ = mc.Run(ctx, "docker node rm --force "+remote.Quote(si.NodeID))
	}
	return nil
}

// demoteSelf demotes manager c through mc, one demotion at a time per
// cluster like joins, and waits until c knows it is a worker. It reports
// whether c must leave with --force: no other manager, or the demotion did
// not take effect (a manager cannot leave without it).
func demoteSelf(ctx context.Context, p modules.Peers, c, mc modules.Conn, si swarmInfo) (force bool, err error) {
	if mc == nil {
		return true, nil // the last manager we can reach
	}
	unlock := lockCluster(p, si.ClusterID)
	defer unlock()
	if _, err := dockerRun(ctx, mc, "docker node demote", "docker node demote "+remote.Quote(si.NodeID)); err != nil {
		return true, nil
	}
	for range 30 {
		if ni, err := probeSwarm(ctx, c); err == nil && !ni.Control {
			return false, nil
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			return true, err
		}
	}
	return true, nil
}

// leaveTimeout bounds one `docker swarm leave`.
const leaveTimeout = 60 * time.Second

// swarmLeave runs `docker swarm leave` on c, bounded by leaveTimeout: a
// dockerd whose network agent is stuck can block the call forever even
// though the node already shows inactive, and its swarm stays wedged until
// the daemon restarts (seen with docker 20.10). A host in no swarm is fine.
func swarmLeave(ctx context.Context, c modules.Conn, force bool) error {
	cmd := "docker swarm leave"
	if force {
		cmd += " --force"
	}
	secs := int(leaveTimeout / time.Second)
	script := fmt.Sprintf("if command -v timeout >/dev/null 2>&1; then timeout %d %s; else %s; fi", secs, cmd, cmd)
	// The remote timeout ends the command; this one guards the session.
	rctx, cancel := context.WithTimeout(ctx, leaveTimeout+15*time.Second)
	defer cancel()
	res, err := c.Run(rctx, script)
	switch {
	case err == nil && res.OK():
		return nil
	case err == nil && strings.Contains(res.Stderr, "not part of a swarm"):
		return nil
	case err == nil && res.ExitCode != 124:
		return res.Err(c.Host() + ": " + cmd)
	case err != nil && ctx.Err() != nil:
		return err
	}
	state := "unknown"
	if si, perr := probeSwarm(ctx, c); perr == nil {
		state = si.State
	}
	return fmt.Errorf("%s: %s did not return within %s (node state now %s); its dockerd may need a restart before it can join a swarm again",
		c.Host(), cmd, leaveTimeout, state)
}

// Output implements Outputter: cluster_id, node_id and role — never tokens.
func (m *SwarmInit) Output() map[string]any {
	return map[string]any{"cluster_id": m.clusterID, "node_id": m.info.NodeID, "role": m.role}
}
