// Package stock registers the module families iklim ships. Programs that
// want every stock module import it for its side effect, as cmd/iklim does.
package stock

import (
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/cluster"
	"github.com/iklimco/iklim/modules/commands"
	"github.com/iklimco/iklim/modules/docker"
	"github.com/iklimco/iklim/modules/edge"
	"github.com/iklimco/iklim/modules/files"
	"github.com/iklimco/iklim/modules/system"
)

func init() {
	for _, family := range [][]modules.Info{
		// One line per family package.
		files.Modules(),
		commands.Modules(),
		docker.Modules(),
		edge.Modules(),
		cluster.Modules(),
		system.Modules(),
	} {
		for _, i := range family {
			modules.RegisterInfo(i)
		}
	}
}
