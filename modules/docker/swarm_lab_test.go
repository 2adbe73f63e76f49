package docker_test

// Lab integration tests for the swarm modules: six network-namespace hosts
// with real sshd and dockerd (internal/lab). They drive the modules through
// real SSH Conns, with a small Peers implementation standing in for the
// engine's. Run them with:
//
//	bash internal/lab/lab.sh up
//	IKLIM_LAB=required go test ./modules/ -run Lab -v
//
// Without the lab they skip (or fail when IKLIM_LAB=required). They take
// the lab's swarm state over: every host leaves its swarm at the start and
// at the end.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iklimco/iklim/internal/labtest"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/docker"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/stretchr/testify/require"
)

var (
	labManagers = []string{"iklim-app-01", "iklim-app-02", "iklim-app-03"}
	labWorkers  = []string{"iklim-db-01", "iklim-db-02", "iklim-db-03"}
	labAll      = append(slices.Clone(labManagers), labWorkers...)
)

// swarmLab is the lab as the swarm tests see it.
type swarmLab struct {
	inv     *inventories.Inventory
	conns   map[string]modules.Conn
	secrets *modules.Secrets

	serialMu sync.Mutex
	serial   map[string]*sync.Mutex // labPeers.Serialize's locks
}

func requireSwarmLab(t *testing.T) *swarmLab {
	t.Helper()
	if testing.Short() && os.Getenv("IKLIM_LAB") != "required" {
		t.Skip("lab tests disabled by -short")
	}
	// Skips without a lab, or fails with IKLIM_LAB=required.
	l := labtest.Require(t)
	// One swarm test at a time across processes: `go test ./...` runs the
	// CLI's swarm test in another binary, which would reset the swarm under
	// this one.
	l.LockSwarm(t)
	inv, diags := inventories.LoadStock("lab")
	if diags.HasErrors() {
		t.Fatalf("lab inventory: %s", diags.Error())
	}
	conn := transport.NewSSHConnector(transport.SSHOptions{})
	t.Cleanup(func() { _ = conn.Close() })
	lab := &swarmLab{inv: inv, conns: map[string]modules.Conn{}, secrets: modules.NewSecrets(), serial: map[string]*sync.Mutex{}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, name := range labAll {
		h, ok := inv.Host(name)
		if !ok {
			t.Fatalf("lab inventory has no host %s", name)
		}
		c, err := conn.Connect(ctx, h)
		if err != nil {
			t.Fatalf("lab is up but connect %s failed: %v", name, err)
		}
		lab.conns[name] = c
	}
	return lab
}

// labPeers is the test's modules.Peers: the lab inventory over the test's
// connections.
type labPeers struct {
	lab   *swarmLab
	self  string
	hosts []string
}

func hostInfo(h *inventories.Host) modules.HostInfo {
	return modules.HostInfo{Name: h.Name, Address: h.Address, Labels: h.Labels, Groups: h.Groups}
}

func (p labPeers) Self() modules.HostInfo {
	h, _ := p.lab.inv.Host(p.self)
	return hostInfo(h)
}

func (p labPeers) Lookup(name string) (modules.HostInfo, bool) {
	h, ok := p.lab.inv.Host(name)
	if !ok {
		return modules.HostInfo{}, false
	}
	return hostInfo(h), true
}

func (p labPeers) Hosts() []string { return p.hosts }

func (p labPeers) Conn(_ context.Context, name string) (modules.Conn, error) {
	c, ok := p.lab.conns[name]
	if !ok {
		return nil, fmt.Errorf("no connection to %s", name)
	}
	return c, nil
}

func (p labPeers) Control() modules.HostInfo { return modules.HostInfo{Name: "localhost"} }

func (p labPeers) Serialize(key string) func() {
	p.lab.serialMu.Lock()
	mu := p.lab.serial[key]
	if mu == nil {
		mu = &sync.Mutex{}
		p.lab.serial[key] = mu
	}
	p.lab.serialMu.Unlock()
	mu.Lock()
	return mu.Unlock
}

// wire hands m what the runner would: the lab's Peers for host self and
// the test's Secrets.
func wire[M modules.Module](l *swarmLab, self string, m M) M {
	if pu, ok := any(m).(modules.PeersUser); ok {
		pu.UsePeers(labPeers{lab: l, self: self, hosts: labAll})
	}
	if su, ok := any(m).(modules.SecretsUser); ok {
		su.UseSecrets(l.secrets)
	}
	return m
}

// ctx is the context of a module call on the lab.
func (l *swarmLab) ctx(string) context.Context { return context.Background() }

// result is one host's outcome of a step.
type result struct {
	ch  *modules.Change
	err error
	out map[string]any
}

// step runs a module on hosts in parallel, like the engine: Check, then
// Apply when Check returned a change.
func (l *swarmLab) step(t *testing.T, hosts []string, mk func(host string) modules.Module) map[string]result {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	res := map[string]result{}
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := wire(l, h, mk(h))
			ctx := l.ctx(h)
			c := l.conns[h]
			var r result
			r.ch, r.err = m.Check(ctx, c)
			if r.err == nil && r.ch != nil {
				r.err = m.Apply(ctx, c, r.ch)
			}
			if o, ok := m.(modules.Outputter); ok && r.err == nil {
				r.out = o.Output()
			}
			mu.Lock()
			res[h] = r
			mu.Unlock()
		}()
	}
	wg.Wait()
	return res
}

