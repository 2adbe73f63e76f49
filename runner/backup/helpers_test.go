package backup_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iklimco/iklim/internal/sshtest"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/stock"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/backup"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/stretchr/testify/require"
)

// testRegistry is a new registry of every stock module (rollback looks
// modules up by name, e.g. file's own Rollback) and the test modules. They
// reach the host only through the Conn, as real modules do, and are in the
// registry under the names the records refer to.
func testRegistry(t *testing.T) *modules.Registry {
	t.Helper()
	reg := stock.Registry()
	require.NoError(t, reg.Add(
		modules.Info{Name: "test_put", Doc: "test: write a file", New: func() modules.Module { return &putMod{} }},
		modules.Info{Name: "test_rm", Doc: "test: delete a file", New: func() modules.Module { return &rmMod{} }},
		modules.Info{Name: "test_secret", Doc: "test: write a secret into a file", New: func() modules.Module { return &secretMod{} }},
		modules.Info{Name: "test_kv", Doc: "test: set a value kept outside Change.Files (Rollbacker, Drifter)", New: func() modules.Module { return &kvMod{} }},
		modules.Info{Name: "test_secret_rmtree", Doc: "test: remove a tree, with a sensitive argument", New: func() modules.Module { return &secretRmTree{} }},
		modules.Info{Name: "test_slow", Doc: "test: write a file, then hang", New: func() modules.Module { return &slowMod{} }},
		modules.Info{Name: "test_leave", Doc: "test: join, and on rollback note what another file held", New: func() modules.Module { return &leaveMod{} }},
	))
	return reg
}

func q(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// putMod writes Content to Path with Mode and Owner.
type putMod struct {
	Path    string `hcl:"path"`
	Content []byte `hcl:"content"`
	Mode    uint32 `hcl:"mode,optional"`
	Owner   string `hcl:"owner,optional"`
}

func (m *putMod) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	if m.Mode == 0 {
		m.Mode = 0o644
	}
	if m.Owner == "" {
		m.Owner = "root"
	}
	res, err := c.Run(ctx, fmt.Sprintf("[ -f %s ] && [ ! -L %s ] && { stat -c '%%a %%U' %s; sha256sum < %s | cut -c1-64; }; true", q(m.Path), q(m.Path), q(m.Path), q(m.Path)))
	if err != nil {
		return nil, err
	}
	if res.Stdout == fmt.Sprintf("%o %s\n%s\n", m.Mode, m.Owner, sha(m.Content)) {
		return nil, nil
	}
	return &modules.Change{Summary: "put " + m.Path, Files: []string{m.Path}, Diff: &modules.Diff{Label: m.Path, After: string(m.Content)}}, nil
}

func (m *putMod) Apply(ctx context.Context, c modules.Conn, _ *modules.Change) error {
	script := fmt.Sprintf("umask 077; p=%s; mkdir -p \"$(dirname \"$p\")\"; t=\"$p.tmp.$$\"; cat > \"$t\" && chown %s \"$t\" && chmod %o \"$t\" && mv -f \"$t\" \"$p\"", q(m.Path), q(m.Owner), m.Mode)
	res, err := c.Run(ctx, script, modules.WithStdin(bytes.NewReader(m.Content)))
	if err != nil {
		return err
	}
	return res.Err("put")
}

// rmMod deletes Path.
type rmMod struct {
	Path string `hcl:"path"`
}

func (m *rmMod) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	res, err := c.Run(ctx, fmt.Sprintf("[ -e %s ] || [ -L %s ]", q(m.Path), q(m.Path)))
	if err != nil || !res.OK() {
		return nil, err
	}
	return &modules.Change{Summary: "remove " + m.Path, Files: []string{m.Path}}, nil
}

func (m *rmMod) Apply(ctx context.Context, c modules.Conn, _ *modules.Change) error {
	res, err := c.Run(ctx, "rm -f "+q(m.Path))
	if err != nil {
		return err
	}
	return res.Err("rm")
}

// secretMod writes a sensitive value into a file and records it in its
// before-state, the worst case for the recorder.
type secretMod struct {
	Path  string `hcl:"path"`
	Value string `hcl:"value" sensitive:"true"`
}

func (m *secretMod) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	ch := &modules.Change{Summary: "write secret " + m.Value + " to " + m.Path, Files: []string{m.Path},
		Diff: &modules.Diff{Label: m.Path, After: "PASSWORD=" + m.Value + "\n"}}
	if err := ch.SetBefore(map[string]string{"new_value": m.Value}); err != nil {
		return nil, err
	}
	return ch, nil
}

