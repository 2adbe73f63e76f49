// Package remote holds what every module family needs to work on a host
// through a modules.Conn: the one POSIX shell quoter (also used by the
// runner, backups and the lock), a stat probe that answers in one round
// trip, octal modes and owners, the atomic write, and argument parsing
// shared by the modules (durations, paths, hashes).
package remote

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/iklimco/iklim/modules"
)

// Quote quotes s as one word for a POSIX shell. Words made only of
// characters the shell never interprets are returned as they are; anything
// else is put in single quotes, where each single quote of s becomes
// quote, backslash, quote, quote (close, escaped quote, reopen).
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for i := 0; i < len(s); i++ {
		if !isShellSafe(s[i]) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2 + 3*strings.Count(s, "'"))
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			b.WriteString(`'\''`)
			continue
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('\'')
	return b.String()
}

func isShellSafe(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '_', '-', '.', '/', ',', ':', '@', '%', '+', '=':
		return true
	}
	return false
}

// Join quotes every word of argv for /bin/sh.
func Join(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = Quote(a)
	}
	return strings.Join(q, " ")
}

// StatFunc defines _st, a sh function printing exactly three lines about
// path $1 without following a final symlink:
//
//	rawmode(hex):perm(octal):uid:gid:owner:group:size   or "absent"
//	link target                                          or empty
//	sha256 of a regular file when $2 is 1                or empty
//
// It also leaves st_type (absent|file|dir|link|other), st_size and st_sum
// set for the rest of the script. A path it cannot stat or read makes the
// script exit 3 with the error on stderr.
const StatFunc = `_st() {
st_type=absent st_size=0 st_sum=
if [ -e "$1" ] || [ -L "$1" ]; then
st_line=$(stat -c '%f:%a:%u:%g:%U:%G:%s' -- "$1") || exit 3
printf '%s\n' "$st_line"
st_size=${st_line##*:}
st_type=other
if [ -L "$1" ]; then st_type=link; printf '%s\n' "$(readlink -- "$1")"; else echo; fi
if [ "$st_type" = other ] && [ -f "$1" ]; then
st_type=file
if [ "$2" = 1 ]; then st_sum=$(sha256sum < "$1") || exit 3; st_sum=${st_sum%% *}; fi
elif [ "$st_type" = other ] && [ -d "$1" ]; then st_type=dir
fi
printf '%s\n' "$st_sum"
else
printf 'absent\n\n\n'
fi
}
`

// StatCall is the script line that runs _st on p.
func StatCall(p string, withSum bool) string {
	sum := "0"
	if withSum {
		sum = "1"
	}
	return "_st " + Quote(p) + " " + sum + "\n"
}

// FileStat is what _st reports about one path.
type FileStat struct {
	Exists     bool   `json:"exists"`
	Type       string `json:"type,omitempty"` // file, directory, link or other
	Mode       uint32 `json:"mode,omitempty"` // permission and setuid/setgid/sticky bits
	UID        int    `json:"uid,omitempty"`
	GID        int    `json:"gid,omitempty"`
	Owner      string `json:"owner,omitempty"`
	Group      string `json:"group,omitempty"`
	Size       int64  `json:"size,omitempty"`
	SHA256     string `json:"sha256,omitempty"`
	LinkTarget string `json:"link_target,omitempty"`
}

// ModeString is the mode as four octal digits, "0644".
func (s FileStat) ModeString() string { return fmt.Sprintf("%04o", s.Mode) }

// ParseStat reads the three lines _st printed at the start of out and
// returns the rest of out.
func ParseStat(out string) (FileStat, string, error) {
	var lines [3]string
	rest := out
	for i := range lines {
		line, after, ok := strings.Cut(rest, "\n")
		if !ok {
			return FileStat{}, "", fmt.Errorf("short stat output %q", out)
		}
		lines[i], rest = line, after
	}
	if lines[0] == "absent" {
		return FileStat{}, rest, nil
	}
	f := strings.Split(lines[0], ":")
	if len(f) != 7 {
		return FileStat{}, "", fmt.Errorf("bad stat output %q", lines[0])
	}
	raw, err1 := strconv.ParseUint(f[0], 16, 32)
	perm, err2 := strconv.ParseUint(f[1], 8, 32)
	uid, err3 := strconv.Atoi(f[2])
	gid, err4 := strconv.Atoi(f[3])
	size, err5 := strconv.ParseInt(f[6], 10, 64)
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return FileStat{}, "", fmt.Errorf("bad stat output %q: %w", lines[0], err)
	}
	st := FileStat{Exists: true, Mode: uint32(perm), UID: uid, GID: gid, Size: size, SHA256: lines[2]}
	if f[4] != "UNKNOWN" {
		st.Owner = f[4]
	}
	if f[5] != "UNKNOWN" {
		st.Group = f[5]
	}
	switch raw & 0o170000 {
	case 0o100000:
		st.Type = "file"
	case 0o040000:
		st.Type = "directory"
	case 0o120000:
		st.Type = "link"
		st.LinkTarget = lines[1]
	default:
		st.Type = "other"
	}
	return st, rest, nil
}

