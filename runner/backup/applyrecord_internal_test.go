package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iklimco/iklim/internal/recordtest"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/stretchr/testify/require"
)

// TestReceiveFilesTrapWithSpacesInPaths runs receiveFiles' script in dash
// and bash (login shells run it as they are): a temp file whose directory
// has a space in its name is removed when the apply fails, nothing else is,
// and a file the apply renamed into place stays.
func TestReceiveFilesTrapWithSpacesInPaths(t *testing.T) {
	for _, shell := range []string{"/bin/sh", "/bin/bash"} {
		if _, err := os.Stat(shell); err != nil {
			t.Fatalf("%s: %v", shell, err)
		}
		for _, applyOK := range []bool{false, true} {
			dir := t.TempDir()
			// "my app/.iklim-t" once split at its space into "…/my".
			bystander := filepath.Join(dir, "my")
			require.NoError(t, os.WriteFile(bystander, []byte("keep\n"), 0o644))
			require.NoError(t, os.Mkdir(filepath.Join(dir, "my app"), 0o755))
			tmp := filepath.Join(dir, "my app", ".iklim-t")
			dest := filepath.Join(dir, "my app", "x.conf")
			files := []modules.ScriptFile{{Path: tmp, Data: []byte("new\n"), Mode: 0o644}}

			var sb strings.Builder
			receiveFiles(&sb, files)
			if applyOK {
				sb.WriteString("mv -f -- " + remote.Quote(tmp) + " " + remote.Quote(dest) + "\n")
			} else {
				sb.WriteString("exit 1\n")
			}
			cmd := exec.Command(shell, "-c", sb.String())
			cmd.Stdin = bytes.NewReader(files[0].Data)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if applyOK {
				require.NoError(t, err, "%s: %s", shell, stderr.String())
				require.FileExists(t, dest)
			} else {
				require.Error(t, err, shell)
			}
			require.Empty(t, stderr.String(), shell)
			require.NoFileExists(t, tmp, "%s: the temp file is removed", shell)
			b, err := os.ReadFile(bystander)
			require.NoError(t, err, "%s: the file named by the path's part before its space is untouched", shell)
			require.Equal(t, "keep\n", string(b))
		}
	}
}

// TestReceiveFilesByteExact runs receiveFiles' script in dash and bash: small
// text files (odd bytes and whitespace included, and an empty one) are read
// by the shell, others (no final newline, a NUL, too large) by dd, and every
// file is written byte-exact with its mode. A stdin that ends early exits
// noFilesExit.
func TestReceiveFilesByteExact(t *testing.T) {
	texts := [][]byte{
		[]byte("  lead and trail \t \r\n\n\\ back\\slash \\n\n%s -n -e\n\xc3\xa9 \xff\x01\n"),
		{},
	}
	others := [][]byte{
		[]byte("no final newline"),
		[]byte("a\x00nul\n"),
		bytes.Repeat([]byte("0123456789abcde\n"), maxInlineFile/16+1),
	}
	for _, shell := range []string{"/bin/sh", "/bin/bash"} {
		dir := t.TempDir()
		var files []modules.ScriptFile
		var stdin bytes.Buffer
		for i, data := range slices.Concat(texts, others) {
			files = append(files, modules.ScriptFile{Path: filepath.Join(dir, strconv.Itoa(i)), Data: data, Mode: 0o640})
			stdin.Write(data)
		}
		var sb strings.Builder
		receiveFiles(&sb, files)
		require.Equal(t, len(others), strings.Count(sb.String(), "dd of="), "dd only for what the shell cannot read")
		for _, f := range files { // into place, as an apply does; the EXIT trap removes the rest
			sb.WriteString("mv -f -- " + remote.Quote(f.Path) + " " + remote.Quote(f.Path+".got") + "\n")
		}
		cmd := exec.Command(shell, "-c", sb.String())
		cmd.Stdin = bytes.NewReader(stdin.Bytes())
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s: %s", shell, out)
		for _, f := range files {
			got, err := os.ReadFile(f.Path + ".got")
			require.NoError(t, err)
			require.Equal(t, f.Data, got, "%s: %s", shell, f.Path)
			fi, err := os.Stat(f.Path + ".got")
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o640), fi.Mode().Perm())
		}

		short := []modules.ScriptFile{{Path: filepath.Join(dir, "short"), Data: texts[0], Mode: 0o600}}
		sb.Reset()
		receiveFiles(&sb, short)
		cmd = exec.Command(shell, "-c", sb.String())
		cmd.Stdin = bytes.NewReader(texts[0][:len(texts[0])/2])
		err = cmd.Run()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, shell)
		require.Equal(t, noFilesExit, exit.ExitCode(), shell)
		require.NoFileExists(t, short[0].Path, "%s: nothing half-written is left", shell)
	}
}

