package system

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

func aptInfo() modules.Info {
	return modules.Info{
		Name: "apt",
		Doc:  "Keep Debian packages installed, at a version, at the newest version or removed; rollback restores the old versions",
		Example: `step "tools" {
  module           = "apt"
  name             = ["gettext", "tree", "jq=1.6-2.1"]
  update_cache     = true
  cache_valid_time = "1h"
}`,
		Outputs: []modules.Output{
			{Name: "cache_updated", Type: "bool", Doc: "whether the package lists were refreshed"},
			{Name: "packages", Type: "map(string)", Doc: "installed version per named package (\"\" when absent)"},
		},
		Diff: "the packages' versions before and after",
		New:  func() modules.Module { return &Apt{} },
	}
}

// Apt keeps Debian packages installed, at a version, at the newest version,
// or removed, like Ansible's apt. The state is read with dpkg-query, and what
// apt would do (dependencies included) with `apt-get -s`, so check mode lists
// every package a run would install or remove. Rollback puts every package
// the change touched back at the version it had, from the record.
type Apt struct {
	Name              []string `hcl:"name,optional" doc:"packages, each NAME or NAME=VERSION (present only); may be empty with update_cache"`
	State             string   `hcl:"state,optional" doc:"present (default): installed (at VERSION when given); latest: at the candidate version; absent: removed"`
	UpdateCache       bool     `hcl:"update_cache,optional" doc:"run apt-get update first; without cache_valid_time this happens (and counts as a change) on every run"`
	CacheValidTime    string   `hcl:"cache_valid_time,optional" doc:"Go duration such as \"1h\": update the cache only when its last update is older (implies update_cache)"`
	Purge             bool     `hcl:"purge,optional" doc:"absent: purge the packages' configuration files too"`
	InstallRecommends bool     `hcl:"install_recommends,optional" doc:"install recommended packages too (default: --no-install-recommends)"`
	LockWait          string   `hcl:"lock_wait,optional" doc:"how long apt waits for another apt or dpkg to release its lock, a Go duration; default \"5m\""`

	plan         aptPlan
	cacheUpdated bool
	changed      bool
	final        map[string]string
}

// aptStamp is touched after every successful update: apt-get update leaves
// the lists directory alone when nothing changed, so its mtime alone would
// say the cache is stale forever.
const aptStamp = "/var/lib/apt/periodic/update-success-stamp"

var aptNameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]*(:[a-z0-9-]+)?(=[A-Za-z0-9.+~:_-]+)?$`)

func (m *Apt) state() string {
	if m.State == "" {
		return "present"
	}
	return m.State
}

func (m *Apt) updateCache() bool { return m.UpdateCache || m.CacheValidTime != "" }

// Validate implements modules.Validator.
func (m *Apt) Validate() error {
	switch m.state() {
	case "present", "absent", "latest":
	default:
		return modules.ArgErrorf("state", "apt: state %q is not present, absent or latest", m.State)
	}
	if len(m.Name) == 0 && !m.updateCache() {
		return modules.ArgErrorf("name", "apt: name is empty; name packages or set update_cache")
	}
	seen := map[string]bool{}
	for _, n := range m.Name {
		if !aptNameRe.MatchString(n) {
			return modules.ArgErrorf("name", "apt: %q is not a package name (NAME, NAME:ARCH or NAME=VERSION)", n)
		}
		pkg, ver, _ := strings.Cut(n, "=")
		if ver != "" && m.state() != "present" {
			return modules.ArgErrorf("name", "apt: %q: a version is only for state = \"present\"", n)
		}
		if seen[pkg] {
			return modules.ArgErrorf("name", "apt: %s named twice", pkg)
		}
		seen[pkg] = true
	}
	if m.Purge && m.state() != "absent" {
		return modules.ArgErrorf("purge", "apt: purge is only for state = \"absent\"")
	}
	if _, err := m.validTime(); err != nil {
		return err
	}
	if _, err := m.lockWait(); err != nil {
		return err
	}
	return nil
}

func (m *Apt) validTime() (time.Duration, error) {
	if m.CacheValidTime == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(m.CacheValidTime)
	if err != nil || d <= 0 {
		return 0, modules.ArgErrorf("cache_valid_time", "apt: %q is not a positive Go duration such as \"1h\"", m.CacheValidTime)
	}
	return d, nil
}

func (m *Apt) lockWait() (time.Duration, error) {
	if m.LockWait == "" {
		return 5 * time.Minute, nil
	}
	d, err := time.ParseDuration(m.LockWait)
	if err != nil || d < 0 {
		return 0, modules.ArgErrorf("lock_wait", "apt: %q is not a Go duration such as \"5m\"", m.LockWait)
	}
	return d, nil
}

// aptPkg is one package's state: its version, "" when not installed.
type aptPkg struct {
	Name   string `json:"name"`
	Before string `json:"before"`
	// Config says the package was removed but its configuration files
	// stayed (dpkg status "rc"), so rollback removes rather than purges.
	Config bool   `json:"config,omitempty"`
	After  string `json:"after"` // as simulated; "" when removed
}

// aptBefore is what Rollback needs: every package the change would touch,
// the named ones and the dependencies apt resolved, with their versions.
type aptBefore struct {
	Packages []aptPkg `json:"packages"`
}

// aptPlan is what Check decided.
type aptPlan struct {
	needCache bool
	cacheAge  time.Duration // -1 when never updated
	args      []string      // apt-get install arguments: NAME, NAME=VER, NAME-
	state     map[string]dpkgState
	sim       []aptPkg // from apt-get -s; nil when it could not run
	simErr    string
}

// dpkgState is one package as dpkg-query reports it.
type dpkgState struct {
	Version   string
	Installed bool // status i (installed), or half-done states apt would fix
	Config    bool // only configuration files are left
	Candidate string
}

func (m *Apt) env() map[string]string {
	return map[string]string{"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
}

// aptGet is the common apt-get prefix: non-interactive, keeping changed
// configuration files, waiting for the dpkg lock.
func (m *Apt) aptGet() string {
	wait, _ := m.lockWait()
	s := "apt-get -q -y -o DPkg::Lock::Timeout=" + strconv.Itoa(int(wait.Seconds())) +
		" -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
	if !m.InstallRecommends {
		s += " --no-install-recommends"
	}
	return s
}

// decide computes apt-get's arguments from the packages' state.
func (m *Apt) decide(st map[string]dpkgState) []string {
	var args []string
	for _, n := range m.Name {
		pkg, ver, _ := strings.Cut(n, "=")
		s := st[pkg]
		switch m.state() {
		case "present":
			if !s.Installed || (ver != "" && s.Version != ver) {
				args = append(args, n)
			}
		case "latest":
			if !s.Installed || (s.Candidate != "" && s.Version != s.Candidate) {
				args = append(args, pkg)
			}
		case "absent":
			if s.Installed || (m.Purge && s.Config) {
				args = append(args, pkg+"-")
			}
		}
	}
	return args
}

func (m *Apt) makePlan(ctx context.Context, c modules.Conn) (aptPlan, error) {
	var names []string
	for _, n := range m.Name {
		pkg, _, _ := strings.Cut(n, "=")
		names = append(names, pkg)
	}
	res, err := c.Run(ctx, probeScript(names, m.state() == "latest"), modules.WithEnv(m.env()))
	if err != nil {
		return aptPlan{}, fmt.Errorf("apt: read package state: %w", err)
	}
	if err := res.Err("apt: read package state"); err != nil {
		return aptPlan{}, err
	}
	age, st, err := parseProbe(res.Stdout)
	if err != nil {
		return aptPlan{}, fmt.Errorf("apt: %w", err)
	}
	p := aptPlan{cacheAge: age, state: st}
	if m.updateCache() {
		valid, _ := m.validTime()
		p.needCache = valid == 0 || age < 0 || age > valid
	}
	p.args = m.decide(st)
	return p, nil
}

// simulate asks apt what p.args would do, dependencies included.
func (m *Apt) simulate(ctx context.Context, c modules.Conn, p *aptPlan) error {
	if len(p.args) == 0 {
		return nil
	}
	res, err := c.Run(ctx, m.aptGet()+m.flags()+" -s install "+quoteAll(p.args), modules.WithEnv(m.env()))
	if err != nil {
		return fmt.Errorf("apt: simulate: %w", err)
	}
	if !res.OK() {
		p.simErr = strings.TrimSpace(lastLines(res.Stderr+res.Stdout, 4))
		return nil
	}
	p.sim = parseSim(res.Stdout)
	return nil
}

func (m *Apt) flags() string {
	s := ""
	if m.Purge {
		s += " --purge"
	}
	if m.state() == "present" {
		s += " --allow-downgrades"
	}
	return s
}

// Check implements modules.Module: one round trip reads the cache age and
// the packages' state; when something is to do, a second one simulates it.
func (m *Apt) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	p, err := m.makePlan(ctx, c)
	if err != nil {
		return nil, err
	}
	m.plan = p
	if !p.needCache && len(p.args) == 0 {
		return nil, nil
	}
	if err := m.simulate(ctx, c, &m.plan); err != nil {
		return nil, err
	}
	p = m.plan
	if p.simErr != "" && !p.needCache {
		return nil, fmt.Errorf("apt: %s: %s", strings.Join(p.args, " "), p.simErr)
	}

	// The record: every named package, and every package apt would touch.
	touched := map[string]aptPkg{}
	for _, n := range m.Name {
		pkg, _, _ := strings.Cut(n, "=")
		s := p.state[pkg]
		touched[pkg] = aptPkg{Name: pkg, Before: s.Version, Config: s.Config, After: s.Version}
	}
	for _, s := range p.sim {
		name, _, _ := strings.Cut(s.Name, ":")
		if old, ok := touched[name]; ok {
			old.After = s.After
			touched[name] = old
			continue
		}
		touched[name] = aptPkg{Name: name, Before: s.Before, After: s.After}
	}
	var rec aptBefore
	for _, pk := range touched {
		rec.Packages = append(rec.Packages, pk)
	}
	sort.Slice(rec.Packages, func(i, j int) bool { return rec.Packages[i].Name < rec.Packages[j].Name })

	ch := &modules.Change{Summary: m.summary(p)}
	if err := ch.SetBefore(rec); err != nil {
		return nil, err
	}
	var before, after strings.Builder
	for _, pk := range rec.Packages {
		if pk.Before == pk.After && p.sim != nil {
			continue
		}
		fmt.Fprintf(&before, "%s: %s\n", pk.Name, orAbsent(pk.Before))
		if p.sim == nil {
			fmt.Fprintf(&after, "%s: %s\n", pk.Name, m.wantText(pk.Name))
		} else {
			fmt.Fprintf(&after, "%s: %s\n", pk.Name, orAbsent(pk.After))
		}
	}
	if p.needCache {
		before.WriteString("apt cache: " + ageText(p.cacheAge) + "\n")
		after.WriteString("apt cache: updated\n")
	}
	ch.Diff = &modules.Diff{Label: "apt", Before: before.String(), After: after.String()}
	return ch, nil
}

func (m *Apt) wantText(pkg string) string {
	for _, n := range m.Name {
		if p, ver, _ := strings.Cut(n, "="); p == pkg {
			switch {
			case m.state() == "absent":
				return "(absent)"
			case ver != "":
				return ver
			}
			return m.state()
		}
	}
	return "?"
}

func orAbsent(v string) string {
	if v == "" {
		return "(absent)"
	}
	return v
}

func ageText(age time.Duration) string {
	if age < 0 {
		return "never updated"
	}
	return "updated " + age.Round(time.Second).String() + " ago"
}

// summary says what would happen: "install a 1.0, b 1.0; remove c 2.0".
func (m *Apt) summary(p aptPlan) string {
	var parts []string
	if p.needCache {
		parts = append(parts, "update the apt cache ("+ageText(p.cacheAge)+")")
	}
	if len(p.args) > 0 && p.sim == nil {
		parts = append(parts, "then apt-get install "+strings.Join(p.args, " "))
		return strings.Join(parts, ", ")
	}
	var inst, up, down, rm []string
	for _, s := range p.sim {
		switch {
		case s.After == "":
			rm = append(rm, s.Name+" "+s.Before)
		case s.Before == "":
			inst = append(inst, s.Name+" "+s.After)
		case aptLess(s.Before, s.After):
			up = append(up, s.Name+" "+s.Before+" → "+s.After)
		default:
			down = append(down, s.Name+" "+s.Before+" → "+s.After)
		}
	}
	for _, g := range []struct {
		verb string
		list []string
	}{{"install", inst}, {"upgrade", up}, {"downgrade", down}, {"remove", rm}} {
		if len(g.list) > 0 {
			parts = append(parts, g.verb+" "+strings.Join(g.list, ", "))
		}
	}
	if len(parts) == 0 {
		parts = append(parts, "apt-get install "+strings.Join(p.args, " "))
	}
	return strings.Join(parts, "; ")
}

// aptLess reports whether Debian version a sorts before b (dpkg's order),
// for the summary's verb.
func aptLess(a, b string) bool { return debCompare(a, b) < 0 }

// Apply implements modules.Module: apt-get update when due (then the plan
// is made again against the fresh lists), then one apt-get install with
// every package to install, upgrade or remove (NAME-).
func (m *Apt) Apply(ctx context.Context, c modules.Conn, _ *modules.Change) error {
	if m.plan.needCache {
		cmd := m.aptGet() + " update && mkdir -p " + pathDir(aptStamp) + " && touch " + aptStamp
		res, err := c.Run(ctx, cmd, modules.WithEnv(m.env()))
		if err != nil {
			return fmt.Errorf("apt: update: %w", err)
		}
		if err := res.Err("apt-get update"); err != nil {
			return fmt.Errorf("apt: %w", err)
		}
		m.cacheUpdated, m.changed = true, true
		p, err := m.makePlan(ctx, c)
		if err != nil {
			return err
		}
		m.plan.args = p.args
	}
	if len(m.plan.args) > 0 {
		res, err := c.Run(ctx, m.aptGet()+m.flags()+" install "+quoteAll(m.plan.args), modules.WithEnv(m.env()))
		if err != nil {
			return fmt.Errorf("apt: install: %w", err)
		}
		if err := res.Err("apt-get install " + strings.Join(m.plan.args, " ")); err != nil {
			return fmt.Errorf("apt: %w", err)
		}
		m.changed = true
	}
	return m.readFinal(ctx, c)
}

func (m *Apt) readFinal(ctx context.Context, c modules.Conn) error {
	var names []string
	for _, n := range m.Name {
		pkg, _, _ := strings.Cut(n, "=")
		names = append(names, pkg)
	}
	m.final = map[string]string{}
	if len(names) == 0 {
		return nil
	}
	res, err := c.Run(ctx, probeScript(names, false), modules.WithEnv(m.env()))
	if err != nil {
		return fmt.Errorf("apt: read package state: %w", err)
	}
	_, st, err := parseProbe(res.Stdout)
	if err != nil {
		return fmt.Errorf("apt: %w", err)
	}
	for _, n := range names {
		m.final[n] = st[n].Version
	}
	return nil
}

// Output implements modules.Outputter: changed, cache_updated, and
// packages (name → installed version, "" when absent).
func (m *Apt) Output() map[string]any {
	pk := map[string]any{}
	if m.final == nil && m.plan.state != nil {
		for _, n := range m.Name {
			pkg, _, _ := strings.Cut(n, "=")
			pk[pkg] = m.plan.state[pkg].Version
		}
	}
	for k, v := range m.final {
		pk[k] = v
	}
	return map[string]any{"changed": m.changed, "cache_updated": m.cacheUpdated, "packages": pk}
}

// Rollback implements modules.Rollbacker: every recorded package goes back
// to its version before the run. Packages that were absent are purged (or
// removed, when only their configuration was left); packages the run
// removed, upgraded or downgraded are installed again at the old version
// from a source that still offers it or from apt's cache of downloaded
// .debs. A version found in neither is named in the error.
func (m *Apt) Rollback(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	var rec aptBefore
	if err := ch.DecodeBefore(&rec); err != nil {
		return fmt.Errorf("apt rollback: %w", err)
	}
	var names []string
	for _, p := range rec.Packages {
		names = append(names, p.Name)
	}
	if len(names) == 0 {
		return nil
	}
	// One round trip: the current state, the versions sources offer, and
	// the cached .debs.
	var b strings.Builder
	b.WriteString(probeScript(names, false))
	b.WriteString("apt-cache madison " + quoteAll(names) + " 2>/dev/null | sed 's/^/madison /'\n")
	b.WriteString("for f in /var/cache/apt/archives/*.deb; do [ -f \"$f\" ] && echo \"deb $f\"; done\ntrue\n")
	res, err := c.Run(ctx, b.String(), modules.WithEnv(m.env()))
	if err != nil {
		return fmt.Errorf("apt rollback: read package state: %w", err)
	}
	if err := res.Err("apt rollback: read package state"); err != nil {
		return err
	}
	_, st, err := parseProbe(res.Stdout)
	if err != nil {
		return fmt.Errorf("apt rollback: %w", err)
	}
	offered := map[string]bool{} // "name=version"
	debs := map[string]string{}  // "name=version" → path
	for _, line := range strings.Split(res.Stdout, "\n") {
		if rest, ok := strings.CutPrefix(line, "madison "); ok {
			f := strings.Split(rest, "|")
			if len(f) >= 2 {
				offered[strings.TrimSpace(f[0])+"="+strings.TrimSpace(f[1])] = true
			}
		}
		if p, ok := strings.CutPrefix(line, "deb "); ok {
			// NAME_VERSION_ARCH.deb, the epoch's colon written %3a.
			base := strings.TrimSuffix(p[strings.LastIndex(p, "/")+1:], ".deb")
			f := strings.Split(base, "_")
			if len(f) == 3 {
				debs[f[0]+"="+strings.ReplaceAll(f[1], "%3a", ":")] = p
			}
		}
	}

	var install, purge, remove, missing []string
	for _, p := range rec.Packages {
		cur := st[p.Name]
		switch {
		case p.Before == "" && cur.Installed:
			if p.Config {
				remove = append(remove, p.Name)
			} else {
				purge = append(purge, p.Name)
			}
		case p.Before != "" && cur.Version != p.Before:
			key := p.Name + "=" + p.Before
			switch {
			case offered[key]:
				install = append(install, key)
			case debs[key] != "":
				install = append(install, debs[key])
			default:
				missing = append(missing, p.Name+" "+p.Before)
			}
		}
	}
	run := func(what, cmd string) error {
		res, err := c.Run(ctx, cmd, modules.WithEnv(m.env()))
		if err != nil {
			return fmt.Errorf("apt rollback: %s: %w", what, err)
		}
		return res.Err("apt rollback: " + what)
	}
	// Old versions first: a downgrade may drop the need for a dependency
	// the run added, which is removed next.
	if len(install) > 0 {
		if err := run("install "+strings.Join(install, " "), m.aptGet()+" --allow-downgrades install "+quoteAll(install)); err != nil {
			return err
		}
	}
	if len(purge) > 0 {
		if err := run("purge "+strings.Join(purge, " "), m.aptGet()+" purge "+quoteAll(purge)); err != nil {
			return err
		}
	}
	if len(remove) > 0 {
		if err := run("remove "+strings.Join(remove, " "), m.aptGet()+" remove "+quoteAll(remove)); err != nil {
			return err
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("apt rollback: cannot reinstall %s: no source offers that version and no .deb is left in /var/cache/apt/archives", strings.Join(missing, ", "))
	}
	return nil
}

func pathDir(p string) string { return p[:strings.LastIndex(p, "/")] }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// probeScript prints the cache age line, then dpkg-query lines for names,
// then (with policy) apt-cache policy for them.
func probeScript(names []string, policy bool) string {
	var b strings.Builder
	b.WriteString("s=$(stat -c %Y " + aptStamp + " 2>/dev/null) || s=0\n" +
		"l=$(stat -c %Y /var/lib/apt/lists 2>/dev/null) || l=0\n" +
		"echo \"cache $s $l $(date +%s)\"\n")
	if len(names) > 0 {
		q := quoteAll(names)
		b.WriteString("dpkg-query -W -f='pkg ${Package}:${Architecture} ${db:Status-Abbrev} ${Version}\\n' " + q + " 2>/dev/null\n")
		if policy {
			b.WriteString("apt-cache policy " + q + " 2>/dev/null\n")
		}
	}
	b.WriteString("true\n")
	return b.String()
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = remote.Quote(s)
	}
	return strings.Join(q, " ")
}

// parseProbe reads probeScript's output: the cache age and every package's
// state, keyed by the names as given (NAME or NAME:ARCH).
func parseProbe(out string) (age time.Duration, st map[string]dpkgState, err error) {
	st = map[string]dpkgState{}
	age = -1
	var policyPkg string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 4 && f[0] == "cache":
			s, _ := strconv.ParseInt(f[1], 10, 64)
			l, _ := strconv.ParseInt(f[2], 10, 64)
			now, err := strconv.ParseInt(f[3], 10, 64)
			if err != nil {
				return 0, nil, fmt.Errorf("bad probe line %q", line)
			}
			if last := max(s, l); last > 0 {
				age = time.Duration(now-last) * time.Second
			}
		case len(f) >= 3 && f[0] == "pkg":
			full := f[1] // name:arch
			name, _, _ := strings.Cut(full, ":")
			abbrev := f[2]
			ver := ""
			if len(f) >= 4 {
				ver = f[3]
			}
			// db:Status-Abbrev is want, status, error: "ii ", "rc ", "un ".
			s := dpkgState{}
			if len(abbrev) >= 2 {
				switch abbrev[1] {
				case 'i', 'U', 'F', 'W', 't', 'H':
					s.Installed, s.Version = true, ver
				case 'c':
					s.Config = true
				}
			}
			for _, key := range []string{name, full} {
				if old, ok := st[key]; ok && old.Installed && !s.Installed {
					continue // another architecture is the installed one
				}
				st[key] = s
			}
		case len(line) > 0 && line[0] != ' ' && strings.HasSuffix(line, ":"):
			policyPkg = strings.TrimSuffix(line, ":")
		case len(f) == 2 && f[0] == "Candidate:" && policyPkg != "":
			s := st[policyPkg]
			if f[1] != "(none)" {
				s.Candidate = f[1]
			}
			st[policyPkg] = s
		}
	}
	return age, st, nil
}

// simRe matches apt-get -s lines: "Inst a [0.9] (1.0 origin [all])",
// "Remv b [1.0]", "Purg c [1.0]".
var simRe = regexp.MustCompile(`^(Inst|Remv|Purg) (\S+) (?:\[([^\]]+)\] ?)?(?:\((\S+))?`)

func parseSim(out string) []aptPkg {
	var pkgs []aptPkg
	for _, line := range strings.Split(out, "\n") {
		g := simRe.FindStringSubmatch(line)
		if g == nil {
			continue
		}
		p := aptPkg{Name: g[2], Before: g[3]}
		if g[1] == "Inst" {
			p.After = g[4]
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// debCompare compares two Debian versions as dpkg does:
// [epoch:]upstream[-revision].
func debCompare(a, b string) int {
	split := func(v string) (int, string, string) {
		epoch := 0
		if e, rest, ok := strings.Cut(v, ":"); ok {
			epoch, _ = strconv.Atoi(e)
			v = rest
		}
		rev := ""
		if i := strings.LastIndex(v, "-"); i >= 0 {
			v, rev = v[:i], v[i+1:]
		}
		return epoch, v, rev
	}
	ea, ua, ra := split(a)
	eb, ub, rb := split(b)
	if ea != eb {
		if ea < eb {
			return -1
		}
		return 1
	}
	if c := verrevcmp(ua, ub); c != 0 {
		return c
	}
	return verrevcmp(ra, rb)
}

// verrevcmp is dpkg's comparison of one version part: alternating non-digit
// runs (letters before other characters, ~ before everything, even the end)
// and digit runs compared as numbers.
func verrevcmp(a, b string) int {
	order := func(c byte) int {
		switch {
		case c >= '0' && c <= '9':
			return 0
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
			return int(c)
		case c == '~':
			return -1
		case c != 0:
			return int(c) + 256
		}
		return 0
	}
	at := func(s string, i int) byte {
		if i < len(s) {
			return s[i]
		}
		return 0
	}
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		for (i < len(a) && !isDigit(a[i])) || (j < len(b) && !isDigit(b[j])) {
			ac, bc := order(at(a, i)), order(at(b, j))
			if i < len(a) && isDigit(a[i]) {
				ac = 0
			}
			if j < len(b) && isDigit(b[j]) {
				bc = 0
			}
			if ac != bc {
				if ac < bc {
					return -1
				}
				return 1
			}
			i++
			j++
		}
		for i < len(a) && a[i] == '0' {
			i++
		}
		for j < len(b) && b[j] == '0' {
			j++
		}
		diff := 0
		for i < len(a) && isDigit(a[i]) && j < len(b) && isDigit(b[j]) {
			if diff == 0 {
				diff = int(a[i]) - int(b[j])
			}
			i++
			j++
		}
		if i < len(a) && isDigit(a[i]) {
			return 1
		}
		if j < len(b) && isDigit(b[j]) {
			return -1
		}
		if diff != 0 {
			if diff < 0 {
				return -1
			}
			return 1
		}
	}
	return 0
}
