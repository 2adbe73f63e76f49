package docker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// serviceWaitInfo is the service_wait module's registry entry.
func serviceWaitInfo() modules.Info {
	return modules.Info{
		Name: "service_wait",
		Doc:  "Wait until Docker swarm services run all their replicas",
		Example: `step "app running" {
  module   = "service_wait"
  services = ["app_web", "app_worker"]
  max_wait = "5m"
  run_once = true
}`,
		Outputs: []modules.Output{
			{Name: "services", Type: "map(object)", Doc: "per service: running, desired (replicas) and update (update state)"},
			{Name: "waited", Type: "string", Doc: "how long it waited, e.g. 12.5s"},
		},
		New: func() modules.Module { return &ServiceWait{} },
	}
}

// ServiceWait waits until every named swarm service runs its desired number
// of replicas and no update or rollback is under way (seed step "Wait for
// Infrastructure Services"). Check probes once: services already converged
// make the step ok; otherwise Apply polls (one round trip per poll) and the
// step reports changed, or fails naming the service and its task error.
// Run it on a manager.
//
// A paused update fails the step. A rollback fails it when it completes
// while the step waits (swarm rolled back a deploy made just before); one
// that had completed before the step began is history, not a failure: the
// service runs its previous spec and nothing is under way. Docker keeps a
// service's last update status until its next update, so otherwise every
// later run would fail after one restored deploy (stack_deploy's restore
// ends in rollback_completed too).
type ServiceWait struct {
	Services []string `hcl:"services" doc:"full service names, e.g. iklimco_vault"`
	MaxWait  string   `hcl:"max_wait,optional" doc:"how long to wait, a Go duration (default 300s)"`
	Interval string   `hcl:"interval,optional" doc:"pause between polls (default 2s)"`

	states []serviceState
	waited time.Duration
}

// serviceState is one service's convergence as a poll sees it.
type serviceState struct {
	Name      string    `json:"name"`
	Running   int       `json:"running"`
	Desired   int       `json:"desired"`
	Update    string    `json:"update,omitempty"` // UpdateStatus.State
	UpdateMsg string    `json:"update_message,omitempty"`
	StartedAt time.Time `json:"-"` // UpdateStatus.StartedAt
	// CompletedAt is UpdateStatus.CompletedAt: when the update or rollback
	// ended, on the manager's clock.
	CompletedAt time.Time  `json:"-"`
	Tasks       []taskInfo `json:"-"`
}

// taskInfo is one line of `docker service ps --format '{{json .}}'`.
type taskInfo struct {
	ID           string `json:"ID"`
	Name         string `json:"Name"`
	Image        string `json:"Image"`
	Node         string `json:"Node"`
	DesiredState string `json:"DesiredState"`
	CurrentState string `json:"CurrentState"`
	Error        string `json:"Error"`
}

// service is the name of the task's service ("web.1" → "web").
func (t taskInfo) service() string {
	if i := strings.LastIndex(t.Name, "."); i > 0 {
		return t.Name[:i]
	}
	return t.Name
}

func (t taskInfo) failed() bool {
	s := strings.ToLower(t.CurrentState)
	return strings.HasPrefix(s, "failed") || strings.HasPrefix(s, "rejected")
}

// serviceLine is one line of `docker service ls --format '{{json .}}'`.
type serviceLine struct {
	ID       string `json:"ID"`
	Name     string `json:"Name"`
	Mode     string `json:"Mode"`
	Replicas string `json:"Replicas"`
	Image    string `json:"Image"`
}

// replicas parses "2/3", "2/3 (max 1 per node)" or "0/1 (1/1 completed)".
func (s serviceLine) replicas() (running, desired int) {
	f, _, _ := strings.Cut(strings.TrimSpace(s.Replicas), " ")
	a, b, ok := strings.Cut(f, "/")
	if !ok {
		return 0, 0
	}
	running, _ = strconv.Atoi(a)
	desired, _ = strconv.Atoi(b)
	return running, desired
}

const probeSep = "@@iklim@@"

// convergeScript prints, in one round trip, the service lines, the update
// status of each, and their tasks. filter selects services for docker
// service ls (e.g. "--filter label=com.docker.stack.namespace=x" or names).
func convergeScript(lsFilter string) string {
	return `ids=$(docker service ls -q ` + lsFilter + `) || exit 1
docker service ls ` + lsFilter + ` --format '{{json .}}'
echo ` + probeSep + `
[ -n "$ids" ] && docker service inspect --format '{"name":{{json .Spec.Name}},"update":{{json .UpdateStatus}}}' $ids
echo ` + probeSep + `
[ -n "$ids" ] && docker service ps --no-trunc --format '{{json .}}' $ids
exit 0
`
}

func nameFilter(names []string) string {
	var b strings.Builder
	for _, n := range names {
		b.WriteString(" --filter name=" + remote.Quote(n))
	}
	return b.String()
}

// probeServices runs convergeScript and returns the state of every service
// it lists, by name.
func probeServices(ctx context.Context, c modules.Conn, lsFilter string) (map[string]*serviceState, error) {
	res, err := dockerRun(ctx, c, "probe services", convergeScript(lsFilter))
	if err != nil {
		return nil, err
	}
	return parseServiceProbe(res.Stdout)
}

