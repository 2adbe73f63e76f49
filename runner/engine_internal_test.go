package runner

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/stretchr/testify/require"
	"github.com/zclconf/go-cty/cty"
)

// touch is a module that creates a file on the control machine.
type touch struct{ path string }

func (m *touch) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if _, err := os.Stat(m.path); err == nil {
		return nil, nil
	}
	return modules.Changef("create %s", m.path), nil
}

func (m *touch) Apply(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	return os.WriteFile(m.path, nil, 0o600)
}

func localEngine(t *testing.T) (*engine, *inventories.Host, *[]Event) {
	t.Helper()
	h := &inventories.Host{Name: "local", Address: "localhost", Local: true}
	inv := &inventories.Inventory{}
	require.NoError(t, inv.Add(h))
	var events []Event
	e, err := newEngine(&Playbook{}, Options{Inventory: inv, Connector: failConnector{}, Control: h,
		Events: func(ev Event) { events = append(events, ev) }})
	require.NoError(t, err)
	return e, h, &events
}

type failConnector struct{}

func (failConnector) Connect(context.Context, *inventories.Host) (modules.Conn, error) {
	return nil, errors.New("no ssh in this test")
}
func (failConnector) Close() error { return nil }

// TestPrepareNeedsNoHost: when and build run without a connection, and
// their failures are kept for commit to report.
func TestPrepareNeedsNoHost(t *testing.T) {
	e, h, _ := localEngine(t)
	boom := errors.New("boom")
	c := e.prepare(Play{}, Step{When: func(*StepContext) (bool, error) { return false, nil }}, h, nil)
	require.True(t, c.skip)
	require.Nil(t, c.m)
	c = e.prepare(Play{}, Step{When: func(*StepContext) (bool, error) { return false, boom }}, h, nil)
	require.ErrorIs(t, c.prepErr, boom)
	c = e.prepare(Play{}, Step{Build: func(*StepContext) (modules.Module, error) { return nil, boom }}, h, nil)
	require.ErrorIs(t, c.prepErr, boom)
	c = e.prepare(Play{}, Step{Build: func(*StepContext) (modules.Module, error) { return &touch{}, nil }}, h, nil)
	require.NoError(t, c.prepErr)
	require.False(t, c.checked)
}

// TestCommitChecksOnceAndApplies: on the plain path commit checks, applies
// and registers; with a check made ahead it does not check again.
func TestCommitChecksOnceAndApplies(t *testing.T) {
	e, h, events := localEngine(t)
	path := filepath.Join(t.TempDir(), "f")
	s := Step{Name: "touch", Module: "touch", Register: "t",
		Build: func(*StepContext) (modules.Module, error) { return &touch{path: path}, nil }}
	p := Play{Name: "p"}

	require.Equal(t, StatusChanged, e.commit(context.Background(), p, s, h, h.Name, e.prepare(p, s, h, nil)))
	require.FileExists(t, path)
	require.Equal(t, cty.True, e.snapshotResults()[h.Name]["t"].GetAttr("changed"))
	require.Equal(t, EventStepStart, (*events)[0].Type)
	require.Equal(t, EventHostResult, (*events)[1].Type)

	// Checked ahead as "nothing to do" although the file is gone: commit
	// trusts the batch's check and changes nothing.
	require.NoError(t, os.Remove(path))
	c := e.prepare(p, s, h, nil)
	c.checked = true
	require.Equal(t, StatusOK, e.commit(context.Background(), p, s, h, h.Name, c))
	require.NoFileExists(t, path)
}
