// Package files is the family of modules that manage files on a host: file
// (state, mode, owner), copy, line, replace, template and stat.
package files

import "github.com/iklimco/iklim/modules"

// Modules lists the family's modules for a registry.
func Modules() []modules.Info {
	return []modules.Info{fileInfo(), copyInfo(), lineInfo(), replaceInfo(), templateInfo(), statInfo()}
}
