// Package commands is the family of modules that run the user's commands on
// a host: command (no shell), shell, and wait_for (poll until a port, path
// or command is ready).
package commands

import "github.com/iklimco/iklim/modules"

// Modules lists the family's modules for a registry.
func Modules() []modules.Info {
	return []modules.Info{commandInfo(), shellInfo(), waitForInfo()}
}
