package docker

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/iklimco/iklim/modules"
)

// fakeConn answers commands by the first matching substring rule.
type fakeConn struct {
	name  string
	mu    sync.Mutex
	rules []fakeRule
	ran   []string
}

type fakeRule struct {
	match string
	res   modules.Result
}

func (f *fakeConn) Host() string { return f.name }

func (f *fakeConn) Run(_ context.Context, cmd string, _ ...modules.RunOption) (modules.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ran = append(f.ran, cmd)
	for _, r := range f.rules {
		if strings.Contains(cmd, r.match) {
			return r.res, nil
		}
	}
	return modules.Result{ExitCode: 127, Stderr: "fake: no rule for " + cmd}, nil
}

func (f *fakeConn) Upload(context.Context, string, io.Reader, fs.FileMode) error { return nil }
func (f *fakeConn) Download(context.Context, string, io.Writer) error            { return nil }

type fakePeers struct {
	self  modules.HostInfo
	hosts map[string]modules.HostInfo
	conns map[string]modules.Conn
	order []string
}

func (p fakePeers) Self() modules.HostInfo                   { return p.self }
func (p fakePeers) Lookup(n string) (modules.HostInfo, bool) { h, ok := p.hosts[n]; return h, ok }
func (p fakePeers) Hosts() []string                          { return p.order }
func (p fakePeers) Control() modules.HostInfo                { return modules.HostInfo{Name: "localhost"} }
func (p fakePeers) Serialize(string) func()                  { return func() {} }
func (p fakePeers) Conn(_ context.Context, n string) (modules.Conn, error) {
	if c, ok := p.conns[n]; ok {
		return c, nil
	}
	return nil, fmt.Errorf("no conn %s", n)
}

func infoJSON(state, node string, control bool, cluster string, managers ...string) string {
	var ms []string
	for _, m := range managers {
		ms = append(ms, fmt.Sprintf(`{"NodeID":"x","Addr":%q}`, m))
	}
	mj := "null"
	if len(ms) > 0 {
		mj = "[" + strings.Join(ms, ",") + "]"
	}
	return fmt.Sprintf(`{"state":%q,"node_id":%q,"node_addr":"","control":%v,"error":"","managers":%s,"cluster_id":%q}`,
		state, node, control, mj, cluster) + "\n"
}

// with hands m its Peers, as the runner does, and returns it.
func with[M modules.PeersUser](m M, p modules.Peers) M {
	m.UsePeers(p)
	return m
}

func swarmPeers(self string, conns map[string]*fakeConn) fakePeers {
	p := fakePeers{hosts: map[string]modules.HostInfo{}, conns: map[string]modules.Conn{}}
	addr := map[string]string{"lead": "10.0.0.1", "m2": "10.0.0.2", "w1": "10.0.0.3", "other": "10.9.9.9"}
	for n, c := range conns {
		p.hosts[n] = modules.HostInfo{Name: n, Address: addr[n]}
		p.conns[n] = c
		p.order = append(p.order, n)
	}
	p.self = p.hosts[self]
	return p
}

