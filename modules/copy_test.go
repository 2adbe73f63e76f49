package modules_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/stretchr/testify/require"
)

func TestCopyConverges(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, dest string)
		m       func(dir, dest string) *modules.Copy
		summary string
		content string
		mode    uint32
		uid     uint32
	}{
		{
			name: "new file with mode and owner",
			m: func(_, dest string) *modules.Copy {
				return &modules.Copy{Dest: dest, Content: strp("hello\n"), Mode: "0600", Owner: "nobody", Group: "nogroup"}
			},
			summary: "create", content: "hello\n", mode: 0o600, uid: nobody,
		},
		{
			name:    "new file defaults to 0644",
			m:       func(_, dest string) *modules.Copy { return &modules.Copy{Dest: dest, Content: strp("")} },
			summary: "create", content: "", mode: 0o644, uid: 0,
		},
		{
			name: "update keeps mode and owner",
			setup: func(t *testing.T, dest string) {
				writeFile(t, dest, "old\n", 0o640)
				require.NoError(t, os.Chown(dest, nobody, nobody))
			},
			m:       func(_, dest string) *modules.Copy { return &modules.Copy{Dest: dest, Content: strp("new\n")} },
			summary: "update", content: "new\n", mode: 0o640, uid: nobody,
		},
		{
			name:  "only mode and owner",
			setup: func(t *testing.T, dest string) { writeFile(t, dest, "same\n", 0o644) },
			m: func(_, dest string) *modules.Copy {
				return &modules.Copy{Dest: dest, Content: strp("same\n"), Mode: "0400", Owner: "65534"}
			},
			summary: "set", content: "same\n", mode: 0o400, uid: nobody,
		},
		{
			name: "src from the control machine",
			m: func(dir, dest string) *modules.Copy {
				src := filepath.Join(dir, "local.txt")
				require.NoError(t, os.WriteFile(src, []byte("from src\n"), 0o644))
				return &modules.Copy{Dest: dest, Src: src, Mode: "0755"}
			},
			summary: "create", content: "from src\n", mode: 0o755, uid: 0,
		},
		{
			name:    "replaces a symlink",
			setup:   func(t *testing.T, dest string) { require.NoError(t, os.Symlink("/etc/hostname", dest)) },
			m:       func(_, dest string) *modules.Copy { return &modules.Copy{Dest: dest, Content: strp("file\n")} },
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
			m, ch := converge(t, func() modules.Module { return tc.m(dir, dest) })
			require.Contains(t, ch.Summary, tc.summary)
			require.Equal(t, []string{dest}, ch.Files)
			require.Equal(t, tc.content, readFile(t, dest))
			require.Equal(t, tc.mode, modeOf(t, dest))
			uid, _ := ownerOf(t, dest)
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
	writeFile(t, dest, "old\n", 0o644)
	c := newCountConn()
	m := &modules.Copy{Dest: dest, Content: strp("new\n")}
	ch, err := m.Check(context.Background(), c)
	require.NoError(t, err)
	require.Equal(t, int32(1), c.runs.Load())
	require.Zero(t, c.downloads.Load(), "the old file is compared by hash, never downloaded")
	c.trips()
	require.NoError(t, m.Apply(context.Background(), c, ch))
	require.Equal(t, int32(1), c.uploads.Load())
	require.Equal(t, int32(1), c.runs.Load(), "one command restores owner and mode")

	// only the mode: no upload.
	c.trips()
	m = &modules.Copy{Dest: dest, Content: strp("new\n"), Mode: "0600"}
	ch, err = m.Check(context.Background(), c)
	require.NoError(t, err)
	require.NoError(t, m.Apply(context.Background(), c, ch))
	require.Zero(t, c.uploads.Load())
	require.Equal(t, int32(2), c.runs.Load())
}

func TestCopyDiff(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "text")
	writeFile(t, text, "line 1\nline 2\n", 0o644)
	big := filepath.Join(dir, "big")
	writeFile(t, big, strings.Repeat("x", 70<<10), 0o644)

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
			m := &modules.Copy{Dest: tc.dest}
			ctx := context.Background()
			if tc.sensitive {
				m.Content = strp(tc.content)
				secrets := modules.NewSecrets()
				secrets.Add("hunter2-very-secret")
				ctx = modules.WithSecrets(ctx, secrets)
			} else {
				m.Src = filepath.Join(t.TempDir(), "src")
				require.NoError(t, os.WriteFile(m.Src, []byte(tc.content), 0o644))
			}
			ch, err := m.Check(ctx, newCountConn())
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
	writeFile(t, dir+"/f", "old", 0o644)
	before := snapshot(t, dir)
	for _, m := range []*modules.Copy{
		{Dest: dir + "/f", Content: strp("new"), Mode: "0600", Owner: "nobody"},
		{Dest: dir + "/g", Content: strp("new")},
	} {
		ch, err := m.Check(context.Background(), newCountConn())
		require.NoError(t, err)
		require.NotNil(t, ch)
	}
	require.Equal(t, before, snapshot(t, dir))
}

func TestCopyErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		m    *modules.Copy
		err  string
	}{
		{"both", &modules.Copy{Dest: "/x", Content: strp("a"), Src: "/etc/hostname"}, "content or src, not both"},
		{"neither", &modules.Copy{Dest: "/x"}, "content or src is required"},
		{"relative dest", &modules.Copy{Dest: "x", Content: strp("a")}, "must be an absolute path"},
		{"missing src", &modules.Copy{Dest: "/x", Src: filepath.Join(dir, "nope")}, "no such file"},
		{"src is a directory", &modules.Copy{Dest: "/x", Src: dir}, "is a directory"},
		{"bad mode", &modules.Copy{Dest: "/x", Content: strp("a"), Mode: "644x"}, "octal mode"},
		{"dest is a directory", &modules.Copy{Dest: dir, Content: strp("a")}, "not a file"},
		{"missing parent", &modules.Copy{Dest: dir + "/no/such/f", Content: strp("a")}, dir + "/no/such/f"},
		{"unknown owner fails the check", &modules.Copy{Dest: dir + "/new", Content: strp("a"), Owner: "no-such-user-xyz"},
			"no user no-such-user-xyz on the host"},
		{"unknown group fails the check", &modules.Copy{Dest: dir + "/new", Content: strp("a"), Group: "no-such-group-xyz"},
			"no group no-such-group-xyz on the host"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCountConn()
			ch, err := tc.m.Check(context.Background(), c)
			if err == nil {
				err = tc.m.Apply(context.Background(), c, ch)
			}
			require.ErrorContains(t, err, tc.err)
		})
	}
	require.NoFileExists(t, dir+"/new", "a bad owner is caught before anything is written")
}
