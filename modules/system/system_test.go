package system_test

import (
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/internal/modtest"
	"github.com/iklimco/iklim/modules/system"
	"github.com/stretchr/testify/require"
)

// TestModules: docs, argument docs and HCL examples that decode; every
// module validates and registers output; apt can roll back.
func TestModules(t *testing.T) {
	modtest.CheckModules(t, system.Modules())
	reg, err := modules.NewRegistry(system.Modules()...)
	require.NoError(t, err)
	for _, info := range system.Modules() {
		_, ok := info.New().(modules.Outputter)
		require.True(t, ok, info.Name)
		_, ok = info.New().(modules.Validator)
		require.True(t, ok, info.Name)
		got, ok := reg.Lookup(info.Name)
		require.True(t, ok, info.Name)
		require.Equal(t, info.Doc, got.Doc)
	}
	var apt modules.Module = &system.Apt{}
	_, ok := apt.(modules.Rollbacker)
	require.True(t, ok)
}
