package cluster

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

func rabbitJoinInfo() modules.Info {
	return modules.Info{
		Name: "rabbit_join",
		Doc:  "Make the RabbitMQ node of each host (a swarm task, a container or the host) a running member of the seed host's cluster, one join at a time; policy \"NAME\" { pattern, definition, apply_to, priority } blocks are kept on the cluster",
		Example: `step "rabbitmq cluster" {
  module   = "rabbit_join"
  seed     = "iklim-app-01"
  service  = "iklimco_rabbitmq"
  register = "rabbit"
  policy "ha-all" {
    pattern    = ".*"
    apply_to   = "queues"
    definition = { "ha-mode" = "all", "ha-sync-mode" = "automatic" }
  }
}`,
		Outputs: []modules.Output{
			{Name: "node", Type: "string", Doc: "the host's RabbitMQ node name"},
			{Name: "seed_node", Type: "string", Doc: "the seed's node name"},
			{Name: "running_nodes", Type: "list(string)", Doc: "the cluster's running nodes"},
			{Name: "joined", Type: "bool", Doc: "whether this step joined the node"},
			{Name: "would_join", Type: "bool", Doc: "whether it would join (check mode)"},
		},
		Diff: "the cluster's members and policies before and after",
		New:  func() modules.Module { return &RabbitJoin{} },
	}
}

// RabbitJoin makes the RabbitMQ node on its host a running member of the
// cluster of the seed host's node (seed 004: `stop_app`, `join_cluster
// rabbit@seed`, `start_app`). Run it on every host of the cluster, the seed
// included: on the seed it keeps the policies, on the others it joins.
//
// Check is one round trip per host when nothing is to be done: one
// docker exec reads the node name, a hash of the Erlang cookie and, through
// erl_call (a C node, milliseconds), the node's cluster status and on the
// seed its policies, with the seed's node name read at the same time. A
// node whose own status shows it running with the seed is ok, and so is a
// running seed whose policies are as wanted. Anything else, or a host
// without erl_call, is asked again of `rabbitmqctl cluster_status`
// (plus `list_policies` on the seed), which each boot an Erlang VM (a
// second or more of CPU), and the change or refusal is built from its
// answers; the seed's status is read then too. A node in
// another cluster is refused unless force_reset; a cookie that differs
// from the seed's is refused (hashes compared, never printed); a seed node
// that is not running is refused. Joins take a lock on the seed host, so
// nodes join one at a time across hosts and iklim processes, and a join
// ends only when the seed lists the node as running.
//
// Rollback makes a joined node leave (stop_app, reset, start_app, then
// forget_cluster_node on the seed) and puts back each policy as it was.
type RabbitJoin struct {
	modules.RunPeers // the seed node and the join order

	Seed        string         `hcl:"seed" doc:"inventory host whose RabbitMQ node the others join; it keeps its data and the policies are set through it"`
	Service     string         `hcl:"service,optional" doc:"swarm service whose running task on each host runs RabbitMQ, e.g. iklimco_rabbitmq (reached with docker exec)"`
	Container   string         `hcl:"container,optional" doc:"container that runs RabbitMQ on each host, instead of service; neither: rabbitmqctl on the host itself"`
	NodeType    string         `hcl:"node_type,optional" doc:"disc (default) or ram"`
	ForceReset  bool           `hcl:"force_reset,optional" doc:"reset a node that belongs to another cluster before it joins (its data there is lost); default: refuse"`
	Vhost       string         `hcl:"vhost,optional" doc:"virtual host of the policies (default /)"`
	JoinTimeout string         `hcl:"join_timeout,optional" doc:"how long a node waits for its turn and then to run in the cluster (default 180s)"`
	StartWithin string         `hcl:"start_within,optional" doc:"how long Check waits for this node and the seed to run (tasks that just started); default: refuse at once"`
	Policies    []RabbitPolicy `hcl:"policy,block"`

	self      string
	probe     rabbitProbe
	seed      rabbitProbe
	running   []string
	joined    bool
	wouldJoin bool
}

// RabbitPolicy is one `policy "NAME" { … }` block: a policy kept on the
// cluster (rabbitmqctl set_policy).
type RabbitPolicy struct {
	Name       string    `hcl:"name,label"`
	Pattern    string    `hcl:"pattern" doc:"regular expression of the queue or exchange names"`
	Definition cty.Value `hcl:"definition" doc:"the policy's keys and values, e.g. { \"ha-mode\" = \"all\" }"`
	ApplyTo    string    `hcl:"apply_to,optional" doc:"queues, exchanges or all (default all)"`
	Priority   int       `hcl:"priority,optional" doc:"priority (default 0)"`
}

// policyState is a policy as rabbitmqctl list_policies shows it.
type policyState struct {
	Name       string          `json:"name"`
	Pattern    string          `json:"pattern"`
	ApplyTo    string          `json:"apply-to"`
	Definition json.RawMessage `json:"definition"`
	Priority   int             `json:"priority"`
}