func (m *secretMod) Apply(ctx context.Context, c modules.Conn, _ *modules.Change) error {
	put := &putMod{Path: m.Path, Content: []byte("PASSWORD=" + m.Value + "\n"), Mode: 0o600}
	if _, err := put.Check(ctx, c); err != nil {
		return err
	}
	return put.Apply(ctx, c, nil)
}

// secretRmTree removes a directory tree; its Token argument is sensitive,
// so everything it replaces is sealed.
type secretRmTree struct {
	Path  string `hcl:"path"`
	Token string `hcl:"token,optional" sensitive:"true"`
}

func (m *secretRmTree) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	return &modules.Change{Summary: "remove " + m.Path, Files: []string{m.Path}}, nil
}

func (m *secretRmTree) Apply(ctx context.Context, c modules.Conn, _ *modules.Change) error {
	res, err := c.Run(ctx, "rm -rf -- "+q(m.Path))
	if err != nil {
		return err
	}
	return res.Err("rm")
}

// kvMod sets the value in File, which it does NOT list in Change.Files:
// only its own Rollback can undo it, from the before-state.
type kvMod struct {
	File  string `hcl:"file"`
	Value string `hcl:"value"`
}

type kvBefore struct {
	File, Old, New string
	Existed        bool
}

func (m *kvMod) read(ctx context.Context, c modules.Conn, file string) (string, bool, error) {
	res, err := c.Run(ctx, fmt.Sprintf("[ -e %s ] && { echo EXISTS; cat %s; }; true", q(file), q(file)))
	if err != nil {
		return "", false, err
	}
	v, ok := strings.CutPrefix(res.Stdout, "EXISTS\n")
	return v, ok, nil
}

func (m *kvMod) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	old, existed, err := m.read(ctx, c, m.File)
	if err != nil {
		return nil, err
	}
	if existed && old == m.Value {
		return nil, nil
	}
	ch := modules.Changef("set kv %s", m.Value)
	return ch, ch.SetBefore(kvBefore{File: m.File, Old: old, New: m.Value, Existed: existed})
}

func (m *kvMod) Apply(ctx context.Context, c modules.Conn, _ *modules.Change) error {
	res, err := c.Run(ctx, fmt.Sprintf("printf %%s %s > %s", q(m.Value), q(m.File)))
	if err != nil {
		return err
	}
	return res.Err("kv")
}

// Rollback implements modules.Rollbacker, from the record alone.
func (m *kvMod) Rollback(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	var b kvBefore
	if err := ch.DecodeBefore(&b); err != nil {
		return err
	}
	cmd := "rm -f " + q(b.File)
	if b.Existed {
		cmd = fmt.Sprintf("printf %%s %s > %s", q(b.Old), q(b.File))
	}
	res, err := c.Run(ctx, cmd)
	if err != nil {
		return err
	}
	return res.Err("kv rollback")
}

// Drift implements backup.Drifter.
func (m *kvMod) Drift(ctx context.Context, c modules.Conn, ch *modules.Change) (string, error) {
	var b kvBefore
	if err := ch.DecodeBefore(&b); err != nil {
		return "", err
	}
	cur, _, err := m.read(ctx, c, b.File)
	if err != nil || cur == b.New {
		return "", err
	}
	return fmt.Sprintf("kv is %q, the run left %q", cur, b.New), nil
}

// slowMod writes Path, drops a marker, then hangs until killed.
type slowMod struct {
	Path    string `hcl:"path"`
	Content []byte `hcl:"content"`
	Marker  string `hcl:"marker"`
}

func (m *slowMod) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	return &modules.Change{Summary: "slowly put " + m.Path, Files: []string{m.Path}}, nil
}

func (m *slowMod) Apply(ctx context.Context, c modules.Conn, _ *modules.Change) error {
	put := &putMod{Path: m.Path, Content: m.Content}
	if _, err := put.Check(ctx, c); err != nil {
		return err
	}
	if err := put.Apply(ctx, c, nil); err != nil {
		return err
	}
	res, err := c.Run(ctx, fmt.Sprintf("touch %s; sleep 120", q(m.Marker)))
	if err != nil {
		return err
	}
	return res.Err("slow")
}

// leaveMod writes "joined" to File. Its Rollback waits a moment, as a
// cluster node leaving does, then writes what Watch holds at that moment:
// a rollback that undid the change behind Watch too early shows in File.
type leaveMod struct {
	File  string `hcl:"file"`
	Watch string `hcl:"watch"`
}

