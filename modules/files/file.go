package files

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// fileInfo is the file module's registry entry.
func fileInfo() modules.Info {
	return modules.Info{
		Name: "file",
		Doc:  "Set a path's state (file, directory, link, touch, absent), mode and owner",
		Example: `step "app dir" {
  module = "file"
  path   = "/srv/app"
  state  = "directory"
  mode   = "0750"
  owner  = "root"
}`,
		Outputs: []modules.Output{
			{Name: "path", Type: "string", Doc: "the path"},
		},
		Diff:  "the path's type, mode, owner and content before and after",
		Files: true,
		New:   func() modules.Module { return &File{} },
	}
}

// File manages a path's existence, type, mode and owner, never its content.
//
// Rollback: paths it creates, deletes or replaces with a different type are
// listed in Change.Files for the runner to snapshot; attribute changes and
// changed or removed symlinks are undone by Rollback from the before-state,
// so a chmod on a large tree does not snapshot the tree.
type File struct {
	Path    string `hcl:"path" doc:"absolute remote path"`
	State   string `hcl:"state,optional" doc:"file (default: only set mode/owner of an existing file), directory (mkdir -p), link (symlink to src), touch (create an empty file if missing; an existing file's mtime is left alone so the step stays idempotent) or absent (rm -rf)"`
	Mode    string `hcl:"mode,optional" doc:"octal mode such as \"0644\"; with recurse it applies to every file and directory under path, as in Ansible"`
	Owner   string `hcl:"owner,optional" doc:"owner name or numeric uid"`
	Group   string `hcl:"group,optional" doc:"group name or numeric gid"`
	Src     string `hcl:"src,optional" doc:"link target, for state = \"link\""`
	Recurse bool   `hcl:"recurse,optional" doc:"with state = \"directory\", set mode/owner/group on everything under path too"`
	Force   bool   `hcl:"force,optional" doc:"with state = \"link\", replace a regular file at path by the link"`

	apply   string              // the sh script Apply runs
	made    *modules.ScriptDir  // the directory apply makes, for its after state
	linked  *modules.ScriptLink // the link apply makes, likewise
	changed bool
}

// fileBefore is what File.Rollback restores.
type fileBefore struct {
	Path string `json:"path"`
	// LinkTarget is set when a symlink at Path was retargeted or removed.
	LinkTarget string `json:"link_target,omitempty"`
	// Attrs are the mode and owner of entries whose attributes change.
	Attrs []fileAttr `json:"attrs,omitempty"`
}

type fileAttr struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode"`
	UID  int    `json:"uid"`
	GID  int    `json:"gid"`
	Link bool   `json:"link,omitempty"`
}

// maxRecordedAttrs caps how many drifted entries under a recursive
// directory are recorded for rollback.
const maxRecordedAttrs = 1000

func (m *File) state() string {
	if m.State == "" {
		return "file"
	}
	return m.State
}

func (m *File) attrs() remote.Attrs {
	return remote.Attrs{Mode: m.Mode, Owner: m.Owner, Group: m.Group}
}

// Validate implements Validator.
func (m *File) Validate() error {
	if err := remote.AbsPath("path", m.Path); err != nil {
		return modules.ArgErrorf("path", "file: %w", err)
	}
	st := m.state()
	switch st {
	case "file", "directory", "absent", "link", "touch":
	default:
		return modules.ArgErrorf("state", "file %s: state %q is not one of file, directory, link, touch, absent", m.Path, m.State)
	}
	switch {
	case st == "link" && m.Src == "":
		return modules.ArgErrorf("state", "file %s: state = \"link\" needs src (the link target)", m.Path)
	case st != "link" && m.Src != "":
		return modules.ArgErrorf("src", "file %s: src is only for state = \"link\"", m.Path)
	case st != "link" && m.Force:
		return modules.ArgErrorf("force", "file %s: force is only for state = \"link\"", m.Path)
	case st != "directory" && m.Recurse:
		return modules.ArgErrorf("recurse", "file %s: recurse is only for state = \"directory\"", m.Path)
	case st == "link" && m.Mode != "":
		return modules.ArgErrorf("mode", "file %s: mode does not apply to a symlink", m.Path)
	case st == "absent" && (m.Mode != "" || m.Owner != "" || m.Group != ""):
		return fmt.Errorf("file %s: mode, owner and group do not apply to state = \"absent\"", m.Path)
	case st == "file" && m.Mode == "" && m.Owner == "" && m.Group == "":
		return modules.ArgErrorf("state", "file %s: state = \"file\" only sets mode/owner/group; set one (or use state = \"touch\" to create the file)", m.Path)
	}
	if err := m.attrs().Validate(); err != nil {
		return modules.ArgErrorf("mode", "file %s: %w", m.Path, err)
	}
	return nil
}

