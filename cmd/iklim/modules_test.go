package main

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/stock"
	"github.com/iklimco/iklim/playbooks"
	"github.com/stretchr/testify/require"
)

// TestModulesMarkdownIsFresh fails when docs/modules.md no longer matches
// the registry it is generated from.
func TestModulesMarkdownIsFresh(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, writeModulesMarkdown(&b, stock.Registry().All()))
	got, err := os.ReadFile(filepath.Join("..", "..", "docs", "modules.md"))
	require.NoError(t, err, "docs/modules.md is missing; generate it from the repository root: %s", modulesDoc)
	require.True(t, bytes.Equal(b.Bytes(), got),
		"docs/modules.md is stale: the module registry changed. Regenerate it from the repository root:\n  %s", modulesDoc)
	for _, i := range stock.Registry().All() {
		require.Contains(t, string(got), "\n## "+i.Name+"\n", "docs/modules.md documents every module")
	}
}

// exampleInventory has the hosts the modules' examples name (the lab's).
const exampleInventory = `
defaults {
  user = "iklim"
}
host "iklim-app-01" {
  address = "10.77.0.11"
  vars    = { floating_ip = "203.0.113.10" }
}
host "iklim-app-02" {
  address = "10.77.0.12"
  vars    = { floating_ip = "203.0.113.10" }
}
host "iklim-app-03" {
  address = "10.77.0.13"
  vars    = { floating_ip = "203.0.113.10" }
}
host "iklim-db-01" {
  address = "10.77.0.21"
  vars    = { floating_ip = "203.0.113.10" }
}
host "iklim-db-02" {
  address = "10.77.0.22"
  vars    = { floating_ip = "203.0.113.10" }
}
host "iklim-db-03" {
  address = "10.77.0.23"
  vars    = { floating_ip = "203.0.113.10" }
}
group "app" {
  hosts = ["iklim-app-01", "iklim-app-02", "iklim-app-03"]
}
group "db" {
  hosts = ["iklim-db-01", "iklim-db-02", "iklim-db-03"]
}
`

var (
	exampleVar  = regexp.MustCompile(`\bvar\.([A-Za-z_][A-Za-z0-9_]*)`)
	exampleFile = regexp.MustCompile(`\$\{path\.dir\}/([A-Za-z0-9_./-]+)`)
)

// TestModuleExamplesCompile compiles every module's example as a step of
// a playbook with the real compiler, against an inventory of the hosts the
// examples name: arguments, types, references and the module's Validate.
func TestModuleExamplesCompile(t *testing.T) {
	inv, diags := inventories.Parse([]byte(exampleInventory), "inventory.hcl")
	require.False(t, diags.HasErrors(), diags.Error())
	for _, info := range stock.Registry().All() {
		t.Run(info.Name, func(t *testing.T) {
			require.NotEmpty(t, info.Example, "%s has no example (modules.Info.Example)", info.Name)
			dir := t.TempDir()
			var src strings.Builder
			vars := map[string]bool{}
			for _, m := range exampleVar.FindAllStringSubmatch(info.Example, -1) {
				vars[m[1]] = true
			}
			for _, v := range slices.Sorted(maps.Keys(vars)) {
				// A run id is what the rollback example's variable holds.
				fmt.Fprintf(&src, "variable %q {\n  default = \"2026-11-21T10-15-04Z\"\n}\n", v)
			}
			for _, m := range exampleFile.FindAllStringSubmatch(info.Example, -1) {
				p := filepath.Join(dir, m[1])
				require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
				require.NoError(t, os.WriteFile(p, []byte(exampleFileContent(m[1])), 0o644))
			}
			fmt.Fprintf(&src, "play \"example\" {\n  hosts = \"all\"\n%s\n}\n", info.Example)
			path := filepath.Join(dir, "example.hcl")
			require.NoError(t, os.WriteFile(path, []byte(src.String()), 0o644))
			f, diags := playbooks.Load(path)
			require.False(t, diags.HasErrors(), "%s example does not parse: %s\n%s", info.Name, diags, src.String())
			pb, diags := playbooks.Compile(f, playbooks.Options{Inventory: inv, Modules: stock.Registry()})
			require.False(t, diags.HasErrors(), "%s example does not compile: %s\n%s", info.Name, diags, src.String())
			require.NotEmpty(t, pb.Plays[0].Steps)
			for _, s := range pb.Plays[0].Steps {
				require.Equal(t, info.Name, s.Module, "the example's steps use the module")
			}
		})
	}
}