// sh runs a command on a lab host and returns stdout; failure fails the test.
func (l *swarmLab) sh(t *testing.T, host, cmd string) string {
	t.Helper()
	res, err := l.conns[host].Run(context.Background(), cmd)
	require.NoError(t, err)
	require.True(t, res.OK(), "%s: %s: %s", host, cmd, res.Stderr)
	return strings.TrimSpace(res.Stdout)
}

// reset takes every host out of any swarm (and stray iptables rules).
func (l *swarmLab) reset(t *testing.T) {
	t.Helper()
	var wg sync.WaitGroup
	for _, h := range labAll {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = l.conns[h].Run(context.Background(), "docker swarm leave --force >/dev/null 2>&1; true")
		}()
	}
	wg.Wait()
	_ = exec.Command("nsenter", "--net=/run/netns/iklim-db-02", "iptables", "-D", "OUTPUT", "-p", "tcp", "--dport", "2377", "-j", "DROP").Run()
}

func swarmInit(h string) modules.Module {
	return &docker.SwarmInit{Managers: labManagers, Workers: labWorkers, JoinTimeout: "60s"}
}

func requireAllOK(t *testing.T, res map[string]result) {
	t.Helper()
	for h, r := range res {
		require.NoError(t, r.err, h)
	}
}

func changed(res map[string]result) []string {
	var out []string
	for h, r := range res {
		if r.ch != nil {
			out = append(out, h)
		}
	}
	slices.Sort(out)
	return out
}

// noToken fails when a join token shows anywhere a change or output goes.
func noToken(t *testing.T, res map[string]result) {
	t.Helper()
	for h, r := range res {
		var text string
		if r.ch != nil {
			text = r.ch.Summary + string(r.ch.Before) + strings.Join(r.ch.Files, " ")
			if r.ch.Diff != nil {
				text += r.ch.Diff.Before + r.ch.Diff.After
			}
		}
		b, _ := json.Marshal(r.out)
		text += string(b)
		require.NotContains(t, text, "SWMTKN", h)
	}
}

type serviceSpec struct {
	ID        string
	UpdatedAt time.Time
	Spec      struct {
		Name         string
		TaskTemplate struct {
			ContainerSpec struct {
				Image string
				Env   []string
				Args  []string
			}
		}
	}
}

func (l *swarmLab) services(t *testing.T, names ...string) map[string]serviceSpec {
	t.Helper()
	out := l.sh(t, "iklim-app-01", "docker service inspect "+strings.Join(names, " "))
	var specs []serviceSpec
	require.NoError(t, json.Unmarshal([]byte(out), &specs))
	m := map[string]serviceSpec{}
	for _, s := range specs {
		m[s.Spec.Name] = s
	}
	return m
}

func (l *swarmLab) serviceExists(t *testing.T, name string) bool {
	res, err := l.conns["iklim-app-01"].Run(context.Background(), "docker service inspect "+name+" >/dev/null 2>&1")
	require.NoError(t, err)
	return res.OK()
}

