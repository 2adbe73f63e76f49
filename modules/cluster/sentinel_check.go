package cluster

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

func sentinelCheckInfo() modules.Info {
	return modules.Info{
		Name: "sentinel_check",
		Doc:  "Verify (read-only) that a Redis Sentinel set agrees on one master with the expected sentinels and replicas, waiting while it converges; registers the master",
		Example: `step "redis sentinel" {
  module          = "sentinel_check"
  service         = "iklimco_redis-sentinel"
  master_name     = "prod-master"
  sentinels       = 3
  replicas        = 2
  password_file   = "/run/secrets/redis_password"
  converge_within = "90s"
  register        = "redis"
}`,
		Outputs: []modules.Output{
			{Name: "master", Type: "string", Doc: "the master as host:port"},
			{Name: "master_host", Type: "string", Doc: "the master's address"},
			{Name: "master_port", Type: "string", Doc: "the master's port"},
			{Name: "replicas", Type: "list(string)", Doc: "the master's replicas as host:port"},
			{Name: "sentinels", Type: "list(string)", Doc: "the sentinels asked, node/container"},
		},
		ReadOnly: true,
		New:      func() modules.Module { return &SentinelCheck{} },
	}
}

// SentinelCheck verifies a Redis Sentinel set and changes nothing. Run it
// on a swarm manager: it lists the running tasks of the sentinel service,
// reaches each task's node through the play's peers and, with one
// `docker exec` per sentinel, asks it for the master's address, ckquorum,
// the master's state, its replicas and the other sentinels; then it asks
// the master itself (INFO replication) from inside a sentinel's container.
//
// It passes only when every sentinel names the same master, ckquorum is
// OK, the set has `sentinels` sentinels and the master `replicas` replicas
// whose links are up, and the master reports role master with that many
// connected replicas. Until converge_within it probes again; then it fails
// naming each sentinel that disagrees and what it said.
//
// The Redis password (for the master's INFO) comes from password (a
// sensitive variable, sent over stdin and into the container through the
// exec's environment) or password_file (a swarm secret inside the
// containers). It never appears in argv, output or records.
type SentinelCheck struct {
	modules.RunPeers   // the sentinel and Redis nodes
	modules.RunSecrets // the password joins them

	Service        string `hcl:"service" doc:"swarm service of the sentinels, e.g. iklimco_redis-sentinel; the step runs on a manager"`
	MasterName     string `hcl:"master_name" doc:"the name the sentinels monitor, e.g. prod-master"`
	Sentinels      int    `hcl:"sentinels" doc:"how many sentinels the set must have"`
	Replicas       int    `hcl:"replicas" doc:"how many replicas the master must have, each with its link up"`
	Port           int    `hcl:"port,optional" doc:"sentinel port (default 26379)"`
	Password       string `hcl:"password,optional" sensitive:"true" doc:"Redis password, to ask the master its role (from a sensitive variable)"`
	PasswordFile   string `hcl:"password_file,optional" doc:"file inside the sentinel containers that holds the Redis password, e.g. /run/secrets/redis_password"`
	ConvergeWithin string `hcl:"converge_within,optional" doc:"how long the set may take to converge (default 60s)"`
	Interval       string `hcl:"interval,optional" doc:"pause between probes (default 2s)"`

	last sentinelView
}

// sentinelAnswer is what one sentinel said.
type sentinelAnswer struct {
	Node      string
	Container string
	Master    string // host:port, or the error
	CKQuorum  string
	Others    int // num-other-sentinels
	Flags     string
	Replicas  []map[string]string
	Info      map[string]string // the master's INFO replication, asked from this container
	InfoErr   string
	Err       string
}

func (a sentinelAnswer) name() string {
	return fmt.Sprintf("sentinel on %s (container %s)", a.Node, a.Container)
}

// sentinelView is one probe of the whole set.
type sentinelView struct {
	answers  []sentinelAnswer
	tasks    []string // node|state lines of tasks meant to run
	master   string
	problems []string
}