// TestInlineRecordComesOnStdinAndCutShortCountsAsNeverRecorded: a change
// record small enough to come on the record script's stdin is never in the
// script (its argv on the host, which ps shows); it is written whole after
// the snapshot, and readers take a record cut short, or an after record cut
// short, for one never written. A stdin that ends inside the record fails
// the script before anything of the change is written.
func TestInlineRecordComesOnStdinAndCutShortCountsAsNeverRecorded(t *testing.T) {
	t.Setenv("IKLIM_STATE_DIR", t.TempDir())
	ctx := context.Background()
	root, dir := t.TempDir(), t.TempDir()
	file := filepath.Join(dir, "app.conf")
	require.NoError(t, os.WriteFile(file, []byte("old\n"), 0o644))
	id, err := ClaimRunID(time.Now())
	require.NoError(t, err)
	h := &inventories.Host{Name: "h1", BackupRoot: root, Local: true}
	conn := transport.NewLocalConn("h1")
	const marker = "marker-7f3a"
	rec := func(seq int) *runner.ChangeRecord {
		return &runner.ChangeRecord{RunID: id, Seq: seq, Host: "h1", Step: "write " + marker, Module: "copy",
			Change: &modules.Change{Summary: "update " + marker, Files: []string{file}}}
	}
	r := NewRecorder(RecorderOptions{Info: runner.RunInfo{ID: id}})

	// The first change: recorded through Before, over a real shell.
	st := r.site(h)
	st.mu.Lock()
	b, err := r.before(ctx, conn, h, st, rec(1), nil, false)
	st.mu.Unlock()
	require.NoError(t, err)
	require.NotContains(t, b.script.String(), marker, "the record is not in the script")
	require.Contains(t, b.script.String(), `mkdir -p -- "$D/changes" "$F"`, "the run's first record makes its directories")
	require.NotContains(t, b.script.String(), "tar -xf", "an inline first record needs no tar")
	require.NoError(t, r.Before(ctx, conn, h, rec(1)))
	runDir := RunDir(root, "h1", id)
	got, err := os.ReadFile(filepath.Join(runDir, "changes", "0001.json"))
	require.NoError(t, err)
	require.Contains(t, string(got), marker)
	require.NoError(t, r.After(ctx, conn, h, rec(1), nil))
	matches, err := filepath.Glob(filepath.Join(runDir, "changes", ".*"))
	require.NoError(t, err)
	require.Empty(t, matches, "no temp files")

	// The second change's stdin ends inside its record.
	st.mu.Lock()
	b, err = r.before(ctx, conn, h, st, rec(2), nil, false)
	st.mu.Unlock()
	require.NoError(t, err)
	require.NotContains(t, b.script.String(), "tar -xf", "a later record of the run needs no tar (nor a directory of its own)")
	cmd := exec.Command("/bin/sh", "-c", b.script.String())
	cmd.Stdin = bytes.NewReader(b.payload[:bytes.Index(b.payload, []byte(marker))])
	out, err := cmd.CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "the change record came short")
	require.NoFileExists(t, filepath.Join(runDir, "changes", "0002.json"))
	snaps, err := filepath.Glob(filepath.Join(runDir, "files", "0002-*"))
	require.NoError(t, err)
	require.Empty(t, snaps, "no snapshot of the change")

	hr, err := ReadHostRecords(ctx, conn, root, "h1", id)
	require.NoError(t, err)
	require.Len(t, hr.Changes, 1)
	require.NotNil(t, hr.Changes[0].After)

	// Records cut short, as by a crash while printf wrote them.
	cut := func(name string) {
		p := filepath.Join(runDir, "changes", name)
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(p, b[:len(b)/2], 0o600))
	}
	cut("0001.after.json")
	hr, err = ReadHostRecords(ctx, conn, root, "h1", id)
	require.NoError(t, err)
	require.Len(t, hr.Changes, 1)
	require.Nil(t, hr.Changes[0].After, "an after record cut short is no after record")
	cut("0001.json")
	hr, err = ReadHostRecords(ctx, conn, root, "h1", id)
	require.NoError(t, err)
	if hr != nil {
		require.Empty(t, hr.Changes, "a change record cut short is no record")
	}
}

