package files_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/files"
	"github.com/iklimco/iklim/modules/internal/modtest"
	"github.com/stretchr/testify/require"
)

const sshdConfig = "#Port 22\nPort 2200\nPermitRootLogin yes\n# end\n"

func TestLineEdits(t *testing.T) {
	tests := []struct {
		name    string
		initial string // "-" means no file
		m       files.Line
		want    string
		summary string
	}{
		{"regexp replaces the last match", sshdConfig,
			files.Line{Line: "Port 22", Regexp: `^#?Port `},
			"#Port 22\nPort 22\nPermitRootLogin yes\n# end\n", "replace line 2"},
		{"append at EOF", sshdConfig,
			files.Line{Line: "UseDNS no"},
			sshdConfig + "UseDNS no\n", "add line 5"},
		{"regexp without match inserts", sshdConfig,
			files.Line{Line: "UseDNS no", Regexp: `^UseDNS`},
			sshdConfig + "UseDNS no\n", "add line"},
		{"insertafter", sshdConfig,
			files.Line{Line: "X11Forwarding no", InsertAfter: `^Port`},
			"#Port 22\nPort 2200\nX11Forwarding no\nPermitRootLogin yes\n# end\n", "add line 3"},
		{"insertafter without match goes to EOF", sshdConfig,
			files.Line{Line: "X", InsertAfter: `^Nope`},
			sshdConfig + "X\n", "add line 5"},
		{"insertbefore BOF", sshdConfig,
			files.Line{Line: "# managed by iklim", InsertBefore: "BOF"},
			"# managed by iklim\n" + sshdConfig, "add line 1"},
		{"insertbefore regexp", sshdConfig,
			files.Line{Line: "Banner none", InsertBefore: `^# end`},
			"#Port 22\nPort 2200\nPermitRootLogin yes\nBanner none\n# end\n", "add line 4"},
		{"absent by line", sshdConfig,
			files.Line{Line: "PermitRootLogin yes", State: "absent"},
			"#Port 22\nPort 2200\n# end\n", "remove 1 line"},
		{"absent by regexp", sshdConfig,
			files.Line{Regexp: `^#`, State: "absent"},
			"Port 2200\nPermitRootLogin yes\n", "remove 2 lines"},
		{"file without final newline", "a\nb",
			files.Line{Line: "c"},
			"a\nb\nc\n", "add line 3"},
		{"create", "-",
			files.Line{Line: "first", Create: true},
			"first\n", "create"},
		{"empty file", "",
			files.Line{Line: "only"},
			"only\n", "add line 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "conf")
			if tc.initial != "-" {
				modtest.WriteFile(t, p, tc.initial, 0o644)
			}
			tc.m.Path = p
			_, ch := modtest.Converge(t, func() modules.Module { m := tc.m; return &m })
			require.Contains(t, ch.Summary, tc.summary)
			require.Equal(t, tc.want, modtest.ReadFile(t, p))
			require.Equal(t, []string{p}, ch.Files)
			if tc.initial != "-" {
				require.Equal(t, tc.initial, ch.Diff.Before)
			}
			require.Equal(t, tc.want, ch.Diff.After)
		})
	}
}

func TestLineNoChange(t *testing.T) {
	p := filepath.Join(t.TempDir(), "conf")
	modtest.WriteFile(t, p, sshdConfig, 0o644)
	for _, m := range []*files.Line{
		{Path: p, Line: "Port 2200"},
		{Path: p, Line: "Port 2200", Regexp: "^Port"},
		{Path: p, Line: "Nope", State: "absent"},
		{Path: p + ".missing", Line: "x", State: "absent"},
	} {
		c := modtest.NewCountConn()
		ch, err := m.Check(context.Background(), c)
		require.NoError(t, err)
		require.Nil(t, ch)
		require.Equal(t, 1, c.Trips(), "stat and content in one round trip")
		require.Equal(t, false, m.Output()["changed"])
	}
}

func TestLineKeepsModeOwnerAndLink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "real.conf")
	modtest.WriteFile(t, target, "a\n", 0o640)
	require.NoError(t, os.Chown(target, modtest.Nobody, modtest.Nobody))
	link := filepath.Join(dir, "link.conf")
	require.NoError(t, os.Symlink(target, link))

	_, ch := modtest.Converge(t, func() modules.Module { return &files.Line{Path: link, Line: "b"} })
	require.Equal(t, []string{target}, ch.Files, "the link's target is edited and snapshotted")
	require.Equal(t, "a\nb\n", modtest.ReadFile(t, target))
	fi, err := os.Lstat(link)
	require.NoError(t, err)
	require.NotZero(t, fi.Mode()&os.ModeSymlink, "the link stays a link")
	require.Equal(t, uint32(0o640), modtest.ModeOf(t, target))
	uid, gid := modtest.OwnerOf(t, target)
	require.Equal(t, [2]uint32{modtest.Nobody, modtest.Nobody}, [2]uint32{uid, gid})
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 2, "no temp file left")

	// mode only
	c := modtest.NewCountConn()
	m := &files.Line{Path: target, Line: "b", Mode: "0600"}
	ch, err = m.Check(context.Background(), c)
	require.NoError(t, err)
	require.Contains(t, ch.Summary, "mode 0600")
	require.NoError(t, m.Apply(context.Background(), c, ch))
	require.Equal(t, uint32(0o600), modtest.ModeOf(t, target))
	require.Zero(t, c.Uploads.Load())
}

func TestLineCheckChangesNothing(t *testing.T) {
	dir := t.TempDir()
	modtest.WriteFile(t, dir+"/conf", sshdConfig, 0o644)
	before := modtest.Snapshot(t, dir)
	for _, m := range []*files.Line{
		{Path: dir + "/conf", Line: "new"},
		{Path: dir + "/conf", Regexp: "^Port", State: "absent"},
		{Path: dir + "/new", Line: "x", Create: true},
	} {
		ch, err := m.Check(context.Background(), modtest.NewCountConn())
		require.NoError(t, err)
		require.NotNil(t, ch)
	}
	require.Equal(t, before, modtest.Snapshot(t, dir))
}

func TestLineErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		m    files.Line
		err  string
	}{
		{"missing without create", files.Line{Path: dir + "/nope", Line: "x"}, "set create = true"},
		{"directory", files.Line{Path: dir, Line: "x"}, "not a file"},
		{"relative", files.Line{Path: "conf", Line: "x"}, "absolute path"},
		{"present without line", files.Line{Path: "/c", Regexp: "x"}, "needs line"},
		{"absent without line or regexp", files.Line{Path: "/c", State: "absent"}, "needs line or regexp"},
		{"bad state", files.Line{Path: "/c", Line: "x", State: "gone"}, `state "gone"`},
		{"bad regexp", files.Line{Path: "/c", Line: "x", Regexp: "("}, "regexp"},
		{"bad insertafter", files.Line{Path: "/c", Line: "x", InsertAfter: "["}, "insertafter"},
		{"both inserts", files.Line{Path: "/c", Line: "x", InsertAfter: "EOF", InsertBefore: "BOF"}, "not both"},
		{"newline in line", files.Line{Path: "/c", Line: "a\nb"}, "newline"},
		{"create with absent", files.Line{Path: "/c", Line: "x", State: "absent", Create: true}, "only for state"},
		{"bad mode", files.Line{Path: "/c", Line: "x", Mode: "rw"}, "octal mode"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.m.Check(context.Background(), modtest.NewCountConn())
			require.ErrorContains(t, err, tc.err)
		})
	}
}