// updateStatus is a service's UpdateStatus, as the CLI's inspect and the
// Engine API both give it.
type updateStatus struct {
	State       string    `json:"State"`
	Message     string    `json:"Message"`
	StartedAt   time.Time `json:"StartedAt"`
	CompletedAt time.Time `json:"CompletedAt"`
}

// applyTo copies u into s; a service that was never updated has none.
func (u *updateStatus) applyTo(s *serviceState) {
	if u != nil {
		s.Update, s.UpdateMsg, s.StartedAt, s.CompletedAt = u.State, u.Message, u.StartedAt, u.CompletedAt
	}
}

func parseServiceProbe(out string) (map[string]*serviceState, error) {
	parts := sections(out, probeSep)
	for len(parts) < 3 {
		parts = append(parts, "")
	}
	lines, err := jsonLines[serviceLine](parts[0])
	if err != nil {
		return nil, err
	}
	states := map[string]*serviceState{}
	for _, l := range lines {
		r, d := l.replicas()
		states[l.Name] = &serviceState{Name: l.Name, Running: r, Desired: d}
	}
	type upd struct {
		Name   string        `json:"name"`
		Update *updateStatus `json:"update"`
	}
	ups, err := jsonLines[upd](parts[1])
	if err != nil {
		return nil, err
	}
	for _, u := range ups {
		if s, ok := states[u.Name]; ok {
			u.Update.applyTo(s)
		}
	}
	tasks, err := jsonLines[taskInfo](parts[2])
	if err != nil {
		return nil, err
	}
	for _, t := range tasks {
		if s, ok := states[t.service()]; ok {
			s.Tasks = append(s.Tasks, t)
		}
	}
	return states, nil
}

// verdict says whether a service converged, failed (with a reason) or is
// still on its way. baseline holds task ids that existed before the change:
// only newer failed tasks count towards failing fast. oldRollback says a
// rollback_completed status is left over from before the wait (see
// ServiceWait): the service then counts as converged once its replicas run.
func (s *serviceState) verdict(baseline map[string]bool, oldRollback bool) (done bool, failure string) {
	switch s.Update {
	case "rollback_completed":
		if oldRollback {
			break
		}
		fallthrough
	case "paused", "rollback_started", "rollback_paused":
		return false, fmt.Sprintf("service %s: update %s: %s%s", s.Name, strings.ReplaceAll(s.Update, "_", " "), s.UpdateMsg, s.taskError(baseline))
	}
	if s.Running >= s.Desired && s.Update != "updating" {
		return true, ""
	}
	failed := 0
	for _, t := range s.Tasks {
		if !baseline[t.ID] && t.failed() {
			failed++
		}
	}
	if failed >= 3 {
		return false, fmt.Sprintf("service %s: %d/%d running, %d new tasks failed%s", s.Name, s.Running, s.Desired, failed, s.taskError(baseline))
	}
	return false, ""
}

// taskError is the newest task error: "; task web.1 on node-1: non-zero exit (1)".
func (s *serviceState) taskError(baseline map[string]bool) string {
	for _, t := range s.Tasks { // docker lists the newest task of a slot first
		if baseline[t.ID] {
			continue
		}
		if t.Error != "" || t.failed() {
			msg := t.Error
			if msg == "" {
				msg = t.CurrentState
			}
			return fmt.Sprintf("; task %s on %s: %s", t.Name, remote.OrUnknown(t.Node), msg)
		}
	}
	return ""
}

func (s *serviceState) String() string {
	str := fmt.Sprintf("%s %d/%d", s.Name, s.Running, s.Desired)
	if s.Update != "" {
		str += " (" + s.Update + ")"
	}
	return str
}

// waitOpts tune waitConverged.
type waitOpts struct {
	// baseline holds task ids that existed before the change: only newer
	// failed tasks count towards failing fast.
	baseline map[string]bool
	// fresh maps services just updated to their UpdatedAt before the update:
	// until an update that started later shows, an old "completed" status or
	// the old tasks must not count as converged. After updateGrace without
	// one, the change needed no task update (replicas or service labels).
	fresh    map[string]time.Time
	timeout  time.Duration
	interval time.Duration
}

const updateGrace = 8 * time.Second