// rabbitBefore is what rabbit_join records before it changes a host.
type rabbitBefore struct {
	// Action is join (a node joins) or policies (on the seed).
	Action   string `json:"action"`
	Node     string `json:"node,omitempty"`
	SeedHost string `json:"seed_host"`
	SeedNode string `json:"seed_node"`
	// Reset: the node was in another cluster and is reset first.
	Reset bool `json:"reset,omitempty"`
	// Stale: the seed still lists the node, which no longer knows it.
	Stale bool `json:"stale,omitempty"`
	// OldCluster are the nodes the node was clustered with before.
	OldCluster []string `json:"old_cluster,omitempty"`
	// Policies maps a changed policy to its previous state (nil: absent).
	Policies map[string]*policyState `json:"policies,omitempty"`
	Vhost    string                  `json:"vhost,omitempty"`
	// Service and Container say where RabbitMQ ran, so a rollback (which
	// builds the module without its arguments) reaches it the same way.
	Service   string `json:"service,omitempty"`
	Container string `json:"container,omitempty"`
}

// clusterStatus is the part of `cluster_status --formatter json` we read.
type clusterStatus struct {
	ClusterName  string                 `json:"cluster_name"`
	DiskNodes    []string               `json:"disk_nodes"`
	RAMNodes     []string               `json:"ram_nodes"`
	RunningNodes []string               `json:"running_nodes"`
	Versions     map[string]nodeVersion `json:"versions"`
}

// nodeVersion is one node's entry of cluster_status's versions.
type nodeVersion struct {
	RabbitMQ string `json:"rabbitmq_version"`
}

func (s *clusterStatus) members() []string {
	out := append(slices.Clone(s.DiskNodes), s.RAMNodes...)
	sort.Strings(out)
	return slices.Compact(out)
}

// rabbitProbe is what one probe of a host learnt.
type rabbitProbe struct {
	Host      string
	Node      string
	Cookie    string // sha256 of the cookie, hex; never the cookie
	Status    *clusterStatus
	StatusErr string
	Policies  map[string]policyState
}

func (p rabbitProbe) running() bool {
	return p.Status != nil && slices.Contains(p.Status.RunningNodes, p.Node)
}

func (p rabbitProbe) version() string {
	if p.Status != nil {
		if v, ok := p.Status.Versions[p.Node]; ok && v.RabbitMQ != "" {
			return v.RabbitMQ
		}
	}
	return "unknown"
}

// Validate implements modules.Validator.
func (m *RabbitJoin) Validate() error {
	if m.Seed == "" {
		return modules.ArgErrorf("seed", "name the inventory host whose node the others join")
	}
	if m.Service != "" && m.Container != "" {
		return modules.ArgErrorf("container", "set service or container, not both")
	}
	switch m.NodeType {
	case "", "disc", "ram":
	default:
		return modules.ArgErrorf("node_type", "want disc or ram, got %q", m.NodeType)
	}
	if _, err := duration("join_timeout", m.JoinTimeout, 0); err != nil {
		return err
	}
	if _, err := duration("start_within", m.StartWithin, 0); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, p := range m.Policies {
		if seen[p.Name] {
			return modules.ArgErrorf("policy", "policy %q is given twice", p.Name)
		}
		seen[p.Name] = true
		if p.Pattern == "" {
			return modules.ArgErrorf("policy", "policy %q: pattern is empty", p.Name)
		}
		switch p.ApplyTo {
		case "", "all", "queues", "exchanges", "classic_queues", "quorum_queues", "streams":
		default:
			return modules.ArgErrorf("policy", "policy %q: apply_to %q: want queues, exchanges or all", p.Name, p.ApplyTo)
		}
		if _, err := p.definitionJSON(); err != nil {
			return modules.ArgErrorf("policy", "policy %q: definition: %v", p.Name, err)
		}
	}
	return nil
}

// HostArgs implements modules.HostNamer: the seed is an inventory host.
func (m *RabbitJoin) HostArgs() map[string][]string {
	return map[string][]string{"seed": {m.Seed}}
}

func (m *RabbitJoin) target() target { return target{Service: m.Service, Container: m.Container} }

func (m *RabbitJoin) timeout() time.Duration {
	d, _ := duration("join_timeout", m.JoinTimeout, 180*time.Second)
	return d
}

func (m *RabbitJoin) vhost() string {
	if m.Vhost == "" {
		return "/"
	}
	return m.Vhost
}

func (p RabbitPolicy) definitionJSON() (string, error) {
	v := p.Definition
	if v.IsNull() || !v.IsKnown() {
		return "", errors.New("want an object of keys and values")
	}
	if !v.Type().IsObjectType() && !v.Type().IsMapType() {
		return "", fmt.Errorf("want an object of keys and values, got %s", v.Type().FriendlyName())
	}
	b, err := ctyjson.Marshal(v, v.Type())
	if err != nil {
		return "", err
	}
	return canonicalJSON(b)
}

func (p RabbitPolicy) applyTo() string {
	if p.ApplyTo == "" {
		return "all"
	}
	return p.ApplyTo
}

// canonicalJSON re-encodes a JSON object with sorted keys; a JSON string
// holding an object (older list_policies) is unwrapped first.
func canonicalJSON(b []byte) (string, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return "", err
	}
	if s, ok := v.(string); ok {
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			return "", err
		}
	}
	if _, ok := v.(map[string]any); !ok {
		return "", fmt.Errorf("want a JSON object, got %s", b)
	}
	out, err := json.Marshal(v) // maps marshal with sorted keys
	return string(out), err
}

func (p *policyState) String() string {
	if p == nil {
		return "(absent)"
	}
	def, err := canonicalJSON(p.Definition)
	if err != nil {
		def = string(p.Definition)
	}
	return fmt.Sprintf("pattern=%q apply-to=%s priority=%d definition=%s", p.Pattern, p.ApplyTo, p.Priority, def)
}