// exampleFileContent is a local file an example reads, valid for its kind.
func exampleFileContent(name string) string {
	switch {
	case strings.HasSuffix(name, ".yml"), strings.HasSuffix(name, ".yaml"):
		return "services:\n  web:\n    image: nginx:1.25\n"
	case strings.HasSuffix(name, ".env"):
		return "PORT=8080\n"
	}
	return "upstream {{ .upstream }};\n"
}

// TestModuleOutputsAreDocumented checks each module's documented outputs
// against its Output: every key a fresh module gives is documented, and a
// module without Output documents none.
func TestModuleOutputsAreDocumented(t *testing.T) {
	for _, info := range stock.Registry().All() {
		t.Run(info.Name, func(t *testing.T) {
			names := map[string]bool{}
			for _, o := range info.Outputs {
				require.NotEmpty(t, o.Name)
				require.NotEmpty(t, o.Type, "%s output %s has no type", info.Name, o.Name)
				require.NotEmpty(t, o.Doc, "%s output %s has no doc", info.Name, o.Name)
				require.False(t, names[o.Name], "%s output %s documented twice", info.Name, o.Name)
				require.NotEqual(t, "changed", o.Name, "changed is set by the runner (modules.Changed)")
				names[o.Name] = true
			}
			m := info.New()
			o, ok := m.(modules.Outputter)
			if !ok {
				require.Empty(t, info.Outputs, "%s has no Output, so it documents no outputs", info.Name)
				return
			}
			require.NotEmpty(t, info.Outputs, "%s has an Output: document what register gets (modules.Info.Outputs)", info.Name)
			for k := range o.Output() {
				require.True(t, k == "changed" || names[k], "%s: output %q is not documented in modules.Info.Outputs", info.Name, k)
			}
			s := info.Supports()
			require.NotEmpty(t, s.Check)
			require.NotEmpty(t, s.Diff)
			require.NotEmpty(t, s.Rollback)
			if info.ReadOnly {
				require.False(t, info.Files || info.Diff != "", "%s: a read-only module has nothing to diff or undo", info.Name)
			}
		})
	}
}

// TestModulesCommandShowsOutputsSupportAndExample runs `iklim modules NAME`.
func TestModulesCommandShowsOutputsSupportAndExample(t *testing.T) {
	stdout, stderr, code := iklim(t, nil, "modules", "copy")
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `(?m)^dest\s+string\s+yes`, stdout)
	require.Regexp(t, `(?m)^OUTPUT \(register\)`, stdout)
	require.Regexp(t, `(?m)^path\s+string\s+the destination file`, stdout)
	require.Regexp(t, `(?m)^changed\s+bool`, stdout)
	require.Regexp(t, `(?m)^CHECK MODE\s+yes`, stdout)
	require.Regexp(t, `(?m)^DIFF\s+yes: the file's content`, stdout)
	require.Regexp(t, `(?m)^ROLLBACK\s+yes: the runner restores the files byte-exact`, stdout)
	require.Contains(t, stdout, "EXAMPLE\nstep \"app env\" {")

	// Rollback support comes from the module's interfaces: node_label is a
	// modules.Rollbacker, stat is read-only, shell cannot be undone.
	stdout, _, code = iklim(t, nil, "modules", "node_label")
	require.Equal(t, 0, code)
	require.Regexp(t, `(?m)^ROLLBACK\s+yes: the module undoes its change`, stdout)
	stdout, _, code = iklim(t, nil, "modules", "stat")
	require.Equal(t, 0, code)
	require.Regexp(t, `(?m)^ROLLBACK\s+nothing to undo`, stdout)
	require.Regexp(t, `(?m)^sha256\s+string`, stdout)
	stdout, _, code = iklim(t, nil, "modules", "shell")
	require.Equal(t, 0, code)
	require.Regexp(t, `(?m)^ROLLBACK\s+no: `, stdout)
	require.Regexp(t, `(?m)^DIFF\s+no`, stdout)

	stdout, _, code = iklim(t, nil, "modules", "--markdown")
	require.Equal(t, 0, code)
	require.Contains(t, stdout, "## rollback\n")
}