func TestSwarmInitCheck(t *testing.T) {
	leader := func() *fakeConn {
		return &fakeConn{name: "lead", rules: []fakeRule{
			{"docker info", modules.Result{Stdout: infoJSON("active", "L", true, "CLUSTER", "10.0.0.1:2377")}},
			{"docker node inspect --format '{{.ID}}' W1", modules.Result{Stdout: "W1\n"}},
			{"docker node inspect", modules.Result{ExitCode: 1, Stderr: "Error response from daemon: node X not found"}},
		}}
	}
	m := func() *SwarmInit { return &SwarmInit{Managers: []string{"lead", "m2"}, Workers: []string{"w1"}} }
	tests := []struct {
		name    string
		self    string
		info    string
		summary string // "" means no change
		err     string
	}{
		{name: "inactive worker joins", self: "w1", info: infoJSON("inactive", "", false, ""), summary: "join swarm of lead as worker (advertise 10.0.0.3)"},
		{name: "pending is not joined", self: "w1", info: infoJSON("pending", "", false, "", "10.0.0.1:2377"), summary: "finish pending join"},
		{name: "member worker ok", self: "w1", info: infoJSON("active", "W1", false, "")},
		{name: "manager of leader's cluster ok", self: "m2", info: infoJSON("active", "M2", true, "CLUSTER")},
		{name: "worker that should be manager", self: "m2", info: infoJSON("active", "W1", false, ""), summary: "promote m2 to manager"},
		{name: "manager that should be worker", self: "w1", info: infoJSON("active", "W1", true, "CLUSTER"), summary: "demote w1 to worker"},
		{name: "manager of another swarm", self: "m2", info: infoJSON("active", "M2", true, "OTHER", "10.9.9.9:2377"),
			err: "another swarm: cluster OTHER, managers 10.9.9.9:2377"},
		{name: "worker of another swarm, cluster id from its manager", self: "w1", info: infoJSON("active", "X", false, "", "10.9.9.9:2377"),
			err: "another swarm: cluster OTHERMGR, managers 10.9.9.9:2377"},
		{name: "locked", self: "w1", info: infoJSON("locked", "", false, ""), err: "locked"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conns := map[string]*fakeConn{
				"lead":  leader(),
				tc.self: {name: tc.self, rules: []fakeRule{{"docker info", modules.Result{Stdout: tc.info}}}},
				"other": {name: "other", rules: []fakeRule{{"docker info", modules.Result{Stdout: infoJSON("active", "O", true, "OTHERMGR")}}}},
			}
			ch, err := with(m(), swarmPeers(tc.self, conns)).Check(context.Background(), conns[tc.self])
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			if tc.summary == "" {
				require.Nil(t, ch)
				return
			}
			require.NotNil(t, ch)
			require.Contains(t, ch.Summary, tc.summary)
			require.NotContains(t, string(ch.Before), "SWMTKN")
		})
	}
}

func TestSwarmInitLeader(t *testing.T) {
	conns := map[string]*fakeConn{"lead": {name: "lead", rules: []fakeRule{{"docker info", modules.Result{Stdout: infoJSON("inactive", "", false, "")}}}}}
	ch, err := with(&SwarmInit{Managers: []string{"lead"}}, swarmPeers("lead", conns)).Check(context.Background(), conns["lead"])
	require.NoError(t, err)
	require.Equal(t, "init swarm on lead (advertise 10.0.0.1)", ch.Summary)

	conns["lead"].rules[0].res.Stdout = infoJSON("active", "L", false, "", "10.5.5.5:2377")
	_, err = with(&SwarmInit{Managers: []string{"lead"}}, swarmPeers("lead", conns)).Check(context.Background(), conns["lead"])
	require.ErrorContains(t, err, "is a worker in a swarm managed by 10.5.5.5:2377")
}

func TestSwarmInitJoinMarksToken(t *testing.T) {
	token := "SWMTKN-1-abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmn-abcdefghijklmnopqrstuvwxy"
	lead := &fakeConn{name: "lead", rules: []fakeRule{
		{"docker info", modules.Result{Stdout: infoJSON("active", "L", true, "CLUSTER", "10.0.0.1:2377")}},
		{"join-token -q worker", modules.Result{Stdout: token + "\n"}},
		{"docker node inspect", modules.Result{Stdout: "W1\n"}},
	}}
	joined := false
	w1 := &fakeConn{name: "w1"}
	w1.rules = []fakeRule{{"docker swarm join", modules.Result{Stdout: "This node joined a swarm as a worker.\n"}}}
	conns := map[string]*fakeConn{"lead": lead, "w1": w1}
	secrets := modules.NewSecrets()
	ctx := context.Background()
	m := with(&SwarmInit{Managers: []string{"lead"}, Workers: []string{"w1"}, JoinTimeout: "3s"}, swarmPeers("w1", conns))
	m.UseSecrets(secrets)
	w1.rules = append(w1.rules, fakeRule{"docker info", modules.Result{Stdout: infoJSON("inactive", "", false, "")}})
	ch, err := m.Check(ctx, w1)
	require.NoError(t, err)
	require.NotNil(t, ch)
	// After the join the node reports active.
	w1.mu.Lock()
	w1.rules[1].res.Stdout = infoJSON("active", "W1", false, "")
	w1.mu.Unlock()
	joined = true
	require.NoError(t, m.Apply(ctx, w1, ch))
	require.True(t, joined)
	require.Equal(t, modules.Redacted, secrets.Redact(token))
	for _, cmd := range w1.ran {
		require.NotContains(t, cmd, token, "token goes through env, not the command")
	}
	out := m.Output()
	require.Equal(t, map[string]any{"cluster_id": "CLUSTER", "node_id": "W1", "role": "worker"}, out)
}

