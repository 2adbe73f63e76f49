package files

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// copyInfo is the copy module's registry entry.
func copyInfo() modules.Info {
	return modules.Info{
		Name: "copy",
		Doc:  "Write a file from content or a local file, atomically, with mode and owner",
		Example: `step "app env" {
  module  = "copy"
  dest    = "/etc/app/app.env"
  content = "PORT=8080\n"
  mode    = "0640"
}`,
		Outputs: []modules.Output{
			{Name: "path", Type: "string", Doc: "the destination file"},
		},
		Diff:  "the file's content before and after (a sensitive file's content is never shown)",
		Files: true,
		New:   func() modules.Module { return &Copy{} },
	}
}

// Copy writes a remote file from inline content or a file on the control
// machine. It compares by sha256 on the host, so an unchanged file costs one
// round trip and is never downloaded; the write is atomic (Conn.Upload).
type Copy struct {
	modules.RunSecrets // to seal the old file when the content is a secret

	Dest    string  `hcl:"dest" doc:"absolute remote path; a symlink there is replaced by the file"`
	Content *string `hcl:"content,optional" doc:"file content; when it holds a sensitive value, diffs show \"(sensitive content)\" and the backup of the old file is sealed"`
	Src     string  `hcl:"src,optional" doc:"file on the control machine whose content to write (set content or src)"`
	Mode    string  `hcl:"mode,optional" doc:"octal mode such as \"0644\"; default: keep an existing file's mode, 0644 for a new one"`
	Owner   string  `hcl:"owner,optional" doc:"owner name or numeric uid; default: keep an existing file's owner"`
	Group   string  `hcl:"group,optional" doc:"group name or numeric gid; default: keep an existing file's group"`

	module string // name in errors; template sets "template"
	secret bool   // the content holds a sensitive value

	data          []byte
	st            remote.FileStat
	old           []byte // the content its check read, if it did
	contentChange bool
	changed       bool
}

func (m *Copy) name() string {
	if m.module == "" {
		return "copy"
	}
	return m.module
}

func (m *Copy) attrs() remote.Attrs {
	return remote.Attrs{Mode: m.Mode, Owner: m.Owner, Group: m.Group}
}

func (m *Copy) sensitive() bool { return m.secret }

// Validate implements Validator.
func (m *Copy) Validate() error {
	if err := remote.AbsPath("dest", m.Dest); err != nil {
		return modules.ArgErrorf("dest", "%s: %w", m.name(), err)
	}
	switch {
	case m.Content != nil && m.Src != "":
		return fmt.Errorf("%s %s: set content or src, not both", m.name(), m.Dest)
	case m.Content == nil && m.Src == "":
		return fmt.Errorf("%s %s: content or src is required", m.name(), m.Dest)
	}
	if m.Src != "" {
		if fi, err := os.Stat(m.Src); err != nil {
			return modules.ArgErrorf("src", "%s %s: src: %w", m.name(), m.Dest, err)
		} else if fi.IsDir() {
			return modules.ArgErrorf("src", "%s %s: src %s is a directory", m.name(), m.Dest, m.Src)
		}
	}
	if err := m.attrs().Validate(); err != nil {
		return modules.ArgErrorf("mode", "%s %s: %w", m.name(), m.Dest, err)
	}
	return nil
}