// TestAfterStateOfWrittenFilesIsWhatIsThere: the state after of a file an
// apply wrote whole is recorded from what the apply wrote (no programs run
// to read it back); it must equal what reading it back gives, for the
// shell's own file, another owner's, and set-id or plain modes.
func TestAfterStateOfWrittenFilesIsWhatIsThere(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: one case writes a file for another owner")
	}
	t.Setenv("IKLIM_STATE_DIR", t.TempDir())
	ctx := context.Background()
	root, dir := t.TempDir(), t.TempDir()
	id, err := ClaimRunID(time.Now())
	require.NoError(t, err)
	h := &inventories.Host{Name: "h1", BackupRoot: root, Local: true}
	conn := transport.NewLocalConn("h1")
	r := NewRecorder(RecorderOptions{Info: runner.RunInfo{ID: id}})
	for i, tc := range []struct {
		mode         uint32
		owner, group string
	}{
		{0o644, "", ""},
		{0o600, "0", "0"},
		{0o4755, "", ""},
		{0o640, "1234", "4321"},
	} {
		dest := filepath.Join(dir, "f"+string(rune('a'+i)))
		require.NoError(t, os.WriteFile(dest, []byte("old\n"), 0o644))
		ap := remote.WriteFileApply(dest, []byte("new "+dest+"\n"), tc.mode, tc.owner, tc.group)
		rec := &runner.ChangeRecord{RunID: id, Seq: i + 1, Host: "h1", Step: "write", Module: "copy",
			Change: &modules.Change{Summary: "write " + dest, Files: []string{dest}}}
		out, err := r.RecordApply(ctx, conn, h, rec, ap)
		require.NoError(t, err)
		require.NoError(t, out.ApplyErr)
		require.True(t, out.AfterDone)

		requireAfterIsReadBack(t, conn, RunDir(root, "h1", id), i+1, dest)
	}
}

