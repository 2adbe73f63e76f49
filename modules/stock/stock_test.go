package stock_test

import (
	"testing"

	"github.com/iklimco/iklim/modules"
	_ "github.com/iklimco/iklim/modules/stock"
	"github.com/stretchr/testify/require"
)

// TestStockModulesRegistered: importing stock registers every family.
func TestStockModulesRegistered(t *testing.T) {
	for _, name := range []string{"command", "shell", "file", "copy", "line", "template", "wait_for", "stat",
		"swarm_init", "node_label", "stack_deploy", "docker_secret", "docker_config", "docker_network", "service_wait"} {
		info, ok := modules.Lookup(name)
		require.True(t, ok, name)
		require.Equal(t, name, info.Name)
		require.NotNil(t, info.New(), name)
	}
}