// ---------------------------------------------------------------- check ---

// identScript prints the node's name and its cookie's sha256 (never the
// cookie) as the @@node and @@cookie sections, and leaves in $n the name,
// in $nf erl_call's flag for it and in $c the cookie's file (or none).
const identScript = `if [ "${RABBITMQ_USE_LONGNAME:-}" = true ]; then h=$(hostname -f); nf=-name; else h=$(hostname -s); nf=-sname; fi
n=${RABBITMQ_NODENAME:-rabbit}; case $n in *@*) ;; *) n=$n@$h ;; esac; echo @@node; echo "$n"
c=none; for f in /var/lib/rabbitmq/.erlang.cookie "$HOME/.erlang.cookie"; do if [ -r "$f" ]; then c=$f; break; fi; done
echo @@cookie; if [ "$c" = none ]; then echo none; else sha256sum <"$c" | cut -c1-64; fi
`

// probeDepth says how much a probe asks: each rabbitmqctl call boots an
// Erlang VM (about a second of CPU), the name and cookie are a shell away,
// and erl_call asks the running node itself in milliseconds.
type probeDepth int

const (
	probeName     probeDepth = iota // node name and cookie hash
	probeQuick                      // and erl_call's status (and policies on the seed)
	probeStatus                     // node name, cookie hash and cluster_status
	probePolicies                   // and list_policies of the vhost
)

// probeScript reads what depth asks for in one remote script, with one
// docker exec for the name, the cookie and erl_call.
func (m *RabbitJoin) probeScript(depth probeDepth) string {
	inner := identScript
	if depth == probeQuick {
		inner += quickScript(m.quickExpr())
	}
	var b strings.Builder
	b.WriteString(m.target().prelude())
	b.WriteString("rq sh -c " + remote.Quote(inner) + "\n")
	if depth >= probeStatus {
		b.WriteString("echo @@status\nrq rabbitmqctl -q cluster_status --formatter json; echo @@status_rc; echo $?\n")
	}
	if depth >= probePolicies {
		b.WriteString("echo @@policies\nrq rabbitmqctl -q list_policies -p " + remote.Quote(m.vhost()) +
			" --formatter json; echo @@policies_rc; echo $?\n")
	}
	return b.String()
}

// quickScript runs expr with erl_call on the node identScript named, as a
// hidden C node that reads the cookie from its file (never argv). Without
// erl_call or a readable cookie it prints nothing, which reads as no
// answer.
func quickScript(expr string) string {
	return `echo @@quick
e=$(command -v erl_call || ls /usr/lib/erlang/lib/erl_interface-*/bin/erl_call /usr/local/lib/erlang/lib/erl_interface-*/bin/erl_call 2>/dev/null | head -n 1)
if [ -n "$e" ] && [ "$c" != none ]; then printf '%s\n' ` + remote.Quote(expr) + ` | HOME=${c%/*} "$e" "$nf" "$n" -timeout 5 -e 2>&1 || true; fi
`
}

// quickExpr is the Erlang that erl_call evaluates on the node: what
// rabbitmqctl cluster_status reads (rabbit_mnesia:status/0, given only
// while the rabbit app runs), the release, and on the seed the vhost's
// policies as list_policies shows them, all as hex of JSON, which
// erl_call prints whole and unescaped.
func (m *RabbitJoin) quickExpr() string {
	var b strings.Builder
	b.WriteString(`R = rabbit:is_running(), S = case R of true -> rabbit_mnesia:status(); false -> [] end, N = proplists:get_value(nodes, S, []), `)
	b.WriteString(`binary_to_list(binary:encode_hex(rabbit_json:encode(#{is_running => R, version => list_to_binary(rabbit_misc:version()), `)
	b.WriteString(`running_nodes => proplists:get_value(running_nodes, S, []), disk_nodes => proplists:get_value(disc, N, []), ram_nodes => proplists:get_value(ram, N, [])`)
	if m.self == m.Seed && len(m.Policies) > 0 {
		// The vhost as byte values: no quoting of the user's text.
		vh := make([]string, 0, len(m.vhost()))
		for _, c := range []byte(m.vhost()) {
			vh = append(vh, strconv.Itoa(int(c)))
		}
		b.WriteString(`, policies => [maps:from_list(P) || P <- rabbit_policy:list_formatted(list_to_binary([` + strings.Join(vh, ",") + `]))]`)
	}
	b.WriteString(`}))).`)
	return b.String()
}

// quickAnswer is what quickExpr returns.
type quickAnswer struct {
	IsRunning    bool          `json:"is_running"`
	Version      string        `json:"version"`
	RunningNodes []string      `json:"running_nodes"`
	DiskNodes    []string      `json:"disk_nodes"`
	RAMNodes     []string      `json:"ram_nodes"`
	Policies     []policyState `json:"policies"`
}

func (q quickAnswer) status(node string) *clusterStatus {
	return &clusterStatus{RunningNodes: q.RunningNodes, DiskNodes: q.DiskNodes, RAMNodes: q.RAMNodes,
		Versions: map[string]nodeVersion{node: {RabbitMQ: q.Version}}}
}

