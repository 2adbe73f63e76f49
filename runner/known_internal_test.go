package runner

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/remote"
	"github.com/iklimco/iklim/runner/transport"
)

// knownHost is a directory on the local host as a deploy leaves it: a
// config file a copy rewrites, a file beside it, a directory and a path
// that is not there, with the probes checks ask of them.
type knownHost struct {
	t                        *testing.T
	conn                     modules.Conn
	conf, secret, data, gone string
	ps                       []remote.Probe
}

func newKnownHost(t *testing.T) *knownHost {
	dir := t.TempDir()
	h := &knownHost{t: t, conn: transport.NewLocalConn("local"),
		conf: filepath.Join(dir, "app.conf"), secret: filepath.Join(dir, "secret.env"),
		data: filepath.Join(dir, "data"), gone: filepath.Join(dir, "gone")}
	require.NoError(t, os.WriteFile(h.conf, []byte("rev = 1\n"), 0o644))
	require.NoError(t, os.WriteFile(h.secret, []byte("TOKEN=x\n"), 0o600))
	require.NoError(t, os.Mkdir(h.data, 0o750))
	other := remote.SHA256String("something else\n")
	h.ps = []remote.Probe{
		{Path: h.conf, Content: true},     // a line step
		{Path: h.conf, Sum: true},         // a stat step
		{Path: h.conf, DiffWant: other},   // a copy's diff
		{Path: h.secret, Sum: true},       // a copy that finds nothing
		{Path: h.secret, DiffWant: other}, // and its diff
		{Path: h.data},                    // a directory step
		{Path: h.gone},                    // a path to be made
	}
	return h
}

// read answers ps on the host, as a batch or an apply's then-probes do.
func (h *knownHost) read(ps []remote.Probe) map[remote.Probe]remote.ProbeResult {
	res, errs, err := remote.ProbeAlone(context.Background(), h.conn, ps)
	require.NoError(h.t, err)
	out := map[remote.Probe]remote.ProbeResult{}
	for i, p := range ps {
		require.NoError(h.t, errs[i])
		out[p] = res[i]
	}
	return out
}

// apply writes ap's files and runs its script, as the recorder does.
func (h *knownHost) apply(ap *modules.ScriptApply) {
	for _, f := range ap.Files {
		require.NoError(h.t, os.WriteFile(f.Path, f.Data, os.FileMode(f.Mode)))
	}
	res, err := h.conn.Run(context.Background(), ap.Script)
	require.NoError(h.t, err)
	require.Zero(h.t, res.ExitCode, res.Stderr)
}

// holds runs guard in a shell that has read its ids, as the recorder's has.
func (h *knownHost) holds(guard string) bool {
	res, err := h.conn.Run(context.Background(), remote.ShellIDs+"\nif "+guard+"; then echo yes; else echo no; fi")
	require.NoError(h.t, err)
	return strings.TrimSpace(res.Stdout) == "yes"
}

// TestKnownAfterAgreesWithTheHost: the answers told after a copy wrote
// app.conf whole are those the probes read on the host after it, byte for
// byte, and the guard holds there. Where the host is not as they assume
// (the file got another owner, a path beside it became a symlink or
// appeared, a path reads the written file under another name) the guard
// fails, so the probes are read instead.
func TestKnownAfterAgreesWithTheHost(t *testing.T) {
	write := func(h *knownHost) *modules.ScriptApply {
		return remote.WriteFileApply(h.conf, []byte("rev = 2\nmax = 100\n"), 0o640, "", "")
	}

	h := newKnownHost(t)
	before := h.read(h.ps)
	ap := write(h)
	guard, known := knownAfter(h.ps, []*modules.ScriptApply{ap}, before)
	require.NotEmpty(t, guard)
	h.apply(ap)
	require.True(t, h.holds(guard), guard)
	after := h.read(h.ps)
	for i, p := range h.ps {
		require.Equal(t, after[p], known[i], "%+v", p)
	}
	require.Equal(t, "rev = 2\nmax = 100\n", string(known[0].Content))

	for _, tc := range []struct {
		name  string
		after func(h *knownHost)
		root  bool
	}{
		{"the written file has another owner", func(h *knownHost) { require.NoError(t, os.Chown(h.conf, 65534, 65534)) }, true},
		{"a file beside it became a symlink", func(h *knownHost) {
			require.NoError(t, os.Remove(h.secret))
			require.NoError(t, os.Symlink(h.conf, h.secret))
		}, false},
		{"a path that was not there appeared", func(h *knownHost) { require.NoError(t, os.Mkdir(h.gone, 0o755)) }, false},
		{"the directory became a file", func(h *knownHost) {
			require.NoError(t, os.Remove(h.data))
			require.NoError(t, os.WriteFile(h.data, nil, 0o644))
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root && os.Geteuid() != 0 {
				t.Skip("chown to another user needs root")
			}
			h := newKnownHost(t)
			ap := write(h)
			guard, _ := knownAfter(h.ps, []*modules.ScriptApply{ap}, h.read(h.ps))
			h.apply(ap)
			require.True(t, h.holds(guard), "holds before the host is changed")
			tc.after(h)
			require.False(t, h.holds(guard), guard)
		})
	}

	t.Run("a path reads the written file under another name", func(t *testing.T) {
		h := newKnownHost(t)
		alias := filepath.Join(filepath.Dir(h.conf), "alias")
		require.NoError(t, os.Symlink(".", alias))
		ps := append(h.ps, remote.Probe{Path: filepath.Join(alias, "app.conf"), Sum: true})
		ap := write(h)
		guard, _ := knownAfter(ps, []*modules.ScriptApply{ap}, h.read(ps))
		require.NotEmpty(t, guard)
		h.apply(ap)
		require.False(t, h.holds(guard), guard)
	})

	t.Run("a directory a file was written in", func(t *testing.T) {
		h := newKnownHost(t)
		ap := remote.WriteFileApply(filepath.Join(h.data, "x"), []byte("x\n"), 0o644, "", "")
		guard, _ := knownAfter(h.ps, []*modules.ScriptApply{ap}, h.read(h.ps))
		require.NotEmpty(t, guard)
		h.apply(ap)
		require.False(t, h.holds(guard), guard)
	})

	t.Run("not told", func(t *testing.T) {
		h := newKnownHost(t)
		before := h.read(h.ps)
		ap := write(h)
		loose := *ap
		loose.Confined = false
		guard, _ := knownAfter(h.ps, []*modules.ScriptApply{ap, &loose}, before)
		require.Empty(t, guard, "an apply that may write anywhere")
		delete(before, h.ps[5])
		guard, _ = knownAfter(h.ps, []*modules.ScriptApply{ap}, before)
		require.Empty(t, guard, "a path the checks did not read")
		link := filepath.Join(filepath.Dir(h.conf), "current")
		require.NoError(t, os.Symlink(h.data, link))
		ps := append(h.ps, remote.Probe{Path: link})
		guard, _ = knownAfter(ps, []*modules.ScriptApply{ap}, h.read(ps))
		require.Empty(t, guard, "a symlink")
		guard, _ = knownAfter(h.ps, []*modules.ScriptApply{remote.WriteFileApply(h.gone, []byte("new\n"), 0o644, "", "")}, h.read(h.ps))
		require.Empty(t, guard, "a written file that was not there: its owner is not known")
	})
}
