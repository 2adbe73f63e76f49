package files_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/files"
	"github.com/iklimco/iklim/modules/internal/modtest"
	"github.com/iklimco/iklim/modules/remote"
	"github.com/stretchr/testify/require"
)

func TestCopyConverges(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, dest string)
		m       func(dir, dest string) *files.Copy
		summary string
		content string
		mode    uint32
		uid     uint32
	}{
		{
			name: "new file with mode and owner",
			m: func(_, dest string) *files.Copy {
				return &files.Copy{Dest: dest, Content: modtest.Strp("hello\n"), Mode: "0600", Owner: "nobody", Group: "nogroup"}
			},
			summary: "create", content: "hello\n", mode: 0o600, uid: modtest.Nobody,
		},
		{
			name:    "new file defaults to 0644",
			m:       func(_, dest string) *files.Copy { return &files.Copy{Dest: dest, Content: modtest.Strp("")} },
			summary: "create", content: "", mode: 0o644, uid: 0,
		},
		{
			name: "update keeps mode and owner",
			setup: func(t *testing.T, dest string) {
				modtest.WriteFile(t, dest, "old\n", 0o640)
				require.NoError(t, os.Chown(dest, modtest.Nobody, modtest.Nobody))
			},
			m:       func(_, dest string) *files.Copy { return &files.Copy{Dest: dest, Content: modtest.Strp("new\n")} },
			summary: "update", content: "new\n", mode: 0o640, uid: modtest.Nobody,
		},
		{
			name:  "only mode and owner",
			setup: func(t *testing.T, dest string) { modtest.WriteFile(t, dest, "same\n", 0o644) },
			m: func(_, dest string) *files.Copy {
				return &files.Copy{Dest: dest, Content: modtest.Strp("same\n"), Mode: "0400", Owner: "65534"}
			},
			summary: "set", content: "same\n", mode: 0o400, uid: modtest.Nobody,
		},
		{
			name: "src from the control machine",
			m: func(dir, dest string) *files.Copy {
				src := filepath.Join(dir, "local.txt")
				require.NoError(t, os.WriteFile(src, []byte("from src\n"), 0o644))
				return &files.Copy{Dest: dest, Src: src, Mode: "0755"}
			},
			summary: "create", content: "from src\n", mode: 0o755, uid: 0,
		},
		{
			name:    "replaces a symlink",
			setup:   func(t *testing.T, dest string) { require.NoError(t, os.Symlink("/etc/hostname", dest)) },
			m:       func(_, dest string) *files.Copy { return &files.Copy{Dest: dest, Content: modtest.Strp("file\n")} },
			summary: "update", content: "file\n", mode: 0o644, uid: 0,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			destDir := filepath.Join(dir, "dest")
			require.NoError(t, os.Mkdir(destDir, 0o755))
			dest := filepath.Join(destDir, "f")
			if tc.setup != nil {
				tc.setup(t, dest)
			}
			m, ch := modtest.Converge(t, func() modules.Module { return tc.m(dir, dest) })
			require.Contains(t, ch.Summary, tc.summary)
			require.Equal(t, []string{dest}, ch.Files)
			require.Equal(t, tc.content, modtest.ReadFile(t, dest))
			require.Equal(t, tc.mode, modtest.ModeOf(t, dest))
			uid, _ := modtest.OwnerOf(t, dest)
			require.Equal(t, tc.uid, uid)
			require.Equal(t, map[string]any{"path": dest, "changed": true}, m.(modules.Outputter).Output())
			entries, err := os.ReadDir(destDir)
			require.NoError(t, err)
			require.Len(t, entries, 1, "the atomic write leaves no temp file")
		})
	}
}

