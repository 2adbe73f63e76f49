package runner

// Known answers: the probes an apply answers for the steps after it
// (prefetch.go) are mostly of paths the apply wrote whole or did not touch:
// in a deploy, the file a copy wrote and a line then edits, and the files
// beside it. Those are told without reading the host again (no stat,
// sha256sum or cat on it): a file written whole holds what was written,
// with the mode written; a path no apply of the round trip touched is as
// the checks before found it. What cannot be told so, a guard of shell
// builtins tests in the round trip: that the written file is a regular
// file of the owner and group it had before, that every other path is of
// the type it was and not a written file, or its directory, under another
// name. Where the guard fails, the probes are read as before.
//
// This holds only where every apply of the round trip writes nowhere but
// where it says (modules.ScriptApply.Confined), and for answers read since
// the last user's command before it (batchConn.readSince). A symlink's
// answer is never carried. The backup records written in the round trip are
// not counted: a check of a directory of iklim's own backups may see its
// size as it was before them.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
)

// knownMark is what the then-script prints instead of the probes' answers
// once its guard has held: no line of a probe script's output starts so.
const knownMark = "IKLIM-KNOWN"

// knownAfter is the guard and the answers to ps once aps have been applied
// on a host of which before is what checks read (by probe); guard is ""
// where some probe cannot be told so.
func knownAfter(ps []remote.Probe, aps []*modules.ScriptApply, before map[remote.Probe]remote.ProbeResult) (guard string, res []remote.ProbeResult) {
	if len(before) == 0 {
		return "", nil
	}
	written := map[string]modules.ScriptFile{}
	for _, ap := range aps {
		if !ap.Confined {
			return "", nil
		}
		for _, f := range ap.Files {
			if f.Dest != "" {
				written[f.Dest] = f
			}
		}
	}
	dests := make([]string, 0, len(written))
	for p := range written {
		dests = append(dests, p)
	}
	slices.Sort(dests)

	byPath := map[string]string{}
	var guards []string
	res = make([]remote.ProbeResult, len(ps))
	for i, p := range ps {
		var g string
		if f, ok := written[p.Path]; ok {
			owner, ok := ownerBefore(before, p.Path)
			if !ok {
				return "", nil
			}
			sum := sha256.Sum256(f.Data)
			st := owner
			st.Mode, st.Size, st.SHA256 = f.DestMode, int64(len(f.Data)), hex.EncodeToString(sum[:])
			r, err := remote.Answer(p, st, f.Data)
			if err != nil {
				return "", nil
			}
			res[i], g = r, writtenGuard(p.Path, owner)
		} else {
			r, ok := before[p]
			if !ok {
				return "", nil
			}
			if g, ok = untouchedGuard(p.Path, r.Stat, dests); !ok {
				return "", nil
			}
			res[i] = r
		}
		switch have, ok := byPath[p.Path]; {
		case !ok:
			byPath[p.Path] = g
			guards = append(guards, g)
		case have != g:
			return "", nil // read as two different things
		}
	}
	return strings.Join(guards, " && "), res
}

// ownerBefore is the regular file p as checks read it, its type, owner
// and group alone, when every read of it agrees on those.
func ownerBefore(before map[remote.Probe]remote.ProbeResult, p string) (remote.FileStat, bool) {
	var owner remote.FileStat
	found := false
	for q, r := range before {
		if q.Path != p {
			continue
		}
		st := r.Stat
		o := remote.FileStat{Exists: true, Type: "file", UID: st.UID, GID: st.GID, Owner: st.Owner, Group: st.Group}
		if st.Type != "file" || found && o != owner {
			return remote.FileStat{}, false
		}
		owner, found = o, true
	}
	return owner, found
}

// writtenGuard is the sh test, builtins only, that the file an apply wrote
// at p is a regular file with the owner and group of owner: those are the
// shell's ids ($_iku and $_ikg, read by the recorder's script), and p's
// owner and group are the shell's.
func writtenGuard(p string, owner remote.FileStat) string {
	q := remote.Quote(p)
	return fmt.Sprintf(`[ -f %s ] && [ ! -L %s ] && [ -O %s ] && [ -G %s ] && [ "$_iku:$_ikg" = %d:%d ]`, q, q, q, q, owner.UID, owner.GID)
}

// untouchedGuard is the sh test, builtins only, that p, read as st before
// applies that wrote only dests, is still of its type and none of dests
// (for a directory, none of their directories): then it is as read. ok is
// false for a symlink or an other file, which are not carried so.
func untouchedGuard(p string, st remote.FileStat, dests []string) (guard string, ok bool) {
	q := remote.Quote(p)
	var tests []string
	switch {
	case !st.Exists:
		return absentGuard([]string{p}), true
	case st.Type == "file":
		tests = append(tests, "[ -f "+q+" ] && [ ! -L "+q+" ]")
		for _, d := range dests {
			tests = append(tests, "! [ "+q+" -ef "+remote.Quote(d)+" ]")
		}
	case st.Type == "directory":
		// A file written in it may change its size.
		tests = append(tests, "[ -d "+q+" ] && [ ! -L "+q+" ]")
		var dirs []string
		for _, d := range dests {
			if dir := path.Dir(d); !slices.Contains(dirs, dir) {
				dirs = append(dirs, dir)
				tests = append(tests, "! [ "+q+" -ef "+remote.Quote(dir)+" ]")
			}
		}
	default:
		return "", false
	}
	return strings.Join(tests, " && "), true
}
