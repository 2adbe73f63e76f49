package stock_test

import (
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/stock"
	"github.com/stretchr/testify/require"
)

// TestStockModulesRegistered: the stock registry holds every family.
func TestStockModulesRegistered(t *testing.T) {
	reg := stock.Registry()
	for _, name := range []string{"command", "shell", "file", "copy", "line", "template", "wait_for", "stat",
		"swarm_init", "node_label", "stack_deploy", "docker_secret", "docker_config", "docker_network", "service_wait",
		"rollback"} {
		info, ok := reg.Lookup(name)
		require.True(t, ok, name)
		require.Equal(t, name, info.Name)
		require.NotNil(t, info.New(), name)
	}
	require.Len(t, reg.All(), len(stock.Modules()))
}

// TestStockRegistryFresh: each call builds a registry of its own, so a
// program that adds a module changes no other registry.
func TestStockRegistryFresh(t *testing.T) {
	a, b := stock.Registry(), stock.Registry()
	require.NoError(t, a.Add(modules.Info{Name: "mine", New: func() modules.Module { return nil }}))
	_, ok := a.Lookup("mine")
	require.True(t, ok)
	_, ok = b.Lookup("mine")
	require.False(t, ok)
	require.Error(t, a.Add(modules.Info{Name: "copy", New: func() modules.Module { return nil }}), "a stock name is taken")
}

// TestStockSensitiveModules: the engine's mark (TakesSensitive, from the
// module value) agrees with the documented arguments (`iklim modules`) for
// every stock module, and the modules that take secrets are among them.
func TestStockSensitiveModules(t *testing.T) {
	var sensitive []string
	for _, info := range stock.Registry().All() {
		documented := false
		for _, a := range info.Args() {
			documented = documented || a.Sensitive
		}
		require.Equal(t, documented, modules.TakesSensitive(info.New()), info.Name)
		if documented {
			sensitive = append(sensitive, info.Name)
		}
	}
	require.Subset(t, sensitive, []string{"docker_login", "docker_secret", "dns_record", "sentinel_check", "stack_deploy", "compose_up", "http_check"})
}
