package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
	"github.com/iklimco/iklim/runner"
)

var _ runner.ChainRecorder = (*Recorder)(nil)

// noFilesExit is the exit status of a script that could not write a
// ScriptApply's files: nothing was recorded or changed.
const noFilesExit = 97

// maxInlineFile is the largest file receiveFiles takes with the shell's
// read, which costs a system call per byte, rather than with dd.
const maxInlineFile = 4 << 10

// receiveFiles writes the script lines that take files, one after the
// other, off the script's stdin (the record and its tar follow them), each
// created with the rw bits of its mode. A small text file (whole lines, no
// NUL) is read by the shell itself, a program less; others by dd, which
// reads exactly their sizes. An EXIT trap removes them if the script ends
// before renaming them into place.
func receiveFiles(sb *strings.Builder, files []modules.ScriptFile) {
	if len(files) == 0 {
		return
	}
	// The trap names the paths by variables, expanded when it runs: quoted
	// inside its own quotes, a path with a space split there, and bash then
	// removed the part before the space. A file the apply renamed into
	// place is gone by then, and costs no rm.
	var vars strings.Builder
	for i, f := range files {
		fmt.Fprintf(sb, "_iktmp%d=%s\n", i, remote.Quote(f.Path))
		fmt.Fprintf(&vars, " \"$_iktmp%d\"", i)
	}
	fmt.Fprintf(sb, "trap 'for _f in%s; do if [ -e \"$_f\" ]; then rm -f -- \"$_f\"; fi; done' EXIT\n", vars.String())
	quit := fmt.Sprintf("exit %d", noFilesExit)
	for _, f := range files {
		// Created with its mode (rw bits only) through the umask: no chmod.
		fmt.Fprintf(sb, "umask %04o\n", 0o777&^(f.Mode&0o666))
		if readByShell(f.Data) {
			readLines(sb, "_ikd", bytes.Count(f.Data, []byte("\n")), quit)
			fmt.Fprintf(sb, "printf '%%s' \"$_ikd\" > %s || %s\n", remote.Quote(f.Path), quit)
			continue
		}
		fmt.Fprintf(sb, "dd of=%s bs=65536 iflag=fullblock,count_bytes count=%d status=none || %s\n", remote.Quote(f.Path), len(f.Data), quit)
	}
	sb.WriteString("umask 077\n")
}

// maxKnownSnapshot is the largest file snapshotted from what its check read
// (knownSnapshot): the shell reads the file back a byte per system call to
// compare.
const maxKnownSnapshot = 2 << 10

// knownSnapshot writes the sh that snapshots path as iklim_snap does (into
// "$F"/name.*, jpath its JSON string), from what the check read of it, kb,
// whose data the script takes off stdin (the caller sends it): where the
// file is still a regular file of the shell's user and group holding that
// data, read back with builtins, no cat and no stat run. Elsewhere it is
// iklim_snap. The mode recorded is the one the check read, and a file that
// changed since by NUL bytes alone (which read drops) reads as unchanged:
// the snapshot is then the file as its check saw it. The read back stops
// at the first line past kb's length (a file that grew since; one line
// alone cannot be cut short). ok is false where kb cannot be used so: the
// caller runs iklim_snap.
func knownSnapshot(sb *strings.Builder, jpath, path, name string, kb modules.ScriptBefore) (ok bool) {
	if len(kb.Data) == 0 || len(kb.Data) > maxKnownSnapshot || !readByShell(kb.Data) {
		return false
	}
	q, fail := remote.Quote(path), "iklim_fail "+remote.Quote("snapshot "+path+" failed")
	readLines(sb, "_ikk", bytes.Count(kb.Data, []byte("\n")), `iklim_fail "the snapshot came short"`)
	fmt.Fprintf(sb, "_ikc=-; if [ -f %s ] && %s; then _ikc=; _ikl=; while IFS= read -r _ikl; do _ikc=\"$_ikc$_ikl\n\"; [ ${#_ikc} -le %d ] || break; done < %s; [ -z \"$_ikl\" ] || _ikc=-; fi 2>/dev/null\n", q, shellsOwn(q), len(kb.Data), q)
	fmt.Fprintf(sb, "if [ \"$_ikc\" = \"$_ikk\" ]; then { printf '%%s' %s > \"$F/%s.path\" && printf '%%s' \"$_ikc\" > \"$F/%s.data\" && %s > \"$F/%s.meta.json\"; } || %s\n",
		q, name, name, shellsMeta(jpath, "file", kb.Mode, ""), name, fail)
	fmt.Fprintf(sb, "else iklim_snap %s %s \"$F\" %s || %s; fi\n_ikc=; _ikk=\n", jpath, q, name, fail)
	return true
}

