package playbooks_test

import (
	"bytes"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/iklimco/iklim/playbooks"
	"github.com/stretchr/testify/require"
)

// TestWriteDiagnosticsCapsTheCount renders the errors of 64 KiB of random
// printable bytes: thousands of them, of which only the first
// MaxDiagnostics are rendered. (Its time is logged, never asserted: the
// cap is what keeps the work bounded.)
func TestWriteDiagnosticsCapsTheCount(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	src := make([]byte, 64<<10)
	for i := range src {
		src[i] = byte(' ' + r.Intn(95))
		if r.Intn(40) == 0 {
			src[i] = '\n'
		}
	}
	start := time.Now()
	f, diags := playbooks.Parse(src, "random.hcl")
	require.Greater(t, len(diags), playbooks.MaxDiagnostics)
	var out bytes.Buffer
	require.NoError(t, playbooks.WriteDiagnostics(&out, f.Sources(), diags, false))
	elapsed := time.Since(start)
	t.Logf("%d diagnostics parsed and written in %v", len(diags), elapsed)
	require.Equal(t, playbooks.MaxDiagnostics, strings.Count(out.String(), "Error: "))
	require.Contains(t, out.String(), "… and ")
}

func TestWriteDiagnosticsEscapesTheSource(t *testing.T) {
	src := "play \"p\" {\n  hosts = \"all\"\n  step \"s\" {\n    module = \"test_echo\"\n    message = \"x\"\n    bogus = 1 # \x1b]0;owned\x07\x1b[2J\u009b31m\xff\n  }\n}\n"
	_, diags := compile(t, src, playbooks.Options{})
	require.True(t, diags.HasErrors())
	f, _ := playbooks.Parse([]byte(src), "test.hcl")
	for _, color := range []bool{false, true} {
		var out bytes.Buffer
		require.NoError(t, playbooks.WriteDiagnostics(&out, f.Sources(), diags, color))
		text := out.String()
		require.Contains(t, text, ` = 1 # \x1b]0;owned\x07\x1b[2J\u009b31m\xff`)
		require.Contains(t, text, "test.hcl:6:5: ")
		rest := text
		for _, code := range []string{"\x1b[31m", "\x1b[0m", "\x1b[1;4m"} {
			rest = strings.ReplaceAll(rest, code, "")
		}
		require.NotContains(t, rest, "\x1b", "color %v", color)
		require.NotContains(t, rest, "\x07")
		require.NotContains(t, rest, "\u009b")
		require.Equal(t, color, rest != text)
	}
}
