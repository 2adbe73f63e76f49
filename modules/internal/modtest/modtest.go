// Package modtest holds what the module families' tests share: a LocalConn
// that counts round trips, a converge helper (apply, then a fresh Check must
// find nothing to do in one round trip), a file tree snapshot for "check
// changes nothing", and a check of a family's registry entries.
package modtest

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/runner/transport"
	"github.com/stretchr/testify/require"
	"github.com/zclconf/go-cty/cty"
)

// CountConn is a LocalConn that counts its round trips.
type CountConn struct {
	modules.Conn
	Runs, Uploads, Downloads atomic.Int32 // round trips by kind
}

// NewCountConn counts the round trips of a LocalConn.
func NewCountConn() *CountConn { return &CountConn{Conn: transport.NewLocalConn("local")} }

// Run counts and runs.
func (c *CountConn) Run(ctx context.Context, cmd string, opts ...modules.RunOption) (modules.Result, error) {
	c.Runs.Add(1)
	return c.Conn.Run(ctx, cmd, opts...)
}

// Upload counts and uploads.
func (c *CountConn) Upload(ctx context.Context, p string, r io.Reader, mode fs.FileMode) error {
	c.Uploads.Add(1)
	return c.Conn.Upload(ctx, p, r, mode)
}

// Download counts and downloads.
func (c *CountConn) Download(ctx context.Context, p string, w io.Writer) error {
	c.Downloads.Add(1)
	return c.Conn.Download(ctx, p, w)
}

// Trips returns the round trips so far and resets the counters.
func (c *CountConn) Trips() int {
	return int(c.Runs.Swap(0) + c.Uploads.Swap(0) + c.Downloads.Swap(0))
}

// CheckOnce validates and checks a fresh module.
func CheckOnce(t *testing.T, c modules.Conn, mk func() modules.Module) (modules.Module, *modules.Change, error) {
	t.Helper()
	m := mk()
	if v, ok := m.(modules.Validator); ok {
		if err := v.Validate(); err != nil {
			return m, nil, err
		}
	}
	ch, err := m.Check(context.Background(), c)
	return m, ch, err
}

// Converge checks (a change is expected), applies, then checks a fresh
// module: it must find nothing to do, in exactly one round trip. It returns
// the first module and its change.
func Converge(t *testing.T, mk func() modules.Module) (modules.Module, *modules.Change) {
	t.Helper()
	c := NewCountConn()
	m, ch, err := CheckOnce(t, c, mk)
	require.NoError(t, err)
	require.NotNil(t, ch, "first check must report a change")
	require.NotEmpty(t, ch.Summary)
	require.NoError(t, m.Apply(context.Background(), c, ch))
	c.Trips()
	_, again, err := CheckOnce(t, c, mk)
	require.NoError(t, err)
	require.Nil(t, again, "second check must find nothing to do (idempotency)")
	require.Equal(t, 1, c.Trips(), "a no-change check costs one round trip")
	return m, ch
}

// Entry is what a Snapshot records about one path.
type Entry struct {
	Mode     fs.FileMode
	UID, GID uint32
	Content  string
	Link     string
}

// Snapshot records every path under dir.
func Snapshot(t *testing.T, dir string) map[string]Entry {
	t.Helper()
	out := map[string]Entry{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		e := Entry{Mode: fi.Mode(), UID: st.Uid, GID: st.Gid}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			e.Link, err = os.Readlink(p)
		case fi.Mode().IsRegular():
			var b []byte
			b, err = os.ReadFile(p)
			e.Content = string(b)
		}
		out[p] = e
		return err
	})
	require.NoError(t, err)
	return out
}

// OwnerOf returns a path's uid and gid, not following a symlink.
func OwnerOf(t *testing.T, p string) (uid, gid uint32) {
	t.Helper()
	fi, err := os.Lstat(p)
	require.NoError(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}

// ModeOf returns a path's permission bits as octal digits.
func ModeOf(t *testing.T, p string) uint32 {
	t.Helper()
	fi, err := os.Lstat(p)
	require.NoError(t, err)
	return fi.Sys().(*syscall.Stat_t).Mode & 0o7777
}

// WriteFile writes a local file with exactly mode (umask aside).
func WriteFile(t *testing.T, p, content string, mode fs.FileMode) {
	t.Helper()
	require.NoError(t, os.WriteFile(p, []byte(content), mode))
	require.NoError(t, os.Chmod(p, mode))
}

// ReadFile reads a local file.
func ReadFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}

// Strp points at s.
func Strp(s string) *string { return &s }

// Boolp points at b.
func Boolp(b bool) *bool { return &b }

// Nobody is the uid of nobody and the gid of nogroup on Debian.
const Nobody = 65534

// metaArgs are the step meta-arguments a playbook takes before the module's
// own (playbooks.metaArgs, plus module).
var metaArgs = []string{"module", "when", "register", "run_once", "delegate", "barrier", "tags", "timeout", "ignore_errors"}

// CheckModules checks a family's registry entries: a one-line doc, every
// argument documented, and an HCL Example: one step of that module whose
// arguments decode into it (names and types).
func CheckModules(t *testing.T, infos []modules.Info) {
	t.Helper()
	require.NotEmpty(t, infos)
	for _, info := range infos {
		require.NotEmpty(t, info.Doc, info.Name)
		require.NotContains(t, info.Doc, "\n", info.Name)
		args := info.Args()
		require.NotEmpty(t, args, info.Name)
		for _, a := range args {
			require.NotEmpty(t, a.Doc, "%s.%s has no doc", info.Name, a.Name)
		}
		checkExample(t, info)
	}
}

func checkExample(t *testing.T, info modules.Info) {
	t.Helper()
	require.NotEmpty(t, info.Example, "%s has no example", info.Name)
	f, diags := hclsyntax.ParseConfig([]byte(info.Example), info.Name+".example.hcl", hcl.InitialPos)
	require.False(t, diags.HasErrors(), "%s example: %s", info.Name, diags)
	content, diags := f.Body.Content(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "step", LabelNames: []string{"name"}}}})
	require.False(t, diags.HasErrors(), "%s example: %s", info.Name, diags)
	require.Len(t, content.Blocks, 1, "%s example is one step", info.Name)
	m := info.New()
	taken := map[string]bool{}
	schema, _ := gohcl.ImpliedBodySchema(m)
	for _, a := range schema.Attributes {
		taken[a.Name] = true
	}
	meta := &hcl.BodySchema{}
	for _, name := range metaArgs {
		if !taken[name] {
			meta.Attributes = append(meta.Attributes, hcl.AttributeSchema{Name: name})
		}
	}
	step, rest, diags := content.Blocks[0].Body.PartialContent(meta)
	require.False(t, diags.HasErrors(), "%s example: %s", info.Name, diags)
	mod, ok := step.Attributes["module"]
	require.True(t, ok, "%s example names no module", info.Name)
	v, diags := mod.Expr.Value(nil)
	require.False(t, diags.HasErrors(), "%s example: %s", info.Name, diags)
	require.Equal(t, info.Name, v.AsString(), "the example's module")
	ctx := &hcl.EvalContext{Variables: map[string]cty.Value{
		"path": cty.ObjectVal(map[string]cty.Value{"dir": cty.StringVal("/playbooks")}),
	}}
	diags = gohcl.DecodeBody(rest, ctx, m)
	require.False(t, diags.HasErrors(), "%s example does not decode: %s", info.Name, diags)
}
