package files_test

import (
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/files"
	"github.com/iklimco/iklim/modules/internal/modtest"
	"github.com/stretchr/testify/require"
)

func TestModules(t *testing.T) {
	modtest.CheckModules(t, files.Modules())
	for _, info := range files.Modules() {
		_, isOut := info.New().(modules.Outputter)
		require.True(t, isOut, "%s should register output", info.Name)
		_, isVal := info.New().(modules.Validator)
		require.True(t, isVal, "%s should validate", info.Name)
		if info.Name == "copy" {
			// copy's content is sensitive only when it holds a marked value,
			// so no argument of copy is sensitive by declaration.
			for _, a := range info.Args() {
				require.False(t, a.Sensitive, a.Name)
			}
		}
	}
}
