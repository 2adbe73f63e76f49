package playbooks_test

import (
	"fmt"
	"strings"
	"testing"

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
