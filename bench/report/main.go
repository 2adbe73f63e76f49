// Command report turns one bench/run.sh run into a markdown table, a
// timestamped JSON file under bench/results/, and a last line
//
//	speedup_vs_ansible=<x> ratio_to_floor=<y>
//
// both for the no-change run: speedup = ansible wall / iklim wall, ratio =
// iklim wall / floor wall (the median of the floor runs). It also reports the
// first run and the steady-state runs (2 of 10 steps change) against the
// floor and Ansible, remote processes spawned per host, and, behind the
// delaying proxy, round trips per host. It exits non-zero when a run failed,
// a no-change run changed anything or a steady-state run did not change
// exactly 2 steps per host.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// measurement is what bench/timeit writes.
type measurement struct {
	ExitCode      int     `json:"exit_code"`
	WallS         float64 `json:"wall_s"`
	UserS         float64 `json:"user_s"`
	SysS          float64 `json:"sys_s"`
	CPUS          float64 `json:"cpu_s"`
	CPUSource     string  `json:"cpu_source"`
	CPURusageS    float64 `json:"cpu_rusage_s"`
	MaxRSSMB      float64 `json:"max_rss_mb"`
	TreeRSSPeakMB float64 `json:"tree_rss_peak_mb"`
	Leftover      int     `json:"leftover_processes"`
	ServerCPUS    float64 `json:"server_cpu_s"`
}

// remote is what run.sh counts around a run: processes its sshds spawned
// and, behind the proxy, connections and round trips.
type remote struct {
	RemoteProcs        int      `json:"remote_processes"`
	RemoteProcsPerHost float64  `json:"remote_processes_per_host"`
	Connections        *int64   `json:"proxy_connections,omitempty"`
	RoundTrips         *int64   `json:"proxy_round_trips,omitempty"`
	RoundTripsPerHost  *float64 `json:"round_trips_per_host,omitempty"`
}

// Row is one line of the table.
type Row struct {
	Tool  string `json:"tool"`
	Run   string `json:"run"`
	Label string `json:"label"`
	measurement
	remote
	Hosts       int  `json:"hosts_in_recap"`
	OK          int  `json:"ok"`
	Changed     int  `json:"changed"`
	Failed      int  `json:"failed"`
	Unreachable int  `json:"unreachable"`
	HasRecap    bool `json:"-"`
}

// Results is the JSON file.
type Results struct {
	Date              string            `json:"date"`
	Hosts             int               `json:"hosts"`
	StepsPerHost      int               `json:"steps_per_host"`
	Machine           map[string]string `json:"machine"`
	Rows              []Row             `json:"runs"`
	FloorRuns         []map[string]any  `json:"floor_runs"`
	IklimNoChangeRuns []map[string]any  `json:"iklim_no_change_runs"`
	IklimSteadyRuns   []map[string]any  `json:"iklim_steady_runs"`
	IklimFirstRuns    []map[string]any  `json:"iklim_first_runs"`
	Shards            int               `json:"sshd_shards"`
	RTTMS             int               `json:"rtt_ms"`
	AnsibleSkipped    bool              `json:"ansible_skipped"`
	SpeedupNoChange   *float64          `json:"speedup_vs_ansible,omitempty"`
	RatioToFloor      float64           `json:"ratio_to_floor"`
	RatioFirstToFloor float64           `json:"ratio_first_run_to_floor"`
	RatioSteady       float64           `json:"ratio_steady_to_floor"`
	SpeedupSteady     *float64          `json:"speedup_steady_vs_ansible,omitempty"`
	SpeedupFirst      *float64          `json:"speedup_first_vs_ansible,omitempty"`
	Targets           map[string]any    `json:"targets"`
	Settings          map[string]string `json:"settings"`
	Problems          []string          `json:"problems,omitempty"`
	Notes             []string          `json:"notes"`
}