// Check implements Module: one round trip (stat, plus a find over the tree
// with recurse).
func (m *File) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	a := m.attrs()
	recurse := m.Recurse && (a.Mode != "" || a.Owner != "" || a.Group != "")
	script := a.Probe() + remote.StatCall(m.Path, false)
	if recurse { // "!failed" tells a failing find from one cut short by head
		script += `if [ "$st_type" = dir ]; then { find ` + remote.Quote(m.Path) + ` -mindepth 1 \( ` + findDrift(a) +
			` \) -printf '%y %m %U %G %p\n' || echo '!failed'; } | head -n ` + strconv.Itoa(maxRecordedAttrs+1) + "\nfi\n"
	}
	var st remote.FileStat
	var rest string
	probed := false
	if a.Probe() == "" && !recurse {
		// A link without owner or group needs only its target, unless it
		// is to be replaced: then its owner is recorded for rollback.
		targetOnly := m.state() == "link" && a.Owner == "" && a.Group == ""
		res, ok, err := remote.ProbeStat(ctx, c, remote.Probe{Path: m.Path, Target: targetOnly})
		if err != nil {
			return nil, fmt.Errorf("file: stat %s: %w", m.Path, err)
		}
		st, probed = res.Stat, ok
		if targetOnly && st.Type == "link" && st.LinkTarget != m.Src {
			probed = false
		}
	}
	if !probed {
		var err error
		if st, rest, err = remote.RunStat(ctx, c, m.Path, script); err != nil {
			return nil, fmt.Errorf("file: %w", err)
		}
	}
	p, q := m.Path, remote.Quote(m.Path)
	before := fileBefore{Path: p}
	ch := &modules.Change{}
	m.made, m.linked = nil, nil
	state := m.state()
	switch state {
	case "absent":
		if !st.Exists {
			return nil, nil
		}
		ch.Summary = fmt.Sprintf("remove %s (%s)", p, st.Type)
		m.apply = "rm -rf -- " + q
		if st.Type == "link" {
			before.LinkTarget = st.LinkTarget
		} else {
			ch.Files = []string{p}
		}

	case "file", "touch":
		if !st.Exists && state == "file" {
			return nil, fmt.Errorf("file %s: does not exist (state = \"touch\" creates it)", p)
		}
		if st.Type == "link" {
			return nil, fmt.Errorf("file %s: is a symlink; manage its target instead", p)
		}
		if st.Type == "directory" && state == "file" {
			return nil, fmt.Errorf("file %s: is a directory (use state = \"directory\")", p)
		}
		if !st.Exists {
			ch.Summary = withAttrs("create empty file "+p, a)
			ch.Files = []string{p}
			m.apply = joinCmds("touch -- "+q, a.Script(p, false, false))
			break
		}
		drift := a.Drift(st)
		if len(drift) == 0 {
			return nil, nil
		}
		ch.Summary = fmt.Sprintf("set %s: %s", p, strings.Join(drift, ", "))
		before.Attrs = []fileAttr{{Path: p, Mode: st.Mode, UID: st.UID, GID: st.GID}}
		m.apply = a.Script(p, false, false)

	case "directory":
		if !st.Exists {
			ch.Summary = withAttrs("create directory "+p, a)
			ch.Files = []string{p}
			m.apply = joinCmds("mkdir -p -- "+q, a.Script(p, m.Recurse, false))
			if mode, err := remote.ParseMode(a.Mode); err == nil && a.Owner == "" && a.Group == "" {
				// One program where the parent is there (two where it is
				// made first, as mkdir -p would): mkdir sets the mode
				// itself, whatever the umask. If the directory appeared
				// meanwhile, the longer way.
				parent := remote.Quote(path.Dir(p))
				m.apply = fmt.Sprintf("{ { [ -d %s ] || mkdir -p -- %s 2>/dev/null; } && mkdir -m %04o -- %s 2>/dev/null || { %s; }; }",
					parent, parent, mode, q, m.apply)
				m.made = &modules.ScriptDir{Path: p, Mode: mode}
			}
			break
		}
		if st.Type != "directory" {
			return nil, fmt.Errorf("file %s: exists as a %s, not a directory", p, st.Type)
		}
		drift := a.Drift(st)
		if len(drift) > 0 {
			before.Attrs = []fileAttr{{Path: p, Mode: st.Mode, UID: st.UID, GID: st.GID}}
		}
		children, more, err := parseFindDrift(rest)
		if err != nil {
			return nil, fmt.Errorf("file %s: %w", p, err)
		}
		before.Attrs = append(before.Attrs, children...)
		if len(drift) == 0 && len(children) == 0 {
			return nil, nil
		}
		ch.Summary = fmt.Sprintf("set %s: %s", p, a)
		if len(children) > 0 {
			n := strconv.Itoa(len(children))
			if more {
				n = "over " + strconv.Itoa(maxRecordedAttrs) // only the first ones are recorded for rollback
			}
			ch.Summary += fmt.Sprintf(" (recursive, %s entries under it differ)", n)
		}
		m.apply = a.Script(p, m.Recurse, false)

	case "link":
		tmp := remote.Quote(tempBeside(p, "link"))
		relink := "ln -sfn -- " + remote.Quote(m.Src) + " " + tmp + " && mv -Tf -- " + tmp + " " + q
		setOwner := remote.Attrs{Owner: a.Owner, Group: a.Group}.Script(p, false, true)
		switch {
		case !st.Exists:
			ch.Summary = fmt.Sprintf("link %s -> %s", p, m.Src)
			ch.Files = []string{p}
			// Nothing to replace: one program, unless something appeared
			// there meanwhile.
			link := "{ ln -sT -- " + remote.Quote(m.Src) + " " + q + " 2>/dev/null || { " + relink + "; }; }"
			m.apply = joinCmds(link, setOwner)
			m.linked = &modules.ScriptLink{Path: p, Target: m.Src, Own: setOwner == ""}
		case st.Type == "link" && st.LinkTarget == m.Src:
			drift := a.Drift(st)
			if len(drift) == 0 {
				return nil, nil
			}
			ch.Summary = fmt.Sprintf("set %s: %s", p, strings.Join(drift, ", "))
			before.Attrs = []fileAttr{{Path: p, UID: st.UID, GID: st.GID, Link: true}}
			m.apply = setOwner
		case st.Type == "link":
			ch.Summary = fmt.Sprintf("relink %s -> %s (was %s)", p, m.Src, st.LinkTarget)
			before.LinkTarget = st.LinkTarget
			before.Attrs = []fileAttr{{Path: p, UID: st.UID, GID: st.GID, Link: true}}
			m.apply = joinCmds(relink, setOwner)
			m.linked = &modules.ScriptLink{Path: p, Target: m.Src, Own: setOwner == ""}
		case st.Type == "directory":
			return nil, fmt.Errorf("file %s: is a directory; remove it before linking", p)
		case !m.Force:
			return nil, fmt.Errorf("file %s: exists as a %s; set force = true to replace it with a link", p, st.Type)
		default:
			ch.Summary = fmt.Sprintf("replace %s %s by a link -> %s", st.Type, p, m.Src)
			ch.Files = []string{p}
			m.apply = joinCmds(relink, setOwner)
			m.linked = &modules.ScriptLink{Path: p, Target: m.Src, Own: setOwner == ""}
		}
	}
	if err := ch.SetBefore(before); err != nil {
		return nil, err
	}
	ch.Diff = m.diff(st)
	return ch, nil
}