// readByShell reports whether the shell's read builtin takes data whole:
// small, whole lines, and no NUL (sh variables cannot hold one). Other data
// goes through dd.
func readByShell(data []byte) bool {
	return len(data) <= maxInlineFile && bytes.IndexByte(data, 0) < 0 && (len(data) == 0 || data[len(data)-1] == '\n')
}

// readLines writes the sh that reads n lines off stdin into the variable v
// with builtins only, and runs fail when stdin ends first.
func readLines(sb *strings.Builder, v string, n int, fail string) {
	fmt.Fprintf(sb, "%s=; _ikn=%d\nwhile [ $_ikn -gt 0 ] && IFS= read -r _ikl; do %s=\"$%s$_ikl\n\"; _ikn=$((_ikn-1)); done\n[ $_ikn = 0 ] || %s\n", v, n, v, v, fail)
}

// loginUmask keeps the session's umask in _ikum before the prelude sets
// 077, and the shell's ids for the after record, in one read of /proc
// with builtins (a command substitution is a fork).
const loginUmask = remote.ShellState + `
[ -n "$_ikum" ] || _ikum=$(umask)
`

// RecordApply implements runner.ScriptRecorder: RecordApplyChain's command
// for one change.
func (r *Recorder) RecordApply(ctx context.Context, conn modules.Conn, h *inventories.Host, rec *runner.ChangeRecord, ap *modules.ScriptApply) (runner.ScriptOutcome, error) {
	outs := r.RecordApplyChain(ctx, conn, h, []runner.ChainLink{{Rec: rec, Apply: ap}})
	return outs[0].ScriptOutcome, outs[0].Err
}

// errNotChained is what before returns for a change that cannot follow
// another in one command: the chain ends before it.
var errNotChained = errors.New("backup: this change cannot be chained")

// RecordApplyChain implements runner.ChainRecorder: for each link in turn,
// the script of Before, then the link's apply, then After's, in one command.
// Each link's files travel on stdin ahead of its record, the links' one
// after the other. A change record is complete (written whole) before its
// apply runs, so a run that dies meanwhile leaves the same records as
// Before would. The chain ends early, before a link whose guard fails (its
// paths are no longer as its check saw them), or whose change cannot be
// chained (a sensitive one, read in a round trip of its own, or one after
// a record sent as a tar, which reads stdin to its end): those links are
// not recorded or changed.
func (r *Recorder) RecordApplyChain(ctx context.Context, conn modules.Conn, h *inventories.Host, links []runner.ChainLink) []runner.ChainOutcome {
	outs := make([]runner.ChainOutcome, len(links))
	st := r.site(h)
	st.mu.Lock()
	defer st.mu.Unlock()
	tok := r.tok
	var bs []*beforeScript
	var stdin bytes.Buffer
	var sb *strings.Builder
	for i, l := range links {
		if i > 0 && bs[i-1].untar {
			break
		}
		// A link after the first that cannot be recorded so is left for
		// the caller to record alone, which reports why.
		b, err := r.before(ctx, conn, h, st, l.Rec, l.Apply, i > 0)
		var after string
		if err == nil {
			after, err = r.afterScript(h, l.Rec, nil, "return", l.Apply)
		}
		if err != nil {
			if i == 0 {
				outs[0].Err = err
			}
			break
		}
		bs = append(bs, b)
		if i == 0 {
			sb = &b.script
		} else {
			// A link whose paths are no longer as its check saw them ends
			// the chain, its files and record unread on stdin.
			fmt.Fprintf(sb, "if ! { %s; }; then printf '\\nIKLIM-STOP %s\\n'; exit 0; fi\n", l.Guard, tok)
			sb.WriteString(b.script.String())
		}
		// No subshells: a fork each. The apply's status is its last
		// command's. It runs under the session's umask, as it would alone
		// (a directory's missing parents are made as mkdir -p makes them),
		// the records under 077. The outcome is recorded by a function:
		// its failure is not the apply's.
		fmt.Fprintf(sb, "printf '\\nIKLIM-RECORDED %s %d\\n'\numask \"$_ikum\"\n{\n%s\n} </dev/null || exit\numask 077\n", tok, i, strings.TrimRight(l.Apply.Script, "\n"))
		fmt.Fprintf(sb, "_ikafter() {\n%s}\n_ikafter; printf 'IKLIM-APPLIED %s %d %%d\\n' $?\n", after, tok, i)
		for _, f := range l.Apply.Files {
			stdin.Write(f.Data)
		}
		stdin.Write(b.payload)
	}
	if len(bs) == 0 {
		return outs
	}
	then, thenEnd := "IKLIM-THEN "+tok, "IKLIM-THEN-END "+tok
	if t := links[len(links)-1].Apply.Then; t != "" {
		fmt.Fprintf(sb, "printf '\\n%s\\n'\n{\n%s\n} </dev/null\nprintf '\\n%s %%d\\n' $?\n", then, strings.TrimRight(t, "\n"), thenEnd)
	}
	sb.WriteString("exit 0\n")

	res, err := conn.Run(ctx, sb.String(), modules.WithStdin(&stdin))
	if err != nil {
		r.unknownOutcomes(ctx, conn, h, st, bs, links, outs, err)
		return outs
	}
	rest := res.Stdout
	for i, b := range bs {
		recorded := fmt.Sprintf("\nIKLIM-RECORDED %s %d\n", tok, i)
		if i == 0 && res.ExitCode == noFilesExit && !strings.Contains(rest, recorded) {
			return outs // nothing written: the caller records and applies the usual way
		}
		head, tail, ok := strings.Cut(rest, recorded)
		if !ok {
			switch {
			case i > 0:
				// Stopped at its guard, or its record failed and was
				// taken back: not recorded, not changed.
			case res.ExitCode == 0:
				outs[i].Err = fmt.Errorf("%s: %s: the record command ended early", b.where, b.dir)
			default:
				outs[i].Err = r.recorded(st, b, res)
			}
			return outs
		}
		r.listed(st, b, head)
		outs[i].Recorded = true
		// The marker tells the apply succeeded, and how its after record
		// went.
		_, tail, ok = strings.Cut(tail, fmt.Sprintf("IKLIM-APPLIED %s %d ", tok, i))
		if !ok {
			l := links[i]
			res.Stdout = strings.TrimPrefix(rest, head+recorded)
			outs[i].ApplyErr = res.Err(l.Rec.Module + " " + strings.Join(l.Rec.Change.Files, " "))
			if outs[i].ApplyErr == nil {
				outs[i].ApplyErr = errors.New("apply failed")
			}
			return outs
		}
		code, tail, _ := strings.Cut(tail, "\n")
		outs[i].AfterDone = code == "0"
		rest = tail
	}
	if _, t, ok := strings.Cut(rest, "\n"+then+"\n"); ok {
		if t, code, ok := strings.Cut(t, "\n"+thenEnd+" "); ok && code == "0\n" {
			last := &outs[len(bs)-1]
			last.Then, last.ThenOK = t, true
		}
	}
	return outs
}