// Check implements Module: one round trip that stats dest, hashes it and,
// only when it differs and is small, prints it for the diff.
func (m *Copy) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if m.Content != nil {
		m.data = []byte(*m.Content)
	} else {
		b, err := remote.ReadLocal(m.Src)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", m.name(), m.Dest, err)
		}
		m.data = b
	}
	m.secret = m.Secrets().Contains(string(m.data))
	want := remote.SHA256String(string(m.data))
	a := m.attrs()
	script := a.Probe() + remote.StatCall(m.Dest, true)
	if !m.sensitive() {
		script += `if [ "$st_type" = file ] && [ "$st_sum" != ` + want + ` ] && [ "$st_size" -le ` +
			strconv.Itoa(remote.MaxDiff) + ` ]; then cat -- ` + remote.Quote(m.Dest) + " || exit 3; fi\n"
	}
	var st remote.FileStat
	var rest string
	probed := false
	if a.Probe() == "" {
		p := remote.Probe{Path: m.Dest, Sum: true}
		if !m.sensitive() {
			p.DiffWant = want
		}
		res, ok, err := remote.ProbeStat(ctx, c, p)
		if err != nil {
			return nil, fmt.Errorf("%s: stat %s: %w", m.name(), m.Dest, err)
		}
		st, rest, probed = res.Stat, string(res.Content), ok
	}
	if !probed {
		var err error
		if st, rest, err = remote.RunStat(ctx, c, m.Dest, script); err != nil {
			return nil, fmt.Errorf("%s: %w", m.name(), err)
		}
	}
	m.st = st
	switch st.Type {
	case "directory", "other":
		return nil, fmt.Errorf("%s %s: exists as a %s, not a file", m.name(), m.Dest, st.Type)
	}
	m.contentChange = st.Type != "file" || st.SHA256 != want
	m.old = nil
	switch {
	case m.sensitive():
	case !m.contentChange:
		m.old = m.data
	case st.Type == "file" && st.Size <= remote.MaxDiff:
		m.old = []byte(rest)
	}
	var drift []string
	if st.Exists {
		drift = a.Drift(st)
	}
	if !m.contentChange && len(drift) == 0 {
		return nil, nil
	}

	ch := &modules.Change{Files: []string{m.Dest}, Sensitive: m.secret}
	switch {
	case !st.Exists:
		ch.Summary = withAttrs(fmt.Sprintf("create %s (%d bytes)", m.Dest, len(m.data)), a)
	case m.contentChange:
		ch.Summary = fmt.Sprintf("update %s (%d → %d bytes)", m.Dest, st.Size, len(m.data))
		if len(drift) > 0 {
			ch.Summary += ", " + strings.Join(drift, ", ")
		}
	default:
		ch.Summary = fmt.Sprintf("set %s: %s", m.Dest, strings.Join(drift, ", "))
	}

	switch {
	case !m.contentChange:
		b, f := attrDiff("file", st, a)
		ch.Diff = &modules.Diff{Label: m.Dest, Before: b, After: f}
	case m.sensitive():
		ch.Diff = &modules.Diff{Label: m.Dest, After: sensitiveContent}
		if st.Exists {
			ch.Diff.Before = sensitiveContent
		}
	default:
		var old []byte
		if st.Type == "file" && st.Size <= remote.MaxDiff {
			old = []byte(rest) // the script printed it
		}
		ch.Diff = contentDiff(m.Dest, st, old, m.data)
	}

	if err := ch.SetBefore(newContentBefore(st)); err != nil {
		return nil, err
	}
	return ch, nil
}

// Apply implements Module: Upload plus one command for owner and mode when
// the content changes, or one command when only mode/owner change.
func (m *Copy) Apply(ctx context.Context, c modules.Conn, _ *modules.Change) error {
	a := m.attrs()
	if !m.contentChange {
		if err := remote.RunScript(ctx, c, m.name()+" "+m.Dest, a.Script(m.Dest, false, false)); err != nil {
			return err
		}
		m.changed = true
		return nil
	}
	mode, owner, group := m.writeAttrs()
	if err := remote.WriteFile(ctx, c, m.Dest, m.data, mode, owner, group); err != nil {
		return fmt.Errorf("%s: %w", m.name(), err)
	}
	m.changed = true
	return nil
}

// writeAttrs is the mode, owner and group of the file Apply writes.
func (m *Copy) writeAttrs() (mode uint32, owner, group string) {
	a := m.attrs()
	mode = 0o644
	if a.Mode != "" {
		mode, _ = remote.ParseMode(a.Mode)
	} else if m.st.Type == "file" {
		mode = m.st.Mode
	}
	owner, group = a.Owner, a.Group
	if m.st.Type == "file" { // keep the replaced file's owner
		if owner == "" {
			owner = strconv.Itoa(m.st.UID)
		}
		if group == "" {
			group = strconv.Itoa(m.st.GID)
		}
	}
	return mode, owner, group
}

// ApplyScript implements modules.ScriptApplier: Apply as one script, the
// content delivered with it.
func (m *Copy) ApplyScript(*modules.Change) *modules.ScriptApply {
	if !m.contentChange {
		ap := remote.ScriptOnly(m.attrs().Script(m.Dest, false, false))
		if ap != nil {
			ap.Before = knownBefore(m.Dest, m.st, m.old)
		}
		return ap
	}
	mode, owner, group := m.writeAttrs()
	ap := remote.WriteFileApply(m.Dest, m.data, mode, owner, group)
	ap.Before = knownBefore(m.Dest, m.st, m.old)
	return ap
}

// ScriptApplied implements modules.ScriptApplier.
func (m *Copy) ScriptApplied() { m.changed = true }

// Output implements Outputter: path and changed.
func (m *Copy) Output() map[string]any { return changedOutput(m.Dest, m.changed) }

// CheckAhead implements CheckAheader: Check stats and hashes dest.
func (m *Copy) CheckAhead() modules.CheckAhead { return modules.CheckAheadReadOnly }