func (m *File) diff(st remote.FileStat) *modules.Diff {
	a := m.attrs()
	b, f := attrDiff(m.state(), st, a)
	if st.Type == "link" {
		b += "src: " + st.LinkTarget + "\n"
	}
	if m.state() == "link" {
		f += "src: " + m.Src + "\n"
	}
	if m.state() == "absent" {
		f = "state: absent\n"
	}
	return &modules.Diff{Label: m.Path, Before: b, After: f}
}

// Apply implements Module: one round trip.
func (m *File) Apply(ctx context.Context, c modules.Conn, _ *modules.Change) error {
	if m.apply == "" {
		return nil
	}
	if err := remote.RunScript(ctx, c, "file "+m.Path, m.apply); err != nil {
		return err
	}
	m.changed = true
	return nil
}

// ApplyScript implements modules.ScriptApplier: Apply's script.
func (m *File) ApplyScript(*modules.Change) *modules.ScriptApply {
	ap := remote.ScriptOnly(m.apply)
	if ap != nil && m.made != nil {
		ap.Dirs = []modules.ScriptDir{*m.made}
	}
	if ap != nil && m.linked != nil {
		ap.Links = []modules.ScriptLink{*m.linked}
	}
	return ap
}

// ScriptApplied implements modules.ScriptApplier.
func (m *File) ScriptApplied() { m.changed = true }

