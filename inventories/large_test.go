package inventories

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/stretchr/testify/require"
)

// largeInventory is an inventory of n hosts, over the size that is parsed
// in pieces (internal/hclchunk), with bad written into host number badAt
// (from 0; -1 for none). It returns the source and bad's line.
func largeInventory(n, badAt int, bad string) (string, int) {
	var b strings.Builder
	b.WriteString("defaults {\n  user = \"iklim\"\n}\n")
	line, badLine := 4, 0
	for i := range n {
		fmt.Fprintf(&b, "host \"h%05d\" {\n  address = \"10.0.%d.%d\"\n  vars = {\n    n = %d\n    note = <<EOT\nfor h%05d }\nEOT\n  }\n", i, i/250, i%250, i, i)
		line += 8
		if i == badAt {
			b.WriteString(bad + "\n")
			badLine = line
			line++
		}
		b.WriteString("}\n")
		line++
	}
	b.WriteString("group \"all_hosts\" {\n  hosts = [\"h00000\", \"h00001\"]\n}\n")
	return b.String(), badLine
}

// TestLargeInventoryInPieces: a file parsed in pieces gives every host and
// value, and an error deep in it names its true line, as a whole-file parse
// does.
func TestLargeInventoryInPieces(t *testing.T) {
	src, _ := largeInventory(4000, -1, "")
	require.Greater(t, len(src), 256<<10, "large enough to be parsed in pieces")
	inv, diags := Parse([]byte(src), "big.hcl")
	require.False(t, diags.HasErrors(), diags.Error())
	require.Len(t, inv.Hosts, 4000)
	h, ok := inv.Host("h03999")
	require.True(t, ok)
	require.Equal(t, "10.0.15.249", h.Address)
	require.Equal(t, "for h03999 }\n", h.Vars["note"].AsString())
	require.Equal(t, []string{"all"}, h.Groups)
	h, _ = inv.Host("h00001")
	require.Equal(t, []string{"all", "all_hosts"}, h.Groups)

	src, line := largeInventory(4000, 3217, "  port = 0")
	p := hclparse.NewParser()
	_, diags = ParseWith(p, []byte(src), "big.hcl")
	require.True(t, diags.HasErrors())
	require.Equal(t, line, diags[0].Subject.Start.Line, diags.Error())
	var sb strings.Builder
	require.NoError(t, hcl.NewDiagnosticTextWriter(&sb, p.Files(), 80, false).WriteDiagnostics(diags))
	require.Contains(t, sb.String(), fmt.Sprintf("on big.hcl line %d, in host \"h03217\":", line))
	require.Empty(t, p.Files()["big.hcl"].Body.(*hclsyntax.Body).Blocks, "the parser kept for diagnostics holds no syntax tree")

	// A syntax error: the whole file's own diagnostics.
	src, _ = largeInventory(4000, 2500, "  port = [1,")
	_, diags = Parse([]byte(src), "big.hcl")
	_, whole := hclsyntax.ParseConfig([]byte(src), "big.hcl", hcl.InitialPos)
	require.True(t, whole.HasErrors())
	require.Equal(t, whole.Error(), diags.Error())
}
