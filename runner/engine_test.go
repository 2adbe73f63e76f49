package runner_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/runner"
	"github.com/stretchr/testify/require"
	"github.com/zclconf/go-cty/cty"
)

// probe is a test module: it changes once per host (tracked in a shared
// journal) and can be told to fail.
type probe struct {
	j      *journal
	host   string
	key    string
	fail   bool
	output map[string]any
}

type journal struct {
	mu     sync.Mutex
	events []string
	done   map[string]bool
}

func newJournal() *journal { return &journal{done: map[string]bool{}} }

func (j *journal) add(s string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.events = append(j.events, s)
}

func (j *journal) list() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.events...)
}

func (p *probe) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	p.j.mu.Lock()
	defer p.j.mu.Unlock()
	if p.j.done[p.host+"/"+p.key] {
		return nil, nil
	}
	return modules.Changef("set %s on %s", p.key, p.host), nil
}

func (p *probe) Apply(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	p.j.add("apply " + p.host + " " + p.key)
	if p.fail {
		return errors.New("probe failed on purpose")
	}
	p.j.mu.Lock()
	p.j.done[p.host+"/"+p.key] = true
	p.j.mu.Unlock()
	return nil
}

func (p *probe) Output() map[string]any { return p.output }

func probeStep(j *journal, name string, tweak func(sc *runner.StepContext, p *probe)) runner.Step {
	return runner.Step{
		Name: name, Module: "probe", Source: "test.hcl:1",
		Build: func(sc *runner.StepContext) (modules.Module, error) {
			p := &probe{j: j, host: sc.Host.Name, key: name}
			if tweak != nil {
				tweak(sc, p)
			}
			return p, nil
		},
	}
}

// localInventory has n hosts that run on the control machine.
func localInventory(t *testing.T, n int) *inventories.Inventory {
	inv := inventories.New()
	for i := 1; i <= n; i++ {
		require.NoError(t, inv.Add(&inventories.Host{Name: fmt.Sprintf("h%02d", i), Local: true}))
	}
	return inv
}

type recorder struct {
	mu       sync.Mutex
	before   []string
	after    []string
	finished map[string]runner.HostRecap
	j        *journal
}

func (r *recorder) Before(ctx context.Context, c modules.Conn, h *inventories.Host, rec *runner.ChangeRecord) error {
	r.j.add(fmt.Sprintf("record %s %s #%d", rec.Host, rec.Step, rec.Seq))
	return nil
}

func (r *recorder) After(ctx context.Context, c modules.Conn, h *inventories.Host, rec *runner.ChangeRecord, err error) error {
	return nil
}

func (r *recorder) Finish(ctx context.Context, c modules.Conn, h *inventories.Host, res runner.HostRecap) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.finished == nil {
		r.finished = map[string]runner.HostRecap{}
	}
	r.finished[h.Name] = res
	return nil
}

type noConnector struct{}

func (noConnector) Connect(ctx context.Context, h *inventories.Host) (modules.Conn, error) {
	return nil, fmt.Errorf("test hosts are local; %s asked for SSH", h.Name)
}
func (noConnector) Close() error { return nil }

func run(t *testing.T, inv *inventories.Inventory, pb *runner.Playbook, tweak func(*runner.Options)) (*runner.Recap, []runner.Event) {
	t.Helper()
	var mu sync.Mutex
	var events []runner.Event
	opts := runner.Options{Inventory: inv, Connector: noConnector{}, Forks: 4,
		Events: func(e runner.Event) { mu.Lock(); events = append(events, e); mu.Unlock() }}
	if tweak != nil {
		tweak(&opts)
	}
	recap, err := runner.Run(context.Background(), pb, opts)
	require.NoError(t, err)
	return recap, events
}

func hostRecap(t *testing.T, r *runner.Recap, host string) runner.HostRecap {
	for _, h := range r.Hosts {
		if h.Host == host {
			return h
		}
	}
	t.Fatalf("no recap for %s", host)
	return runner.HostRecap{}
}

func TestRunIdempotentSecondRunReportsNoChange(t *testing.T) {
	j := newJournal()
	inv := localInventory(t, 5)
	pb := &runner.Playbook{Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
		probeStep(j, "a", nil), probeStep(j, "b", nil),
	}}}}
	first, _ := run(t, inv, pb, nil)
	require.Equal(t, 10, first.Changed())
	second, _ := run(t, inv, pb, nil)
	require.Equal(t, 0, second.Changed())
	require.Equal(t, 2, hostRecap(t, second, "h03").OK)
}

func TestRunFailedHostStopsOthersContinue(t *testing.T) {
	j := newJournal()
	inv := localInventory(t, 3)
	pb := &runner.Playbook{Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
		probeStep(j, "a", func(sc *runner.StepContext, p *probe) { p.fail = sc.Host.Name == "h02" }),
		probeStep(j, "b", nil),
	}}}}
	recap, events := run(t, inv, pb, nil)
	require.True(t, recap.Failed())
	require.Equal(t, 1, hostRecap(t, recap, "h02").Failed)
	require.Equal(t, 0, hostRecap(t, recap, "h02").Changed)
	require.Equal(t, 2, hostRecap(t, recap, "h01").Changed)
	require.NotContains(t, j.list(), "apply h02 b")
	var failed runner.Event
	for _, e := range events {
		if e.Status == runner.StatusFailed {
			failed = e
		}
	}
	require.Contains(t, failed.Error, "probe failed on purpose")
	require.Equal(t, "test.hcl:1", failed.Source)
}

