package backup

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules/remote"
	"github.com/iklimco/iklim/runner"
)

// DefaultKeep is how many runs a host keeps unless told otherwise.
const DefaultKeep = 5

// DefaultKeepJournals is how many runs' journals (about 20 KB each) the
// control machine keeps unless told otherwise.
const DefaultKeepJournals = 200

// Run statuses in run.json.
const (
	StatusRunning     = "running"     // no final status recorded (yet)
	StatusOK          = "ok"          // every step ok or changed
	StatusFailed      = "failed"      // a step failed or the host was unreachable
	StatusInterrupted = "interrupted" // cancelled, or the process died mid-run
)

// RunRecord is run.json in a host's run directory.
type RunRecord struct {
	runner.RunInfo
	// Host is the host this directory belongs to.
	Host string `json:"host"`
	// Control is the hostname of the control machine that ran the run, and
	// PID its process, to tell a live run from an interrupted one.
	Control string `json:"control,omitempty"`
	PID     int    `json:"pid,omitempty"`
	// Status is StatusRunning until the run finishes on the host.
	Status   string            `json:"status"`
	Finished *time.Time        `json:"finished,omitempty"`
	Result   *runner.HostRecap `json:"result,omitempty"`
	// Changes is the number of change records on the host.
	Changes int `json:"changes"`
	// RollbackOf is the run this run rolled back, if it did.
	RollbackOf string `json:"rollback_of,omitempty"`
}

// FileMeta is the state of one path: before a change (files/…/<n>.meta.json)
// or after it (in AfterRecord).
type FileMeta struct {
	Path   string `json:"path"`
	Exists bool   `json:"exists"`
	Type   string `json:"type,omitempty"` // file, dir, symlink, other
	Mode   string `json:"mode,omitempty"` // octal permission bits, as stat %a
	UID    int    `json:"uid"`
	GID    int    `json:"gid"`
	// SHA256 is the content hash of a file, or of a symlink's target.
	SHA256 string `json:"sha256,omitempty"`
	// LinkTarget is filled in when a snapshot is read, from <n>.data.
	LinkTarget string `json:"link_target,omitempty"`
	// Encrypted means the content is in <n>.data.enc, sealed with the
	// control machine's backup key.
	Encrypted bool `json:"encrypted,omitempty"`
}

// Perm is the parsed permission bits.
func (m FileMeta) Perm() uint32 {
	v, _ := strconv.ParseUint(m.Mode, 8, 32)
	return uint32(v)
}

// describe is a short human form: "file 0644 0:0 sha256 1a2b3c4d".
func (m FileMeta) describe() string {
	if !m.Exists {
		return "absent"
	}
	s := fmt.Sprintf("%s %04o %d:%d", m.Type, m.Perm(), m.UID, m.GID)
	if m.SHA256 != "" {
		s += " sha256:" + m.SHA256[:min(12, len(m.SHA256))]
	}
	return s
}

// AfterRecord is changes/<seq>.after.json: how a change ended and the state
// of its files right after, which rollback compares against to find drift.
type AfterRecord struct {
	Seq     int        `json:"seq"`
	Outcome string     `json:"outcome"` // applied or failed
	Error   string     `json:"error,omitempty"`
	Time    time.Time  `json:"time"`
	Files   []FileMeta `json:"files"`
}

// hostRoot is the backup root of h.
func hostRoot(h *inventories.Host) string {
	if h != nil && h.BackupRoot != "" {
		return h.BackupRoot
	}
	return inventories.DefaultBackupRoot
}

func seqName(seq int) string { return fmt.Sprintf("%04d", seq) }

// snapName is the name, in files/, of the snapshot of Change.Files[n-1]
// of change seq, without its extension.
func snapName(seq string, n int) string { return seq + "-" + strconv.Itoa(n) }

// HostDir is the directory of host under a backup root: <root>/<name>, with
// the inventory name escaped (see hostDirName).
func HostDir(root, host string) string { return path.Join(root, hostDirName(host)) }

// RunDir is where host records run id under root: <root>/<host>/<run-id>.
func RunDir(root, host, id string) string { return path.Join(HostDir(root, host), id) }

// legacyRunDir is where runs were recorded before host directories:
// <root>/<run-id>, shared by every host that reaches root.
func legacyRunDir(root, id string) string { return path.Join(root, id) }

