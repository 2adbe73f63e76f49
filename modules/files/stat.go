package files

import (
	"context"
	"fmt"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// statInfo is the stat module's registry entry.
func statInfo() modules.Info {
	return modules.Info{
		Name: "stat",
		Doc:  "Read a path's type, mode, owner, size and sha256 (read-only; register it)",
		Example: `step "motd" {
  module   = "stat"
  path     = "/etc/motd"
  register = "motd"
}`,
		Outputs: []modules.Output{
			{Name: "exists", Type: "bool", Doc: "whether the path exists"},
			{Name: "path", Type: "string", Doc: "the path"},
			{Name: "mode", Type: "string", Doc: "permission bits in octal, e.g. 0644 (\"\" when absent)"},
			{Name: "uid", Type: "number", Doc: "owner uid"},
			{Name: "gid", Type: "number", Doc: "group gid"},
			{Name: "owner", Type: "string", Doc: "owner name, or the uid when it has none"},
			{Name: "group", Type: "string", Doc: "group name, or the gid when it has none"},
			{Name: "size", Type: "number", Doc: "size in bytes"},
			{Name: "sha256", Type: "string", Doc: "sha256 of a regular file's content"},
			{Name: "is_dir", Type: "bool", Doc: "a directory"},
			{Name: "is_file", Type: "bool", Doc: "a regular file"},
			{Name: "is_link", Type: "bool", Doc: "a symbolic link"},
			{Name: "link_target", Type: "string", Doc: "a link's target"},
		},
		ReadOnly: true,
		New:      func() modules.Module { return &Stat{} },
	}
}

// Stat reads facts about a path in one round trip and never changes the
// host. A final symlink is not followed (see is_link and link_target).
type Stat struct {
	Path     string `hcl:"path" doc:"absolute remote path"`
	Checksum *bool  `hcl:"checksum,optional" doc:"compute the sha256 of a regular file; default true (set false for huge files)"`

	st remote.FileStat
}

// Validate implements Validator.
func (m *Stat) Validate() error {
	if err := remote.AbsPath("path", m.Path); err != nil {
		return modules.ArgErrorf("path", "stat: %w", err)
	}
	return nil
}

// Check implements Module: one round trip; it always returns nil.
func (m *Stat) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	sum := m.Checksum == nil || *m.Checksum
	res, ok, err := remote.ProbeStat(ctx, c, remote.Probe{Path: m.Path, Sum: sum})
	if err != nil {
		return nil, fmt.Errorf("stat: %s: %w", m.Path, err)
	}
	st := res.Stat
	if !ok {
		if st, _, err = remote.RunStat(ctx, c, m.Path, remote.StatCall(m.Path, sum)); err != nil {
			return nil, fmt.Errorf("stat: %w", err)
		}
	}
	m.st = st
	return nil, nil
}

// Apply implements Module; stat never changes anything.
func (m *Stat) Apply(context.Context, modules.Conn, *modules.Change) error { return nil }

// Output implements Outputter. Every key is present; when exists is false
// the others hold zero values.
func (m *Stat) Output() map[string]any {
	st := m.st
	out := map[string]any{
		"exists": st.Exists, "path": m.Path,
		"mode": "", "uid": st.UID, "gid": st.GID, "owner": "", "group": "",
		"size": st.Size, "sha256": st.SHA256,
		"is_dir": st.Type == "directory", "is_file": st.Type == "file", "is_link": st.Type == "link",
		"link_target": st.LinkTarget,
	}
	if st.Exists {
		out["mode"] = st.ModeString()
		out["owner"] = nameOrID(st.Owner, st.UID)
		out["group"] = nameOrID(st.Group, st.GID)
	}
	return out
}

// CheckAhead implements CheckAheader: Check stats the path.
func (m *Stat) CheckAhead() modules.CheckAhead { return modules.CheckAheadReadOnly }