// TestAfterStateOfMadeDirectoriesIsWhatIsThere: the after state recorded
// for a directory a script says it made equals reading it back, also where
// the host differs from what the script said: a setgid parent passes its
// bit on, and a chown after the mkdir gives it another owner.
func TestAfterStateOfMadeDirectoriesIsWhatIsThere(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: one case makes a directory for another owner")
	}
	lr := newLoggedRecorder(t, "stat") // a directory whose state is known needs no stat
	dir := t.TempDir()
	shared := filepath.Join(dir, "shared")
	require.NoError(t, os.Mkdir(shared, 0o755))
	require.NoError(t, os.Chmod(shared, 0o775|os.ModeSetgid))
	mkdir := func(p string, mode uint32) string { return fmt.Sprintf("mkdir -m %04o -- %s", mode, remote.Quote(p)) }
	a, b, c, d, e := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(shared, "c"), filepath.Join(dir, "d"), filepath.Join(shared, "e")
	for i, tc := range []struct {
		path   string
		mode   uint32
		script string
		known  bool
	}{
		{a, 0o750, mkdir(a, 0o750), true},
		{b, 0o3751, mkdir(b, 0o3751), true},
		// A setgid parent passes its bit on, and neither mkdir -m nor chmod
		// clears it: 2750 on the host.
		{c, 0o750, mkdir(c, 0o750), false},
		{e, 0o750, "mkdir -- " + remote.Quote(e) + " && chmod 0750 -- " + remote.Quote(e), false},
		{d, 0o700, mkdir(d, 0o700) + " && chown 1234:4321 -- " + remote.Quote(d), false},
	} {
		ap := &modules.ScriptApply{Script: tc.script + "\n", Dirs: []modules.ScriptDir{{Path: tc.path, Mode: tc.mode}}}
		calls := lr.recordApply(i+1, tc.path, ap)
		require.Equal(t, tc.known, calls == "", "%s: %s", tc.path, calls)
		requireAfterIsReadBack(t, lr.conn, lr.dir(), i+1, tc.path)
	}
}

// TestAfterStateOfMadeLinksIsWhatIsThere: the after state of a link the
// apply made takes its hash from the target written, without readlink and
// sha256sum, and its owner from the shell's ids where the apply left the
// link as it made it, without stat; it equals reading the link back. A link
// the apply chowned, one in a setgid directory (which passes its group on)
// and a path that is not a link after all are read back.
func TestAfterStateOfMadeLinksIsWhatIsThere(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: one case gives a link another owner")
	}
	lr := newLoggedRecorder(t, "readlink", "sha256sum", "stat")
	dir := t.TempDir()
	shared := filepath.Join(dir, "shared")
	require.NoError(t, os.Mkdir(shared, 0o755))
	require.NoError(t, os.Chown(shared, 0, 4321))
	require.NoError(t, os.Chmod(shared, 0o775|os.ModeSetgid))
	ln := func(target, p string) string { return "ln -sT -- " + remote.Quote(target) + " " + remote.Quote(p) }
	a, b, c, d := filepath.Join(dir, "current"), filepath.Join(dir, "odd"), filepath.Join(dir, "notalink"), filepath.Join(shared, "current")
	for i, tc := range []struct {
		path, target, script string
		own                  bool
		calls                string
	}{
		{a, "releases/7", ln("releases/7", a), true, ""},
		{b, "/srv/a b/$x'\\", ln("/srv/a b/$x'\\", b) + " && chown -h 1234:4321 -- " + remote.Quote(b), false, "stat\n"},
		{c, "elsewhere", "echo data > " + remote.Quote(c), true, "sha256sum\nstat\n"},
		{d, "releases/8", ln("releases/8", d), true, "stat\n"},
	} {
		ap := &modules.ScriptApply{Script: tc.script + "\n", Links: []modules.ScriptLink{{Path: tc.path, Target: tc.target, Own: tc.own}}}
		calls := lr.recordApply(i+1, tc.path, ap)
		require.Equal(t, tc.calls, calls, tc.path)
		requireAfterIsReadBack(t, lr.conn, lr.dir(), i+1, tc.path)
	}
}

// loggedRecorder is a recorder of one run on the local host h1, with
// wrappers of some programs first in PATH that note each call in log.
type loggedRecorder struct {
	t        *testing.T
	id, root string
	log      string
	h        *inventories.Host
	conn     modules.Conn
	r        *Recorder
}

