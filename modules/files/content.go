package files

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// What copy, template and line share about a file's content: its diff, the
// before-state they record, and their summaries and output.

// attrDiff renders the state lines a diff shows for a file's metadata.
func attrDiff(state string, st remote.FileStat, a remote.Attrs) (before, after string) {
	var b, f strings.Builder
	if !st.Exists {
		b.WriteString("state: absent\n")
	} else {
		fmt.Fprintf(&b, "state: %s\n", st.Type)
	}
	fmt.Fprintf(&f, "state: %s\n", state)
	if a.Mode != "" {
		m, _ := remote.ParseMode(a.Mode)
		if st.Exists {
			fmt.Fprintf(&b, "mode: %s\n", st.ModeString())
		}
		fmt.Fprintf(&f, "mode: %04o\n", m)
	}
	if a.Owner != "" {
		if st.Exists {
			fmt.Fprintf(&b, "owner: %s\n", nameOrID(st.Owner, st.UID))
		}
		fmt.Fprintf(&f, "owner: %s\n", a.Owner)
	}
	if a.Group != "" {
		if st.Exists {
			fmt.Fprintf(&b, "group: %s\n", nameOrID(st.Group, st.GID))
		}
		fmt.Fprintf(&f, "group: %s\n", a.Group)
	}
	return b.String(), f.String()
}

func nameOrID(name string, id int) string {
	if name != "" {
		return name
	}
	return strconv.Itoa(id)
}

// sensitiveContent stands for content that must not appear in a diff.
const sensitiveContent = "(sensitive content)\n"

// contentDiff is the diff of a file whose content changes from old (nil
// when unknown or absent) to new.
func contentDiff(p string, st remote.FileStat, old, new []byte) *modules.Diff {
	d := &modules.Diff{Label: p}
	oldText := old != nil && remote.IsText(old)
	if (st.Exists && !oldText) || !remote.IsText(new) {
		before := "(absent)"
		if st.Exists {
			before = "sha256 " + remote.OrUnknown(st.SHA256)
		}
		line := fmt.Sprintf("(binary or large: %s → sha256 %s)\n", before, remote.SHA256String(string(new)))
		d.Before, d.After = line, line
		return d
	}
	d.Before, d.After = string(old), string(new)
	return d
}

// contentBefore is what copy, template and line record about the file they
// replace; the bytes themselves are snapshotted by the runner from
// Change.Files.
type contentBefore struct {
	Exists bool   `json:"exists"`
	SHA256 string `json:"sha256,omitempty"`
	Mode   string `json:"mode,omitempty"`
	UID    int    `json:"uid"`
	GID    int    `json:"gid"`
}

func newContentBefore(st remote.FileStat) contentBefore {
	b := contentBefore{Exists: st.Exists, SHA256: st.SHA256, UID: st.UID, GID: st.GID}
	if st.Exists {
		b.Mode = st.ModeString()
	}
	return b
}

// withAttrs appends the wanted attributes, if any, to a summary.
func withAttrs(summary string, a remote.Attrs) string {
	if s := a.String(); s != "" {
		return summary + " (" + s + ")"
	}
	return summary
}

// knownBefore is what a check read of the file at p, for the recorder's
// snapshot (modules.ScriptApply.Before): none unless data is the content
// whose sum st holds.
func knownBefore(p string, st remote.FileStat, data []byte) []modules.ScriptBefore {
	if st.Type != "file" || data == nil || remote.SHA256String(string(data)) != st.SHA256 {
		return nil
	}
	return []modules.ScriptBefore{{Path: p, Data: data, Mode: st.Mode}}
}

// changedOutput is the small Output of the file-type modules.
func changedOutput(p string, changed bool) map[string]any {
	return map[string]any{"path": p, "changed": changed}
}

// readText reads the text file at p in one round trip: the path it
// resolves to (through symlinks), its stat, and its content, whose sha256
// is filled into the stat. module names the caller in errors.
func readText(ctx context.Context, c modules.Conn, module, p string) (target string, st remote.FileStat, content string, err error) {
	if res, ok, err := remote.ProbeStat(ctx, c, remote.Probe{Path: p, Content: true}); err != nil {
		return "", st, "", fmt.Errorf("%s: read %s: %w", module, p, err)
	} else if ok {
		return p, res.Stat, string(res.Content), nil // not a symlink: p is the target
	}
	q := remote.Quote(p)
	script := remote.StatFunc + "p=$(readlink -f -- " + q + " 2>/dev/null) || p=" + q + "\n" +
		"printf '%s\\n' \"$p\"\n_st \"$p\" 0\n" +
		"if [ \"$st_type\" = file ]; then cat -- \"$p\" || exit 3; fi\n"
	res, err := c.Run(ctx, script)
	if err != nil {
		return "", st, "", fmt.Errorf("%s: read %s: %w", module, p, err)
	}
	if err := res.Err(module + ": read " + p); err != nil {
		return "", st, "", err
	}
	target, rest, _ := strings.Cut(res.Stdout, "\n")
	st, content, err = remote.ParseStat(rest)
	if err != nil {
		return "", st, "", fmt.Errorf("%s: read %s: %w", module, p, err)
	}
	if target == "" {
		target = p
	}
	if st.Exists {
		st.SHA256 = remote.SHA256String(content)
	}
	return target, st, content, nil
}