// RunStat runs script (which may call _st) in one round trip and parses the
// first _st report; the rest of stdout is returned for the caller.
func RunStat(ctx context.Context, c modules.Conn, p, script string) (FileStat, string, error) {
	res, err := c.Run(ctx, StatFunc+script)
	if err != nil {
		return FileStat{}, "", fmt.Errorf("stat %s: %w", p, err)
	}
	if err := res.Err("check " + p); err != nil {
		return FileStat{}, "", err
	}
	st, rest, err := ParseStat(res.Stdout)
	if err != nil {
		return FileStat{}, "", fmt.Errorf("stat %s: %w", p, err)
	}
	return st, rest, nil
}

// ParseMode reads an octal mode argument such as "0644" or "2775".
func ParseMode(s string) (uint32, error) {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o7777 || s == "" {
		return 0, fmt.Errorf("mode %q is not an octal mode such as \"0644\"", s)
	}
	return uint32(m), nil
}

// ValidMode checks an optional mode argument.
func ValidMode(s string) error {
	if s == "" {
		return nil
	}
	_, err := ParseMode(s)
	return err
}

// FileMode turns Unix mode bits into an fs.FileMode for Conn.Upload.
func FileMode(m uint32) fs.FileMode {
	fm := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		fm |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= fs.ModeSticky
	}
	return fm
}

// idMatches reports whether want (a name or a numeric id) names id/name.
// An empty want matches anything.
func idMatches(want string, id int, name string) bool {
	return want == "" || want == name || want == strconv.Itoa(id)
}

// Attrs are the mode and ownership a module wants; empty fields are left
// alone.
type Attrs struct {
	Mode  string
	Owner string
	Group string
}

// Validate checks the mode.
func (a Attrs) Validate() error { return ValidMode(a.Mode) }

// Drift lists what differs between an existing path's st and a, as
// "mode 0644" parts (the wanted values).
func (a Attrs) Drift(st FileStat) []string {
	var out []string
	if m, err := ParseMode(a.Mode); err == nil && m != st.Mode {
		out = append(out, fmt.Sprintf("mode %04o", m))
	}
	if !idMatches(a.Owner, st.UID, st.Owner) {
		out = append(out, "owner "+a.Owner)
	}
	if !idMatches(a.Group, st.GID, st.Group) {
		out = append(out, "group "+a.Group)
	}
	return out
}

// String lists the wanted attributes: "mode 0644, owner root".
func (a Attrs) String() string {
	var out []string
	if m, err := ParseMode(a.Mode); err == nil {
		out = append(out, fmt.Sprintf("mode %04o", m))
	}
	if a.Owner != "" {
		out = append(out, "owner "+a.Owner)
	}
	if a.Group != "" {
		out = append(out, "group "+a.Group)
	}
	return strings.Join(out, ", ")
}

// Script is the sh command that sets a on p: chown before chmod, because
// chown clears setuid/setgid bits. noDeref changes a symlink itself; recurse
// walks a directory. It returns "" when a asks for nothing.
func (a Attrs) Script(p string, recurse, noDeref bool) string {
	var cmds []string
	flags := ""
	if recurse {
		flags += " -R"
	}
	if own := chownArg(a.Owner, a.Group); own != "" {
		f := flags
		if noDeref {
			f += " -h"
		}
		cmds = append(cmds, "chown"+f+" -- "+Quote(own)+" "+Quote(p))
	}
	if a.Mode != "" {
		m, _ := ParseMode(a.Mode)
		cmds = append(cmds, fmt.Sprintf("chmod%s -- %04o %s", flags, m, Quote(p)))
	}
	return strings.Join(cmds, " && ")
}