// waitConverged polls until every service in names converged, one fails, or
// the timeout passes. A missing service is waited for.
func waitConverged(ctx context.Context, c modules.Conn, lsFilter string, names []string, o waitOpts) (map[string]*serviceState, error) {
	start := time.Now()
	deadline := start.Add(o.timeout)
	modules.ReportStatus(c, modules.Status{Text: "waiting for " + strings.Join(names, ", ") + " to converge", Since: start, Max: o.timeout})
	// Rollbacks already completed at the first poll, by CompletedAt: left
	// over from earlier updates unless they belong to an update this step
	// started (fresh, and started after it).
	var oldRollbacks map[string]time.Time
	for {
		states, err := probeServices(ctx, c, lsFilter)
		if err != nil {
			if !isTransient(err) || time.Now().After(deadline) {
				return nil, err
			}
			if err := sleepCtx(ctx, o.interval); err != nil {
				return nil, err
			}
			continue
		}
		if oldRollbacks == nil {
			oldRollbacks = map[string]time.Time{}
			for n, s := range states {
				if before, ok := o.fresh[n]; ok && s.StartedAt.After(before) {
					continue
				}
				if s.Update == "rollback_completed" {
					oldRollbacks[n] = s.CompletedAt
				}
			}
		}
		var pending, failures []string
		for _, n := range names {
			s, ok := states[n]
			if !ok {
				pending = append(pending, n+" (missing)")
				continue
			}
			if before, ok := o.fresh[n]; ok && !s.StartedAt.After(before) && time.Since(start) < updateGrace {
				pending = append(pending, s.Name+" (update not started)")
				continue
			}
			old, seen := oldRollbacks[n]
			done, failure := s.verdict(o.baseline, seen && old.Equal(s.CompletedAt))
			switch {
			case failure != "":
				failures = append(failures, failure)
			case !done:
				pending = append(pending, s.String()+s.taskError(o.baseline))
			}
		}
		if len(failures) > 0 {
			sort.Strings(failures)
			return states, errors.New(strings.Join(failures, "; "))
		}
		if len(pending) == 0 {
			return states, nil
		}
		if time.Now().After(deadline) {
			return states, fmt.Errorf("not converged after %s: %s", o.timeout, strings.Join(pending, "; "))
		}
		modules.ReportStatus(c, modules.Status{Text: "waiting for replicas: " + strings.Join(pending, "; "), Since: start, Max: o.timeout})
		if err := sleepCtx(ctx, o.interval); err != nil {
			return states, err
		}
	}
}

// Validate implements Validator.
func (m *ServiceWait) Validate() error {
	if len(m.Services) == 0 {
		return modules.ArgErrorf("services", "service_wait: services is required")
	}
	if _, err := remote.ParseDuration("service_wait: max_wait", m.MaxWait, 0); err != nil {
		return &modules.ArgError{Arg: "max_wait", Err: err}
	}
	if _, err := remote.ParseDuration("service_wait: interval", m.Interval, 0); err != nil {
		return &modules.ArgError{Arg: "interval", Err: err}
	}
	return nil
}

// Check implements Module: one probe. Over the engine API the services'
// status says whether they converged; only when one has not are its tasks
// read (with the CLI), for the verdict and the message.
func (m *ServiceWait) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	states, ok, err := engineServiceStates(ctx, c, m.Services)
	switch {
	case err != nil && !errors.Is(err, errNoEngine):
		return nil, fmt.Errorf("service_wait: %s: docker service ls: %w", c.Host(), err)
	case err != nil || !ok || !m.converged(states):
		states, err = probeServices(ctx, c, nameFilter(m.Services))
		if err != nil {
			return nil, fmt.Errorf("service_wait: %w", err)
		}
	}
	var pending []string
	m.states = nil
	for _, n := range m.Services {
		s, ok := states[n]
		if !ok {
			pending = append(pending, n+" (missing)")
			continue
		}
		m.states = append(m.states, *s)
		// A rollback completed before the step is history (see ServiceWait).
		if done, failure := s.verdict(nil, true); !done || failure != "" {
			pending = append(pending, s.String())
		}
	}
	if len(pending) == 0 {
		return nil, nil
	}
	return modules.Changef("wait for %s", strings.Join(pending, ", ")), nil
}

// converged reports whether every service of the step runs its replicas
// and no update or rollback is under way.
func (m *ServiceWait) converged(states map[string]*serviceState) bool {
	for _, n := range m.Services {
		s, ok := states[n]
		if !ok {
			return false
		}
		if done, failure := s.verdict(nil, true); !done || failure != "" {
			return false
		}
	}
	return true
}

// Apply implements Module: poll until converged.
func (m *ServiceWait) Apply(ctx context.Context, c modules.Conn, _ *modules.Change) error {
	timeout, _ := remote.ParseDuration("max_wait", m.MaxWait, 300*time.Second)
	interval, _ := remote.ParseDuration("interval", m.Interval, 2*time.Second)
	start := time.Now()
	states, err := waitConverged(ctx, c, nameFilter(m.Services), m.Services, waitOpts{timeout: timeout, interval: interval})
	m.waited = time.Since(start).Round(time.Millisecond)
	m.states = nil
	for _, n := range m.Services {
		if s, ok := states[n]; ok {
			m.states = append(m.states, *s)
		}
	}
	if err != nil {
		return fmt.Errorf("service_wait: %w", err)
	}
	return nil
}

// Output implements Outputter: each service's running/desired and how long
// the step waited.
func (m *ServiceWait) Output() map[string]any {
	svcs := map[string]any{}
	for _, s := range m.states {
		svcs[s.Name] = map[string]any{"running": s.Running, "desired": s.Desired, "update": s.Update}
	}
	return map[string]any{"services": svcs, "waited": m.waited.String()}
}