// unknownOutcomes follows a RecordApplyChain whose command was cut off: each
// link's record, in order, is looked for and, where found, its outcome
// recorded as failed (unknownOutcome); the first link not recorded ends it,
// and only the first link is told that error.
func (r *Recorder) unknownOutcomes(ctx context.Context, conn modules.Conn, h *inventories.Host, st *siteState, bs []*beforeScript, links []runner.ChainLink, outs []runner.ChainOutcome, runErr error) {
	for i, b := range bs {
		out, err := r.unknownOutcome(ctx, conn, h, st, b, links[i].Rec, runErr)
		if i > 0 && !out.Recorded {
			return
		}
		outs[i] = runner.ChainOutcome{ScriptOutcome: out, Err: err}
		if !out.Recorded || err != nil {
			return
		}
	}
}

// unknownOutcome follows a RecordApply whose command was cut off (lost
// connection, cancelled step): it tells whether the change was recorded and,
// if so, records it as failed, in one more command.
func (r *Recorder) unknownOutcome(ctx context.Context, conn modules.Conn, h *inventories.Host, st *siteState, b *beforeScript, rec *runner.ChangeRecord, runErr error) (runner.ScriptOutcome, error) {
	err := fmt.Errorf("%s: %s: %w", b.where, b.dir, runErr)
	after, aerr := r.afterScript(h, rec, runErr, "exit", nil)
	if aerr != nil {
		return runner.ScriptOutcome{}, err
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	rd := remote.Quote(b.dir + "/changes/" + b.seq)
	res, rerr := conn.Run(actx, shPrelude+"if [ -f "+rd+".json ] || [ -f "+rd+".json.enc ]; then echo RECORDED\n"+after+"fi\n")
	if rerr != nil {
		// Maybe recorded: Finish, on a new connection if one comes, ends
		// the run's record (it leaves a run directory that is not there).
		return runner.ScriptOutcome{Recorded: true}, err
	}
	if !strings.HasPrefix(res.Stdout, "RECORDED\n") {
		return runner.ScriptOutcome{}, err
	}
	r.listed(st, b, "")
	return runner.ScriptOutcome{Recorded: true, ApplyErr: runErr, AfterDone: res.ExitCode == 0}, nil
}
