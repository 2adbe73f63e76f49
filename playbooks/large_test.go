package playbooks_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/stretchr/testify/require"

	"github.com/iklimco/iklim/playbooks"
)

// largePlaybook is one play of n copy steps, over the size that is parsed in
// pieces (internal/hclchunk), with bad written into step number badAt (-1
// for none).
func largePlaybook(n, badAt int, bad string) string {
	var b strings.Builder
	b.WriteString("play \"big\" {\n  hosts = \"all\"\n")
	for i := range n {
		fmt.Fprintf(&b, "  step \"s%05d\" {\n    module = \"copy\"\n    dest = \"/tmp/big/%d\"\n    content = <<-EOT\n      step ${%d} }\n      EOT\n", i, i, i)
		if i == badAt {
			b.WriteString(bad + "\n")
		}
		b.WriteString("  }\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// TestLargePlaybookInPieces: a play too large to parse whole is parsed in
// pieces, and gives every step, in order, with its true source line; an
// error deep in it names its line.
func TestLargePlaybookInPieces(t *testing.T) {
	src := largePlaybook(3000, -1, "")
	require.Greater(t, len(src), 256<<10, "large enough to be parsed in pieces")
	pb := mustCompile(t, src, playbooks.Options{})
	steps := pb.Plays[0].Steps
	require.Len(t, steps, 3000)
	last := steps[2999]
	require.Equal(t, "s02999", last.Name)
	require.Equal(t, fmt.Sprintf("test.hcl:%d", lineOf(t, src, `step "s02999"`)), last.Source)

	src = largePlaybook(3000, 2718, "    mode = \"0999\"")
	_, diags := compile(t, src, playbooks.Options{})
	require.True(t, diags.HasErrors())
	line := lineOf(t, src, `mode = "0999"`)
	require.True(t, hasDiag(diags, line, "mode"), "want test.hcl:%d in:\n%s", line, dump(diags))
}

// TestLargeFileReadInPieces: a file of many top-level blocks, read a piece
// at a time, gives what a whole-file parse gives (a leading byte order mark
// makes hclchunk parse whole): the same variables, plays and steps, and the
// same diagnostics in the same order, with a duplicate found across pieces
// and the unexpected items of every piece reported first.
func TestLargeFileReadInPieces(t *testing.T) {
	var b strings.Builder
	for i := range 8000 {
		fmt.Fprintf(&b, "variable \"v%04d\" {\n  default = \"%d\"\n}\n", i, i)
		switch i {
		case 50:
			b.WriteString("variable \"v0010\" {\n}\n")
		case 100:
			b.WriteString("unknown_block \"x\" {\n}\n")
		case 1500:
			b.WriteString("stray = 1\n")
		case 2000, 7900:
			fmt.Fprintf(&b, "play \"p%d\" {\n  hosts = \"all\"\n  step \"s\" {\n    module = \"copy\"\n    dest = \"/tmp/x\"\n  }\n}\n", i)
		case 3000:
			b.WriteString("variable \"v0042\" {\n}\n")
		case 7000:
			b.WriteString("play \"p2000\" {\n  hosts = \"all\"\n}\n")
		}
	}
	src := b.String()
	require.Greater(t, len(src), 256<<10, "large enough to be parsed in pieces")

	inPieces, diags := playbooks.Parse([]byte(src), "test.hcl")
	whole, wholeDiags := playbooks.Parse([]byte("\xef\xbb\xbf"+src), "test.hcl")
	require.Len(t, inPieces.Variables, 8000)
	require.Len(t, inPieces.Plays, 2)
	require.Equal(t, "p7900", inPieces.Plays[1].Name)
	require.Equal(t, "copy", inPieces.Plays[1].Steps[0].Module)
	require.Equal(t, len(whole.Variables), len(inPieces.Variables))
	for i, v := range whole.Variables {
		require.Equal(t, v.Name, inPieces.Variables[i].Name)
		require.Equal(t, v.DeclRange.Start.Line, inPieces.Variables[i].DeclRange.Start.Line)
	}

	summary := func(ds hcl.Diagnostics) (out []string) {
		for _, d := range ds {
			out = append(out, fmt.Sprintf("%d %s: %s", d.Subject.Start.Line, d.Summary, d.Detail))
		}
		return out
	}
	require.Equal(t, summary(wholeDiags), summary(diags))
	require.Len(t, diags, 5, dump(diags))
	require.Contains(t, diags[2].Summary, `Duplicate variable "v0010"`, "after every piece's unexpected items, as for the file read whole")
	require.True(t, hasDiag(diags, lineOf(t, src, "stray = 1"), "Unsupported argument"), dump(diags))
	require.True(t, hasDiag(diags, lineOf(t, src, `unknown_block "x"`), "Unsupported block type"), dump(diags))
	require.True(t, hasDiag(diags, lineOf(t, src, "variable \"v0042\" {\n}"), "Duplicate variable"), dump(diags))
	require.True(t, hasDiag(diags, lineOf(t, src, "play \"p2000\" {\n  hosts = \"all\"\n}"), "Duplicate play"), dump(diags))
}