// Probe is a check-script fragment that fails (exit 3, message on stderr)
// when the wanted owner or group has no entry on the host, so that a bad
// name is reported by Check rather than half-way through Apply. Numeric ids
// need no entry.
func (a Attrs) Probe() string {
	var b strings.Builder
	if a.Owner != "" && !isNumeric(a.Owner) {
		fmt.Fprintf(&b, "id -u -- %s >/dev/null 2>&1 || { echo 'no user %s on the host' >&2; exit 3; }\n",
			Quote(a.Owner), strings.ReplaceAll(a.Owner, "'", ""))
	}
	if a.Group != "" && !isNumeric(a.Group) {
		fmt.Fprintf(&b, "getent group -- %s >/dev/null 2>&1 || { echo 'no group %s on the host' >&2; exit 3; }\n",
			Quote(a.Group), strings.ReplaceAll(a.Group, "'", ""))
	}
	return b.String()
}

func isNumeric(s string) bool {
	_, err := strconv.ParseUint(s, 10, 32)
	return err == nil
}

// chownArg is chown's OWNER[:GROUP] argument, or "" for neither.
func chownArg(owner, group string) string {
	switch {
	case owner != "" && group != "":
		return owner + ":" + group
	case group != "":
		return ":" + group
	default:
		return owner
	}
}

// MaxDiff is the largest content diff mode shows as text.
const MaxDiff = 64 << 10

// IsText reports whether b is small UTF-8 text without NUL bytes, fit to
// show in a diff.
func IsText(b []byte) bool {
	return len(b) <= MaxDiff && utf8.Valid(b) && bytes.IndexByte(b, 0) < 0
}

func OrUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// WriteFile uploads content to p atomically with mode, then sets owner and
// group (and mode again, since chown clears setuid bits) in one command when
// any are given: Upload plus at most one round trip.
func WriteFile(ctx context.Context, c modules.Conn, p string, content []byte, mode uint32, owner, group string) error {
	if err := c.Upload(ctx, p, bytes.NewReader(content), FileMode(mode)); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if owner == "" && group == "" {
		return nil
	}
	a := Attrs{Owner: owner, Group: group, Mode: fmt.Sprintf("%04o", mode)}
	return RunScript(ctx, c, "set owner of "+p, a.Script(p, false, false))
}

// WriteFileApply is WriteFile as a modules.ScriptApply: the content goes to
// a temporary file beside p, created with mode's rw bits, which gets owner,
// group and any other mode bits and is then renamed over p (a symlink at p
// is replaced, not followed), as Upload does.
func WriteFileApply(p string, content []byte, mode uint32, owner, group string) *modules.ScriptApply {
	tmp := path.Join(path.Dir(p), ".iklim-"+randomHex())
	t := Quote(tmp)
	var cmds []string
	if own := (Attrs{Owner: owner, Group: group}).Script(tmp, false, false); own != "" {
		if mine := ownedByShell(tmp, owner, group); mine != "" {
			own = "{ " + mine + " || " + own + "; }"
		}
		cmds = append(cmds, own)
	}
	if mode&^0o666 != 0 {
		// x or set-id bits: not through the umask, and after chown,
		// which clears set-id bits.
		cmds = append(cmds, fmt.Sprintf("chmod -- %04o %s", mode, t))
	}
	cmds = append(cmds, "mv -Tf -- "+t+" "+Quote(p))
	return &modules.ScriptApply{
		Files:    []modules.ScriptFile{{Path: tmp, Data: content, Mode: mode & 0o666, Dest: p, DestMode: mode & 0o7777}},
		Script:   strings.Join(cmds, " && ") + " || { rm -f -- " + t + "; false; }\n",
		Confined: true,
	}
}

// ShellIDs is an sh command, builtins only, that sets _iku and _ikg to the
// shell's effective uid and gid from /proc/self/status, or to "" where
// there is none. It stops at the Gid line: procfs makes every one-byte read
// of the file anew, so the whole of it would cost more than a program.
const ShellIDs = "{ _iku=; _ikg=; while read -r _k _r _e _x; do case $_k in " + readIDs

