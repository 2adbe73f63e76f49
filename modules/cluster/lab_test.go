package cluster_test

// Lab tests of rabbit_join and sentinel_check against real RabbitMQ 3.10
// and Redis 7 servers in swarm tasks on the lab's app hosts (internal/lab).
// Each test function builds its own swarm (app-01 manager, app-02/03
// workers) and services with unique names, and removes them at the end;
// each subtest sets up the cluster state it needs. Run with:
//
//	IKLIM_LAB=required go test -race -count=1 -run Lab ./modules/cluster/
//
// The services use the host network: the lab's kernel has no IPVS and
// Docker 20.10 does not expand templates in network aliases, so node
// names are the hosts' own (rabbit@iklim-app-01, …), which the hosts'
// /etc/hosts resolve.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iklimco/iklim/internal/labtest"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/cluster"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zclconf/go-cty/cty"
)

var appHosts = []string{"iklim-app-01", "iklim-app-02", "iklim-app-03"}

// countConn counts the commands run through it, and those of them that
// call rabbitmqctl.
type countConn struct {
	modules.Conn
	n, ctl atomic.Int32
}

func (c *countConn) Run(ctx context.Context, cmd string, opts ...modules.RunOption) (modules.Result, error) {
	c.n.Add(1)
	if strings.Contains(cmd, "rabbitmqctl") {
		c.ctl.Add(1)
	}
	return c.Conn.Run(ctx, cmd, opts...)
}

type lab struct {
	lab     *labtest.Lab
	inv     *inventories.Inventory
	conns   map[string]modules.Conn
	secrets *modules.Secrets
	suffix  string
}

type peers struct {
	l    *lab
	self string
	// self is reached through this conn (a counting one, say)
	selfConn modules.Conn
}

func hostInfo(h *inventories.Host) modules.HostInfo {
	return modules.HostInfo{Name: h.Name, Address: h.Address, Labels: h.Labels, Groups: h.Groups}
}

func (p peers) Self() modules.HostInfo {
	h, _ := p.l.inv.Host(p.self)
	return hostInfo(h)
}

func (p peers) Lookup(name string) (modules.HostInfo, bool) {
	h, ok := p.l.inv.Host(name)
	if !ok {
		return modules.HostInfo{}, false
	}
	return hostInfo(h), true
}

func (p peers) Hosts() []string { return appHosts }

func (p peers) Conn(_ context.Context, name string) (modules.Conn, error) {
	c, ok := p.l.conns[name]
	if !ok {
		return nil, fmt.Errorf("no connection to %s", name)
	}
	return c, nil
}

func (p peers) Control() modules.HostInfo { return modules.HostInfo{Name: "localhost"} }

func (p peers) Serialize(string) func() { return func() {} }

// on wires m for host self as the runner would (the lab's Peers and the
// test's Secrets) and returns it.
func (l *lab) on(self string, m modules.Module) modules.Module {
	if pu, ok := m.(modules.PeersUser); ok {
		pu.UsePeers(peers{l: l, self: self})
	}
	if su, ok := m.(modules.SecretsUser); ok {
		su.UseSecrets(l.secrets)
	}
	return m
}

// ctx is the context of a module call on the lab.
func (l *lab) ctx(string) context.Context { return context.Background() }