func TestSwarmInitValidate(t *testing.T) {
	require.Error(t, (&SwarmInit{}).Validate())
	require.ErrorContains(t, (&SwarmInit{Managers: []string{"a"}, Workers: []string{"a"}}).Validate(), "twice")
	require.ErrorContains(t, (&SwarmInit{Managers: []string{"a"}, JoinTimeout: "soon"}).Validate(), "join_timeout")
	require.NoError(t, (&SwarmInit{Managers: []string{"a"}, Workers: []string{"b"}, JoinTimeout: "90s"}).Validate())
}

func TestLabelUpdate(t *testing.T) {
	have := map[string]string{"type": "db", "old": "x", "same": "1"}
	want := map[string]string{"type": "service", "same": "1", "empty": ""}
	require.Equal(t, "docker node update --label-rm old --label-add empty= --label-add type=service N1", labelUpdate("N1", have, want))
	require.Equal(t, "+empty= +type=service -old", labelSummary(have, want))
	require.Empty(t, labelUpdate("N1", want, want))
}

func TestNodeLabelDesired(t *testing.T) {
	p := fakePeers{self: modules.HostInfo{Name: "h", Labels: map[string]string{"type": "service", "role": "app"}}}
	ctx := context.Background()
	cur := map[string]string{"keep": "1", "role": "old"}
	m := with(&NodeLabel{FromInventory: true, Labels: map[string]string{"role": "mine"}, Remove: []string{"keep"}}, p)
	require.Equal(t, map[string]string{"type": "service", "role": "mine"}, m.desired(ctx, cur))
	m = &NodeLabel{Mode: "replace", Labels: map[string]string{"a": ""}}
	require.Equal(t, map[string]string{"a": ""}, m.desired(ctx, cur))
	require.Error(t, (&NodeLabel{Mode: "add"}).Validate())
	require.Error(t, (&NodeLabel{}).Validate())
}

func TestNodeLabelCheckThroughManager(t *testing.T) {
	worker := &fakeConn{name: "w", rules: []fakeRule{{"docker info", modules.Result{Stdout: infoJSON("active", "W", false, "")}}}}
	mgr := &fakeConn{name: "m", rules: []fakeRule{
		{"docker info", modules.Result{Stdout: infoJSON("active", "M", true, "C")}},
		{"docker node inspect --format '{{json .Spec.Labels}}' W", modules.Result{Stdout: `{"type":"db"}` + "\n"}},
	}}
	p := fakePeers{self: modules.HostInfo{Name: "w"}, conns: map[string]modules.Conn{"w": worker, "m": mgr}, order: []string{"w", "m"}}
	ctx := context.Background()
	m := with(&NodeLabel{Labels: map[string]string{"type": "db"}}, p)
	ch, err := m.Check(ctx, worker)
	require.NoError(t, err)
	require.Nil(t, ch)
	m = with(&NodeLabel{Labels: map[string]string{"zone": "a"}, Mode: "replace"}, p)
	ch, err = m.Check(ctx, worker)
	require.NoError(t, err)
	require.Equal(t, "labels of node w: +zone=a -type", ch.Summary)
	var b nodeLabelBefore
	require.NoError(t, ch.DecodeBefore(&b))
	require.Equal(t, nodeLabelBefore{NodeID: "W", Manager: "m", Labels: map[string]string{"type": "db"}}, b)
}

func TestParseEnvFile(t *testing.T) {
	vars, err := parseEnvFile([]byte("# c\n\nA=1\nexport B='two words'\nC=\"q\"\nD=\nE=a=b\n"))
	require.NoError(t, err)
	require.Equal(t, map[string]string{"A": "1", "B": "two words", "C": "q", "D": "", "E": "a=b"}, vars)
	_, err = parseEnvFile([]byte("not a var\n"))
	require.ErrorContains(t, err, "line 1")
}