// parseQuick reads erl_call's `{ok, "HEX"}`; anything else (no erl_call,
// a node down, an error, a release without these functions) is no answer.
func parseQuick(out string) (quickAnswer, bool) {
	var q quickAnswer
	out = strings.TrimSpace(out)
	if !strings.HasPrefix(out, "{ok,") {
		return q, false
	}
	i, j := strings.IndexByte(out, '"'), strings.LastIndexByte(out, '"')
	if i < 0 || j <= i {
		return q, false
	}
	raw, err := hex.DecodeString(out[i+1 : j])
	if err != nil || json.Unmarshal(raw, &q) != nil {
		return q, false
	}
	return q, true
}

func (m *RabbitJoin) runProbe(ctx context.Context, c modules.Conn, host string, depth probeDepth) (rabbitProbe, error) {
	p := rabbitProbe{Host: host}
	res, err := c.Run(ctx, m.probeScript(depth))
	if err != nil {
		return p, fmt.Errorf("%s: probe rabbitmq in %s: %w", host, m.target(), err)
	}
	if res.ExitCode == 97 {
		return p, fmt.Errorf("%s: %w: %s", host, errNotRunning, remote.TrimOutput(res.Stderr))
	}
	if !res.OK() {
		return p, res.Err(host + ": probe rabbitmq in " + m.target().String())
	}
	s := sections(res.Stdout)
	p.Node = strings.TrimSpace(s["node"])
	p.Cookie = strings.TrimSpace(s["cookie"])
	if depth == probeQuick {
		if q, ok := parseQuick(s["quick"]); ok && q.IsRunning {
			p.Status = q.status(p.Node)
			p.Policies = map[string]policyState{}
			for _, ps := range q.Policies {
				p.Policies[ps.Name] = ps
			}
		}
		return p, nil
	}
	if depth < probeStatus {
		return p, nil
	}
	var st clusterStatus
	// A node whose app is stopped answers exit 0 without a status.
	if strings.TrimSpace(s["status_rc"]) == "0" && json.Unmarshal([]byte(jsonPart(s["status"])), &st) == nil {
		p.Status = &st
	} else {
		p.StatusErr = strings.TrimSpace(remote.TrimOutput(s["status"] + "\n" + lastLines(res.Stderr, 5)))
		if p.StatusErr == "" {
			p.StatusErr = "cluster_status gave no status"
		}
	}
	if depth >= probePolicies {
		if strings.TrimSpace(s["policies_rc"]) != "0" {
			return p, fmt.Errorf("%s: list_policies on %s: %s", host, p.Node, remote.TrimOutput(s["policies"]+"\n"+lastLines(res.Stderr, 5)))
		}
		var list []policyState
		if j := jsonPart(s["policies"]); j != "" {
			if err := json.Unmarshal([]byte(j), &list); err != nil {
				return p, fmt.Errorf("%s: read list_policies of %s: %w", host, p.Node, err)
			}
		}
		p.Policies = map[string]policyState{}
		for _, ps := range list {
			p.Policies[ps.Name] = ps
		}
	}
	return p, nil
}

// jsonPart is the output from its first line that starts a JSON value.
func jsonPart(s string) string {
	for i, line := range strings.Split(s, "\n") {
		if t := strings.TrimSpace(line); strings.HasPrefix(t, "{") || strings.HasPrefix(t, "[") {
			return strings.Join(strings.Split(s, "\n")[i:], "\n")
		}
	}
	return ""
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Check implements modules.Module. With start_within it probes again
// while this node or the seed is not running yet.
func (m *RabbitJoin) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	within, _ := duration("start_within", m.StartWithin, 0)
	deadline := time.Now().Add(within)
	for {
		ch, err := m.check(ctx, c)
		if err == nil || !errors.Is(err, errNotRunning) || time.Now().After(deadline) {
			return ch, err
		}
		if err := sleepCtx(ctx, 2*time.Second); err != nil {
			return nil, err
		}
	}
}

// errNotRunning marks errors that a node still starting explains.
var errNotRunning = errors.New("not running")

func (m *RabbitJoin) check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	m.self = selfName(m.Peers(), c)
	if m.self == m.Seed {
		return m.checkSeed(ctx, c)
	}
	sc, err := peerConn(ctx, m.Peers(), c, m.Seed)
	if err != nil {
		return nil, fmt.Errorf("rabbit_join: seed: %w", err)
	}
	var (
		wg   sync.WaitGroup
		serr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.seed, serr = m.runProbe(ctx, sc, m.Seed, probeName)
	}()
	m.probe, err = m.runProbe(ctx, c, m.self, probeQuick)
	wg.Wait()
	if err != nil {
		return nil, fmt.Errorf("rabbit_join: %w", err)
	}
	if serr != nil {
		return nil, fmt.Errorf("rabbit_join: seed: %w", serr)
	}
	// A node that runs with the seed in its cluster has joined, and the
	// seed's own status (an Erlang VM per peer on the seed) is not needed.
	if m.joinedSeed() {
		return nil, nil
	}
	// Anything else, or no quick answer, is asked of rabbitmqctl, whose
	// answers the change and its refusals are built from.
	if m.probe, err = m.runProbe(ctx, c, m.self, probeStatus); err != nil {
		return nil, fmt.Errorf("rabbit_join: %w", err)
	}
	if m.joinedSeed() {
		return nil, nil
	}
	if m.seed, err = m.runProbe(ctx, sc, m.Seed, probeStatus); err != nil {
		return nil, fmt.Errorf("rabbit_join: seed: %w", err)
	}
	if err := m.seedRunning(); err != nil {
		return nil, err
	}
	return m.checkJoin()
}

