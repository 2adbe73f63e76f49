package main

import (
	"fmt"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// versionInfo is what the Go toolchain stamped into the binary: the module
// version (a tag, a pseudo-version, or "(devel)") and the VCS state of the
// checkout it was built from.
type versionInfo struct {
	Module   string // module version
	Revision string // vcs.revision, empty when built without VCS info
	Time     string // vcs.time
	Modified bool   // vcs.modified: the checkout had uncommitted changes
	Go       string
}

// buildVersion reads the binary's build info.
func buildVersion() versionInfo {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return versionInfo{Module: "(unknown)"}
	}
	v := versionInfo{Module: bi.Main.Version, Go: bi.GoVersion}
	if v.Module == "" {
		v.Module = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// String is the one-line version: module version and short revision.
func (v versionInfo) String() string {
	if v.Revision == "" {
		return v.Module
	}
	rev := v.Revision
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if v.Modified {
		rev += "+modified"
	}
	return v.Module + " (" + rev + ")"
}

// Long is what `iklim version` prints.
func (v versionInfo) Long() string {
	s := "iklim " + v.Module
	if v.Revision != "" {
		s += "\ncommit " + v.Revision
		if v.Modified {
			s += " (with uncommitted changes)"
		}
	}
	if v.Time != "" {
		s += "\ncommitted " + v.Time
	}
	if v.Go != "" {
		s += "\nbuilt with " + v.Go
	}
	return s
}

var versionCommand = &cli.Command{
	Name:  "version",
	Usage: "print the module version and the commit iklim was built from",
	Action: func(c *cli.Context) error {
		if c.NArg() > 0 {
			return cli.Exit("usage: iklim version", exitInvalid)
		}
		_, err := fmt.Fprintln(c.App.Writer, buildVersion().Long())
		return err
	},
}