func newLoggedRecorder(t *testing.T, programs ...string) *loggedRecorder {
	t.Helper()
	t.Setenv("IKLIM_STATE_DIR", t.TempDir())
	bin, log := t.TempDir(), filepath.Join(t.TempDir(), "calls.log")
	for _, name := range programs {
		real, err := exec.LookPath(name)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\necho "+name+" >> "+remote.Quote(log)+"\nexec "+real+" \"$@\"\n"), 0o755))
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	id, err := ClaimRunID(time.Now())
	require.NoError(t, err)
	root := t.TempDir()
	return &loggedRecorder{t: t, id: id, root: root, log: log,
		h:    &inventories.Host{Name: "h1", BackupRoot: root, Local: true},
		conn: transport.NewLocalConn("h1"),
		r:    NewRecorder(RecorderOptions{Info: runner.RunInfo{ID: id}})}
}

// dir is the run's directory on h1.
func (lr *loggedRecorder) dir() string { return RunDir(lr.root, "h1", lr.id) }

// recordApply applies ap as change seq, which replaces path, through
// RecordApply; it requires that the change was applied and its outcome
// recorded, and returns the logged calls meanwhile.
func (lr *loggedRecorder) recordApply(seq int, path string, ap *modules.ScriptApply) string {
	t := lr.t
	t.Helper()
	rec := &runner.ChangeRecord{RunID: lr.id, Seq: seq, Host: "h1", Step: "s", Module: "file",
		Change: &modules.Change{Summary: "change " + path, Files: []string{path}}}
	require.NoError(t, os.WriteFile(lr.log, nil, 0o644))
	out, err := lr.r.RecordApply(context.Background(), lr.conn, lr.h, rec, ap)
	require.NoError(t, err)
	require.NoError(t, out.ApplyErr)
	require.True(t, out.AfterDone)
	calls, err := os.ReadFile(lr.log)
	require.NoError(t, err)
	return string(calls)
}

// requireAfterIsReadBack requires that the after record of change seq in
// the run directory dir holds, for its one path p, what iklim_st reads on
// the host now.
func requireAfterIsReadBack(t *testing.T, conn modules.Conn, dir string, seq int, p string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "changes", seqName(seq)+".after.json"))
	require.NoError(t, err)
	var got AfterRecord
	require.NoError(t, json.Unmarshal(b, &got))
	res, err := conn.Run(context.Background(), shPrelude+"iklim_st "+jsq(p)+" "+remote.Quote(p))
	require.NoError(t, err)
	require.Zero(t, res.ExitCode, res.Stderr)
	var want FileMeta
	require.NoError(t, json.Unmarshal([]byte(res.Stdout), &want))
	require.Equal(t, []FileMeta{want}, got.Files, p)
}

// TestSnapshotHashIsReadWithTheRun: a snapshot's meta is recorded without
// the content's hash (a program less per change); reading the run gives it
// from the data, equal to what iklim_st says of the path itself, for a file
// and a symlink (the hash of readlink's line).
func TestSnapshotHashIsReadWithTheRun(t *testing.T) {
	t.Setenv("IKLIM_STATE_DIR", t.TempDir())
	ctx := context.Background()
	root, dir := t.TempDir(), t.TempDir()
	file, link := filepath.Join(dir, "app.conf"), filepath.Join(dir, "current")
	require.NoError(t, os.WriteFile(file, []byte("port = 80\n"), 0o640))
	require.NoError(t, os.Symlink("releases/7", link))
	id, err := ClaimRunID(time.Now())
	require.NoError(t, err)
	h := &inventories.Host{Name: "h1", BackupRoot: root, Local: true}
	conn := transport.NewLocalConn("h1")
	var want []FileMeta
	for _, p := range []string{file, link} {
		res, err := conn.Run(ctx, shPrelude+"iklim_st "+jsq(p)+" "+remote.Quote(p))
		require.NoError(t, err)
		var m FileMeta
		require.NoError(t, json.Unmarshal([]byte(res.Stdout), &m))
		require.Len(t, m.SHA256, 64)
		want = append(want, m)
	}

	r := NewRecorder(RecorderOptions{Info: runner.RunInfo{ID: id}})
	rec := &runner.ChangeRecord{RunID: id, Seq: 1, Host: "h1", Step: "s", Module: "x",
		Change: &modules.Change{Summary: "change", Files: []string{file, link}}}
	require.NoError(t, r.Before(ctx, conn, h, rec))
	meta, err := os.ReadFile(filepath.Join(RunDir(root, "h1", id), "files", "0001-2.meta.json"))
	require.NoError(t, err)
	require.NotContains(t, string(meta), "sha256")

	hr, err := ReadHostRecords(ctx, conn, root, "h1", id)
	require.NoError(t, err)
	require.Len(t, hr.Changes, 1)
	require.Equal(t, want, hr.Changes[0].Snapshots)
}

