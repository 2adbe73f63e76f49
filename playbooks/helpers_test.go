package playbooks_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/stock"
	"github.com/iklimco/iklim/playbooks"
	"github.com/iklimco/iklim/runner"
	"github.com/stretchr/testify/require"
	"github.com/zclconf/go-cty/cty"
)

// echo is a test module with a few typed arguments.
type echo struct {
	Message string            `hcl:"message"`
	Count   int               `hcl:"count,optional"`
	Labels  []string          `hcl:"labels,optional"`
	Env     map[string]string `hcl:"env,optional"`
	Token   string            `hcl:"token,optional" sensitive:"true"`
	Mode    string            `hcl:"mode,optional"`
	Any     cty.Value         `hcl:"any,optional"`
}

func (e *echo) Check(context.Context, modules.Conn) (*modules.Change, error) { return nil, nil }
func (e *echo) Apply(context.Context, modules.Conn, *modules.Change) error   { return nil }

func (e *echo) Validate() error {
	if e.Mode != "" && e.Mode != "fast" && e.Mode != "slow" {
		return errors.New("mode must be fast or slow")
	}
	return nil
}

// waiter declares an argument named like a step meta-argument.
type waiter struct {
	Port    int    `hcl:"port"`
	Timeout string `hcl:"timeout,optional"`
}

func (w *waiter) Check(context.Context, modules.Conn) (*modules.Change, error) { return nil, nil }
func (w *waiter) Apply(context.Context, modules.Conn, *modules.Change) error   { return nil }

// testRegistry is a new registry of every stock module (the example
// playbooks use them) and the test modules.
func testRegistry(t testing.TB) *modules.Registry {
	t.Helper()
	reg := stock.Registry()
	require.NoError(t, reg.Add(
		modules.Info{Name: "test_echo", Doc: "echo for tests", New: func() modules.Module { return &echo{} }},
		modules.Info{Name: "test_wait", Doc: "wait for tests", New: func() modules.Module { return &waiter{} }},
	))
	require.NoError(t, reg.Add(hostileModules()...))
	return reg
}

const testInventory = `
host "app-01" {
  address = "10.0.0.1"
  labels  = { type = "service" }
  vars    = { http_port = 8080 }
}
host "app-02" {
  address = "10.0.0.2"
  labels  = { type = "service" }
  vars    = { http_port = 8081 }
}
host "db-01" {
  address = "10.0.0.3"
}
group "app" { hosts = ["app-01", "app-02"] }
group "db"  { hosts = ["db-01"] }
`

func inventory(t *testing.T) *inventories.Inventory {
	t.Helper()
	inv, diags := inventories.Parse([]byte(testInventory), "inv.hcl")
	require.False(t, diags.HasErrors(), diags.Error())
	return inv
}

// compile parses src as test.hcl and compiles it against the test inventory.
func compile(t *testing.T, src string, opts playbooks.Options) (*runner.Playbook, hcl.Diagnostics) {
	t.Helper()
	f, diags := playbooks.Parse([]byte(src), "test.hcl")
	if diags.HasErrors() {
		return nil, diags
	}
	if opts.Inventory == nil {
		opts.Inventory = inventory(t)
	}
	if opts.Modules == nil {
		opts.Modules = testRegistry(t)
	}
	pb, d := playbooks.Compile(f, opts)
	return pb, append(diags, d...)
}

func mustCompile(t *testing.T, src string, opts playbooks.Options) *runner.Playbook {
	t.Helper()
	pb, diags := compile(t, src, opts)
	require.False(t, diags.HasErrors(), diags.Error())
	require.NotNil(t, pb)
	return pb
}

// lineOf is the 1-based line of the first occurrence of marker in src.
func lineOf(t *testing.T, src, marker string) int {
	t.Helper()
	i := strings.Index(src, marker)
	require.GreaterOrEqual(t, i, 0, "marker %q not in source", marker)
	return strings.Count(src[:i], "\n") + 1
}

func host(t *testing.T, inv *inventories.Inventory, name string) *inventories.Host {
	t.Helper()
	h, ok := inv.Host(name)
	require.True(t, ok, name)
	return h
}

func step(t *testing.T, pb *runner.Playbook, play, name string) runner.Step {
	t.Helper()
	for _, p := range pb.Plays {
		if p.Name != play {
			continue
		}
		for _, s := range p.Steps {
			if s.Name == name {
				return s
			}
		}
	}
	t.Fatalf("no step %q in play %q", name, play)
	return runner.Step{}
}

// buildEcho builds a test_echo step for a host.
func buildEcho(t *testing.T, s runner.Step, sc *runner.StepContext) *echo {
	t.Helper()
	m, err := s.Build(sc)
	require.NoError(t, err)
	e, ok := m.(*echo)
	require.True(t, ok)
	return e
}