// Validate implements modules.Validator.
func (m *SentinelCheck) Validate() error {
	switch {
	case m.Service == "":
		return modules.ArgErrorf("service", "name the sentinels' swarm service")
	case m.MasterName == "":
		return modules.ArgErrorf("master_name", "name the master the sentinels monitor")
	case m.Sentinels < 1:
		return modules.ArgErrorf("sentinels", "want at least 1, got %d", m.Sentinels)
	case m.Replicas < 0:
		return modules.ArgErrorf("replicas", "want 0 or more, got %d", m.Replicas)
	case m.Port < 0 || m.Port > 65535:
		return modules.ArgErrorf("port", "want a port number, got %d", m.Port)
	case m.Password != "" && m.PasswordFile != "":
		return modules.ArgErrorf("password_file", "set password or password_file, not both")
	}
	if _, err := duration("converge_within", m.ConvergeWithin, 0); err != nil {
		return err
	}
	_, err := duration("interval", m.Interval, 0)
	return err
}

func (m *SentinelCheck) port() int {
	if m.Port == 0 {
		return 26379
	}
	return m.Port
}

// Check implements modules.Module: probe until the set passes or
// converge_within ends. It never returns a change.
func (m *SentinelCheck) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	m.MarkSensitive(m.Password)
	within, _ := duration("converge_within", m.ConvergeWithin, 60*time.Second)
	every, _ := duration("interval", m.Interval, 2*time.Second)
	start := time.Now()
	for {
		v, err := m.probe(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("sentinel_check: %w", err)
		}
		m.last = v
		if len(v.problems) == 0 {
			return nil, nil
		}
		if time.Since(start) >= within {
			return nil, fmt.Errorf("sentinel_check: %s did not converge within %s: %s",
				m.MasterName, within, strings.Join(v.problems, "; "))
		}
		modules.ReportStatus(c, modules.Status{Text: "waiting for sentinels of " + m.MasterName + " to agree: " + strings.Join(v.problems, "; "),
			Since: start, Max: within})
		if err := sleepCtx(ctx, every); err != nil {
			return nil, err
		}
	}
}

// Apply implements modules.Module; Check never returns a change.
func (m *SentinelCheck) Apply(context.Context, modules.Conn, *modules.Change) error { return nil }

// Rollback implements modules.Rollbacker: there is nothing to undo.
func (m *SentinelCheck) Rollback(context.Context, modules.Conn, *modules.Change) error { return nil }

// sentinelScript runs in one sentinel container. IKLIM_REDIS_PW comes
// from the exec's environment; PWFILE is read inside the container.
const sentinelScript = `P=$1; M=$2; PWFILE=$3
pw=${IKLIM_REDIS_PW:-}; [ -n "$pw" ] || [ -z "$PWFILE" ] || pw=$(cat "$PWFILE")
unset IKLIM_REDIS_PW REDISCLI_AUTH
r() { redis-cli -p "$P" SENTINEL "$@" 2>&1; }
echo @@addr; addr=$(r get-master-addr-by-name "$M" | tr '\n' ' '); echo "$addr"
echo @@ckquorum; r ckquorum "$M"
echo @@master; r master "$M"
echo @@replicas; r replicas "$M"
set -- $addr
if [ $# -eq 2 ]; then echo @@info; REDISCLI_AUTH=$pw redis-cli --no-auth-warning -h "$1" -p "$2" INFO replication 2>&1; fi`

func (m *SentinelCheck) probe(ctx context.Context, c modules.Conn) (sentinelView, error) {
	var v sentinelView
	res, err := c.Run(ctx, "docker service ps --filter desired-state=running --format '{{.Node}}|{{.CurrentState}}|{{.Error}}' "+remote.Quote(m.Service))
	if err != nil {
		return v, fmt.Errorf("%s: docker service ps %s: %w", c.Host(), m.Service, err)
	}
	if !res.OK() {
		return v, res.Err(c.Host() + ": docker service ps " + m.Service + " (run sentinel_check on a swarm manager)")
	}
	nodes := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(res.Stdout), "\n") {
		if l == "" {
			continue
		}
		v.tasks = append(v.tasks, l)
		node, state, _ := strings.Cut(l, "|")
		if strings.HasPrefix(strings.ToLower(state), "running") {
			nodes[node] = true
		}
	}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for _, node := range slices.Sorted(mapKeys(nodes)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			as := m.askNode(ctx, c, node)
			mu.Lock()
			v.answers = append(v.answers, as...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return v, err
	}
	sort.Slice(v.answers, func(i, j int) bool {
		return v.answers[i].Node+v.answers[i].Container < v.answers[j].Node+v.answers[j].Container
	})
	m.judge(&v)
	return v, nil
}