// Rollback implements Rollbacker: it restores a removed or retargeted
// symlink and the recorded modes and owners, in one round trip. Created,
// deleted and replaced paths are restored by the runner from Change.Files.
func (m *File) Rollback(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	var b fileBefore
	if err := ch.DecodeBefore(&b); err != nil {
		return fmt.Errorf("file rollback: %w", err)
	}
	var cmds []string
	if b.LinkTarget != "" {
		tmp := remote.Quote(tempBeside(b.Path, "link"))
		cmds = append(cmds, "ln -sfn -- "+remote.Quote(b.LinkTarget)+" "+tmp+" && mv -Tf -- "+tmp+" "+remote.Quote(b.Path))
	}
	for _, e := range b.Attrs {
		q := remote.Quote(e.Path)
		cmd := fmt.Sprintf("chown -h -- %d:%d %s", e.UID, e.GID, q)
		if !e.Link {
			cmd += fmt.Sprintf(" && chmod -- %04o %s", e.Mode, q)
		}
		cmds = append(cmds, "if [ -e "+q+" ] || [ -L "+q+" ]; then "+cmd+"; fi")
	}
	if len(cmds) == 0 {
		return nil
	}
	return remote.RunScript(ctx, c, "file rollback "+b.Path, "set -e\n"+strings.Join(cmds, "\n"))
}

// Output implements Outputter: path and changed.
func (m *File) Output() map[string]any { return changedOutput(m.Path, m.changed) }

// findDrift is a find expression matching entries whose attributes differ
// from a. Symlinks have no mode of their own, so mode skips them.
func findDrift(a remote.Attrs) string {
	var alts []string
	if a.Mode != "" {
		md, _ := remote.ParseMode(a.Mode)
		alts = append(alts, fmt.Sprintf(`\( ! -type l ! -perm %04o \)`, md))
	}
	if a.Owner != "" {
		alts = append(alts, "! -user "+remote.Quote(a.Owner))
	}
	if a.Group != "" {
		alts = append(alts, "! -group "+remote.Quote(a.Group))
	}
	return strings.Join(alts, " -o ")
}

// parseFindDrift reads "type mode uid gid path" lines from find -printf.
func parseFindDrift(out string) (attrs []fileAttr, more bool, err error) {
	for line := range strings.Lines(out) {
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			continue
		}
		if line == "!failed" {
			return nil, false, errors.New("cannot list the entries under it")
		}
		if len(attrs) == maxRecordedAttrs {
			return attrs, true, nil
		}
		f := strings.SplitN(line, " ", 5)
		if len(f) != 5 {
			return nil, false, fmt.Errorf("bad find output %q", line)
		}
		mode, err1 := strconv.ParseUint(f[1], 8, 32)
		uid, err2 := strconv.Atoi(f[2])
		gid, err3 := strconv.Atoi(f[3])
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, false, fmt.Errorf("bad find output %q: %w", line, err)
		}
		attrs = append(attrs, fileAttr{Path: f[4], Mode: uint32(mode), UID: uid, GID: gid, Link: f[0] == "l"})
	}
	return attrs, false, nil
}

// tempBeside is a temporary name in p's directory, for atomic renames.
func tempBeside(p, what string) string {
	dir := p[:strings.LastIndexByte(p, '/')+1]
	return dir + ".iklim-" + what + "-" + remote.SHA256String(p)[:12]
}

// joinCmds joins non-empty sh commands with &&.
func joinCmds(cmds ...string) string {
	var out []string
	for _, c := range cmds {
		if c != "" {
			out = append(out, c)
		}
	}
	return strings.Join(out, " && ")
}

// CheckAhead implements CheckAheader: Check stats the path.
func (m *File) CheckAhead() modules.CheckAhead { return modules.CheckAheadReadOnly }
