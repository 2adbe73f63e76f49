// Package stock lists the module families iklim ships. A program builds
// its registry from them, with no import side effects:
//
//	reg := stock.Registry()      // every stock module
//	err := reg.Add(myModule)     // and the program's own
package stock

import (
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/cluster"
	"github.com/iklimco/iklim/modules/commands"
	"github.com/iklimco/iklim/modules/docker"
	"github.com/iklimco/iklim/modules/edge"
	"github.com/iklimco/iklim/modules/files"
	"github.com/iklimco/iklim/modules/system"
	"github.com/iklimco/iklim/runner/backup"
)

// Modules lists every stock module, family by family.
func Modules() []modules.Info {
	var all []modules.Info
	for _, family := range [][]modules.Info{
		// One line per family package.
		files.Modules(),
		commands.Modules(),
		docker.Modules(),
		edge.Modules(),
		cluster.Modules(),
		system.Modules(),
		backup.Modules(), // rollback
	} {
		all = append(all, family...)
	}
	return all
}

// Registry returns a new registry of every stock module, which the caller
// owns and may add to. It panics on a duplicate name: the stock families
// are fixed, and their test proves them apart.
func Registry() *modules.Registry {
	r, err := modules.NewRegistry(Modules()...)
	if err != nil {
		panic(err)
	}
	return r
}
