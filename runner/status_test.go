package runner_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/runner"
	"github.com/stretchr/testify/require"
)

// waiter is a test module that reports its status as a polling wait does.
type waiter struct{ seen <-chan struct{} }

func (w *waiter) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if _, ok := c.(modules.Dialer); !ok {
		return nil, errors.New("the step's Conn hides the host Conn's Dialer")
	}
	since := time.Now()
	for range 5 { // one event: the text does not change
		modules.ReportStatus(c, modules.Status{Text: "waiting for s3cret-token", Since: since, Max: time.Minute})
	}
	// Within a second of the first: held back, then emitted.
	modules.ReportStatus(c, modules.Status{Text: "waiting for the second thing", Since: since, Max: time.Minute})
	select {
	case <-w.seen:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	modules.ReportStatus(c, modules.Status{Text: "last words"}) // held back, and the step ends
	return nil, nil
}

func (w *waiter) Apply(context.Context, modules.Conn, *modules.Change) error { return nil }

// TestStepStatusEvents: a module's status reports become step_status
// events of its host and step, coalesced (one per change, a change within
// a second emitted when the second ends), redacted, and none after the
// step's result.
func TestStepStatusEvents(t *testing.T) {
	seen := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	var events []runner.Event
	secrets := modules.NewSecrets()
	secrets.Add("s3cret-token")
	pb := &runner.Playbook{Plays: []runner.Play{{Name: "p", Hosts: "all", Steps: []runner.Step{{
		Name: "wait", Module: "waiter", Source: "test.hcl:3",
		Build: func(*runner.StepContext) (modules.Module, error) { return &waiter{seen: seen}, nil },
	}}}}}
	recap, err := runner.Run(context.Background(), pb, runner.Options{Inventory: localInventory(t, 1), Connector: noConnector{}, Secrets: secrets,
		Events: func(ev runner.Event) {
			mu.Lock()
			events = append(events, ev)
			mu.Unlock()
			if ev.Type == runner.EventStepStatus && strings.Contains(ev.Summary, "second") {
				once.Do(func() { close(seen) })
			}
		}})
	require.NoError(t, err)
	require.Equal(t, 1, hostRecap(t, recap, "h01").OK, "%+v", recap)

	var texts []string
	ended := false
	for _, ev := range events {
		switch ev.Type {
		case runner.EventHostResult:
			ended = true
		case runner.EventStepStatus:
			require.False(t, ended, "a status after the step's result")
			require.Equal(t, "h01", ev.Host)
			require.Equal(t, "p", ev.Play)
			require.Equal(t, "wait", ev.Step)
			require.Equal(t, "waiter", ev.Module)
			require.Equal(t, "test.hcl:3", ev.Source)
			require.NotEmpty(t, ev.RunID)
			texts = append(texts, ev.Summary)
			if ev.Summary != "last words" {
				require.Equal(t, map[string]string{"max_wait": "1m0s"}, ev.Extra)
			}
		}
	}
	require.GreaterOrEqual(t, len(texts), 2, "%q", texts)
	require.Equal(t, []string{"waiting for (sensitive)", "waiting for the second thing"}, texts[:2])
	require.LessOrEqual(t, len(texts), 3, "%q", texts)
	for _, ev := range events {
		require.NotContains(t, ev.Summary, "s3cret")
	}
}