// TestSnapshotFromWhatTheCheckRead: a file whose content the check read is
// snapshotted from it, with no cat and no stat, where the host still holds
// that content in a file of the shell's user and group; the snapshot is
// what iklim_snap makes of the file. Where the host differs (other content,
// a last line without its newline, more lines, another owner, a symlink) or
// the data is too large, iklim_snap runs.
func TestSnapshotFromWhatTheCheckRead(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: one case is another owner's file")
	}
	lr := newLoggedRecorder(t, "cat", "stat")
	dir := t.TempDir()
	big := strings.Repeat("x = 1\n", maxKnownSnapshot/6+1)
	for i, tc := range []struct {
		name, onHost, known string
		mode                uint32
		prepare             func(p string)
		fromCheck           bool
	}{
		{"same", "port = 80\n  x\\n\r\n", "port = 80\n  x\\n\r\n", 0o640, nil, true},
		{"setuid", "a\n", "a\n", 0o4755, nil, true},
		{"other content", "port = 81\n", "port = 80\n", 0o644, nil, false},
		{"no last newline", "a\nb", "a\n", 0o644, nil, false},
		{"grown since", "a\n" + strings.Repeat("log line\n", 20000), "a\n", 0o644, nil, false},
		{"other owner", "a\n", "a\n", 0o644, func(p string) { require.NoError(t, os.Chown(p, 1234, 4321)) }, false},
		{"symlink", "a\n", "a\n", 0o644, func(p string) {
			require.NoError(t, os.Rename(p, p+".real"))
			require.NoError(t, os.Symlink(p+".real", p))
		}, false},
		{"too large", big, big, 0o644, nil, false},
	} {
		p := filepath.Join(dir, "f"+strconv.Itoa(i))
		require.NoError(t, os.WriteFile(p, []byte(tc.onHost), 0o644))
		require.NoError(t, os.Chmod(p, os.FileMode(tc.mode&0o777)|map[bool]os.FileMode{true: os.ModeSetuid}[tc.mode&0o4000 != 0]))
		if tc.prepare != nil {
			tc.prepare(p)
		}
		want := filepath.Join(t.TempDir(), "want")
		res, err := lr.conn.Run(context.Background(), shPrelude+"iklim_snap "+jsq(p)+" "+remote.Quote(p)+" "+remote.Quote(filepath.Dir(want))+" want")
		require.NoError(t, err)
		require.Zero(t, res.ExitCode, res.Stderr)

		ap := remote.WriteFileApply(p, []byte("new\n"), 0o644, "", "")
		ap.Before = []modules.ScriptBefore{{Path: p, Data: []byte(tc.known), Mode: tc.mode}}
		calls := lr.recordApply(i+1, p, ap)
		snap := filepath.Join(lr.dir(), "files", snapName(seqName(i+1), 1))
		if tc.fromCheck {
			require.Empty(t, calls, tc.name)
		} else {
			require.Contains(t, calls, "stat", tc.name) // iklim_snap's
		}
		for _, ext := range []string{".path", ".data", ".meta.json"} {
			got, err := os.ReadFile(snap + ext)
			require.NoError(t, err, tc.name)
			w, err := os.ReadFile(want + ext)
			require.NoError(t, err, tc.name)
			require.Equal(t, string(w), string(got), tc.name+ext)
		}
	}
}