// joinedSeed reports whether this node's own status shows it running in
// the seed's cluster, and then keeps the running nodes for Output.
func (m *RabbitJoin) joinedSeed() bool {
	st := m.probe.Status
	if m.probe.running() && slices.Contains(st.RunningNodes, m.seed.Node) && slices.Contains(st.members(), m.seed.Node) {
		m.running = slices.Sorted(slices.Values(st.RunningNodes))
		return true
	}
	return false
}

// checkSeed keeps the policies on the seed. erl_call's answer settles a
// running seed whose policies are as wanted; otherwise rabbitmqctl is
// asked, and the change or refusal is built from its answers.
func (m *RabbitJoin) checkSeed(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	quick, err := m.runProbe(ctx, c, m.self, probeQuick)
	if err != nil {
		return nil, fmt.Errorf("rabbit_join: %w", err)
	}
	if quick.running() {
		m.seed, m.probe = quick, quick
		if ch, err := m.checkPolicies(); err == nil && ch == nil {
			m.running = slices.Sorted(slices.Values(quick.Status.RunningNodes))
			return nil, nil
		}
	}
	depth := probeStatus
	if len(m.Policies) > 0 {
		depth = probePolicies
	}
	seed, err := m.runProbe(ctx, c, m.self, depth)
	if err != nil {
		return nil, fmt.Errorf("rabbit_join: %w", err)
	}
	m.seed, m.probe = seed, seed
	if err := m.seedRunning(); err != nil {
		return nil, err
	}
	m.running = slices.Sorted(slices.Values(seed.Status.RunningNodes))
	return m.checkPolicies()
}