func (m *leaveMod) Check(ctx context.Context, c modules.Conn) (*modules.Change, error) {
	ch := modules.Changef("join")
	return ch, ch.SetBefore(m)
}

func (m *leaveMod) Apply(ctx context.Context, c modules.Conn, _ *modules.Change) error {
	res, err := c.Run(ctx, "printf joined > "+q(m.File))
	if err != nil {
		return err
	}
	return res.Err("join")
}

func (m *leaveMod) Rollback(ctx context.Context, c modules.Conn, ch *modules.Change) error {
	if err := ch.DecodeBefore(m); err != nil {
		return err
	}
	res, err := c.Run(ctx, fmt.Sprintf("sleep 1; { printf 'left while watch='; cat %s 2>/dev/null; } > %s", q(m.Watch), q(m.File)))
	if err != nil {
		return err
	}
	return res.Err("leave")
}

// env is a set of real sshd hosts (all on this machine's filesystem, each
// with its own backup root and files under its own directory), the control
// machine, and the state dir.
type env struct {
	t         *testing.T
	tmp       string
	hosts     []*inventories.Host
	inv       *inventories.Inventory
	connector runner.Connector
	control   *inventories.Host
	secrets   *modules.Secrets
	modules   *modules.Registry
	keep      int
}

func newEnv(t *testing.T, n int) *env {
	t.Helper()
	srv := sshtest.Start(t)
	sshtest.RequireSudo(t)
	tmp := t.TempDir()
	t.Setenv("IKLIM_STATE_DIR", filepath.Join(tmp, "state"))
	hosts := srv.Hosts(n)
	for _, h := range hosts {
		h.Become = true
		h.BackupRoot = filepath.Join(tmp, h.Name, "backups")
		require.NoError(t, os.MkdirAll(filepath.Join(tmp, h.Name, "files"), 0o755))
	}
	cfg := filepath.Join(tmp, "ssh_config")
	require.NoError(t, os.WriteFile(cfg, nil, 0o600))
	connector := transport.NewSSHConnector(transport.SSHOptions{SSHConfigFile: cfg})
	t.Cleanup(func() { _ = connector.Close() })
	return &env{
		t: t, tmp: tmp, hosts: hosts, inv: &inventories.Inventory{Hosts: hosts}, connector: connector,
		control: &inventories.Host{Name: "localhost", Address: "localhost", Local: true, BackupRoot: filepath.Join(tmp, "control", "backups")},
		secrets: modules.NewSecrets(), modules: testRegistry(t),
	}
}

// path is a file of host h.
func (e *env) path(h *inventories.Host, name string) string {
	return filepath.Join(e.tmp, h.Name, "files", name)
}

func (e *env) hostByName(name string) *inventories.Host {
	h, _ := e.inv.Host(name)
	return h
}

// play runs one play over all hosts with steps, recorded, and returns the
// run id and recap.
func (e *env) play(steps ...runner.Step) (string, *runner.Recap, error) {
	e.t.Helper()
	return e.playbook(&runner.Playbook{File: "/srv/deploy/site.hcl", Plays: []runner.Play{{Name: "deploy", Hosts: "all", Steps: steps}}})
}

func (e *env) playbook(pb *runner.Playbook) (string, *runner.Recap, error) {
	e.t.Helper()
	id, err := backup.ClaimRunID(time.Now())
	require.NoError(e.t, err)
	info := runner.RunInfo{ID: id, User: "alice@ctl", Started: time.Now().UTC(), Playbook: pb.File, Inventory: "/srv/deploy/prod.hcl", GitCommit: "abc1234"}
	rec := backup.NewRecorder(backup.RecorderOptions{Info: info, Keep: e.keep})
	ctx := context.Background()
	recap, err := runner.Run(ctx, pb, runner.Options{
		Inventory: e.inv, Connector: e.connector, Recorder: rec, Run: info, Control: e.control, Secrets: e.secrets,
		Modules: e.modules,
	})
	require.NoError(e.t, rec.WriteJournal(recap, err))
	return id, recap, err
}

// rollback runs `iklim rollback --run id [--force]`: it reads the run's
// phases, then undoes them phase by phase.
func (e *env) rollback(id string, force bool) (string, *runner.Recap, error) {
	e.t.Helper()
	phases, err := backup.RollbackPhases(context.Background(), id, runner.Options{
		Inventory: e.inv, Connector: e.connector, Control: e.control, Secrets: e.secrets, Modules: e.modules,
	})
	require.NoError(e.t, err)
	return e.playbook(backup.RollbackPlaybook(id, force, phases...))
}

