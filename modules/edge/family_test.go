package edge_test

import (
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/stretchr/testify/require"

	"github.com/iklimco/iklim/modules/edge"
)

// TestFamilyInfo: every module of the family has a doc, argument docs and
// an HCL example that parses and names the module.
func TestFamilyInfo(t *testing.T) {
	for _, i := range edge.Modules() {
		t.Run(i.Name, func(t *testing.T) {
			require.NotEmpty(t, i.Doc)
			for _, a := range i.Args() {
				require.NotEmpty(t, a.Doc, "argument %s has no doc", a.Name)
			}
			f, diags := hclsyntax.ParseConfig([]byte(i.Example), i.Name+".example.hcl", hcl.Pos{Line: 1, Column: 1})
			require.False(t, diags.HasErrors(), diags.Error())
			body := f.Body.(*hclsyntax.Body)
			require.NotEmpty(t, body.Blocks)
			for _, b := range body.Blocks {
				require.Equal(t, "step", b.Type)
				v, diags := b.Body.Attributes["module"].Expr.Value(nil)
				require.False(t, diags.HasErrors())
				require.Equal(t, i.Name, v.AsString())
			}
		})
	}
}
