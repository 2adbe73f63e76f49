package commands_test

import (
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/commands"
	"github.com/iklimco/iklim/modules/internal/modtest"
	"github.com/stretchr/testify/require"
)

func TestModules(t *testing.T) {
	modtest.CheckModules(t, commands.Modules())
	for _, info := range commands.Modules() {
		_, isOut := info.New().(modules.Outputter)
		require.True(t, isOut, "%s should register output", info.Name)
		_, isVal := info.New().(modules.Validator)
		require.True(t, isVal, "%s should validate", info.Name)
	}
}