// TestNewHostDirectoryClaim: the first record on a host whose backup root
// is not there yet makes the root, the host directory and the run
// directory with one mkdir, and links the host's owner marker from the run
// directory: two programs, all directories private. A marker that another
// control machine wrote meanwhile wins: the run directory goes, nothing is
// applied, and the error names both owners.
func TestNewHostDirectoryClaim(t *testing.T) {
	lr := newLoggedRecorder(t, "mkdir", "ln", "rm", "mv", "stat")
	lr.h.BackupRoot = filepath.Join(lr.root, "new")
	dest := filepath.Join(t.TempDir(), "app.conf")
	calls := lr.recordApply(1, dest, remote.WriteFileApply(dest, []byte("new\n"), 0o644, "", ""))
	require.Equal(t, "mkdir\nln\nmv\n", calls, "mkdir -p, the marker's ln, the apply's mv")
	hd := HostDir(lr.h.BackupRoot, "h1")
	d := RunDir(lr.h.BackupRoot, "h1", lr.id)
	for _, p := range []string{lr.h.BackupRoot, hd, d} {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		require.Equal(t, os.ModeDir|0o700, fi.Mode(), p)
	}
	marker, err := os.ReadFile(filepath.Join(hd, "owner"))
	require.NoError(t, err)
	require.Regexp(t, `^host=h1 machine=\S+ control=\S+\n$`, string(marker))
	a, err := os.Stat(filepath.Join(hd, "owner"))
	require.NoError(t, err)
	b, err := os.Stat(filepath.Join(d, "host-owner"))
	require.NoError(t, err)
	require.True(t, os.SameFile(a, b), "the marker is a link of the run directory's copy")
	require.Equal(t, os.FileMode(0o600), a.Mode())

	// Another control machine's marker lands between the read and the ln.
	bin := t.TempDir()
	theirs := "host=h1 machine=m control=ctl-other"
	ln, err := exec.LookPath("ln")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(bin, "ln"), []byte("#!/bin/sh\neval \"last=\\${$#}\"\nprintf '%s\\n' '"+theirs+"' > \"$last\"\nexec "+ln+" \"$@\"\n"), 0o755))
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	id, err := ClaimRunID(time.Now().Add(time.Second))
	require.NoError(t, err)
	h := &inventories.Host{Name: "h1", BackupRoot: filepath.Join(lr.root, "raced"), Local: true}
	r := NewRecorder(RecorderOptions{Info: runner.RunInfo{ID: id}})
	other := filepath.Join(t.TempDir(), "other.conf")
	rec := &runner.ChangeRecord{RunID: id, Seq: 1, Host: "h1", Step: "s", Module: "file",
		Change: &modules.Change{Summary: "change " + other, Files: []string{other}}}
	_, err = r.RecordApply(context.Background(), lr.conn, h, rec, remote.WriteFileApply(other, []byte("new\n"), 0o644, "", ""))
	require.ErrorIs(t, err, ErrOwnerConflict)
	require.Contains(t, err.Error(), theirs)
	_, err = os.Stat(other)
	require.True(t, os.IsNotExist(err), "nothing applied")
	_, err = os.Stat(RunDir(h.BackupRoot, "h1", id))
	require.True(t, os.IsNotExist(err), "the run directory made is gone")
	got, err := os.ReadFile(filepath.Join(HostDir(h.BackupRoot, "h1"), "owner"))
	require.NoError(t, err)
	require.Equal(t, theirs+"\n", string(got))
}