// requireOK fails unless the run succeeded everywhere.
func requireOK(t *testing.T, recap *runner.Recap, err error) {
	t.Helper()
	require.NoError(t, err)
	require.NotNil(t, recap)
	for _, h := range recap.Hosts {
		require.Zero(t, h.Failed+h.Unreachable, "%s: %s", h.Host, h.Error)
	}
}

func hostErrors(recap *runner.Recap) string {
	var s []string
	for _, h := range recap.Hosts {
		if h.Error != "" {
			s = append(s, h.Host+": "+h.Error)
		}
	}
	return strings.Join(s, "\n")
}

func putStep(name string, file func(*inventories.Host) string, content []byte, mode uint32, owner string) runner.Step {
	return runner.Step{Name: name, Module: "test_put", Source: "site.hcl:10", Build: func(sc *runner.StepContext) (modules.Module, error) {
		return &putMod{Path: file(sc.Host), Content: content, Mode: mode, Owner: owner}, nil
	}}
}

// putStepFunc is putStep with content made per host.
func putStepFunc(name string, file func(*inventories.Host) string, content func(*runner.StepContext) []byte, mode uint32, owner string) runner.Step {
	return runner.Step{Name: name, Module: "test_put", Source: "site.hcl:10", Build: func(sc *runner.StepContext) (modules.Module, error) {
		return &putMod{Path: file(sc.Host), Content: content(sc), Mode: mode, Owner: owner}, nil
	}}
}

func rmStep(name string, file func(*inventories.Host) string) runner.Step {
	return runner.Step{Name: name, Module: "test_rm", Source: "site.hcl:20", Build: func(sc *runner.StepContext) (modules.Module, error) {
		return &rmMod{Path: file(sc.Host)}, nil
	}}
}

// fileState is a file's content, mode and owner as seen on disk.
type fileState struct {
	Exists   bool
	Content  string
	Mode     os.FileMode
	UID, GID uint32
}

func stateOf(t *testing.T, p string) fileState {
	t.Helper()
	fi, err := os.Lstat(p)
	if os.IsNotExist(err) {
		return fileState{}
	}
	require.NoError(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	s := fileState{Exists: true, Mode: fi.Mode(), UID: st.Uid, GID: st.Gid}
	if fi.Mode().IsRegular() {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		s.Content = string(b)
	} else if fi.Mode()&os.ModeSymlink != 0 {
		s.Content, _ = os.Readlink(p)
	}
	return s
}

func writeFile(t *testing.T, p string, content []byte, mode os.FileMode, uid, gid int) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, content, mode))
	require.NoError(t, os.Chmod(p, mode))
	require.NoError(t, os.Lchown(p, uid, gid))
}

func nobody(t *testing.T) (int, int) {
	t.Helper()
	u, err := user.Lookup("nobody")
	require.NoError(t, err)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

// runDirs lists the run directories in h's host directory.
func runDirs(t *testing.T, h *inventories.Host) []string {
	t.Helper()
	ents, err := os.ReadDir(backup.HostDir(h.BackupRoot, h.Name))
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	var ids []string
	for _, e := range ents {
		if e.IsDir() && backup.ValidRunID(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	return ids
}

func readRunRecord(t *testing.T, h *inventories.Host, id string) backup.RunRecord {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(backup.RunDir(h.BackupRoot, h.Name, id), "run.json"))
	require.NoError(t, err)
	var rr backup.RunRecord
	require.NoError(t, json.Unmarshal(b, &rr))
	return rr
}

// grepTree reports every file under roots whose content contains needle.
func grepTree(t *testing.T, needle string, roots ...string) []string {
	t.Helper()
	var hits []string
	for _, root := range roots {
		_ = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err != nil || !fi.Mode().IsRegular() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err == nil && bytes.Contains(b, []byte(needle)) {
				hits = append(hits, p)
			}
			return nil
		})
	}
	return hits
}

// sites are the backup roots of every host plus the control machine.
func (e *env) sites() []backup.Site {
	var s []backup.Site
	for _, h := range e.hosts {
		s = append(s, backup.Site{Host: h.Name, Root: h.BackupRoot, Conn: transport.NewLocalConn(h.Name)})
	}
	return append(s, backup.Site{Host: e.control.Name, Root: e.control.BackupRoot, Conn: transport.NewLocalConn("localhost")})
}