func (m *RabbitJoin) seedRunning() error {
	if !m.seed.running() {
		why := m.seed.StatusErr
		if why == "" && m.seed.Status != nil {
			why = "running nodes: " + strings.Join(m.seed.Status.RunningNodes, ", ")
		}
		return fmt.Errorf("rabbit_join: seed node %s on %s is %w (%s); start it before nodes join it", m.seed.Node, m.Seed, errNotRunning, why)
	}
	return nil
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func (m *RabbitJoin) checkJoin() (*modules.Change, error) {
	self, seed := m.probe, m.seed
	if self.Status == nil {
		return nil, fmt.Errorf("rabbit_join: node %s on %s (%s) is %w: %s", self.Node, m.self, m.target(), errNotRunning, self.StatusErr)
	}
	seedMembers := seed.Status.members()
	if slices.Contains(seed.Status.RunningNodes, self.Node) && slices.Contains(self.Status.members(), seed.Node) {
		m.running = slices.Sorted(slices.Values(seed.Status.RunningNodes))
		return nil, nil
	}
	if self.Cookie != seed.Cookie {
		return nil, fmt.Errorf("rabbit_join: the Erlang cookie of %s on %s (sha256 %s…) differs from the seed %s on %s (sha256 %s…); "+
			"every node needs the seed's cookie (the rabbitmq_erlang_cookie secret) — the node was not touched",
			self.Node, m.self, shortHash(self.Cookie), seed.Node, m.Seed, shortHash(seed.Cookie))
	}
	b := rabbitBefore{Action: "join", Node: self.Node, SeedHost: m.Seed, SeedNode: seed.Node, Service: m.Service, Container: m.Container}
	var others []string
	for _, n := range self.Status.members() {
		if n != self.Node {
			others = append(others, n)
		}
	}
	b.OldCluster = others
	if len(others) > 0 && !slices.Contains(others, seed.Node) {
		if !m.ForceReset {
			return nil, fmt.Errorf("rabbit_join: node %s on %s belongs to another cluster (%s, with %s), not to the cluster of seed %s (%s); "+
				"set force_reset = true to reset it (its data there is lost) and join",
				self.Node, m.self, self.Status.ClusterName, strings.Join(others, ", "), seed.Node, strings.Join(seedMembers, ", "))
		}
		b.Reset = true
	}
	if slices.Contains(seedMembers, self.Node) && !slices.Contains(self.Status.members(), seed.Node) {
		b.Stale = true
	}
	m.wouldJoin = true
	typ := m.NodeType
	if typ == "" {
		typ = "disc"
	}
	summary := fmt.Sprintf("join %s to the cluster of %s as %s node", self.Node, seed.Node, typ)
	if b.Reset {
		summary = fmt.Sprintf("reset %s (leaves %s) and join the cluster of %s as %s node", self.Node, strings.Join(others, ", "), seed.Node, typ)
	}
	if slices.Contains(seedMembers, self.Node) && slices.Contains(self.Status.members(), seed.Node) {
		summary = fmt.Sprintf("start %s again in the cluster of %s", self.Node, seed.Node)
	}
	ch := modules.Changef("%s", summary)
	if err := ch.SetBefore(b); err != nil {
		return nil, err
	}
	after := append(slices.Clone(seedMembers), self.Node)
	sort.Strings(after)
	ch.Diff = &modules.Diff{Label: "rabbitmq cluster of " + seed.Node,
		Before: "running: " + strings.Join(seed.Status.RunningNodes, ", ") + "\n",
		After:  "running: " + strings.Join(slices.Compact(after), ", ") + "\n"}
	return ch, nil
}

// policyKeyNeeds names, for policy keys that older servers reject, the
// release that first accepts them.
var policyKeyNeeds = map[string]string{
	"queue-type":                    "a release newer than 3.10 that accepts it (on 3.10 a queue's type is set when it is declared: x-queue-type=quorum)",
	"max-age":                       "3.9",
	"stream-max-segment-size-bytes": "3.9",
	"dead-letter-strategy":          "3.10",
	"queue-version":                 "3.10",
}

// versionBelow reports whether version v is older than want ("3.10").
func versionBelow(v, want string) bool {
	parse := func(s string) []int {
		var out []int
		for _, f := range strings.SplitN(s, ".", 3) {
			n, err := strconv.Atoi(strings.TrimFunc(f, func(r rune) bool { return r < '0' || r > '9' }))
			if err != nil {
				return nil
			}
			out = append(out, n)
		}
		return out
	}
	a, b := parse(v), parse(want)
	if a == nil || b == nil {
		return false
	}
	for i := range b {
		if i >= len(a) || a[i] != b[i] {
			return i < len(a) && a[i] < b[i]
		}
	}
	return false
}

// keyTooNew is the error for a policy key the server does not accept.
func keyTooNew(policy, key, version, node string) error {
	need := policyKeyNeeds[key]
	switch {
	case need == "":
		need = "a RabbitMQ release newer than " + version
	case need[0] >= '0' && need[0] <= '9':
		need = "RabbitMQ " + need + " or later"
	}
	return fmt.Errorf("rabbit_join: policy %q: key %q is not accepted by RabbitMQ %s on %s; it needs %s", policy, key, version, node, need)
}

func (m *RabbitJoin) checkPolicies() (*modules.Change, error) {
	if len(m.Policies) == 0 {
		return nil, nil
	}
	version := m.seed.version()
	b := rabbitBefore{Action: "policies", SeedHost: m.Seed, SeedNode: m.seed.Node, Policies: map[string]*policyState{}, Vhost: m.vhost(),
		Service: m.Service, Container: m.Container}
	var names, before, after []string
	for _, p := range m.Policies {
		def, _ := p.definitionJSON()
		var keys map[string]any
		_ = json.Unmarshal([]byte(def), &keys)
		for _, k := range slices.Sorted(mapKeys(keys)) {
			need, ok := policyKeyNeeds[k]
			if !ok {
				continue
			}
			// A release number is checked; other keys are refused up to
			// 3.10, newer servers are left to say so themselves.
			if numeric := need[0] >= '0' && need[0] <= '9'; (numeric && versionBelow(version, need)) || (!numeric && versionBelow(version, "3.11")) {
				return nil, keyTooNew(p.Name, k, version, m.seed.Node)
			}
		}
		want := &policyState{Name: p.Name, Pattern: p.Pattern, ApplyTo: p.applyTo(), Definition: json.RawMessage(def), Priority: p.Priority}
		var old *policyState
		if cur, ok := m.seed.Policies[p.Name]; ok {
			old = &cur
		}
		if old != nil && samePolicy(old, want) {
			continue
		}
		names = append(names, p.Name)
		b.Policies[p.Name] = old
		before = append(before, "policy "+p.Name+": "+old.String())
		after = append(after, "policy "+p.Name+": "+want.String())
	}
	if len(names) == 0 {
		return nil, nil
	}
	var parts []string
	for i, n := range names {
		parts = append(parts, fmt.Sprintf("%s: %s → %s", n, strings.TrimPrefix(before[i], "policy "+n+": "), strings.TrimPrefix(after[i], "policy "+n+": ")))
	}
	ch := modules.Changef("set policy %s on vhost %s", strings.Join(parts, "; "), m.vhost())
	if err := ch.SetBefore(b); err != nil {
		return nil, err
	}
	ch.Diff = &modules.Diff{Label: "rabbitmq policies of " + m.seed.Node + " vhost " + m.vhost(),
		Before: strings.Join(before, "\n") + "\n", After: strings.Join(after, "\n") + "\n"}
	return ch, nil
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func samePolicy(a, b *policyState) bool {
	if a.Pattern != b.Pattern || a.ApplyTo != b.ApplyTo || a.Priority != b.Priority {
		return false
	}
	var da, db any
	if json.Unmarshal(a.Definition, &da) != nil || json.Unmarshal(b.Definition, &db) != nil {
		return false
	}
	if s, ok := da.(string); ok {
		_ = json.Unmarshal([]byte(s), &da)
	}
	return reflect.DeepEqual(da, db)
}

// ---------------------------------------------------------------- apply ---

// Apply implements modules.Module.
func (m *RabbitJoin) Apply(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	var b rabbitBefore
	if err := ch.DecodeBefore(&b); err != nil {
		return err
	}
	switch b.Action {
	case "policies":
		return m.applyPolicies(ctx, c, b)
	case "join":
		return m.applyJoin(ctx, c, b)
	}
	return fmt.Errorf("rabbit_join: unknown action %q", b.Action)
}

var unrecognisedKey = regexp.MustCompile(`\{<<"([^"]+)">>,`)

func (m *RabbitJoin) setPolicy(ctx context.Context, c modules.Conn, vhost string, p *policyState) error {
	def, err := canonicalJSON(p.Definition)
	if err != nil {
		return fmt.Errorf("rabbit_join: policy %q: %w", p.Name, err)
	}
	cmd := m.target().prelude() + "rq rabbitmqctl -q set_policy -p " + remote.Quote(vhost) + " --priority " + strconv.Itoa(p.Priority) +
		" --apply-to " + remote.Quote(p.ApplyTo) + " " + remote.Quote(p.Name) + " " + remote.Quote(p.Pattern) + " " + remote.Quote(def) + " 2>&1"
	res, err := c.Run(ctx, cmd)
	if err != nil {
		return fmt.Errorf("rabbit_join: %s: set_policy %s: %w", c.Host(), p.Name, err)
	}
	if !res.OK() {
		if strings.Contains(res.Stdout, "not recognised policy settings") {
			if k := unrecognisedKey.FindStringSubmatch(res.Stdout); k != nil {
				return keyTooNew(p.Name, k[1], m.seed.version(), m.seed.Node)
			}
		}
		return fmt.Errorf("rabbit_join: %s: set_policy %s: exit %d: %s", c.Host(), p.Name, res.ExitCode, remote.TrimOutput(res.Stdout+res.Stderr))
	}
	return nil
}

func (m *RabbitJoin) applyPolicies(ctx context.Context, c modules.Conn, b rabbitBefore) error {
	for _, p := range m.Policies {
		if _, changed := b.Policies[p.Name]; !changed {
			continue
		}
		def, _ := p.definitionJSON()
		want := &policyState{Name: p.Name, Pattern: p.Pattern, ApplyTo: p.applyTo(), Definition: json.RawMessage(def), Priority: p.Priority}
		if err := m.setPolicy(ctx, c, b.Vhost, want); err != nil {
			return err
		}
	}
	return nil
}

// joinLock is the lock directory on the seed host that orders joins.
const joinLock = "/tmp/iklim-rabbit-join.lock"

// lockSeed takes the join lock on the seed host: one membership change at
// a time across hosts and iklim processes. A lock older than twice the
// join timeout is a leftover of a killed run and is broken.
func (m *RabbitJoin) lockSeed(ctx context.Context, sc modules.Conn) (func(), error) {
	stale := int(2*m.timeout()/time.Minute) + 1
	script := fmt.Sprintf(`mkdir %[1]s 2>/dev/null && { echo got; exit 0; }
[ -z "$(find %[1]s -maxdepth 0 -mmin +%[2]d 2>/dev/null)" ] || rmdir %[1]s 2>/dev/null
echo busy`, joinLock, stale)
	deadline := time.Now().Add(m.timeout())
	for {
		res, err := sc.Run(ctx, script)
		if err != nil {
			return nil, fmt.Errorf("rabbit_join: join lock on %s: %w", m.Seed, err)
		}
		if strings.TrimSpace(res.Stdout) == "got" {
			return func() {
				_, _ = sc.Run(context.WithoutCancel(ctx), "rmdir "+joinLock)
			}, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("rabbit_join: %s waited %s for its turn to join (lock %s on %s held by another join)", m.self, m.timeout(), joinLock, m.Seed)
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			return nil, err
		}
	}
}

func (m *RabbitJoin) ctl(ctx context.Context, c modules.Conn, host, what string, args ...string) error {
	res, err := c.Run(ctx, m.target().prelude()+"rq rabbitmqctl -q "+remote.Join(args)+" 2>&1")
	if err != nil {
		return fmt.Errorf("%s: rabbitmqctl %s: %w", host, what, err)
	}
	if !res.OK() {
		return fmt.Errorf("%s: rabbitmqctl %s: exit %d: %s", host, what, res.ExitCode, remote.TrimOutput(res.Stdout+res.Stderr))
	}
	return nil
}

func (m *RabbitJoin) applyJoin(ctx context.Context, c modules.Conn, b rabbitBefore) error {
	sc, err := peerConn(ctx, m.Peers(), c, m.Seed)
	if err != nil {
		return fmt.Errorf("rabbit_join: seed: %w", err)
	}
	unlock, err := m.lockSeed(ctx, sc)
	if err != nil {
		return err
	}
	defer unlock()
	if err := m.ctl(ctx, c, m.self, "stop_app", "stop_app"); err != nil {
		return fmt.Errorf("rabbit_join: %w", err)
	}
	// From here on a failure starts the app again, so the node is left
	// running as it was (or standalone after a reset).
	fail := func(err error) error {
		if serr := m.ctl(context.WithoutCancel(ctx), c, m.self, "start_app", "start_app"); serr != nil {
			err = fmt.Errorf("%w; start_app after the failure: %v", err, serr)
		}
		return fmt.Errorf("rabbit_join: %w", err)
	}
	rejoin := slices.Contains(m.seed.Status.members(), b.Node) && slices.Contains(m.probe.Status.members(), b.SeedNode)
	if !rejoin {
		if b.Reset {
			if err := m.ctl(ctx, c, m.self, "reset", "reset"); err != nil {
				if err := m.ctl(ctx, c, m.self, "force_reset", "force_reset"); err != nil {
					return fail(err)
				}
			}
		}
		if b.Stale {
			if err := m.ctl(ctx, sc, m.Seed, "forget_cluster_node", "forget_cluster_node", b.Node); err != nil && !strings.Contains(err.Error(), "not_a_cluster_node") {
				return fail(err)
			}
		}
		args := []string{"join_cluster"}
		if m.NodeType == "ram" {
			args = append(args, "--ram")
		}
		if err := m.ctl(ctx, c, m.self, "join_cluster "+b.SeedNode, append(args, b.SeedNode)...); err != nil {
			return fail(err)
		}
	}
	if err := m.ctl(ctx, c, m.self, "start_app", "start_app"); err != nil {
		return fmt.Errorf("rabbit_join: %w", err)
	}
	return m.waitRunning(ctx, c, sc, b.Node)
}

// waitRunning polls the seed (sc) until node is one of its running nodes;
// c is the step's own Conn, which reports the wait.
func (m *RabbitJoin) waitRunning(ctx context.Context, c, sc modules.Conn, node string) error {
	start := time.Now()
	deadline := start.Add(m.timeout())
	for {
		p, err := m.runProbe(ctx, sc, m.Seed, probeStatus)
		if err == nil && p.Status != nil && slices.Contains(p.Status.RunningNodes, node) {
			m.running = slices.Sorted(slices.Values(p.Status.RunningNodes))
			m.joined = true
			return nil
		}
		if time.Now().After(deadline) {
			got := "no status"
			if err != nil {
				got = err.Error()
			} else if p.Status != nil {
				got = "running: " + strings.Join(p.Status.RunningNodes, ", ")
			}
			return fmt.Errorf("rabbit_join: %s did not run in the cluster of %s within %s (%s)", node, m.seed.Node, m.timeout(), got)
		}
		modules.ReportStatus(c, modules.Status{Text: "waiting for " + node + " to run in the cluster of " + m.seed.Node, Since: start, Max: m.timeout()})
		if err := sleepCtx(ctx, time.Second); err != nil {
			return err
		}
	}
}

// ------------------------------------------------------------- rollback ---

// Rollback implements modules.Rollbacker: a joined node leaves the cluster
// (stop_app, reset, start_app; the seed forgets it), changed policies get
// their previous definition back (or are cleared when they were new). A
// node that was reset out of another cluster is left standalone: its old
// cluster's data is gone.
func (m *RabbitJoin) Rollback(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	var b rabbitBefore
	if err := ch.DecodeBefore(&b); err != nil {
		return err
	}
	if m.Service == "" && m.Container == "" {
		m.Service, m.Container = b.Service, b.Container
	}
	m.self = selfName(m.Peers(), c)
	switch b.Action {
	case "policies":
		for _, name := range slices.Sorted(mapKeys(b.Policies)) {
			old := b.Policies[name]
			if old == nil {
				if err := m.ctl(ctx, c, m.self, "clear_policy "+name, "clear_policy", "-p", b.Vhost, name); err != nil &&
					!strings.Contains(err.Error(), "not found") {
					return fmt.Errorf("rabbit_join rollback: %w", err)
				}
				continue
			}
			if err := m.setPolicy(ctx, c, b.Vhost, old); err != nil {
				return fmt.Errorf("rabbit_join rollback: %w", err)
			}
		}
		return nil
	case "join":
		return m.leave(ctx, c, b)
	}
	return fmt.Errorf("rabbit_join rollback: unknown action %q", b.Action)
}

func (m *RabbitJoin) leave(ctx context.Context, c modules.Conn, b rabbitBefore) error {
	self, err := m.runProbe(ctx, c, m.self, probeStatus)
	if errors.Is(err, errNotRunning) {
		return nil // no RabbitMQ task here any more (its stack was removed first)
	}
	if err != nil {
		return fmt.Errorf("rabbit_join rollback: %w", err)
	}
	if self.Status != nil && len(self.Status.members()) <= 1 {
		return nil // standalone already
	}
	sc, err := peerConn(ctx, m.Peers(), c, b.SeedHost)
	if err != nil {
		return fmt.Errorf("rabbit_join rollback: seed: %w", err)
	}
	unlock, err := m.lockSeed(ctx, sc)
	if err != nil {
		return fmt.Errorf("rabbit_join rollback: %w", err)
	}
	defer unlock()
	if err := m.ctl(ctx, c, m.self, "stop_app", "stop_app"); err != nil {
		return fmt.Errorf("rabbit_join rollback: %w", err)
	}
	// reset tells the other members; with none left to tell (the whole
	// cluster is being taken down) only force_reset can leave.
	if err := m.ctl(ctx, c, m.self, "reset", "reset"); err != nil {
		if ferr := m.ctl(ctx, c, m.self, "force_reset", "force_reset"); ferr != nil {
			return fmt.Errorf("rabbit_join rollback: %w; %v", err, ferr)
		}
	}
	if err := m.ctl(ctx, c, m.self, "start_app", "start_app"); err != nil {
		return fmt.Errorf("rabbit_join rollback: %w", err)
	}
	if b.SeedHost == m.self {
		return nil
	}
	seed, err := m.runProbe(ctx, sc, b.SeedHost, probeStatus)
	if err != nil || !seed.running() {
		return nil // the seed is gone too: nobody is left to forget the node
	}
	if seed.Status != nil && slices.Contains(seed.Status.members(), b.Node) {
		if err := m.ctl(ctx, sc, b.SeedHost, "forget_cluster_node "+b.Node, "forget_cluster_node", b.Node); err != nil {
			return fmt.Errorf("rabbit_join rollback: %w", err)
		}
	}
	return nil
}

// Output implements modules.Outputter: the node, the seed node and the
// cluster's running nodes.
func (m *RabbitJoin) Output() map[string]any {
	running := m.running
	if running == nil {
		running = []string{}
	}
	return map[string]any{"node": m.probe.Node, "seed_node": m.seed.Node, "running_nodes": running, "joined": m.joined, "would_join": m.wouldJoin}
}
