package backup

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/transport"
)

// Site is a machine whose backup root List reads.
type Site struct {
	Host string
	Root string // empty: inventories.DefaultBackupRoot
	Conn modules.Conn
}

// HostRun is one run as one host recorded it.
type HostRun struct {
	Host       string     `json:"host"`
	Status     string     `json:"status"`
	Changes    int        `json:"changes"`
	Error      string     `json:"error,omitempty"`
	Finished   *time.Time `json:"finished,omitempty"`
	RolledBack bool       `json:"rolled_back,omitempty"`
}

// RunSummary is one run across the hosts that recorded it.
type RunSummary struct {
	ID string `json:"id"`
	// Hosts that hold records of the run, sorted.
	Hosts []string `json:"hosts"`
	// Changes is the number of change records over all hosts.
	Changes int `json:"changes"`
	// Status is the worst host status: running, interrupted, failed, ok.
	Status     string    `json:"status"`
	User       string    `json:"user,omitempty"`
	Playbook   string    `json:"playbook,omitempty"`
	Started    time.Time `json:"started"`
	GitCommit  string    `json:"git_commit,omitempty"`
	RollbackOf string    `json:"rollback_of,omitempty"`
	// RolledBack: a rollback of this run succeeded on some host.
	RolledBack bool      `json:"rolled_back,omitempty"`
	PerHost    []HostRun `json:"per_host"`
}

// List reads the runs recorded on every site, one command per site, all
// sites at once, and returns them oldest first. Sites that cannot be read
// are reported in the error; the runs of the others are still returned.
func List(ctx context.Context, sites []Site) ([]RunSummary, error) {
	type result struct {
		runs []runEntry
		err  error
	}
	results := make([]result, len(sites))
	var wg sync.WaitGroup
	for i, s := range sites {
		wg.Go(func() {
			runs, err := listSite(ctx, s)
			results[i] = result{runs, err}
		})
	}
	wg.Wait()

	byID := map[string]*RunSummary{}
	var errs []error
	for i, s := range sites {
		if results[i].err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Host, results[i].err))
			continue
		}
		for _, e := range results[i].runs {
			sum := byID[e.ID]
			if sum == nil {
				sum = &RunSummary{ID: e.ID}
				byID[e.ID] = sum
			}
			hr := HostRun{Host: s.Host, Status: StatusRunning, Changes: e.Changes, RolledBack: e.RolledBack}
			if e.Rec != nil {
				hr.Status = e.Rec.Status
				hr.Finished = e.Rec.Finished
				if e.Rec.Result != nil {
					hr.Error = e.Rec.Result.Error
				}
				if sum.User == "" {
					sum.User, sum.Playbook, sum.Started, sum.GitCommit = e.Rec.User, e.Rec.Playbook, e.Rec.Started, e.Rec.GitCommit
				}
				if hr.Status == StatusRunning {
					hr.Status = runningStatus(e.ID, e.Rec)
				}
			}
			if e.RollbackOf != "" {
				sum.RollbackOf = e.RollbackOf
			}
			sum.RolledBack = sum.RolledBack || e.RolledBack
			sum.Changes += e.Changes
			sum.PerHost = append(sum.PerHost, hr)
		}
	}
	out := make([]RunSummary, 0, len(byID))
	for _, sum := range byID {
		sort.Slice(sum.PerHost, func(i, j int) bool { return sum.PerHost[i].Host < sum.PerHost[j].Host })
		rank := map[string]int{StatusOK: 0, StatusFailed: 1, StatusInterrupted: 2, StatusRunning: 3}
		sum.Status = StatusOK
		for _, h := range sum.PerHost {
			sum.Hosts = append(sum.Hosts, h.Host)
			if rank[h.Status] > rank[sum.Status] {
				sum.Status = h.Status
			}
		}
		out = append(out, *sum)
	}
	sort.Slice(out, func(i, j int) bool { return CompareRunIDs(out[i].ID, out[j].ID) < 0 })
	return out, errors.Join(errs...)
}

// runningStatus tells a run that is still going from one that died: the
// control journal or the recorded pid on this control machine decide;
// without either it stays "running".
func runningStatus(id string, rec *RunRecord) string {
	if j, err := ReadJournal(id); err == nil && j.Status != StatusRunning {
		return StatusInterrupted
	}
	if alive, known := liveHere(rec.Control, rec.PID); known && !alive {
		return StatusInterrupted
	}
	return StatusRunning
}

// listSite lists the runs of s.Host: those in its host directory and, from
// the old layout, those whose run.json names it (or names no host).
func listSite(ctx context.Context, s Site) ([]runEntry, error) {
	root := s.Root
	if root == "" {
		root = inventories.DefaultBackupRoot
	}
	hdir := HostDir(root, s.Host)
	res, err := s.Conn.Run(ctx, shPrelude+fmt.Sprintf("R=%s; HD=%s\n[ -d \"$R\" ] || exit 0\n[ -d \"$HD\" ] && iklim_list \"$HD\"\necho LEGACY; iklim_list \"$R\"\n",
		remote.Quote(root), remote.Quote(hdir)))
	if err != nil {
		return nil, err
	}
	if err := res.Err("list " + root); err != nil {
		return nil, err
	}
	runs, err := parseRunList(res.Stdout, hdir, root)
	if err != nil {
		return nil, err
	}
	return ownRuns(runs, s.Host, false), nil
}

// ListHosts is List over inventory hosts: it connects through connector
// (in parallel) and adds the control machine's root, where delegated changes
// are recorded, unless control is nil.
func ListHosts(ctx context.Context, connector runner.Connector, hosts []*inventories.Host, control *inventories.Host) ([]RunSummary, error) {
	sites := make([]Site, len(hosts))
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() {
			var c modules.Conn
			var err error
			if h.Local {
				c = transport.NewLocalConn(h.Name)
			} else {
				c, err = connector.Connect(ctx, h)
			}
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", h.Name, err)
				return
			}
			sites[i] = Site{Host: h.Name, Root: hostRoot(h), Conn: c}
		})
	}
	wg.Wait()
	var ok []Site
	for i := range sites {
		if sites[i].Conn != nil {
			ok = append(ok, sites[i])
		}
	}
	if control != nil {
		ok = append(ok, Site{Host: control.Name, Root: hostRoot(control), Conn: transport.NewLocalConn(control.Name)})
	}
	runs, err := List(ctx, ok)
	return runs, errors.Join(append(errs, err)...)
}

// FormatSummaries renders runs as the table `iklim backups list` prints.
func FormatSummaries(runs []RunSummary) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-24s %-11s %7s  %-30s %s\n", "RUN", "STATUS", "CHANGES", "HOSTS", "PLAYBOOK")
	for _, r := range runs {
		hosts := strings.Join(r.Hosts, ",")
		if len(hosts) > 30 {
			hosts = fmt.Sprintf("%s… (%d)", hosts[:26], len(r.Hosts))
		}
		pb := r.Playbook
		if r.RollbackOf != "" {
			pb += " (rollback of " + r.RollbackOf + ")"
		}
		st := r.Status
		if r.RolledBack {
			st += "*"
		}
		fmt.Fprintf(&b, "%-24s %-11s %7d  %-30s %s\n", r.ID, st, r.Changes, hosts, pb)
	}
	return b.String()
}