func TestCopyRoundTrips(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "f")
	modtest.WriteFile(t, dest, "old\n", 0o644)
	c := modtest.NewCountConn()
	m := &files.Copy{Dest: dest, Content: modtest.Strp("new\n")}
	ch, err := m.Check(context.Background(), c)
	require.NoError(t, err)
	require.Equal(t, int32(1), c.Runs.Load())
	require.Zero(t, c.Downloads.Load(), "the old file is compared by hash, never downloaded")
	c.Trips()
	require.NoError(t, m.Apply(context.Background(), c, ch))
	require.Equal(t, int32(1), c.Uploads.Load())
	require.Equal(t, int32(1), c.Runs.Load(), "one command restores owner and mode")

	// only the mode: no upload.
	c.Trips()
	m = &files.Copy{Dest: dest, Content: modtest.Strp("new\n"), Mode: "0600"}
	ch, err = m.Check(context.Background(), c)
	require.NoError(t, err)
	require.NoError(t, m.Apply(context.Background(), c, ch))
	require.Zero(t, c.Uploads.Load())
	require.Equal(t, int32(2), c.Runs.Load())
}

func TestCopyDiff(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "text")
	modtest.WriteFile(t, text, "line 1\nline 2\n", 0o644)
	big := filepath.Join(dir, "big")
	modtest.WriteFile(t, big, strings.Repeat("x", 70<<10), 0o644)

	tests := []struct {
		name          string
		dest, content string
		sensitive     bool // content holds a value the run marked sensitive
		before, after string
		shown, hidden []string
	}{
		{name: "text", dest: text, content: "line 1\nline 2 changed\n",
			before: "line 1\nline 2\n", after: "line 1\nline 2 changed\n"},
		{name: "new file", dest: filepath.Join(dir, "new"), content: "fresh\n", before: "", after: "fresh\n"},
		{name: "binary", dest: text, content: "bin\x00ary", shown: []string{"(binary or large: sha256 ", " → sha256 "}},
		{name: "large", dest: big, content: "small now\n", shown: []string{"(binary or large: sha256 "}},
		{name: "sensitive content never shows", dest: text, content: "password=hunter2-very-secret\n", sensitive: true,
			before: "(sensitive content)\n", after: "(sensitive content)\n", hidden: []string{"hunter2", "line 2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &files.Copy{Dest: tc.dest}
			ctx := context.Background()
			if tc.sensitive {
				m.Content = modtest.Strp(tc.content)
				secrets := modules.NewSecrets()
				secrets.Add("hunter2-very-secret")
				m.UseSecrets(secrets)
			} else {
				m.Src = filepath.Join(t.TempDir(), "src")
				require.NoError(t, os.WriteFile(m.Src, []byte(tc.content), 0o644))
			}
			ch, err := m.Check(ctx, modtest.NewCountConn())
			require.NoError(t, err)
			require.Equal(t, tc.sensitive, ch.Sensitive)
			d := ch.Diff
			require.NotNil(t, d)
			require.Equal(t, tc.dest, d.Label)
			if tc.shown == nil {
				require.Equal(t, tc.before, d.Before)
				require.Equal(t, tc.after, d.After)
			}
			for _, s := range tc.shown {
				require.Contains(t, d.Before+d.After, s)
			}
			for _, s := range tc.hidden {
				require.NotContains(t, d.Before+d.After+ch.Summary+string(ch.Before), s)
			}
		})
	}
}

func TestCopyCheckChangesNothing(t *testing.T) {
	dir := t.TempDir()
	modtest.WriteFile(t, dir+"/f", "old", 0o644)
	before := modtest.Snapshot(t, dir)
	for _, m := range []*files.Copy{
		{Dest: dir + "/f", Content: modtest.Strp("new"), Mode: "0600", Owner: "nobody"},
		{Dest: dir + "/g", Content: modtest.Strp("new")},
	} {
		ch, err := m.Check(context.Background(), modtest.NewCountConn())
		require.NoError(t, err)
		require.NotNil(t, ch)
	}
	require.Equal(t, before, modtest.Snapshot(t, dir))
}

func TestCopyErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		m    *files.Copy
		err  string
	}{
		{"both", &files.Copy{Dest: "/x", Content: modtest.Strp("a"), Src: "/etc/hostname"}, "content or src, not both"},
		{"neither", &files.Copy{Dest: "/x"}, "content or src is required"},
		{"relative dest", &files.Copy{Dest: "x", Content: modtest.Strp("a")}, "must be an absolute path"},
		{"missing src", &files.Copy{Dest: "/x", Src: filepath.Join(dir, "nope")}, "no such file"},
		{"src is a directory", &files.Copy{Dest: "/x", Src: dir}, "is a directory"},
		{"bad mode", &files.Copy{Dest: "/x", Content: modtest.Strp("a"), Mode: "644x"}, "octal mode"},
		{"dest is a directory", &files.Copy{Dest: dir, Content: modtest.Strp("a")}, "not a file"},
		{"missing parent", &files.Copy{Dest: dir + "/no/such/f", Content: modtest.Strp("a")}, dir + "/no/such/f"},
		{"unknown owner fails the check", &files.Copy{Dest: dir + "/new", Content: modtest.Strp("a"), Owner: "no-such-user-xyz"},
			"no user no-such-user-xyz on the host"},
		{"unknown group fails the check", &files.Copy{Dest: dir + "/new", Content: modtest.Strp("a"), Group: "no-such-group-xyz"},
			"no group no-such-group-xyz on the host"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := modtest.NewCountConn()
			ch, err := tc.m.Check(context.Background(), c)
			if err == nil {
				err = tc.m.Apply(context.Background(), c, ch)
			}
			require.ErrorContains(t, err, tc.err)
		})
	}
	require.NoFileExists(t, dir+"/new", "a bad owner is caught before anything is written")
}

// TestContentModulesTellWhatTheirCheckRead: copy and line hand the recorder
// the content their check read of the file they replace, with its mode,
// for its snapshot; none where the file was absent, too large to have been
// read, or the content is sensitive.
func TestContentModulesTellWhatTheirCheckRead(t *testing.T) {
	dir := t.TempDir()
	conf, big, secret := filepath.Join(dir, "app.conf"), filepath.Join(dir, "big"), filepath.Join(dir, "secret")
	modtest.WriteFile(t, conf, "port = 80\n", 0o640)
	modtest.WriteFile(t, big, strings.Repeat("x", remote.MaxDiff+1), 0o644)
	modtest.WriteFile(t, secret, "old\n", 0o600)
	secrets := modules.NewSecrets()
	secrets.Add("hunter2-very-secret")
	sensitive := &files.Copy{Dest: secret, Content: modtest.Strp("password=hunter2-very-secret\n")}
	sensitive.UseSecrets(secrets)
	for _, tc := range []struct {
		name string
		m    interface {
			modules.Module
			modules.ScriptApplier
		}
		want []modules.ScriptBefore
	}{
		{"copy", &files.Copy{Dest: conf, Content: modtest.Strp("port = 81\n")}, []modules.ScriptBefore{{Path: conf, Data: []byte("port = 80\n"), Mode: 0o640}}},
		{"copy of the mode only", &files.Copy{Dest: conf, Content: modtest.Strp("port = 80\n"), Mode: "0600"}, []modules.ScriptBefore{{Path: conf, Data: []byte("port = 80\n"), Mode: 0o640}}},
		{"line", &files.Line{Path: conf, Line: "max = 1"}, []modules.ScriptBefore{{Path: conf, Data: []byte("port = 80\n"), Mode: 0o640}}},
		{"new file", &files.Copy{Dest: filepath.Join(dir, "new"), Content: modtest.Strp("x\n")}, nil},
		{"too large", &files.Copy{Dest: big, Content: modtest.Strp("x\n")}, nil},
		{"sensitive", sensitive, nil},
	} {
		ch, err := tc.m.Check(context.Background(), modtest.NewCountConn())
		require.NoError(t, err, tc.name)
		require.NotNil(t, ch, tc.name)
		require.Equal(t, tc.want, tc.m.ApplyScript(ch).Before, tc.name)
	}
}