func TestRunCheckModeAppliesNothing(t *testing.T) {
	j := newJournal()
	pb := &runner.Playbook{Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{probeStep(j, "a", nil)}}}}
	recap, _ := run(t, localInventory(t, 2), pb, func(o *runner.Options) { o.Check = true })
	require.Equal(t, 2, recap.Changed())
	require.Empty(t, j.list())
}

func TestRunRecordsBeforeApply(t *testing.T) {
	j := newJournal()
	rec := &recorder{j: j}
	pb := &runner.Playbook{Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
		probeStep(j, "a", nil), probeStep(j, "b", nil),
	}}}}
	run(t, localInventory(t, 1), pb, func(o *runner.Options) { o.Recorder = rec })
	require.Equal(t, []string{"record h01 a #1", "apply h01 a", "record h01 b #2", "apply h01 b"}, j.list())
	require.Equal(t, 2, rec.finished["h01"].Changed)
}

func TestRunRegisterAcrossHostsWithBarrierAndRunOnce(t *testing.T) {
	j := newJournal()
	var mu sync.Mutex
	seen := map[string]string{}
	read := probeStep(j, "read", func(sc *runner.StepContext, p *probe) {
		mu.Lock()
		defer mu.Unlock()
		seen[sc.Host.Name] = sc.Results["h01"]["tok"].GetAttr("token").AsString() + "/" +
			sc.Results[sc.Host.Name]["mine"].GetAttr("me").AsString()
	})
	read.Barrier = true
	once := probeStep(j, "once", nil)
	once.RunOnce = true
	once.Register = "leader"
	pb := &runner.Playbook{Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
		func() runner.Step {
			s := probeStep(j, "tok", func(sc *runner.StepContext, p *probe) {
				p.output = map[string]any{"token": "T-" + sc.Host.Name}
			})
			s.Register = "tok"
			return s
		}(),
		func() runner.Step {
			s := probeStep(j, "mine", func(sc *runner.StepContext, p *probe) { p.output = map[string]any{"me": sc.Host.Name} })
			s.Register = "mine"
			return s
		}(),
		read,
		once,
	}}}}
	recap, _ := run(t, localInventory(t, 4), pb, nil)
	require.False(t, recap.Failed())
	require.Equal(t, map[string]string{"h01": "T-h01/h01", "h02": "T-h01/h02", "h03": "T-h01/h03", "h04": "T-h01/h04"}, seen)
	applied := 0
	for _, e := range j.list() {
		if e == "apply h01 once" {
			applied++
		}
		require.NotContains(t, []string{"apply h02 once", "apply h03 once", "apply h04 once"}, e)
	}
	require.Equal(t, 1, applied)
}

func TestRunSerialBatchesInOrder(t *testing.T) {
	j := newJournal()
	pb := &runner.Playbook{Plays: []runner.Play{{Name: "p", Hosts: "all", Serial: 1, Steps: []runner.Step{
		probeStep(j, "a", nil), probeStep(j, "b", nil),
	}}}}
	run(t, localInventory(t, 3), pb, nil)
	require.Equal(t, []string{
		"apply h01 a", "apply h01 b", "apply h02 a", "apply h02 b", "apply h03 a", "apply h03 b",
	}, j.list())
}

func TestRunTagsAndWhen(t *testing.T) {
	j := newJournal()
	tagged := probeStep(j, "tagged", nil)
	tagged.Tags = []string{"deploy"}
	always := probeStep(j, "always", nil)
	always.Tags = []string{"always"}
	when := probeStep(j, "when", nil)
	when.Tags = []string{"deploy"}
	when.When = func(sc *runner.StepContext) (bool, error) { return sc.Host.Name == "h01", nil }
	pb := &runner.Playbook{Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{
		probeStep(j, "untagged", nil), tagged, always, when,
	}}}}
	recap, _ := run(t, localInventory(t, 2), pb, func(o *runner.Options) { o.Tags = []string{"deploy"} })
	require.ElementsMatch(t, []string{"apply h01 tagged", "apply h02 tagged", "apply h01 always", "apply h02 always", "apply h01 when"}, j.list())
	require.Equal(t, 1, hostRecap(t, recap, "h02").Skipped)
}

func TestRunRedactsSecretsInEvents(t *testing.T) {
	j := newJournal()
	secrets := modules.NewSecrets()
	secrets.Add("hunter2-password")
	s := probeStep(j, "leak", func(sc *runner.StepContext, p *probe) { p.fail = true; p.key = "hunter2-password" })
	s.Build = func(sc *runner.StepContext) (modules.Module, error) {
		return nil, errors.New("bad argument hunter2-password")
	}
	pb := &runner.Playbook{Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{s}}}}
	recap, events := run(t, localInventory(t, 1), pb, func(o *runner.Options) { o.Secrets = secrets })
	for _, e := range events {
		require.NotContains(t, e.Summary+e.Error, "hunter2-password")
	}
	require.NotContains(t, fmt.Sprint(recap), "hunter2-password")
	require.Contains(t, fmt.Sprint(events), modules.Redacted)
}

func TestToCty(t *testing.T) {
	v := runner.ToCty(map[string]any{"a": "x", "n": 3, "ok": true, "l": []string{"p", "q"}})
	require.Equal(t, "x", v.GetAttr("a").AsString())
	require.True(t, v.GetAttr("ok").True())
	require.Equal(t, cty.NumberIntVal(3), v.GetAttr("n"))
	require.Equal(t, 2, v.GetAttr("l").LengthInt())
}