func main() {
	dir := flag.String("dir", "", "bench temp dir (m/*.json, logs/*.log)")
	hosts := flag.Int("hosts", 0, "number of hosts")
	repeat := flag.Int("repeat", 3, "number of floor runs and of each kind of iklim run taken in turns with them (iklim2…, steady1…, first1…)")
	skipAnsible := flag.Bool("skip-ansible", false, "Ansible was skipped")
	shards := flag.Int("shards", 1, "number of sshds the hosts were sharded over")
	rttMS := flag.Int("rtt-ms", 0, "round-trip time the delaying proxy added, 0 for none")
	repo := flag.String("repo", ".", "repository root, for the commit")
	out := flag.String("out", "", "directory for the JSON result")
	settings := map[string]string{}
	flag.Func("setting", "`NAME=TEXT` describing how a tool was run (repeatable)", func(v string) error {
		k, t, _ := strings.Cut(v, "=")
		settings[k] = t
		return nil
	})
	flag.Parse()

	res := Results{
		Date: time.Now().UTC().Format(time.RFC3339), Hosts: *hosts, StepsPerHost: 10,
		Machine: machine(*repo), AnsibleSkipped: *skipAnsible, Settings: settings,
		Targets: map[string]any{}, Shards: *shards, RTTMS: *rttMS,
	}
	// load reads a run's measurement and what run.sh counted around it.
	load := func(dir, name string) (Row, bool) {
		r, ok := loadMeasurement(dir, name)
		if !ok {
			return r, false
		}
		if b, err := os.ReadFile(filepath.Join(dir, "m", name+".procs")); err == nil {
			r.RemoteProcs, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			r.RemoteProcsPerHost = round2(float64(r.RemoteProcs) / float64(*hosts))
		}
		var p0, p1 map[string]int64
		if readJSON(filepath.Join(dir, "m", name+".proxy0.json"), &p0) && readJSON(filepath.Join(dir, "m", name+".proxy1.json"), &p1) {
			c, rt := p1["connections"]-p0["connections"], p1["round_trips"]-p0["round_trips"]
			per := round2(float64(rt) / float64(*hosts))
			r.Connections, r.RoundTrips, r.RoundTripsPerHost = &c, &rt, &per
		}
		return r, true
	}
	var problems []string

	// The floor: median wall of its runs.
	var floors []Row
	for i := 1; i <= *repeat; i++ {
		name := "floor" + strconv.Itoa(i)
		r, ok := load(*dir, name)
		if !ok {
			continue
		}
		var fo map[string]any
		if b, err := os.ReadFile(filepath.Join(*dir, "logs", name+".log")); err == nil {
			_ = json.Unmarshal(firstJSONLine(b), &fo)
		}
		if fo == nil {
			fo = map[string]any{}
		}
		fo["wall_s"], fo["cpu_s"], fo["server_cpu_s"], fo["max_rss_mb"], fo["exit_code"] = r.WallS, r.CPUS, r.ServerCPUS, r.MaxRSSMB, r.ExitCode
		fo["remote_processes_per_host"] = r.RemoteProcsPerHost
		if r.RoundTripsPerHost != nil {
			fo["round_trips_per_host"] = *r.RoundTripsPerHost
		}
		res.FloorRuns = append(res.FloorRuns, fo)
		if r.ExitCode != 0 {
			problems = append(problems, fmt.Sprintf("%s exited with status %d", name, r.ExitCode))
		}
		floors = append(floors, r)
	}
	if len(floors) == 0 {
		fmt.Fprintln(os.Stderr, "report: no floor run")
		os.Exit(1)
	}
	sort.Slice(floors, func(i, j int) bool { return floors[i].WallS < floors[j].WallS })
	floor := floors[len(floors)/2]
	floor.Tool, floor.Run = "floor (x/crypto/ssh)", fmt.Sprintf("median of %d", len(floors))
	floor.Label = "floor"
	res.Rows = append(res.Rows, floor)

	// loadRun reads one tool run and checks its recap.
	// again: a no-change run; steady: a run that must change 2 steps a host.
	loadRun := func(name, tool, run string, again bool, steady ...bool) (Row, bool) {
		row, ok := load(*dir, name)
		if !ok {
			problems = append(problems, "no measurement for "+name)
			return row, false
		}
		row.Tool, row.Run, row.Label = tool, run, name
		recap(filepath.Join(*dir, "logs", name+".log"), &row)
		if row.ExitCode != 0 || row.Failed > 0 || row.Unreachable > 0 || row.Hosts != *hosts {
			problems = append(problems, fmt.Sprintf("%s: exit status %d, %d of %d hosts in its recap, %d failed, %d unreachable (see its log)",
				name, row.ExitCode, row.Hosts, *hosts, row.Failed, row.Unreachable))
		}
		if again && row.Changed > 0 {
			problems = append(problems, fmt.Sprintf("%s: a run after the first changed %d things", name, row.Changed))
		}
		if len(steady) > 0 && steady[0] && row.Changed != 2**hosts {
			problems = append(problems, fmt.Sprintf("%s: a steady-state run changed %d things, not 2 per host (%d)", name, row.Changed, 2**hosts))
		}
		return row, true
	}
	byName := map[string]Row{}
	// runs loads the named runs and returns the median by wall time,
	// labelled run, and each run's figures.
	runs := func(names []string, run string, again, steady bool) (Row, []Row, []map[string]any) {
		var rows []Row
		var each []map[string]any
		for _, name := range names {
			if row, ok := loadRun(name, "iklim", "", again, steady); ok {
				rows = append(rows, row)
				each = append(each, map[string]any{
					"run": name, "wall_s": row.WallS, "cpu_s": row.CPUS, "server_cpu_s": row.ServerCPUS,
					"max_rss_mb": row.MaxRSSMB, "changed": row.Changed, "exit_code": row.ExitCode,
					"remote_processes_per_host": row.RemoteProcsPerHost,
				})
			}
		}
		if len(rows) == 0 {
			return Row{}, nil, each
		}
		sorted := slices.Clone(rows)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i].WallS < sorted[j].WallS })
		med := sorted[len(sorted)/2]
		med.Run = fmt.Sprintf("%s, median of %d", run, len(sorted))
		res.Rows = append(res.Rows, med)
		return med, rows, each
	}
	named := func(prefix string, from, to int) []string {
		var out []string
		for i := from; i <= to; i++ {
			out = append(out, prefix+strconv.Itoa(i))
		}
		return out
	}
	// The first runs: iklim1, then first1… on fresh hosts of their own; the
	// no-change runs (iklim2…); the steady-state runs (steady1…).
	first, firstRows, firstEach := runs(append([]string{"iklim1"}, named("first", 1, *repeat)...), "first (all change)", false, false)
	byName["iklim1"] = first
	res.IklimFirstRuns = firstEach
	ik, again, noChange := runs(named("iklim", 2, *repeat+1), "second (no change)", true, false)
	byName["iklim2"] = ik
	res.IklimNoChangeRuns = noChange
	st, steadies, steadyEach := runs(named("steady", 1, *repeat), "steady state (2 of 10 change)", false, true)
	res.IklimSteadyRuns = steadyEach
	for i, run := range []string{"first (all change)", "second (no change)"} {
		name := "ansible" + strconv.Itoa(i+1)
		if *skipAnsible {
			break
		}
		if row, ok := loadRun(name, "ansible", run, i == 1); ok {
			byName[name] = row
			res.Rows = append(res.Rows, row)
		}
	}
	if !*skipAnsible {
		if row, ok := loadRun("ansible3", "ansible", "steady state (2 of 10 change)", false, true); ok {
			byName["ansible3"] = row
			res.Rows = append(res.Rows, row)
		}
	}

	if ik.WallS > 0 {
		res.RatioToFloor = round2(ik.WallS / floor.WallS)
	}
	if first.WallS > 0 {
		res.RatioFirstToFloor = round2(first.WallS / floor.WallS)
	}
	if st.WallS > 0 {
		res.RatioSteady = round2(st.WallS / floor.WallS)
	}
	speedup := func(ansible string, iklim Row) *float64 {
		if an, ok := byName[ansible]; ok && iklim.WallS > 0 {
			s := round2(an.WallS / iklim.WallS)
			return &s
		}
		return nil
	}
	res.SpeedupNoChange = speedup("ansible2", ik)
	res.SpeedupFirst = speedup("ansible1", first)
	res.SpeedupSteady = speedup("ansible3", st)
	// Issue 15's goals, each a ratio measured side by side in this run.
	res.Targets["ratio_to_floor_max"] = 1.0
	res.Targets["ratio_to_floor_met"] = res.RatioToFloor > 0 && res.RatioToFloor <= 1.0
	res.Targets["sshd_cpu_no_change_s"] = ik.ServerCPUS
	res.Targets["sshd_cpu_floor_s"] = floor.ServerCPUS
	res.Targets["sshd_cpu_at_most_floor_met"] = ik.ServerCPUS > 0 && ik.ServerCPUS <= floor.ServerCPUS
	res.Targets["ratio_first_run_to_floor_max"] = 2.0
	res.Targets["ratio_first_run_to_floor_met"] = res.RatioFirstToFloor > 0 && res.RatioFirstToFloor <= 2.0
	res.Targets["ratio_steady_to_floor_max"] = 1.5
	res.Targets["ratio_steady_to_floor_met"] = res.RatioSteady > 0 && res.RatioSteady <= 1.5
	if res.SpeedupNoChange != nil {
		res.Targets["speedup_vs_ansible_min"] = 60
		res.Targets["speedup_vs_ansible_met"] = *res.SpeedupNoChange >= 60
	}
	if res.SpeedupSteady != nil {
		res.Targets["speedup_steady_vs_ansible_min"] = 30
		res.Targets["speedup_steady_vs_ansible_met"] = *res.SpeedupSteady >= 30
	}
	maxRSS := 0.0
	for _, r := range slices.Concat(firstRows, again, steadies) {
		maxRSS = max(maxRSS, r.MaxRSSMB)
	}
	rssMax := 150.0
	if *hosts >= 1000 {
		rssMax = 200
	}
	res.Targets["iklim_peak_rss_mb"] = maxRSS
	res.Targets["iklim_peak_rss_max_mb"] = rssMax
	res.Targets["iklim_peak_rss_met"] = maxRSS > 0 && maxRSS <= rssMax
	res.Targets["no_failures"] = len(problems) == 0
	res.Problems = problems
	res.Notes = []string{
		"wall_s: elapsed time of the tool's process, from start to exit.",
		"cpu_s: CPU time of the tool's whole process tree: its own cgroup v2's usage when cpu_source is cgroup, else getrusage of reaped children (cpu_rusage_s). For Ansible it includes its forks, ssh clients and the ControlPersist masters, which are ended by pid when the run exits.",
		"server_cpu_s: CPU time of everything sshd ran for the run (per-connection sshd, sessions, remote shells, commands, Ansible's remote Python): sshd's cgroup v2 usage, else the listener's reaped children (which misses much).",
		"max_rss_mb: peak RSS of the largest single process of the tree (getrusage ru_maxrss); for iklim and the floor that is the whole tool.",
		"tree_rss_peak_mb: peak of the tree's summed RSS, sampled every 50 ms; shared pages count once per process, so it overstates forked Ansible workers.",
		"floor: one connection per host, all at once, one session per trivial command (true), 10 per host in sequence.",
		"The floor, iklim's no-change run, its steady-state run and its first run (on fresh hosts, with directories and backup roots of their own, after the very first) are run several times, taking turns, and the median (by wall time) is shown; the machine may be shared with other work.",
		"steady state: bench/workload-steady.hcl (.yml), where a copy and a line edit the same file with a new rev each run: 2 of 10 steps change per host; Ansible's steady run follows its no-change run on the same hosts.",
		"remote_processes_per_host: processes (and threads) spawned on the server side during the run, per host: every sshd runs as the init of a pid namespace of its own and pids are handed out in order, so the growth of the namespace's last pid counts them (per-connection sshd, sessions, shells, commands).",
		"round_trips_per_host (with a delaying proxy): client-to-server chunks that follow server-to-client traffic on the same connection, summed over the run's connections (the SSH handshake's included), per host.",
	}
	if *skipAnsible {
		res.Notes = append(res.Notes, "Ansible was skipped (BENCH_SKIP_ANSIBLE=1).")
	}

	printTable(os.Stdout, &res)

	if *out != "" {
		name := fmt.Sprintf("%s-%dhosts.json", time.Now().UTC().Format("2006-01-02T15-04-05Z"), *hosts)
		b, _ := json.MarshalIndent(res, "", "  ")
		p := filepath.Join(*out, name)
		if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
			problems = append(problems, err.Error())
		} else {
			fmt.Printf("\nresults: %s\n", p)
		}
	}
	speed := "skipped"
	if res.SpeedupNoChange != nil {
		speed = fmt.Sprintf("%.1f", *res.SpeedupNoChange)
	}
	fmt.Printf("speedup_vs_ansible=%s ratio_to_floor=%.2f\n", speed, res.RatioToFloor)
	if len(problems) > 0 {
		os.Exit(1)
	}
}

