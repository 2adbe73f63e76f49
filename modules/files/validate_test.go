package files_test

import (
	"errors"
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/files"
	"github.com/iklimco/iklim/modules/internal/modtest"
	"github.com/stretchr/testify/require"
)

// TestArgErrors: Validate errors about one argument are ArgErrors naming
// it, so the diagnostic points at that attribute.
func TestArgErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name      string
		m         modules.Validator
		arg, want string
	}{
		{"file path", &files.File{Path: "rel", State: "directory"}, "path", "absolute path"},
		{"file state", &files.File{Path: "/x", State: "gone"}, "state", "not one of"},
		{"file mode", &files.File{Path: "/x", State: "directory", Mode: "9"}, "mode", "octal mode"},
		{"file src without link", &files.File{Path: "/x", State: "directory", Src: "/y"}, "src", "only for state"},
		{"copy dest", &files.Copy{Dest: "rel", Content: modtest.Strp("a")}, "dest", "absolute path"},
		{"copy src is a directory", &files.Copy{Dest: "/x", Src: dir}, "src", "is a directory"},
		{"copy src missing", &files.Copy{Dest: "/x", Src: dir + "/nope"}, "src", "nope"},
		{"line regexp", &files.Line{Path: "/x", Line: "a", Regexp: "("}, "regexp", "regexp"},
		{"line state", &files.Line{Path: "/x", Line: "a", State: "gone"}, "state", "present or absent"},
		{"template dest", &files.Template{Dest: "rel", Content: modtest.Strp("")}, "dest", "absolute path"},
		{"template syntax", &files.Template{Dest: "/x", Content: modtest.Strp("{{ .a ")}, "content", "unclosed action"},
		{"template src missing", &files.Template{Dest: "/x", Src: dir + "/nope"}, "src", "nope"},
		{"stat path", &files.Stat{Path: "rel"}, "path", "absolute path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.m.Validate()
			var ae *modules.ArgError
			require.True(t, errors.As(err, &ae), "%v is not an ArgError", err)
			require.Equal(t, tc.arg, ae.Arg)
			require.ErrorContains(t, err, tc.want)
		})
	}
}