// askNode asks every running sentinel container on node.
func (m *SentinelCheck) askNode(ctx context.Context, c modules.Conn, node string) []sentinelAnswer {
	nc, err := peerConn(ctx, m.Peers(), c, node)
	if err != nil {
		return []sentinelAnswer{{Node: node, Container: "?", Err: err.Error()}}
	}
	script := `IFS= read -r IKLIM_REDIS_PW || true; export IKLIM_REDIS_PW
for ctr in $(docker ps -q --filter label=com.docker.swarm.service.name=` + remote.Quote(m.Service) + ` --filter status=running --filter status=paused); do
echo "@@ctr $ctr"
docker exec -e IKLIM_REDIS_PW "$ctr" sh -c ` + remote.Quote(sentinelScript) + ` sentinel-check ` +
		strconv.Itoa(m.port()) + " " + remote.Quote(m.MasterName) + " " + remote.Quote(m.PasswordFile) + ` 2>&1
done
true # one sentinel's failure is its answer, not the node's`
	res, err := nc.Run(ctx, script, modules.WithStdin(strings.NewReader(m.Password+"\n")))
	if err != nil {
		return []sentinelAnswer{{Node: node, Container: "?", Err: err.Error()}}
	}
	if !res.OK() {
		return []sentinelAnswer{{Node: node, Container: "?", Err: res.Err(node + ": ask sentinels").Error()}}
	}
	var out []sentinelAnswer
	for _, part := range strings.Split(res.Stdout, "@@ctr ")[1:] {
		id, body, _ := strings.Cut(part, "\n")
		a := sentinelAnswer{Node: node, Container: strings.TrimSpace(id)}
		s := sections(body)
		if _, ok := s["addr"]; !ok {
			a.Err = remote.TrimOutput(strings.TrimSpace(body))
			out = append(out, a)
			continue
		}
		a.Master = strings.TrimSpace(s["addr"])
		if f := strings.Fields(a.Master); len(f) == 2 {
			a.Master = f[0] + ":" + f[1]
		} else if a.Master == "" {
			a.Master = "(no answer)"
		}
		a.CKQuorum = strings.TrimSpace(s["ckquorum"])
		master := pairs(strings.Split(s["master"], "\n"))
		a.Flags = master["flags"]
		a.Others, _ = strconv.Atoi(master["num-other-sentinels"])
		a.Replicas = records(strings.Split(s["replicas"], "\n"))
		if info, ok := s["info"]; ok {
			a.Info = map[string]string{}
			for _, l := range strings.Split(info, "\n") {
				if k, val, ok := strings.Cut(strings.TrimSpace(l), ":"); ok {
					a.Info[k] = val
				}
			}
			if a.Info["role"] == "" {
				a.InfoErr = remote.TrimOutput(info)
			}
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return []sentinelAnswer{{Node: node, Container: "?", Err: "no running container of " + m.Service + " on " + node}}
	}
	return out
}

// pairs reads a flat key/value list, one item a line.
func pairs(lines []string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(lines); i += 2 {
		m[strings.TrimSpace(lines[i])] = strings.TrimSpace(lines[i+1])
	}
	return m
}

// records reads an array of flat key/value lists; each starts with "name".
func records(lines []string) []map[string]string {
	var out []map[string]string
	for i := 0; i+1 < len(lines); i += 2 {
		k, v := strings.TrimSpace(lines[i]), strings.TrimSpace(lines[i+1])
		if k == "name" || len(out) == 0 {
			out = append(out, map[string]string{})
		}
		out[len(out)-1][k] = v
	}
	return out
}

// judge fills v.master and v.problems.
func (m *SentinelCheck) judge(v *sentinelView) {
	count := map[string]int{}
	for _, a := range v.answers {
		if a.Err == "" {
			count[a.Master]++
		}
	}
	best := 0
	for addr, n := range count {
		if n > best || (n == best && addr < v.master) {
			v.master, best = addr, n
		}
	}
	if len(v.answers) != m.Sentinels {
		var names []string
		for _, a := range v.answers {
			names = append(names, a.Node+"/"+a.Container)
		}
		v.problems = append(v.problems, fmt.Sprintf("want %d sentinels, %d run (%s; tasks: %s)",
			m.Sentinels, len(v.answers), strings.Join(names, ", "), strings.Join(v.tasks, ", ")))
	}
	var agree *sentinelAnswer
	for i, a := range v.answers {
		switch {
		case a.Err != "":
			v.problems = append(v.problems, a.name()+": "+a.Err)
			continue
		case a.Master != v.master:
			v.problems = append(v.problems, fmt.Sprintf("%s says the master of %s is %s, the others %s", a.name(), m.MasterName, a.Master, v.master))
			continue
		case !strings.HasPrefix(a.CKQuorum, "OK"):
			v.problems = append(v.problems, fmt.Sprintf("%s: ckquorum: %s", a.name(), a.CKQuorum))
		case a.Others != m.Sentinels-1:
			v.problems = append(v.problems, fmt.Sprintf("%s knows %d other sentinels, want %d", a.name(), a.Others, m.Sentinels-1))
		case strings.Contains(a.Flags, "down"):
			v.problems = append(v.problems, fmt.Sprintf("%s flags the master %s", a.name(), a.Flags))
		}
		if agree == nil {
			agree = &v.answers[i]
		}
	}
	if agree == nil {
		return
	}
	up := 0
	var bad []string
	for _, r := range agree.Replicas {
		addr := r["ip"] + ":" + r["port"]
		if r["master-link-status"] == "ok" && !strings.Contains(r["flags"], "down") && !strings.Contains(r["flags"], "disconnected") {
			up++
		} else {
			bad = append(bad, fmt.Sprintf("%s (flags %s, link %s)", addr, r["flags"], r["master-link-status"]))
		}
	}
	if up != m.Replicas || len(bad) > 0 {
		v.problems = append(v.problems, fmt.Sprintf("%s sees %d replicas with their link up, want %d%s", agree.name(), up, m.Replicas, listOf(" (not up: ", bad, ")")))
	}
	switch {
	case agree.Info == nil:
		v.problems = append(v.problems, fmt.Sprintf("master %s did not answer INFO replication", v.master))
	case agree.Info["role"] != "master":
		v.problems = append(v.problems, fmt.Sprintf("master %s reports role %q%s", v.master, agree.Info["role"], listOf(": ", []string{agree.InfoErr}, "")))
	case agree.Info["connected_slaves"] != strconv.Itoa(m.Replicas):
		v.problems = append(v.problems, fmt.Sprintf("master %s has %s connected replicas, want %d", v.master, agree.Info["connected_slaves"], m.Replicas))
	}
}

func listOf(pre string, items []string, post string) string {
	if len(items) == 0 || (len(items) == 1 && items[0] == "") {
		return ""
	}
	return pre + strings.Join(items, ", ") + post
}

// Output implements modules.Outputter: the master (host:port, host, port),
// its replicas and the sentinels, as the last probe saw them.
func (m *SentinelCheck) Output() map[string]any {
	host, port, _ := strings.Cut(m.last.master, ":")
	replicas := []string{}
	sentinels := []string{}
	for i, a := range m.last.answers {
		sentinels = append(sentinels, a.Node+"/"+a.Container)
		if a.Master == m.last.master && len(replicas) == 0 {
			for _, r := range m.last.answers[i].Replicas {
				replicas = append(replicas, r["ip"]+":"+r["port"])
			}
		}
	}
	sort.Strings(replicas)
	return map[string]any{"master": m.last.master, "master_host": host, "master_port": port,
		"replicas": replicas, "sentinels": sentinels}
}