// hostDirName is host as one safe path element: bytes other than
// A-Z a-z 0-9 . _ - become %XX, as do a leading dot (no hidden or . / ..
// directories) and the first byte of a name that looks like a run id (so a
// host directory is never taken for a run directory of the old layout).
func hostDirName(host string) string {
	if host == "" {
		return "%"
	}
	var b strings.Builder
	for i := 0; i < len(host); i++ {
		c := host[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
		if i == 0 && (c == '.' || ValidRunID(host)) {
			ok = false
		}
		if ok {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// jsq is s as a JSON string literal, quoted for sh: what the scripts pass
// to iklim_st as the path field.
func jsq(s string) string {
	b, _ := json.Marshal(s)
	return remote.Quote(string(b))
}

// shPrelude defines the helpers every backup script uses.
//
// iklim_st JSONPATH PATH [-|SHA256] prints PATH's FileMeta as one JSON line;
// with -, a file's or link's without its sha256; with a sha256, a link's is
// that one (of the target its caller has just written).
// iklim_snap JSONPATH PATH DIR NAME snapshots PATH into DIR/NAME.{path,data,meta.json};
// a directory's whole tree goes into DIR/NAME.tar (numeric owners, modes).
// The meta has no sha256: it is the data's, which readRun hashes when it
// reads the run (a program less per change recorded, one per run read).
// iklim_tar PATH writes a tar of PATH's tree to stdout.
// iklim_list DIR prints every run directory under DIR (a host directory,
// or a root of the old layout), framed. Its glob names only what starts
// like a run id: a root shared by many hosts holds a directory per host,
// and a stat of each, on every host's first record of every run, grew with
// hosts squared. Its small text files are read with shell builtins
// (iklim_tframe: lines, a newline added to a last line without one), as
// the C locale counts their bytes.
const shPrelude = `umask 077; LC_ALL=C; export LC_ALL
iklim_st() {
  _h=
  if [ -L "$2" ]; then
    _t=symlink
    case $3 in
      -) ;;
      ?*) _h=$3 ;;
      *) _h=$(readlink -- "$2" | sha256sum); _h=${_h%% *} ;;
    esac
  elif [ -f "$2" ]; then
    _t=file
    if [ "$3" != - ]; then
      _h=$(sha256sum < "$2") || return 1
      _h=${_h%% *}
      [ ${#_h} -eq 64 ] || return 1
    fi
  elif [ -e "$2" ]; then
    _t=other; [ -d "$2" ] && _t=dir
  else
    printf '{"path":%s,"exists":false}' "$1"
    return 0
  fi
  _s=$(stat -c '%a %u %g' -- "$2") || return 1
  set -- "$1" "$_t" $_s
  if [ -n "$_h" ]; then
    printf '{"path":%s,"exists":true,"type":"%s","mode":"%s","uid":%s,"gid":%s,"sha256":"%s"}' "$1" "$2" "$3" "$4" "$5" "$_h"
  else
    printf '{"path":%s,"exists":true,"type":"%s","mode":"%s","uid":%s,"gid":%s}' "$1" "$2" "$3" "$4" "$5"
  fi
}
iklim_snap() {
  printf '%s' "$2" > "$3/$4.path" || return 1
  if [ -L "$2" ]; then readlink -- "$2" > "$3/$4.data" || return 1
  elif [ -f "$2" ]; then cat -- "$2" > "$3/$4.data" || return 1
  elif [ -d "$2" ]; then iklim_tar "$2" > "$3/$4.tar" || return 1
  fi
  iklim_st "$1" "$2" - > "$3/$4.meta.json" || return 1
}
iklim_tar() {
  tar -C "$(dirname -- "$1")" --numeric-owner -cpf - -- "$(basename -- "$1")"
}
iklim_frame() {
  printf 'F %s %s\n' "$1" "$(wc -c < "$2" | tr -d ' ')"; cat -- "$2"; echo
}
iklim_tframe() {
  _t=; while IFS= read -r _l || [ -n "$_l" ]; do _t="$_t$_l
"; done < "$2" || return 1
  printf 'F %s %s\n%s\n' "$1" "${#_t}" "$_t"
}
iklim_list() {
  for _d in "$1"/[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T*/; do
    [ -d "$_d" ] || continue
    _id=${_d%/}; _id=${_id##*/}
    case $_id in [0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T*Z|[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T*Z-*) ;; *) continue ;; esac
    printf 'R %s\n' "$_id"
    for _f in run.json rollback_of rolled_back; do
      [ -f "$_d$_f" ] && iklim_tframe "$_f" "$_d$_f"
    done
    _n=0
    for _c in "$_d"changes/[0-9]*.json; do
      case $_c in *.after.json) continue ;; esac
      [ -f "$_c" ] && _n=$((_n+1))
    done
    printf 'N %s\n' "$_n"
  done
}
`

// frame is one item of a framed script output.
type frame struct {
	Kind string // F (file content), C (current state), H (a data file's sha256), R (run), N (count), or a bare word
	Name string
	Data []byte
}

// parseFrames reads the output of backup scripts: "F name len\n<len bytes>\n",
// "C name json\n", "H name sha256\n", "R id\n", "N n\n", or a bare word.
func parseFrames(out string) ([]frame, error) {
	r := bufio.NewReader(strings.NewReader(out))
	var frames []frame
	for {
		line, err := r.ReadString('\n')
		if line == "" && err != nil {
			return frames, nil
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			continue
		}
		kind, rest, _ := strings.Cut(line, " ")
		switch kind {
		case "F":
			i := strings.LastIndexByte(rest, ' ')
			if i < 0 {
				return nil, fmt.Errorf("malformed output line %q", line)
			}
			n, perr := strconv.Atoi(rest[i+1:])
			if perr != nil || n < 0 {
				return nil, fmt.Errorf("malformed output line %q", line)
			}
			data := make([]byte, n)
			if _, err := io.ReadFull(r, data); err != nil {
				return nil, fmt.Errorf("truncated output for %s", rest[:i])
			}
			frames = append(frames, frame{Kind: "F", Name: rest[:i], Data: data})
		case "C":
			name, js, _ := strings.Cut(rest, " ")
			frames = append(frames, frame{Kind: "C", Name: name, Data: []byte(js)})
		default:
			frames = append(frames, frame{Kind: kind, Name: rest})
		}
	}
}

// marshal is json.MarshalIndent without HTML escaping, so that a secret
// containing < > & is found and redacted in the text it really appears as.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
