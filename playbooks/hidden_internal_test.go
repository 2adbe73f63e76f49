package playbooks

import (
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/stretchr/testify/require"
)

// A step's body is the parsed body without module, and its module
// arguments hide the meta-arguments; both read as hclsyntax's own hidden
// copies do, with its diagnostics, while keeping no copy of the parsed body.
func TestStepBodiesHideAsHclsyntaxDoes(t *testing.T) {
	src := `
play "p" {
  hosts = "all"
  step "s" {
    module   = "test_echo"
    when     = true
    register = "r"
    message  = "hi"
    mesage   = "typo"
    tags {
    }
  }
}
`
	f, diags := Parse([]byte(src), "site.hcl")
	require.False(t, diags.HasErrors(), diags.Error())
	s := f.Plays[0].Steps[0]
	require.Equal(t, "test_echo", s.Module)
	body, ok := s.Body.(*hclsyntax.Body)
	require.True(t, ok, "Step.Body is %T", s.Body)
	require.NotContains(t, body.Attributes, "module", "taken out of the parsed body, not hidden")

	// What hclsyntax's hiding gives, from a parse of its own.
	whole, diags := hclsyntax.ParseConfig([]byte(src), "site.hcl", hcl.InitialPos)
	require.False(t, diags.HasErrors(), diags.Error())
	orig := whole.Body.(*hclsyntax.Body).Blocks[0].Body.Blocks[0].Body
	_, noModule, _ := orig.PartialContent(stepModuleSchema)
	_, noMeta, _ := noModule.PartialContent(metaSchema)

	schemas := []*hcl.BodySchema{
		{Attributes: []hcl.AttributeSchema{{Name: "message", Required: true}, {Name: "count"}}},
		{Attributes: []hcl.AttributeSchema{{Name: "message"}, {Name: "mesage"}, {Name: "missing", Required: true}}},
		{Attributes: []hcl.AttributeSchema{{Name: "module"}, {Name: "when"}}, Blocks: []hcl.BlockHeaderSchema{{Type: "tags"}}},
	}
	for _, c := range []struct {
		name       string
		got, want  hcl.Body
		wantHidden []string
	}{
		{"without module", s.Body, noModule, []string{"module"}},
		{"module arguments", stepArgs(s.Body), noMeta, []string{"module", "when", "register"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, schema := range schemas {
				gotC, gotD := c.got.Content(schema)
				wantC, wantD := c.want.Content(schema)
				require.Equal(t, wantC, gotC)
				require.ElementsMatch(t, wantD, gotD) // hclsyntax reports in map order
				require.NotEmpty(t, gotD, "each schema leaves something unexpected or missing")

				gotC, _, gotD = c.got.PartialContent(schema)
				wantC, _, wantD = c.want.PartialContent(schema)
				require.Equal(t, wantC, gotC)
				require.ElementsMatch(t, wantD, gotD) // hclsyntax reports in map order
			}
			gotA, gotD := c.got.JustAttributes()
			wantA, wantD := c.want.JustAttributes()
			require.Equal(t, wantA, gotA)
			require.ElementsMatch(t, wantD, gotD) // hclsyntax reports in map order
			for _, name := range c.wantHidden {
				require.NotContains(t, gotA, name)
			}
			require.Contains(t, gotA, "message")
			require.Equal(t, c.want.MissingItemRange(), c.got.MissingItemRange())

			sb, ok := syntaxBody(c.got)
			require.True(t, ok)
			require.Same(t, body, sb, "the parsed body itself, not a copy")
		})
	}
}