// ShellState is ShellIDs that also sets _ikum to the shell's umask, in the
// same pass (the Umask line comes first), or to "" where there is none.
const ShellState = "{ _ikum=; _iku=; _ikg=; while read -r _k _r _e _x; do case $_k in Umask:) _ikum=$_r ;; " + readIDs

// readIDs ends ShellIDs and ShellState: the cases that take the ids, and
// the file they are read from.
const readIDs = "Uid:) _iku=$_e ;; Gid:) _ikg=$_e; break ;; esac; done < /proc/self/status; } 2>/dev/null"

// ownedByShell is an sh test, builtins only, that succeeds when the file p
// the script just created already has the numeric owner and group wanted:
// the shell's effective ids (from /proc/self/status) are those, and p's
// owner and group are the shell's. Then chown, one program per changed file
// in a deploy that keeps a file's owner, has nothing to do. It is "" when a
// name is wanted: only chown resolves names.
func ownedByShell(p, owner, group string) string {
	if owner != "" && !isNumeric(owner) || group != "" && !isNumeric(group) {
		return ""
	}
	var b strings.Builder
	// Ids a recorded apply's shell has read already (ShellState) are taken.
	b.WriteString(`{ [ -n "$_iku" ] && [ -n "$_ikg" ] || ` + ShellIDs + "; }")
	if owner != "" {
		fmt.Fprintf(&b, " && [ \"$_iku\" = %s ] && [ -O %s ]", owner, Quote(p))
	}
	if group != "" {
		fmt.Fprintf(&b, " && [ \"$_ikg\" = %s ] && [ -G %s ]", group, Quote(p))
	}
	return b.String()
}

// ScriptOnly is a modules.ScriptApply of cmd alone, or nil for "".
func ScriptOnly(cmd string) *modules.ScriptApply {
	if cmd == "" {
		return nil
	}
	return &modules.ScriptApply{Script: cmd + "\n"}
}

func randomHex() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// RunScript runs cmd and turns a failure into an error named what.
func RunScript(ctx context.Context, c modules.Conn, what, cmd string) error {
	res, err := c.Run(ctx, cmd)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return res.Err(what)
}

// ReadLocal reads a file on the control machine.
func ReadLocal(p string) ([]byte, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read local %s: %w", p, err)
	}
	return b, nil
}

// AbsPath checks that a remote path argument is absolute.
func AbsPath(arg, p string) error {
	if p == "" {
		return fmt.Errorf("%s is required", arg)
	}
	if !path.IsAbs(p) {
		return fmt.Errorf("%s %q must be an absolute path", arg, p)
	}
	return nil
}

// ParseDuration reads a duration argument with a default.
func ParseDuration(arg, s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s %q is not a positive duration such as \"60s\"", arg, s)
	}
	return d, nil
}

// SHA256String is the hex SHA-256 of s.
func SHA256String(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// Short cuts a command line for a one-line summary.
func Short(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 80 {
		return string(r[:79]) + "…"
	}
	return s
}

// IsEnvName reports whether k can be an environment variable name. It is on
// every command's path, so a byte loop rather than a regexp.
func IsEnvName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9' {
			continue
		}
		return false
	}
	return true
}

// WriteExport writes "export K='v' …" and a newline for env, keys sorted so
// the same step produces the same command on every host.
//
// export, rather than the "K=v cmd" prefix form, is deliberate: a prefix
// applies only to the first simple command of cmd ("a && b", "if …", loops)
// and is not visible to expansions in that same command (K=1 echo "$K"
// prints nothing), which is what step authors almost always expect.
func WriteExport(b *strings.Builder, env map[string]string) error {
	keys := make([]string, 0, len(env))
	for k, v := range env {
		if !IsEnvName(k) {
			return fmt.Errorf("invalid environment variable name %q", k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("environment variable %s contains a NUL byte", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b.WriteString("export")
	for _, k := range keys {
		b.WriteByte(' ')
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(Quote(env[k]))
	}
	b.WriteByte('\n')
	return nil
}

// TrimOutput cuts a command's output for an error message: trailing blanks
// go, and more than 2000 bytes are cut with an ellipsis.
func TrimOutput(s string) string {
	const max = 2000
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// LocalFile checks that p, a file on the control machine that a module will
// read, exists and is a regular file (or a link to one), so that Validate
// reports a missing or misnamed file before any host is touched.
func LocalFile(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("local file %s: %w", p, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("local file %s is a directory or not a regular file", p)
	}
	return nil
}