func stack(name string, compose ...string) *docker.StackDeploy {
	files := make([]string, len(compose))
	for i, f := range compose {
		files[i] = filepath.Join("testdata", "swarm", f)
	}
	return &docker.StackDeploy{
		Name:            name,
		Compose:         files,
		EnvFiles:        []string{filepath.Join("testdata", "swarm", "GREETING.env")},
		ConvergeTimeout: "120s",
		ResolveImage:    "never",
	}
}

// TestLabSwarm bootstraps the six-host swarm of seed 004 and deploys a base
// + overlay stack on it, with the failure and rollback paths.
func TestLabSwarm(t *testing.T) {
	lab := requireSwarmLab(t)
	lab.reset(t)
	t.Cleanup(func() {
		if os.Getenv("IKLIM_LAB_KEEP") == "" {
			lab.reset(t)
		}
	})
	start := time.Now()
	lap := func(what string) { t.Logf("%-40s %6.1fs", what, time.Since(start).Seconds()); start = time.Now() }

	// A host already in another swarm is an error naming that swarm.
	lab.sh(t, "iklim-db-03", "docker swarm init --advertise-addr 10.77.0.23 >/dev/null")
	otherID := lab.sh(t, "iklim-db-03", "docker info --format '{{.Swarm.Cluster.ID}}'")

	var bootstrap map[string]result
	t.Run("bootstrap", func(t *testing.T) {
		bootstrap = lab.step(t, labAll, swarmInit)
		err := bootstrap["iklim-db-03"].err
		require.Error(t, err)
		require.Contains(t, err.Error(), "another swarm")
		require.Contains(t, err.Error(), otherID)
		require.Contains(t, err.Error(), "10.77.0.23:2377")
		delete(bootstrap, "iklim-db-03")
		requireAllOK(t, bootstrap)
		require.Equal(t, []string{"iklim-app-01", "iklim-app-02", "iklim-app-03", "iklim-db-01", "iklim-db-02"}, changed(bootstrap))
		noToken(t, bootstrap)
		cluster := bootstrap["iklim-app-01"].out["cluster_id"]
		require.NotEmpty(t, cluster)
		for h, r := range bootstrap {
			require.Equal(t, cluster, r.out["cluster_id"], h)
		}
		require.Equal(t, "manager", bootstrap["iklim-app-02"].out["role"])
		require.Equal(t, "worker", bootstrap["iklim-db-01"].out["role"])

		// The other swarm goes away; the next run joins db-03 and changes
		// nothing else.
		lab.sh(t, "iklim-db-03", "docker swarm leave --force >/dev/null")
		again := lab.step(t, labAll, swarmInit)
		requireAllOK(t, again)
		require.Equal(t, []string{"iklim-db-03"}, changed(again))
		bootstrap["iklim-db-03"] = again["iklim-db-03"]
		lap("bootstrap (6 hosts, incl. other-swarm)")

		nodes := lab.sh(t, "iklim-app-01", "docker node ls --format '{{.Hostname}} {{.ManagerStatus}} {{.Status}}'")
		require.Len(t, strings.Split(nodes, "\n"), 6, nodes)
		require.Equal(t, 3, strings.Count(nodes, "Leader")+strings.Count(nodes, "Reachable"), nodes)

		// Tokens read during the run are marked sensitive.
		token := lab.sh(t, "iklim-app-01", "docker swarm join-token -q worker")
		require.Equal(t, modules.Redacted, lab.secrets.Redact(token))

		third := lab.step(t, labAll, swarmInit)
		requireAllOK(t, third)
		require.Empty(t, changed(third), "second run must change nothing")
		lap("swarm_init no-change run")
	})

	t.Run("wrong role is fixed", func(t *testing.T) {
		id := lab.sh(t, "iklim-app-03", "docker info --format '{{.Swarm.NodeID}}'")
		lab.sh(t, "iklim-app-01", "docker node demote "+id+" >/dev/null")
		require.Eventually(t, func() bool {
			return lab.sh(t, "iklim-app-03", "docker info --format '{{.Swarm.ControlAvailable}}'") == "false"
		}, 30*time.Second, time.Second)
		res := lab.step(t, []string{"iklim-app-03"}, swarmInit)
		requireAllOK(t, res)
		require.Contains(t, res["iklim-app-03"].ch.Summary, "promote")
		require.Equal(t, "true", lab.sh(t, "iklim-app-03", "docker info --format '{{.Swarm.ControlAvailable}}'"))
		lap("demoted manager promoted back")
	})

	var labelChanges map[string]result
	t.Run("labels from inventory", func(t *testing.T) {
		mk := func(string) modules.Module { return &docker.NodeLabel{FromInventory: true} }
		labelChanges = lab.step(t, labAll, mk)
		requireAllOK(t, labelChanges)
		require.Len(t, changed(labelChanges), 6)
		again := lab.step(t, labAll, mk)
		requireAllOK(t, again)
		require.Empty(t, changed(again))
		byHost := lab.sh(t, "iklim-app-01", `for n in $(docker node ls -q); do docker node inspect --format '{{.Description.Hostname}} {{json .Spec.Labels}}' $n; done`)
		require.Contains(t, byHost, `iklim-app-02 {"role":"app","type":"service"}`)
		require.Contains(t, byHost, `iklim-db-03 {"role":"db","type":"db"}`)
		// Empty values and removal, in merge mode, on a worker (through a manager).
		res := lab.step(t, []string{"iklim-db-01"}, func(string) modules.Module {
			return &docker.NodeLabel{Labels: map[string]string{"empty": ""}, Remove: []string{"role"}}
		})
		requireAllOK(t, res)
		require.Equal(t, `{"empty":"","type":"db"}`, lab.sh(t, "iklim-app-01",
			"docker node inspect --format '{{json .Spec.Labels}}' $(docker node ls -q --filter name=iklim-db-01)"))
		require.NoError(t, wire(lab, "iklim-db-01", &docker.NodeLabel{}).Rollback(lab.ctx("iklim-db-01"), lab.conns["iklim-db-01"], res["iklim-db-01"].ch))
		require.Equal(t, `{"role":"db","type":"db"}`, lab.sh(t, "iklim-app-01",
			"docker node inspect --format '{{json .Spec.Labels}}' $(docker node ls -q --filter name=iklim-db-01)"))
		lap("node labels")
	})

	t.Run("network and secret", func(t *testing.T) {
		mkNet := func(string) modules.Module { return &docker.DockerNetwork{Name: "iklimco-net"} }
		res := lab.step(t, []string{"iklim-app-01"}, mkNet)
		requireAllOK(t, res)
		require.NotNil(t, res["iklim-app-01"].ch)
		res = lab.step(t, []string{"iklim-app-02"}, mkNet)
		requireAllOK(t, res)
		require.Nil(t, res["iklim-app-02"].ch, "network is swarm-wide")
		require.Equal(t, "true", lab.sh(t, "iklim-app-01", "docker network inspect --format '{{.Attachable}}' iklimco-net"))

		mkSecret := func(v string) func(string) modules.Module {
			return func(string) modules.Module {
				return &docker.DockerSecret{Name: "redis_password", Value: v, Versioned: true}
			}
		}
		r1 := lab.step(t, []string{"iklim-app-01"}, mkSecret("s3cret-one"))["iklim-app-01"]
		require.NoError(t, r1.err)
		require.Equal(t, "redis_password_v1", r1.out["name"])
		r2 := lab.step(t, []string{"iklim-app-01"}, mkSecret("s3cret-one"))["iklim-app-01"]
		require.NoError(t, r2.err)
		require.Nil(t, r2.ch)
		require.Equal(t, "redis_password_v1", r2.out["name"])
		r3 := lab.step(t, []string{"iklim-app-01"}, mkSecret("s3cret-two"))["iklim-app-01"]
		require.NoError(t, r3.err)
		require.Equal(t, "redis_password_v2", r3.out["name"])
		require.NotContains(t, r3.ch.Diff.After, "s3cret-two")

		cfg := func(v string) func(string) modules.Module {
			return func(string) modules.Module {
				m := docker.NewDockerConfig()
				m.Name, m.Value, m.Versioned = "nginx_conf", v, true
				return m
			}
		}
		c1 := lab.step(t, []string{"iklim-app-01"}, cfg("worker_processes 1;\n"))["iklim-app-01"]
		require.NoError(t, c1.err)
		require.Equal(t, "nginx_conf_v1", c1.out["name"])
		c2 := lab.step(t, []string{"iklim-app-01"}, cfg("worker_processes 1;\n"))["iklim-app-01"]
		require.NoError(t, c2.err)
		require.Nil(t, c2.ch)
		lap("network + versioned secret")
	})

	var deployChange *modules.Change
	t.Run("stack deploy", func(t *testing.T) {
		m := stack("lab", "stack.yml", "stack.prod.yml")
		ctx, c := lab.ctx("iklim-app-01"), lab.conns["iklim-app-01"]
		ch, err := m.Check(ctx, c)
		require.NoError(t, err)
		require.NotNil(t, ch)
		require.Contains(t, ch.Summary, "create cache, store, web")
		require.NoError(t, m.Apply(ctx, c, ch))
		lap("first deploy (3 services)")

		ps := lab.sh(t, "iklim-app-01", "docker stack ps lab --filter desired-state=running --format '{{.Name}} {{.Node}} {{.CurrentState}}'")
		for _, line := range strings.Split(ps, "\n") {
			require.Contains(t, line, "Running", ps)
			if strings.HasPrefix(line, "lab_store") {
				require.Contains(t, line, "iklim-db-", ps)
			} else {
				require.Contains(t, line, "iklim-app-", ps)
			}
		}
		env := lab.services(t, "lab_web")["lab_web"].Spec.TaskTemplate.ContainerSpec.Env
		require.ElementsMatch(t, []string{"GREETING=hello", "LITERAL=cost: $5", "MODE=prod"}, env)

		wait := lab.step(t, []string{"iklim-app-01"}, func(string) modules.Module {
			return &docker.ServiceWait{Services: []string{"lab_web", "lab_cache", "lab_store"}}
		})["iklim-app-01"]
		require.NoError(t, wait.err)
		require.Nil(t, wait.ch, "converged services: nothing to wait for")

		// Same files, same env: no change, in one round trip.
		m2 := stack("lab", "stack.yml", "stack.prod.yml")
		ch, err = m2.Check(ctx, c)
		require.NoError(t, err)
		require.Nil(t, ch)
		lap("no-change check")

		// Change one service: only it is redeployed.
		before := lab.services(t, "lab_web", "lab_cache", "lab_store")
		m3 := stack("lab", "stack.yml", "stack.prod.yml")
		m3.Env = map[string]string{"GREETING": "bonjour"}
		ch, err = m3.Check(ctx, c)
		require.NoError(t, err)
		require.NotNil(t, ch)
		require.Contains(t, ch.Summary, "update web (env ~GREETING)")
		require.Contains(t, ch.Summary, "2 unchanged")
		require.NotContains(t, ch.Diff.After, "bonjour", "env values are fingerprinted in diffs")
		require.NoError(t, m3.Apply(ctx, c, ch))
		deployChange = ch
		after := lab.services(t, "lab_web", "lab_cache", "lab_store")
		require.True(t, after["lab_web"].UpdatedAt.After(before["lab_web"].UpdatedAt))
		require.Equal(t, before["lab_cache"].UpdatedAt, after["lab_cache"].UpdatedAt)
		require.Equal(t, before["lab_store"].UpdatedAt, after["lab_store"].UpdatedAt)
		require.Contains(t, after["lab_web"].Spec.TaskTemplate.ContainerSpec.Env, "GREETING=bonjour")
		require.Equal(t, []string{"lab_web"}, m3.Output()["deployed"])
		lap("one-service redeploy")
	})

	t.Run("engine API and CLI agree", func(t *testing.T) {
		// The checks read the engine API over the SSH connection; without
		// a Dialer, or with a socket sshd cannot open, they use the CLI.
		// All three must see the same.
		variants := map[string]func(modules.Conn) modules.Conn{
			"api":       func(c modules.Conn) modules.Conn { return c },
			"cli":       func(c modules.Conn) modules.Conn { return cliOnly{c} },
			"no socket": func(c modules.Conn) modules.Conn { return noSocket{c} },
		}
		checks := map[string]func() modules.Module{
			"swarm_init":     func() modules.Module { return swarmInit("") },
			"node_label":     func() modules.Module { return &docker.NodeLabel{FromInventory: true} },
			"docker_network": func() modules.Module { return &docker.DockerNetwork{Name: "iklimco-net"} },
			"docker_network missing": func() modules.Module {
				return &docker.DockerNetwork{Name: "iklim-no-such-net"}
			},
			"docker_secret": func() modules.Module {
				return &docker.DockerSecret{Name: "redis_password", Value: "s3cret-two", Versioned: true}
			},
			"docker_secret missing": func() modules.Module {
				return &docker.DockerSecret{Name: "iklim_no_such_secret", Value: "x"}
			},
			"stack_deploy": func() modules.Module { return stack("lab", "stack.yml", "stack.prod.yml") },
			"service_wait": func() modules.Module {
				return &docker.ServiceWait{Services: []string{"lab_web", "lab_cache", "lab_store"}}
			},
		}
		for _, host := range []string{"iklim-app-01", "iklim-db-02"} {
			for name, mk := range checks {
				if host != "iklim-app-01" && name != "swarm_init" && name != "node_label" {
					continue // manager-only modules
				}
				seen := map[string]string{}
				for v, wrap := range variants {
					vl := &swarmLab{inv: lab.inv, conns: map[string]modules.Conn{}, secrets: lab.secrets, serial: map[string]*sync.Mutex{}}
					for h, c := range lab.conns {
						vl.conns[h] = wrap(c)
					}
					m := wire(vl, host, mk())
					ch, err := m.Check(lab.ctx(host), vl.conns[host])
					require.NoError(t, err, "%s on %s over %s", name, host, v)
					got := "no change"
					if ch != nil {
						got = ch.Summary
					}
					if o, ok := m.(modules.Outputter); ok && ch == nil {
						b, err := json.Marshal(o.Output())
						require.NoError(t, err)
						got += " " + string(b)
					}
					seen[v] = got
				}
				require.Equal(t, seen["cli"], seen["api"], "%s on %s", name, host)
				require.Equal(t, seen["cli"], seen["no socket"], "%s on %s", name, host)
			}
		}
		lap("engine API and CLI agree")
	})

	t.Run("failed deploy is restored", func(t *testing.T) {
		ctx, c := lab.ctx("iklim-app-01"), lab.conns["iklim-app-01"]
		before := lab.services(t, "lab_web", "lab_cache", "lab_store")
		m := stack("lab", "stack.yml", "stack.prod.yml", "stack.broken.yml")
		m.Env = map[string]string{"GREETING": "bonjour"}
		m.ConvergeTimeout = "90s"
		ch, err := m.Check(ctx, c)
		require.NoError(t, err)
		require.Contains(t, ch.Summary, "create ghost")
		require.Contains(t, ch.Summary, "update cache")
		rc := &reportingConn{Conn: c}
		err = m.Apply(ctx, rc, ch)
		require.Error(t, err)
		t.Logf("deploy error: %v", err)
		// The convergence wait (service_wait's) said what it waited for.
		st := rc.statuses()
		require.NotEmpty(t, st, "no status while waiting for convergence")
		require.Regexp(t, "^waiting for .*lab_ghost.* to converge$", st[0].Text)
		require.Equal(t, 90*time.Second, st[0].Max)
		for _, s := range st[1:] { // the polls: what has not converged yet
			require.Regexp(t, "^waiting for (replicas: |.* to converge$)", s.Text)
		}
		require.Contains(t, err.Error(), "failed to converge")
		require.Regexp(t, "lab_(cache|ghost)", err.Error())
		require.Contains(t, err.Error(), "restored")
		require.False(t, lab.serviceExists(t, "lab_ghost"), "new service removed")
		after := lab.services(t, "lab_web", "lab_cache", "lab_store")
		require.Equal(t, before["lab_cache"].Spec.TaskTemplate.ContainerSpec.Args, after["lab_cache"].Spec.TaskTemplate.ContainerSpec.Args)
		require.Equal(t, before["lab_web"].UpdatedAt, after["lab_web"].UpdatedAt)
		// The hash was not recorded: the next check still sees the last good one.
		ok := stack("lab", "stack.yml", "stack.prod.yml")
		ok.Env = map[string]string{"GREETING": "bonjour"}
		ch, err = ok.Check(ctx, c)
		require.NoError(t, err)
		require.Nil(t, ch)
		lap("failed deploy restored")
	})

	t.Run("rollback", func(t *testing.T) {
		require.NotNil(t, deployChange)
		ctx, c := lab.ctx("iklim-app-01"), lab.conns["iklim-app-01"]
		require.NoError(t, stack("lab", "stack.yml").Rollback(ctx, c, deployChange))
		env := lab.services(t, "lab_web")["lab_web"].Spec.TaskTemplate.ContainerSpec.Env
		require.Contains(t, env, "GREETING=hello")

		for _, h := range labAll {
			require.NoError(t, wire(lab, h, &docker.NodeLabel{}).Rollback(lab.ctx(h), lab.conns[h], labelChanges[h].ch), h)
		}
		labels := lab.sh(t, "iklim-app-01", `for n in $(docker node ls -q); do docker node inspect --format '{{json .Spec.Labels}}' $n; done`)
		require.Equal(t, strings.Repeat("{}\n", 5)+"{}", labels)
		lap("rollback stack + labels")
	})

	t.Run("stuck pending join fails", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root for iptables in the host's namespace")
		}
		// db-02 leaves through the rollback path, then cannot reach port 2377.
		require.NoError(t, wire(lab, "iklim-db-02", &docker.SwarmInit{}).Rollback(lab.ctx("iklim-db-02"), lab.conns["iklim-db-02"], bootstrap["iklim-db-02"].ch))
		require.Equal(t, "inactive", lab.sh(t, "iklim-db-02", "docker info --format '{{.Swarm.LocalNodeState}}'"))
		out, err := exec.Command("nsenter", "--net=/run/netns/iklim-db-02", "iptables", "-I", "OUTPUT", "-p", "tcp", "--dport", "2377", "-j", "DROP").CombinedOutput()
		require.NoError(t, err, string(out))
		res := lab.step(t, []string{"iklim-db-02"}, func(string) modules.Module {
			return &docker.SwarmInit{Managers: labManagers, Workers: labWorkers, JoinTimeout: "5s"}
		})
		err = res["iklim-db-02"].err
		require.Error(t, err)
		t.Logf("pending error: %v", err)
		require.Contains(t, err.Error(), "pending")
		require.Contains(t, err.Error(), "NOT a member")
		require.Equal(t, "inactive", lab.sh(t, "iklim-db-02", "docker info --format '{{.Swarm.LocalNodeState}}'"))
		out, err = exec.Command("nsenter", "--net=/run/netns/iklim-db-02", "iptables", "-D", "OUTPUT", "-p", "tcp", "--dport", "2377", "-j", "DROP").CombinedOutput()
		require.NoError(t, err, string(out))
		res = lab.step(t, []string{"iklim-db-02"}, swarmInit)
		requireAllOK(t, res)
		require.NotNil(t, res["iklim-db-02"].ch)
		bootstrap["iklim-db-02"] = res["iklim-db-02"]
		lap("pending join")
	})

	t.Run("swarm rollback", func(t *testing.T) {
		lab.sh(t, "iklim-app-01", "docker stack rm lab >/dev/null")
		order := append(slices.Clone(labWorkers), "iklim-app-03", "iklim-app-02", "iklim-app-01")
		var errs []error
		for _, h := range order {
			if err := wire(lab, h, &docker.SwarmInit{}).Rollback(lab.ctx(h), lab.conns[h], bootstrap[h].ch); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", h, err))
			}
		}
		require.NoError(t, errors.Join(errs...))
		for _, h := range labAll {
			require.Equal(t, "inactive", lab.sh(t, h, "docker info --format '{{.Swarm.LocalNodeState}}'"), h)
		}
		lap("swarm rollback (6 hosts leave)")
	})
}

// reportingConn is a Conn that keeps the statuses a module reports
// (modules.Reporter), as the runner's step Conn shows them.
type reportingConn struct {
	modules.Conn
	mu sync.Mutex
	st []modules.Status
}

func (c *reportingConn) Report(st modules.Status) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st = append(c.st, st)
}

func (c *reportingConn) statuses() []modules.Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]modules.Status(nil), c.st...)
}

// cliOnly hides the Conn's Dialer: the modules must use the docker CLI.
type cliOnly struct{ modules.Conn }

// noSocket is a Dialer whose unix socket is not there (sshd refuses the
// channel): the modules must fall back to the docker CLI.
type noSocket struct{ modules.Conn }

func (c noSocket) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if network == "unix" {
		addr = "/nonexistent/iklim-test/docker.sock"
	}
	return c.Conn.(modules.Dialer).Dial(ctx, network, addr)
}
