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

func TestTemplate(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "app.conf.tmpl")
	require.NoError(t, os.WriteFile(src, []byte("name={{ .name }}\nport={{ .port }}\n"), 0o644))

	tests := []struct {
		name string
		m    func(dest string) *files.Template
		want string
	}{
		{"content", func(dest string) *files.Template {
			return &files.Template{Dest: dest, Content: modtest.Strp("hello {{ .who }}\n"), Vars: map[string]string{"who": "world"}, Mode: "0640", Owner: "nobody"}
		}, "hello world\n"},
		{"src", func(dest string) *files.Template {
			return &files.Template{Dest: dest, Src: src, Vars: map[string]string{"name": "api", "port": "8080"}}
		}, "name=api\nport=8080\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "out.conf")
			m, ch := modtest.Converge(t, func() modules.Module { return tc.m(dest) })
			require.Equal(t, tc.want, modtest.ReadFile(t, dest))
			require.Equal(t, tc.want, ch.Diff.After, "rendered text is shown in diffs")
			require.Equal(t, []string{dest}, ch.Files)
			require.Equal(t, true, m.(modules.Outputter).Output()["changed"])
		})
	}
}

func TestTemplateUpdateDiff(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "out")
	modtest.WriteFile(t, dest, "v=1\n", 0o600)
	m := &files.Template{Dest: dest, Content: modtest.Strp("v={{ .v }}\n"), Vars: map[string]string{"v": "2"}}
	ch, err := m.Check(context.Background(), modtest.NewCountConn())
	require.NoError(t, err)
	require.Equal(t, "v=1\n", ch.Diff.Before)
	require.Equal(t, "v=2\n", ch.Diff.After)
	require.Equal(t, "v=1\n", modtest.ReadFile(t, dest), "check changes nothing")
	require.NoError(t, m.Apply(context.Background(), modtest.NewCountConn(), ch))
	require.Equal(t, "v=2\n", modtest.ReadFile(t, dest))
	require.Equal(t, uint32(0o600), modtest.ModeOf(t, dest))
}

func TestTemplateErrors(t *testing.T) {
	tests := []struct {
		name        string
		m           *files.Template
		validateErr string
		checkErr    string
	}{
		{"both", &files.Template{Dest: "/x", Src: "/a", Content: modtest.Strp("")}, "content or src, not both", ""},
		{"neither", &files.Template{Dest: "/x"}, "content or src is required", ""},
		{"relative dest", &files.Template{Dest: "x", Content: modtest.Strp("")}, "absolute path", ""},
		{"syntax", &files.Template{Dest: "/x", Content: modtest.Strp("{{ .a ")}, "unclosed action", ""},
		{"missing src", &files.Template{Dest: "/x", Src: "/no/such/tmpl"}, "no such file", ""},
		{"missing var", &files.Template{Dest: "/x/y", Content: modtest.Strp("{{ .nope }}")}, "", `map has no entry for key "nope"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.m.Validate()
			if tc.validateErr != "" {
				require.ErrorContains(t, err, tc.validateErr)
				return
			}
			require.NoError(t, err)
			_, err = tc.m.Check(context.Background(), modtest.NewCountConn())
			require.ErrorContains(t, err, tc.checkErr)
		})
	}
}