// TestRecordApplyChainEndsWhereALinkCannotGo: RecordApplyChain applies its
// links in turn in one command, each recorded whole before it runs and its
// outcome after, and ends the chain before a link whose guard fails, after
// one whose apply fails, and before one that cannot follow another in a
// command (sensitive, or after a record sent as a tar): the links not
// reached are neither recorded nor applied, and the last link's Then runs
// only after a chain that was not stopped.
func TestRecordApplyChainEndsWhereALinkCannotGo(t *testing.T) {
	type link struct {
		guard, script string
		sensitive     bool
		bigRecord     bool
	}
	tests := []struct {
		name    string
		links   []link
		applied int  // links applied, all recorded with their outcome
		failed  bool // the link after them was recorded and failed
		then    bool
	}{
		{name: "all", links: []link{{}, {guard: "true"}, {guard: "true"}}, applied: 3, then: true},
		{name: "guard", links: []link{{}, {guard: "false"}, {guard: "true"}}, applied: 1},
		{name: "apply fails", links: []link{{}, {guard: "true", script: "false"}, {guard: "true"}}, applied: 1, failed: true},
		{name: "sensitive", links: []link{{}, {guard: "true", sensitive: true}}, applied: 1, then: true},
		{name: "after a tar", links: []link{{bigRecord: true}, {guard: "true"}}, applied: 1, then: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lr := newLoggedRecorder(t)
			dir := t.TempDir()
			var links []runner.ChainLink
			var dests []string
			for i, l := range tt.links {
				dest := filepath.Join(dir, fmt.Sprintf("f%d.conf", i))
				dests = append(dests, dest)
				ap := remote.WriteFileApply(dest, []byte(fmt.Sprintf("link %d\n", i)), 0o644, "", "")
				ap.Files[0].Dest = dest
				if l.script != "" {
					ap.Script = l.script
				}
				ch := &modules.Change{Summary: "write " + dest, Files: []string{dest}, Sensitive: l.sensitive}
				if l.bigRecord {
					ch.Summary = strings.Repeat("x", maxInlineRecord)
				}
				links = append(links, runner.ChainLink{Guard: l.guard, Apply: ap,
					Rec: &runner.ChangeRecord{RunID: lr.id, Seq: i + 1, Host: "h1", Step: fmt.Sprintf("s%d", i), Module: "copy", Change: ch}})
			}
			last := *links[len(links)-1].Apply
			last.Then = "echo then ran"
			links[len(links)-1].Apply = &last

			outs := lr.r.RecordApplyChain(context.Background(), lr.conn, lr.h, links)
			require.Len(t, outs, len(links))
			for i, out := range outs {
				_, err := os.Stat(filepath.Join(lr.dir(), "changes", seqName(i+1)+".json"))
				switch {
				case i < tt.applied:
					require.NoError(t, out.Err)
					require.True(t, out.Recorded && out.AfterDone, "link %d", i)
					require.NoError(t, out.ApplyErr, "link %d", i)
					got, err := os.ReadFile(dests[i])
					require.NoError(t, err)
					require.Equal(t, fmt.Sprintf("link %d\n", i), string(got))
					requireAfterIsReadBack(t, lr.conn, lr.dir(), i+1, dests[i])
				case i == tt.applied && tt.failed:
					require.True(t, out.Recorded, "link %d", i)
					require.Error(t, out.ApplyErr, "link %d", i)
					require.NoError(t, err, "link %d recorded", i)
					require.Equal(t, "absent", recordtest.FileState(t, dests[i]))
				default:
					require.Equal(t, runner.ChainOutcome{}, out, "link %d not reached", i)
					require.True(t, os.IsNotExist(err), "link %d not recorded", i)
					require.Equal(t, "absent", recordtest.FileState(t, dests[i]))
				}
			}
			if tt.then {
				require.True(t, outs[tt.applied-1].ThenOK)
				require.Equal(t, "then ran\n", outs[tt.applied-1].Then)
			}
			for i, out := range outs {
				if !tt.then || i != tt.applied-1 {
					require.False(t, out.ThenOK, "link %d", i)
					require.Empty(t, out.Then, "link %d", i)
				}
			}
			matches, err := filepath.Glob(filepath.Join(dir, ".iklim-*"))
			require.NoError(t, err)
			require.Empty(t, matches, "no temp file left")
			recordtest.RequireRunDirWhole(t, lr.dir())
		})
	}
}