// sh runs cmd on host and returns its trimmed stdout; failure fails t.
func (l *lab) sh(t *testing.T, host, cmd string) string {
	t.Helper()
	res, err := l.conns[host].Run(context.Background(), cmd)
	require.NoError(t, err)
	require.True(t, res.OK(), "%s: %s: exit %d: %s %s", host, cmd, res.ExitCode, res.Stderr, res.Stdout)
	return strings.TrimSpace(res.Stdout)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// swarmLab resets the lab's swarm and builds one of the three app hosts:
// iklim-app-01 the manager, the others workers. It is taken down at the end.
func swarmLab(t *testing.T) *lab {
	t.Helper()
	lb := labtest.Require(t)
	lb.LockSwarm(t)
	inv, diags := inventories.LoadStock("lab")
	require.False(t, diags.HasErrors(), diags.Error())
	conn := transport.NewSSHConnector(transport.SSHOptions{})
	t.Cleanup(func() { _ = conn.Close() })
	l := &lab{lab: lb, inv: inv, conns: map[string]modules.Conn{}, secrets: modules.NewSecrets(), suffix: randHex(3)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range appHosts {
		h, ok := inv.Host(name)
		require.True(t, ok, name)
		c, err := conn.Connect(ctx, h)
		require.NoError(t, err, name)
		l.conns[name] = c
	}
	lb.ResetSwarm(t)
	t.Cleanup(func() { lb.ResetSwarm(t) })
	l.sh(t, "iklim-app-01", "docker swarm init --advertise-addr 10.77.0.11 >/dev/null")
	token := l.sh(t, "iklim-app-01", "docker swarm join-token -q worker")
	var wg sync.WaitGroup
	for _, h := range appHosts[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := l.conns[h].Run(context.Background(), `docker swarm join --token "$T" 10.77.0.11:2377 >/dev/null`,
				modules.WithEnv(map[string]string{"T": token}))
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	require.Eventually(t, func() bool {
		out := l.sh(t, "iklim-app-01", "docker node ls --format '{{.Status}}' | grep -c Ready || true")
		return out == "3"
	}, 60*time.Second, time.Second, "three ready nodes")
	return l
}

// ------------------------------------------------------------- RabbitMQ ---

func rabbitStatus(t *testing.T, l *lab, host, svc string) (running, members []string) {
	t.Helper()
	out := l.sh(t, host, `docker exec $(docker ps -q --filter label=com.docker.swarm.service.name=`+svc+` --filter status=running | head -n1) rabbitmqctl -q cluster_status --formatter json 2>/dev/null`)
	var st struct {
		Disk    []string `json:"disk_nodes"`
		RAM     []string `json:"ram_nodes"`
		Running []string `json:"running_nodes"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	members = append(st.Disk, st.RAM...)
	sort.Strings(members)
	sort.Strings(st.Running)
	return st.Running, members
}

func rabbitctl(t *testing.T, l *lab, host, svc, args string) string {
	t.Helper()
	return l.sh(t, host, `docker exec $(docker ps -q --filter label=com.docker.swarm.service.name=`+svc+` --filter status=running | head -n1) rabbitmqctl -q `+args+` 2>/dev/null`)
}

var allNodes = []string{"rabbit@iklim-app-01", "rabbit@iklim-app-02", "rabbit@iklim-app-03"}

// standalone makes every node its own cluster again.
func standalone(t *testing.T, l *lab, svc string) {
	t.Helper()
	for _, h := range appHosts[1:] {
		if _, members := rabbitStatus(t, l, h, svc); len(members) > 1 {
			rabbitctl(t, l, h, svc, "stop_app")
			rabbitctl(t, l, h, svc, "reset")
			rabbitctl(t, l, h, svc, "start_app")
		}
	}
	for _, h := range appHosts {
		running, members := rabbitStatus(t, l, h, svc)
		require.Equal(t, []string{"rabbit@" + h}, members, h)
		require.Equal(t, []string{"rabbit@" + h}, running, h)
	}
}

type outcome struct {
	ch  *modules.Change
	err error
	out map[string]any
}

// step runs mk's module on hosts like the engine (Check, then Apply).
func step(l *lab, hosts []string, check bool, mk func() modules.Module) map[string]outcome {
	var mu sync.Mutex
	var wg sync.WaitGroup
	res := map[string]outcome{}
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := mk()
			var o outcome
			o.ch, o.err = l.on(h, m).Check(l.ctx(h), l.conns[h])
			if o.err == nil && o.ch != nil && !check {
				o.err = m.Apply(l.ctx(h), l.conns[h], o.ch)
			}
			if out, ok := m.(modules.Outputter); ok && o.err == nil {
				o.out = out.Output()
			}
			mu.Lock()
			res[h] = o
			mu.Unlock()
		}()
	}
	wg.Wait()
	return res
}

func requireOK(t *testing.T, res map[string]outcome) {
	t.Helper()
	for h, o := range res {
		require.NoError(t, o.err, h)
	}
}

func TestRabbitJoinLab(t *testing.T) {
	start := time.Now()
	l := swarmLab(t)
	name := "t-rabbit-" + l.suffix
	cookie := randHex(20)
	res, err := l.conns["iklim-app-01"].Run(context.Background(), "docker secret create "+name+"-cookie - >/dev/null",
		modules.WithStdin(strings.NewReader(cookie)))
	require.NoError(t, err)
	require.True(t, res.OK(), res.Stderr)
	l.sh(t, "iklim-app-01", "docker service create -d --name "+name+" --network host --replicas 3 --replicas-max-per-node 1 "+
		"--secret source="+name+"-cookie,target=rabbitmq_erlang_cookie "+
		"-e RABBITMQ_ERLANG_COOKIE_FILE=/run/secrets/rabbitmq_erlang_cookie local/rabbitmq:3 >/dev/null 2>&1")
	for _, h := range appHosts {
		require.Eventually(t, func() bool {
			r, err := l.conns[h].Run(context.Background(), `c=$(docker ps -q --filter label=com.docker.swarm.service.name=`+name+` --filter status=running | head -n1); [ -n "$c" ] && docker exec "$c" rabbitmq-diagnostics -q check_running >/dev/null 2>&1`)
			return err == nil && r.OK()
		}, 180*time.Second, 2*time.Second, "rabbitmq on %s never ran", h)
	}
	t.Logf("setup (swarm, 3 rabbitmq tasks): %.1fs", time.Since(start).Seconds())
	join := func() modules.Module {
		return &cluster.RabbitJoin{Seed: "iklim-app-01", Service: name, JoinTimeout: "120s"}
	}
	allRunning := func(t *testing.T) {
		t.Helper()
		for _, h := range appHosts {
			running, members := rabbitStatus(t, l, h, name)
			require.Equal(t, allNodes, running, "running nodes seen from %s", h)
			require.Equal(t, allNodes, members, "members seen from %s", h)
		}
	}
	lap := time.Now()
	timing := func(what string) { t.Logf("%-36s %5.1fs", what, time.Since(lap).Seconds()); lap = time.Now() }

	t.Run("join from scratch", func(t *testing.T) {
		standalone(t, l, name)
		res := step(l, appHosts, false, join)
		requireOK(t, res)
		assert.Nil(t, res["iklim-app-01"].ch, "the seed does not join")
		for _, h := range appHosts[1:] {
			require.NotNil(t, res[h].ch, h)
			require.Contains(t, res[h].ch.Summary, "join rabbit@"+h+" to the cluster of rabbit@iklim-app-01")
			require.Equal(t, true, res[h].out["joined"], h)
		}
		allRunning(t)
		timing("join from scratch")
	})

	t.Run("rerun changes nothing in one round trip", func(t *testing.T) {
		requireOK(t, step(l, appHosts, false, join))
		allRunning(t)
		// The peers reach the seed through a counting conn: a joined node
		// asks it for its name only, never for its status.
		seed := &countConn{Conn: l.conns["iklim-app-01"]}
		counted := *l
		counted.conns = maps.Clone(l.conns)
		counted.conns["iklim-app-01"] = seed
		// erl_call answers: no rabbitmqctl (an Erlang VM each) anywhere.
		for _, h := range appHosts {
			cc := &countConn{Conn: l.conns[h]}
			m := counted.on(h, join())
			ch, err := m.Check(l.ctx(h), cc)
			require.NoError(t, err, h)
			require.Nil(t, ch, h)
			require.EqualValues(t, 1, cc.n.Load(), "%s: round trips of a no-change check", h)
			require.Zero(t, cc.ctl.Load(), "%s: rabbitmqctl ran in a no-change check", h)
			require.Equal(t, allNodes, m.(modules.Outputter).Output()["running_nodes"], "%s: running nodes, as rabbitmqctl sees them", h)
		}
		require.EqualValues(t, 2, seed.n.Load(), "the two peers' probes of the seed")
		require.Zero(t, seed.ctl.Load(), "rabbitmqctl runs on the seed for its peers' no-change checks")

		// Without erl_call (made not executable in this test's own tasks),
		// the check asks rabbitmqctl and still finds nothing to do.
		erlCall := " /usr/lib/erlang/lib/erl_interface-*/bin/erl_call /usr/lib/erlang/erts-*/bin/erl_call /usr/lib/erlang/bin/erl_call"
		inTask := `docker exec $(docker ps -q --filter label=com.docker.swarm.service.name=` + name + ` --filter status=running | head -n1) sh -c `
		for _, h := range appHosts {
			l.sh(t, h, inTask+"'chmod a-x"+erlCall+"'")
			t.Cleanup(func() { l.sh(t, h, inTask+"'chmod 0755"+erlCall+"'") })
		}
		for _, h := range appHosts {
			cc := &countConn{Conn: l.conns[h]}
			m := l.on(h, join())
			ch, err := m.Check(l.ctx(h), cc)
			require.NoError(t, err, h)
			require.Nil(t, ch, "%s: no change without erl_call", h)
			require.Positive(t, cc.ctl.Load(), "%s: rabbitmqctl answered", h)
			require.Equal(t, allNodes, m.(modules.Outputter).Output()["running_nodes"], h)
		}
		timing("rerun")
	})

	t.Run("a node that left is rejoined", func(t *testing.T) {
		requireOK(t, step(l, appHosts, false, join))
		rabbitctl(t, l, "iklim-app-03", name, "stop_app")
		rabbitctl(t, l, "iklim-app-03", name, "reset")
		rabbitctl(t, l, "iklim-app-03", name, "start_app")
		running, _ := rabbitStatus(t, l, "iklim-app-01", name)
		require.Equal(t, allNodes[:2], running, "app-03 left")
		res := step(l, appHosts, false, join)
		requireOK(t, res)
		require.Nil(t, res["iklim-app-02"].ch)
		require.NotNil(t, res["iklim-app-03"].ch)
		allRunning(t)
		timing("rejoin")
	})

	t.Run("check mode changes nothing and names the nodes", func(t *testing.T) {
		standalone(t, l, name)
		res := step(l, appHosts, true, join)
		requireOK(t, res)
		for _, h := range appHosts[1:] {
			require.NotNil(t, res[h].ch, h)
			require.Contains(t, res[h].ch.Summary, "join rabbit@"+h)
			require.Equal(t, true, res[h].out["would_join"], h)
			require.Contains(t, res[h].ch.Diff.After, "rabbit@"+h)
		}
		standalone(t, l, name) // asserts every node is still alone
		timing("check mode")
	})

	t.Run("rollback makes the node leave", func(t *testing.T) {
		requireOK(t, step(l, appHosts[:2], false, join))
		standaloneOne(t, l, name, "iklim-app-03")
		m := join()
		ch, err := l.on("iklim-app-03", m).Check(l.ctx("iklim-app-03"), l.conns["iklim-app-03"])
		require.NoError(t, err)
		require.NotNil(t, ch)
		require.NoError(t, m.Apply(l.ctx("iklim-app-03"), l.conns["iklim-app-03"], ch))
		allRunning(t)
		rb := l.on("iklim-app-03", join()).(modules.Rollbacker)
		require.NoError(t, rb.Rollback(l.ctx("iklim-app-03"), l.conns["iklim-app-03"], ch))
		for _, h := range appHosts[:2] {
			running, members := rabbitStatus(t, l, h, name)
			require.Equal(t, allNodes[:2], running, h)
			require.Equal(t, allNodes[:2], members, "%s still lists the node that left", h)
		}
		running, members := rabbitStatus(t, l, "iklim-app-03", name)
		require.Equal(t, allNodes[2:], running)
		require.Equal(t, allNodes[2:], members)
		timing("rollback")
	})

	t.Run("policy update shows a diff and rollback restores it", func(t *testing.T) {
		pol := "t-pol-" + randHex(3)
		rabbitctl(t, l, "iklim-app-01", name, "set_policy --apply-to queues "+pol+" '^t-' '{\"max-length\":10}'")
		t.Cleanup(func() { rabbitctl(t, l, "iklim-app-01", name, "clear_policy "+pol) })
		mk := func(def map[string]cty.Value) modules.Module {
			return &cluster.RabbitJoin{Seed: "iklim-app-01", Service: name, Policies: []cluster.RabbitPolicy{
				{Name: pol, Pattern: "^t-", ApplyTo: "queues", Definition: cty.ObjectVal(def)}}}
		}
		same := mk(map[string]cty.Value{"max-length": cty.NumberIntVal(10)})
		cc := &countConn{Conn: l.conns["iklim-app-01"]}
		ch, err := l.on("iklim-app-01", same).Check(l.ctx("iklim-app-01"), cc)
		require.NoError(t, err)
		require.Nil(t, ch, "the same definition is no change")
		require.Zero(t, cc.ctl.Load(), "erl_call read the policies, not rabbitmqctl")

		m := mk(map[string]cty.Value{"max-length": cty.NumberIntVal(20), "ha-mode": cty.StringVal("all")})
		ch, err = l.on("iklim-app-01", m).Check(l.ctx("iklim-app-01"), l.conns["iklim-app-01"])
		require.NoError(t, err)
		require.NotNil(t, ch)
		require.Contains(t, ch.Summary, `definition={"max-length":10} → pattern="^t-" apply-to=queues priority=0 definition={"ha-mode":"all","max-length":20}`)
		require.Contains(t, ch.Diff.Before, `{"max-length":10}`)
		require.Contains(t, ch.Diff.After, `{"ha-mode":"all","max-length":20}`)
		require.NoError(t, m.Apply(l.ctx("iklim-app-01"), l.conns["iklim-app-01"], ch))
		require.Contains(t, rabbitctl(t, l, "iklim-app-02", name, "list_policies"), `"max-length":20`, "seen from another node")
		ch2, err := l.on("iklim-app-01", mk(map[string]cty.Value{"max-length": cty.NumberIntVal(20), "ha-mode": cty.StringVal("all")})).Check(l.ctx("iklim-app-01"), l.conns["iklim-app-01"])
		require.NoError(t, err)
		require.Nil(t, ch2, "second run")
		require.NoError(t, l.on("iklim-app-01", mk(nil)).(modules.Rollbacker).Rollback(l.ctx("iklim-app-01"), l.conns["iklim-app-01"], ch))
		got := rabbitctl(t, l, "iklim-app-01", name, "list_policies")
		require.Contains(t, got, `{"max-length":10}`)
		require.NotContains(t, got, "ha-mode")

		// A key 3.10 does not know: refused in check, naming key and versions.
		_, err = l.on("iklim-app-01", mk(map[string]cty.Value{"queue-type": cty.StringVal("quorum")})).Check(l.ctx("iklim-app-01"), l.conns["iklim-app-01"])
		require.ErrorContains(t, err, `key "queue-type" is not accepted by RabbitMQ 3.10.8 on rabbit@iklim-app-01; it needs a release newer than 3.10`)
		timing("policy")
	})

	t.Run("wrong cookie is refused without touching the node", func(t *testing.T) {
		// Two plain nodes beside the service's (own name, ports, cookie).
		ctr := "t-rmq-bad-" + randHex(3)
		for i, h := range []string{"iklim-app-01", "iklim-app-03"} {
			r, err := l.conns[h].Run(context.Background(), "docker run -d --name "+ctr+" --network host -e RABBITMQ_NODENAME=bad@"+h+
				" -e RABBITMQ_NODE_PORT=5673 -e RABBITMQ_DIST_PORT=25673 -e 'RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-rabbitmq_management tcp_config [{port,15673}]' "+
				"-e RABBITMQ_ERLANG_COOKIE="+fmt.Sprintf("test-cookie-%d-%s", i, randHex(8))+" local/rabbitmq:3 >/dev/null")
			require.NoError(t, err)
			require.True(t, r.OK(), r.Stderr)
			t.Cleanup(func() { _, _ = l.conns[h].Run(context.Background(), "docker rm -f "+ctr) })
		}
		for _, h := range []string{"iklim-app-01", "iklim-app-03"} {
			require.Eventually(t, func() bool {
				r, err := l.conns[h].Run(context.Background(), "docker exec "+ctr+" rabbitmq-diagnostics -q check_running >/dev/null 2>&1")
				return err == nil && r.OK()
			}, 120*time.Second, 2*time.Second, h)
		}
		before := l.sh(t, "iklim-app-03", "docker exec "+ctr+" rabbitmqctl -q cluster_status --formatter json 2>/dev/null")
		m := &cluster.RabbitJoin{Seed: "iklim-app-01", Container: ctr}
		_, err := l.on("iklim-app-03", m).Check(l.ctx("iklim-app-03"), l.conns["iklim-app-03"])
		require.Error(t, err)
		require.Contains(t, err.Error(), "Erlang cookie of bad@iklim-app-03 on iklim-app-03")
		require.Contains(t, err.Error(), "seed bad@iklim-app-01 on iklim-app-01")
		after := l.sh(t, "iklim-app-03", "docker exec "+ctr+" rabbitmqctl -q cluster_status --formatter json 2>/dev/null")
		require.Equal(t, before, after)
		timing("wrong cookie")
	})

	t.Run("a node of another cluster is refused, force_reset moves it", func(t *testing.T) {
		standalone(t, l, name)
		// app-03 joins app-02: a cluster without the seed.
		rabbitctl(t, l, "iklim-app-03", name, "stop_app")
		rabbitctl(t, l, "iklim-app-03", name, "join_cluster rabbit@iklim-app-02")
		rabbitctl(t, l, "iklim-app-03", name, "start_app")
		_, err := l.on("iklim-app-03", join()).Check(l.ctx("iklim-app-03"), l.conns["iklim-app-03"])
		require.ErrorContains(t, err, "node rabbit@iklim-app-03 on iklim-app-03 belongs to another cluster")
		require.ErrorContains(t, err, "rabbit@iklim-app-02")
		_, members := rabbitStatus(t, l, "iklim-app-03", name)
		require.Equal(t, allNodes[1:], members, "refused: not touched")
		m := &cluster.RabbitJoin{Seed: "iklim-app-01", Service: name, ForceReset: true}
		ch, err := l.on("iklim-app-03", m).Check(l.ctx("iklim-app-03"), l.conns["iklim-app-03"])
		require.NoError(t, err)
		require.NoError(t, m.Apply(l.ctx("iklim-app-03"), l.conns["iklim-app-03"], ch))
		running, _ := rabbitStatus(t, l, "iklim-app-01", name)
		require.Equal(t, []string{"rabbit@iklim-app-01", "rabbit@iklim-app-03"}, running)
		timing("other cluster")
	})

	t.Run("seed not running is refused", func(t *testing.T) {
		standalone(t, l, name)
		rabbitctl(t, l, "iklim-app-01", name, "stop_app")
		t.Cleanup(func() { rabbitctl(t, l, "iklim-app-01", name, "start_app") })
		_, err := l.on("iklim-app-02", join()).Check(l.ctx("iklim-app-02"), l.conns["iklim-app-02"])
		require.ErrorContains(t, err, "seed node rabbit@iklim-app-01 on iklim-app-01 is not running")
		timing("seed down")
	})
}

// standaloneOne makes host's node leave its cluster (if in one).
func standaloneOne(t *testing.T, l *lab, svc, host string) {
	t.Helper()
	if _, members := rabbitStatus(t, l, host, svc); len(members) > 1 {
		rabbitctl(t, l, host, svc, "stop_app")
		rabbitctl(t, l, host, svc, "reset")
		rabbitctl(t, l, host, svc, "start_app")
	}
	for _, h := range appHosts {
		if h == host {
			continue
		}
		if _, members := rabbitStatus(t, l, h, svc); slices.Contains(members, "rabbit@"+host) {
			rabbitctl(t, l, h, svc, "forget_cluster_node rabbit@"+host)
		}
	}
}

// ------------------------------------------------------ Redis Sentinel ---

func TestSentinelCheckLab(t *testing.T) {
	start := time.Now()
	l := swarmLab(t)
	pfx := "t-redis-" + l.suffix
	password := "pw-" + randHex(16)
	l.secrets.Add(password)
	res, err := l.conns["iklim-app-01"].Run(context.Background(), "docker secret create "+pfx+"-pw - >/dev/null",
		modules.WithStdin(strings.NewReader(password)))
	require.NoError(t, err)
	require.True(t, res.OK(), res.Stderr)
	sec := "--secret source=" + pfx + "-pw,target=redis_password "
	common := "-d --network host " + sec
	// The master restarts only after 30 s: long enough for a failover.
	l.sh(t, "iklim-app-01", "docker service create "+common+"--name "+pfx+"-master --restart-delay 30s --constraint node.hostname==iklim-app-01 "+
		"-e REDIS_PASSWORD_FILE=/run/secrets/redis_password local/redis:7 >/dev/null 2>&1")
	l.sh(t, "iklim-app-01", "docker service create "+common+"--name "+pfx+"-replica --replicas 2 --replicas-max-per-node 1 --constraint node.hostname!=iklim-app-01 "+
		"-e REDIS_PASSWORD_FILE=/run/secrets/redis_password -e REDIS_REPLICATION_MODE=replica -e REDIS_MASTER_HOST=10.77.0.11 local/redis:7 >/dev/null 2>&1")
	l.sh(t, "iklim-app-01", "docker service create "+common+"--name "+pfx+"-sentinel --replicas 3 --replicas-max-per-node 1 "+
		"-e REDIS_MASTER_PASSWORD_FILE=/run/secrets/redis_password -e REDIS_MASTER_HOST=10.77.0.11 -e REDIS_SENTINEL_MASTER_NAME=prod-master "+
		"-e REDIS_SENTINEL_QUORUM=2 -e REDIS_SENTINEL_DOWN_AFTER_MILLISECONDS=5000 -e REDIS_SENTINEL_FAILOVER_TIMEOUT=10000 local/redis-sentinel:7 >/dev/null 2>&1")
	svc := pfx + "-sentinel"
	check := func(within string) *cluster.SentinelCheck {
		return &cluster.SentinelCheck{Service: svc, MasterName: "prod-master", Sentinels: 3, Replicas: 2,
			PasswordFile: "/run/secrets/redis_password", ConvergeWithin: within}
	}
	// The set converges (the first sentinel_check waits for it).
	var first *cluster.SentinelCheck
	require.Eventually(t, func() bool {
		first = check("10s")
		_, err := l.on("iklim-app-01", first).Check(l.ctx("iklim-app-01"), l.conns["iklim-app-01"])
		return err == nil
	}, 240*time.Second, time.Second, "the sentinel set never converged")
	t.Logf("setup (swarm, master, 2 replicas, 3 sentinels converged): %.1fs", time.Since(start).Seconds())
	sentinelSays := func(t *testing.T) string {
		out := l.sh(t, "iklim-app-02", "docker exec $(docker ps -q --filter label=com.docker.swarm.service.name="+svc+" | head -n1) redis-cli -p 26379 SENTINEL get-master-addr-by-name prod-master")
		return strings.Join(strings.Fields(out), ":")
	}

	t.Run("healthy set passes and registers the master", func(t *testing.T) {
		for _, mk := range []func() *cluster.SentinelCheck{
			func() *cluster.SentinelCheck { return check("90s") },
			func() *cluster.SentinelCheck {
				m := check("90s")
				m.PasswordFile, m.Password = "", password
				return m
			},
		} {
			m := mk()
			ch, err := l.on("iklim-app-01", m).Check(l.ctx("iklim-app-01"), l.conns["iklim-app-01"])
			require.NoError(t, err)
			require.Nil(t, ch, "read-only")
			out := m.Output()
			require.Equal(t, sentinelSays(t), out["master"])
			require.Len(t, out["replicas"], 2)
			require.Len(t, out["sentinels"], 3)
			b, _ := json.Marshal(out)
			require.NotContains(t, string(b), password)
		}
	})

	t.Run("a stopped sentinel is named", func(t *testing.T) {
		_, err := l.on("iklim-app-01", check("90s")).Check(l.ctx("iklim-app-01"), l.conns["iklim-app-01"])
		require.NoError(t, err, "healthy first")
		ctr := l.sh(t, "iklim-app-03", "docker ps -q --filter label=com.docker.swarm.service.name="+svc)
		l.sh(t, "iklim-app-03", "docker pause "+ctr)
		unpaused := false
		t.Cleanup(func() {
			if !unpaused {
				_, _ = l.conns["iklim-app-03"].Run(context.Background(), "docker unpause "+ctr)
			}
		})
		began := time.Now()
		_, err = l.on("iklim-app-01", check("6s")).Check(l.ctx("iklim-app-01"), l.conns["iklim-app-01"])
		require.Error(t, err)
		require.GreaterOrEqual(t, time.Since(began), 6*time.Second, "retried until converge_within")
		require.Contains(t, err.Error(), "sentinel on iklim-app-03 (container "+ctr[:12])
		require.Contains(t, err.Error(), "is paused")
		require.NotContains(t, err.Error(), "sentinel on iklim-app-02")
		l.sh(t, "iklim-app-03", "docker unpause "+ctr)
		unpaused = true
		_, err = l.on("iklim-app-01", check("90s")).Check(l.ctx("iklim-app-01"), l.conns["iklim-app-01"])
		require.NoError(t, err, "converges again")
	})

	t.Run("a sentinel that points elsewhere is named with its answer", func(t *testing.T) {
		_, err := l.on("iklim-app-01", check("90s")).Check(l.ctx("iklim-app-01"), l.conns["iklim-app-01"])
		require.NoError(t, err, "healthy first")
		ctr := l.sh(t, "iklim-app-02", "docker ps -q --filter label=com.docker.swarm.service.name="+svc)
		// The sentinel monitors another master under the same name; the
		// others never hear of it (its hellos go to that master).
		master := sentinelSays(t)
		l.sh(t, "iklim-app-02", "docker exec "+ctr+" sh -c 'redis-cli -p 26379 SENTINEL REMOVE prod-master && redis-cli -p 26379 SENTINEL MONITOR prod-master 10.77.0.99 6399 2' >/dev/null")
		t.Cleanup(func() {
			host, port, _ := strings.Cut(master, ":")
			_, _ = l.conns["iklim-app-02"].Run(context.Background(), "docker exec "+ctr+" sh -c "+labtest.ShellQuote(
				`redis-cli -p 26379 SENTINEL REMOVE prod-master; redis-cli -p 26379 SENTINEL MONITOR prod-master `+host+` `+port+` 2;
REDISCLI_AUTH= redis-cli -p 26379 SENTINEL SET prod-master down-after-milliseconds 5000 failover-timeout 10000;
printf 'SENTINEL SET prod-master auth-pass %s\n' "$(cat /run/secrets/redis_password)" | redis-cli -p 26379`))
		})
		_, err = l.on("iklim-app-01", check("5s")).Check(l.ctx("iklim-app-01"), l.conns["iklim-app-01"])
		require.Error(t, err)
		require.Regexp(t, `sentinel on iklim-app-02 \(container `+ctr[:12]+`\) says the master of prod-master is 10\.77\.0\.99:6399, the others `+master, err.Error())
	})

	t.Run("failover: the new master is reported", func(t *testing.T) {
		_, err := l.on("iklim-app-01", check("120s")).Check(l.ctx("iklim-app-01"), l.conns["iklim-app-01"])
		require.NoError(t, err, "healthy first")
		old := sentinelSays(t)
		oldHost, _, _ := strings.Cut(old, ":")
		owner := map[string]string{"10.77.0.11": "iklim-app-01", "10.77.0.12": "iklim-app-02", "10.77.0.13": "iklim-app-03"}[oldHost]
		require.NotEmpty(t, owner, old)
		// Kill the task of whichever service runs the master there.
		l.sh(t, owner, "docker kill $(docker ps -q --filter label=com.docker.swarm.service.name="+pfx+"-master; docker ps -q --filter label=com.docker.swarm.service.name="+pfx+"-replica) >/dev/null")
		began := time.Now()
		m := check("150s")
		_, err = l.on("iklim-app-01", m).Check(l.ctx("iklim-app-01"), l.conns["iklim-app-01"])
		require.NoError(t, err)
		require.NotEqual(t, old, m.Output()["master"], "no failover seen")
		require.Equal(t, sentinelSays(t), m.Output()["master"])
		t.Logf("failover to %v converged after %.1fs", m.Output()["master"], time.Since(began).Seconds())
	})
}
