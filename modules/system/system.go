// Package system is iklim's family of modules for the host's operating
// system and what it serves: Debian packages (apt) and HTTP health checks
// (http_check).
package system

import "github.com/iklimco/iklim/modules"

// Modules lists the family's modules, for a registry.
func Modules() []modules.Info {
	return []modules.Info{aptInfo(), httpCheckInfo()}
}