func printTable(w io.Writer, res *Results) {
	m := res.Machine
	fmt.Fprintf(w, "\n%d hosts x %d steps, %d sshd, %d ms RTT; %s cores (%s), Linux %s, %s, %s, %s\n\n",
		res.Hosts, res.StepsPerHost, res.Shards, res.RTTMS, m["nproc"], m["cpu"], m["kernel"], m["go"], m["openssh"], m["ansible"])
	for _, k := range []string{"iklim", "ansible", "floor", "sshd", "latency"} {
		if v, ok := res.Settings[k]; ok {
			fmt.Fprintf(w, "- %s: %s\n", k, v)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| tool | run | wall s | CPU s (client) | CPU s (sshd) | remote procs/host | round trips/host | peak RSS MB | tree RSS MB | ok | changed | failed | unreachable |")
	fmt.Fprintln(w, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range res.Rows {
		recap := "| – | – | – | – |"
		if r.HasRecap {
			recap = fmt.Sprintf("| %d | %d | %d | %d |", r.OK, r.Changed, r.Failed, r.Unreachable)
		}
		rt := "–"
		if r.RoundTripsPerHost != nil {
			rt = fmt.Sprintf("%.1f", *r.RoundTripsPerHost)
		}
		fmt.Fprintf(w, "| %s | %s | %.2f | %.2f | %.2f | %.1f | %s | %.1f | %.1f %s\n",
			r.Tool, r.Run, r.WallS, r.CPUS, r.ServerCPUS, r.RemoteProcsPerHost, rt, r.MaxRSSMB, r.TreeRSSPeakMB, recap)
	}
	fmt.Fprintln(w)
	t := res.Targets
	if res.SpeedupNoChange != nil {
		fmt.Fprintf(w, "no-change run: iklim is %.1fx faster than Ansible (target >= 60x: %s)\n", *res.SpeedupNoChange, yes(t["speedup_vs_ansible_met"]))
	} else {
		fmt.Fprintln(w, "Ansible skipped (BENCH_SKIP_ANSIBLE=1)")
	}
	fmt.Fprintf(w, "no-change run: iklim takes %.2fx the floor's wall time (target <= 1.0x: %s)\n", res.RatioToFloor, yes(t["ratio_to_floor_met"]))
	fmt.Fprintf(w, "no-change run: iklim's sshd CPU %.2f s, the floor's %.2f s (target at most the floor's: %s)\n", t["sshd_cpu_no_change_s"], t["sshd_cpu_floor_s"], yes(t["sshd_cpu_at_most_floor_met"]))
	fmt.Fprintf(w, "first run: iklim takes %.2fx the floor's wall time (target <= 2.0x: %s)\n", res.RatioFirstToFloor, yes(t["ratio_first_run_to_floor_met"]))
	fmt.Fprintf(w, "steady state: iklim takes %.2fx the floor's wall time (target <= 1.5x: %s)\n", res.RatioSteady, yes(t["ratio_steady_to_floor_met"]))
	if res.SpeedupSteady != nil {
		fmt.Fprintf(w, "steady state: iklim is %.1fx faster than Ansible (target >= 30x: %s)\n", *res.SpeedupSteady, yes(t["speedup_steady_vs_ansible_met"]))
	}
	if res.SpeedupFirst != nil {
		fmt.Fprintf(w, "first run: iklim is %.1fx faster than Ansible\n", *res.SpeedupFirst)
	}
	fmt.Fprintf(w, "iklim peak RSS: %.1f MB (target <= %.0f MB: %s)\n", t["iklim_peak_rss_mb"], t["iklim_peak_rss_max_mb"], yes(t["iklim_peak_rss_met"]))
	if len(res.Problems) == 0 {
		fmt.Fprintln(w, "every run ended without failure, every second run without change")
	}
	for _, p := range res.Problems {
		fmt.Fprintln(w, "PROBLEM:", p)
	}
}

func yes(v any) string {
	if b, _ := v.(bool); b {
		return "met"
	}
	return "NOT met"
}

// readJSON decodes the JSON file at path into v.
func readJSON(path string, v any) bool {
	b, err := os.ReadFile(path)
	return err == nil && json.Unmarshal(b, v) == nil
}

func loadMeasurement(dir, name string) (Row, bool) {
	var r Row
	b, err := os.ReadFile(filepath.Join(dir, "m", name+".json"))
	if err != nil {
		return r, false
	}
	if err := json.Unmarshal(b, &r.measurement); err != nil {
		return r, false
	}
	return r, true
}

// firstJSONLine returns the first line of b that starts with '{'.
func firstJSONLine(b []byte) []byte {
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "{") {
			return []byte(l)
		}
	}
	return nil
}

var (
	recapLine = regexp.MustCompile(`^\S+\s+:?\s*ok=\d+\s+changed=\d+`)
	recapKV   = regexp.MustCompile(`(\w+)=(\d+)`)
)

// recap sums the per-host recap lines of iklim ("h001  ok=10 changed=0 …")
// or Ansible ("h001 : ok=10 changed=0 unreachable=0 failed=0 …").
func recap(path string, r *Row) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !recapLine.MatchString(line) {
			continue
		}
		r.HasRecap = true
		r.Hosts++
		for _, kv := range recapKV.FindAllStringSubmatch(line, -1) {
			n, _ := strconv.Atoi(kv[2])
			switch kv[1] {
			case "ok":
				r.OK += n
			case "changed":
				r.Changed += n
			case "failed":
				r.Failed += n
			case "unreachable":
				r.Unreachable += n
			}
		}
	}
}

func machine(repo string) map[string]string {
	m := map[string]string{
		"nproc": strconv.Itoa(runtime.NumCPU()),
		"go":    runtime.Version(),
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/etc/debian_version"); err == nil {
		m["debian"] = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("ssh", "-V").CombinedOutput(); err == nil {
		m["openssh"] = strings.TrimSpace(strings.SplitN(string(out), ",", 2)[0])
	}
	if out, err := exec.Command("ansible-playbook", "--version").Output(); err == nil {
		m["ansible"] = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	if out, err := exec.Command("git", "-C", repo, "rev-parse", "--short", "HEAD").Output(); err == nil {
		m["iklim_commit"] = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "-C", repo, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
			m["iklim_commit"] += " (with uncommitted changes in the tree)"
		}
	}
	return m
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }
