package docker_test

import (
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/docker"
	"github.com/iklimco/iklim/modules/internal/modtest"
	"github.com/stretchr/testify/require"
)

func TestModules(t *testing.T) {
	modtest.CheckModules(t, docker.Modules())
	for _, info := range docker.Modules() {
		_, isVal := info.New().(modules.Validator)
		require.True(t, isVal, "%s should validate", info.Name)
	}
}