const mergedSample = `version: "3.8"
services:
  cache:
    command:
      - sh
      - -c
      - echo $HOME
    image: local/busybox:1
  web:
    deploy:
      replicas: 2
      placement:
        constraints:
          - node.labels.type == service
    environment:
      A: secret
      B: x$y
    image: local/busybox:1
networks:
  default: {}
`

func TestDeployConfigFiltersLabelsAndEscapes(t *testing.T) {
	out, err := deployConfig([]byte(mergedSample), map[string]string{"web": "H1"})
	require.NoError(t, err)
	var doc struct {
		Services map[string]struct {
			Deploy struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"deploy"`
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
		Networks map[string]any `yaml:"networks"`
	}
	require.NoError(t, yaml.Unmarshal(out, &doc))
	require.Len(t, doc.Services, 1, string(out))
	require.Equal(t, "H1", doc.Services["web"].Deploy.Labels[specHashLabel])
	require.Equal(t, "x$$y", doc.Services["web"].Environment["B"], "already interpolated: $ doubled for the second pass")
	require.Contains(t, doc.Networks, "default")
}

func TestMakePlan(t *testing.T) {
	m := &StackDeploy{Name: "s"}
	inspect := `[{"ID":"1","Version":{"Index":5},"UpdatedAt":"2026-01-01T00:00:00Z","Spec":{"Name":"s_web","Labels":{"com.docker.stack.namespace":"s"},
	 "TaskTemplate":{"ContainerSpec":{"Image":"local/busybox:1@sha256:abc","Env":["A=secret","B=x$y"]},"Placement":{"Constraints":["node.labels.type == service"]}},
	 "Mode":{"Replicated":{"Replicas":1}}}}]`
	cur, err := parseServiceInspect(inspect)
	require.NoError(t, err)
	plan, err := m.makePlan([]byte(mergedSample), cur)
	require.NoError(t, err)
	require.Len(t, plan, 2)
	require.Equal(t, "create", plan[0].Action)
	require.Equal(t, "s_cache", plan[0].Name)
	require.Equal(t, "update", plan[1].Action)
	require.Equal(t, []string{"replicas 1 → 2"}, plan[1].Reasons)
	require.NotContains(t, plan[1].after, "secret", "env values are fingerprinted")
	require.Contains(t, plan[1].after, "A=sha256:")

	// Same fields and the spec hash label: unchanged.
	cur["s_web"].Spec.Mode.Replicated.Replicas = ptr(uint64(2))
	cur["s_web"].Spec.Labels[specHashLabel] = plan[1].Hash
	plan, err = m.makePlan([]byte(mergedSample), cur)
	require.NoError(t, err)
	require.Equal(t, "unchanged", plan[1].Action)
	// Hash differs but compared fields agree: some other field changed.
	cur["s_web"].Spec.Labels[specHashLabel] = "old"
	plan, _ = m.makePlan([]byte(mergedSample), cur)
	require.Equal(t, []string{"spec"}, plan[1].Reasons)
}

func ptr[T any](v T) *T { return &v }

func TestSpecFingerprintIgnoresInspectDefaults(t *testing.T) {
	spec, err := os.ReadFile("testdata/swarm/spec_inspected.json")
	require.NoError(t, err)
	prev, err := os.ReadFile("testdata/swarm/spec_previous.json")
	require.NoError(t, err)
	require.NotEqual(t, string(spec), string(prev))
	require.Equal(t, compactSHA(spec), compactSHA(prev))
	changed := strings.Replace(string(prev), "sleep 3600", "sleep 60", 1)
	require.NotEqual(t, compactSHA(spec), compactSHA([]byte(changed)))
}

func TestServiceProbeVerdict(t *testing.T) {
	out := `{"ID":"a","Mode":"replicated","Name":"s_web","Replicas":"2/3 (max 1 per node)"}
{"ID":"b","Mode":"replicated","Name":"s_db","Replicas":"1/1"}
` + probeSep + `
{"name":"s_web","update":{"State":"paused","Message":"update paused due to failure","StartedAt":"2026-01-01T00:00:01Z"}}
{"name":"s_db","update":null}
` + probeSep + `
{"ID":"t1","Name":"s_web.1","Image":"x","Node":"n1","DesiredState":"Shutdown","CurrentState":"Failed 2 seconds ago","Error":"task: non-zero exit (1)"}
{"ID":"t0","Name":"s_web.1","Image":"x","Node":"n1","DesiredState":"Shutdown","CurrentState":"Failed 1 hour ago","Error":"old"}
`
	states, err := parseServiceProbe(out)
	require.NoError(t, err)
	require.Equal(t, 2, states["s_web"].Running)
	require.Equal(t, 3, states["s_web"].Desired)
	done, failure := states["s_web"].verdict(map[string]bool{"t0": true}, false)
	require.False(t, done)
	require.Equal(t, "service s_web: update paused: update paused due to failure; task s_web.1 on n1: task: non-zero exit (1)", failure)
	done, failure = states["s_db"].verdict(nil, false)
	require.True(t, done)
	require.Empty(t, failure)

	states["s_db"].Update = "rollback_completed"
	_, failure = states["s_db"].verdict(nil, false)
	require.Contains(t, failure, "rollback completed", "an auto-rollback is a failure even though docker exits 0")
	// One left over from an earlier update (a restored deploy) is not: the
	// service runs its previous spec and nothing is under way.
	done, failure = states["s_db"].verdict(nil, true)
	require.True(t, done)
	require.Empty(t, failure)
	states["s_db"].Update = "paused"
	_, failure = states["s_db"].verdict(nil, true)
	require.Contains(t, failure, "update paused", "a paused update always fails")

	// A new service whose tasks keep failing fails fast.
	s := &serviceState{Name: "s_new", Desired: 1, Tasks: []taskInfo{
		{ID: "1", Name: "s_new.1", CurrentState: "Rejected 1 second ago", Error: `"No such image: x:nope"`},
		{ID: "2", Name: "s_new.1", CurrentState: "Rejected 6 seconds ago"},
		{ID: "3", Name: "s_new.1", CurrentState: "Rejected 11 seconds ago"},
	}}
	_, failure = s.verdict(nil, false)
	require.Contains(t, failure, "3 new tasks failed")
	require.Contains(t, failure, "No such image")
}

func TestSwarmInfoParse(t *testing.T) {
	si, err := parseSwarmInfo("WARNING: something\n" + infoJSON("active", "N", true, "C", "1.2.3.4:2377"))
	require.NoError(t, err)
	require.Equal(t, "C", si.ClusterID)
	require.Equal(t, []string{"1.2.3.4:2377"}, si.managerAddrs())
	require.True(t, isTransient(fmt.Errorf("x: Error response from daemon: This node is not a swarm manager. Manager is being prepared")))
	require.True(t, isTransient(fmt.Errorf("iklim-app-01: docker node promote: exit 1: Error response from daemon: rpc error: code = Unknown desc = update out of sequence")))
	require.False(t, isTransient(fmt.Errorf("no such service")))
}

func TestRegistryArgs(t *testing.T) {
	for _, name := range []string{"swarm_init", "node_label", "stack_deploy", "docker_secret", "docker_config", "docker_network", "service_wait"} {
		info, ok := lookup(name)
		require.True(t, ok, name)
		require.NotEmpty(t, info.Args(), name)
	}
	info, _ := lookup("docker_config")
	require.Equal(t, "config", info.New().(*DockerSecret).kind)
	for _, a := range mustLookup(t, "stack_deploy").Args() {
		if a.Name == "env" {
			require.True(t, a.Sensitive)
		}
	}
	_ = time.Second
}

func mustLookup(t *testing.T, name string) modules.Info {
	i, ok := lookup(name)
	require.True(t, ok)
	return i
}

// lookup finds one of the family's modules, as the registry would.
func lookup(name string) (modules.Info, bool) {
	for _, i := range Modules() {
		if i.Name == name {
			return i, true
		}
	}
	return modules.Info{}, false
}

// A rollback_completed status left over from an earlier (restored) update
// does not fail a later wait; one that completes during the wait does.
func TestWaitConvergedOldRollback(t *testing.T) {
	probe := func(completed string) *fakeConn {
		return &fakeConn{name: "m", rules: []fakeRule{{"docker service ls", modules.Result{Stdout: `{"ID":"a","Mode":"replicated","Name":"s_cert","Replicas":"1/1"}
` + probeSep + `
{"name":"s_cert","update":{"State":"rollback_completed","Message":"rollback completed","StartedAt":"2026-01-01T00:00:00Z","CompletedAt":"` + completed + `"}}
` + probeSep + "\n"}}}}
	}
	o := waitOpts{timeout: 5 * time.Second, interval: 10 * time.Millisecond}
	_, err := waitConverged(context.Background(), probe("2026-01-01T00:00:05Z"), "", []string{"s_cert"}, o)
	require.NoError(t, err, "a rollback completed before the wait is history")

	// The update of a service this step deployed (fresh, started after its
	// previous UpdatedAt) that ends rolled back is a failure.
	o.fresh = map[string]time.Time{"s_cert": time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC)}
	_, err = waitConverged(context.Background(), probe("2026-01-01T00:00:05Z"), "", []string{"s_cert"}, o)
	require.ErrorContains(t, err, "rollback completed")

	// service_wait's check: nothing to wait for.
	m := &ServiceWait{Services: []string{"s_cert"}}
	ch, err := m.Check(context.Background(), probe("2026-01-01T00:00:05Z"))
	require.NoError(t, err)
	require.Nil(t, ch)
}

// The bootstrap leader's rollback waits while another host of the play is
// still a live node, and not for nodes that are down or not in the play.
func TestWaitPeersLeft(t *testing.T) {
	nodes := func(lines string) *fakeConn {
		return &fakeConn{name: "lead", rules: []fakeRule{{"docker node inspect", modules.Result{Stdout: lines}}}}
	}
	run := func(lead *fakeConn, wait time.Duration) time.Duration {
		p := swarmPeers("lead", map[string]*fakeConn{"lead": lead, "m2": {name: "m2"}, "w1": {name: "w1"}})
		start := time.Now()
		waitPeersLeft(context.Background(), p, lead, wait)
		return time.Since(start)
	}
	// Returning at once is told from waiting out a minute, so that a busy
	// machine cannot blur the two.
	self := "ready lead 10.0.0.1 10.0.0.1:2377\n"
	require.Less(t, run(nodes(self+"down m2 10.0.0.2 \ndown w1 10.0.0.3 \n"), time.Minute), 30*time.Second, "others are down")
	require.Less(t, run(nodes(self+"ready stranger 10.9.9.8 \n"), time.Minute), 30*time.Second, "not a host of the play")
	require.GreaterOrEqual(t, run(nodes(self+"ready node-7 0.0.0.0 10.0.0.2:2377\n"), 1500*time.Millisecond), 1500*time.Millisecond, "m2 (by manager address) is still a member")
	require.GreaterOrEqual(t, run(nodes(self+"ready w1 10.0.0.3 \n"), 1500*time.Millisecond), 1500*time.Millisecond, "w1 is still a member")
	require.Less(t, run(&fakeConn{name: "lead"}, time.Minute), 30*time.Second, "no answer: not a manager any more")
}

func TestSwarmLeaveBounded(t *testing.T) {
	conn := func(res modules.Result) *fakeConn {
		return &fakeConn{name: "m2", rules: []fakeRule{
			{"docker swarm leave", res},
			{"docker info", modules.Result{Stdout: infoJSON("inactive", "", false, "")}},
		}}
	}
	c := conn(modules.Result{})
	require.NoError(t, swarmLeave(context.Background(), c, true))
	require.Contains(t, c.ran[0], "timeout 60 docker swarm leave --force")
	require.NoError(t, swarmLeave(context.Background(), conn(modules.Result{ExitCode: 1, Stderr: "Error response from daemon: This node is not part of a swarm"}), false))
	err := swarmLeave(context.Background(), conn(modules.Result{ExitCode: 124}), false)
	require.ErrorContains(t, err, "did not return within 1m0s (node state now inactive)")
	err = swarmLeave(context.Background(), conn(modules.Result{ExitCode: 1, Stderr: "context deadline exceeded"}), false)
	require.ErrorContains(t, err, "context deadline exceeded")
}
