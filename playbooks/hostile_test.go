package playbooks_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/playbooks"
	"github.com/iklimco/iklim/runner"
	"github.com/stretchr/testify/require"
	"github.com/zclconf/go-cty/cty"
)

// hostsArg names inventory hosts in its arguments, as swarm_init and
// node_label do.
type hostsArg struct {
	Managers []string `hcl:"managers,optional"`
	Manager  string   `hcl:"manager,optional"`
}

func (m *hostsArg) Check(context.Context, modules.Conn) (*modules.Change, error) { return nil, nil }
func (m *hostsArg) Apply(context.Context, modules.Conn, *modules.Change) error   { return nil }
func (m *hostsArg) HostArgs() map[string][]string {
	out := map[string][]string{"managers": m.Managers}
	if m.Manager != "" {
		out["manager"] = []string{m.Manager}
	}
	return out
}

// argErr fails Validate with an error bound to one argument.
type argErr struct {
	Dest string `hcl:"dest"`
	Mode string `hcl:"mode,optional"`
	Opts *struct {
		Level int `hcl:"level"`
	} `hcl:"opts,block"`
}

func (m *argErr) Check(context.Context, modules.Conn) (*modules.Change, error) { return nil, nil }
func (m *argErr) Apply(context.Context, modules.Conn, *modules.Change) error   { return nil }
func (m *argErr) Validate() error {
	switch {
	case !strings.HasPrefix(m.Dest, "/"):
		return modules.ArgErrorf("dest", "must be an absolute path, not %q", m.Dest)
	case m.Mode == "bad":
		return fmt.Errorf("wrapped: %w", modules.ArgErrorf("mode", "must not be bad"))
	case m.Opts != nil && m.Opts.Level > 3:
		return modules.ArgErrorf("opts", "level must be at most 3")
	case m.Mode == "unbound":
		return fmt.Errorf("an error bound to no argument")
	}
	return nil
}

// hostileModules are this file's test modules, in testRegistry.
func hostileModules() []modules.Info {
	return []modules.Info{
		{Name: "test_hosts", Doc: "names hosts, for tests", New: func() modules.Module { return &hostsArg{} }},
		{Name: "test_argerr", Doc: "argument errors, for tests", New: func() modules.Module { return &argErr{} }},
	}
}

// at is "line:col" of the first occurrence of marker in src.
func at(t *testing.T, src, marker string) string {
	t.Helper()
	i := strings.Index(src, marker)
	require.GreaterOrEqual(t, i, 0, "marker %q not in source", marker)
	line := strings.Count(src[:i], "\n") + 1
	col := i - strings.LastIndex(src[:i], "\n")
	return fmt.Sprintf("%d:%d", line, col)
}

// positions lists "line:col summary" of every error.
func positions(diags hcl.Diagnostics) []string {
	var out []string
	for _, d := range diags {
		if d.Subject == nil {
			out = append(out, "-:- "+d.Summary)
			continue
		}
		out = append(out, fmt.Sprintf("%d:%d %s", d.Subject.Start.Line, d.Subject.Start.Column, d.Summary))
	}
	return out
}

func TestEmptyModuleNameIsAnError(t *testing.T) {
	src := `play "p" {
  hosts = "all"
  step "s" {
    module = ""
  }
}`
	pb, diags := compile(t, src, playbooks.Options{})
	require.Nil(t, pb)
	require.Equal(t, []string{at(t, src, `""`) + " Invalid module name"}, positions(diags))
}

func TestLockNameAndTTLAreCheckedBeforeTheRun(t *testing.T) {
	src := `lock "bad name!" {
  host = "app-01"
  ttl  = "0s"
}
play "p" {
  hosts = "all"
  step "s" {
    module  = "test_echo"
    message = "x"
  }
}`
	_, diags := compile(t, src, playbooks.Options{})
	require.Equal(t, []string{
		at(t, src, `"bad name!"`) + " Invalid lock name",
		at(t, src, `"0s"`) + " Invalid duration",
	}, positions(diags))
	_, diags = compile(t, strings.Replace(src, `"bad name!"`, `"`+strings.Repeat("a", 201)+`"`, 1), playbooks.Options{})
	require.Contains(t, diags.Error(), "Invalid lock name")
	mustCompile(t, strings.NewReplacer(`"bad name!"`, `"prod-deploy.v2"`, `"0s"`, `"1s"`).Replace(src), playbooks.Options{})
}

func TestHostArgumentsMustNameInventoryHosts(t *testing.T) {
	src := `play "p" {
  hosts = "all"
  step "swarm" {
    module   = "test_hosts"
    managers = ["app-01", "ghost", "app-02"]
  }
  step "label" {
    module  = "test_hosts"
    manager = "db-1"
  }
  step "computed" {
    module   = "test_hosts"
    managers = [for h in ["app-01", "phantom"] : h]
  }
}`
	pb, diags := compile(t, src, playbooks.Options{})
	require.Nil(t, pb)
	require.Equal(t, []string{
		at(t, src, `"ghost"`) + " Unknown host",
		at(t, src, `"db-1"`) + " Unknown host",
		at(t, src, `[for h`) + " Unknown host",
	}, positions(diags))
	require.Contains(t, diags[1].Detail, `manager names the host "db-1", which is not in the inventory inv.hcl. Did you mean "db-01"?`)
	mustCompile(t, `play "p" {
  hosts = "all"
  step "swarm" {
    module   = "test_hosts"
    managers = ["app-01", "app-02"]
    manager  = "db-01"
  }
}`, playbooks.Options{})
}

func TestArgErrorPointsAtTheArgument(t *testing.T) {
	cases := []struct{ name, args, marker, detail string }{
		{"attribute", `dest = "relative"`, `"relative"`, `Module test_argerr: dest: must be an absolute path, not "relative".`},
		{"wrapped", "dest = \"/x\"\n    mode = \"bad\"", `"bad"`, `Module test_argerr: mode: must not be bad.`},
		{"block", "dest = \"/x\"\n    opts {\n      level = 5\n    }", `opts {`, `Module test_argerr: opts: level must be at most 3.`},
		{"unbound", "dest = \"/x\"\n    mode = \"unbound\"", `step "s"`, `Module test_argerr: an error bound to no argument.`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := fmt.Sprintf("play \"p\" {\n  hosts = \"all\"\n  step \"s\" {\n    module = \"test_argerr\"\n    %s\n  }\n}", tc.args)
			_, diags := compile(t, src, playbooks.Options{})
			require.Equal(t, []string{at(t, src, tc.marker) + " Invalid module arguments"}, positions(diags))
			require.Equal(t, tc.detail, diags[0].Detail)
		})
	}
	// At run time, a value known only then is checked the same way, and
	// the error names the argument's file:line.
	src := `play "p" {
  hosts = "app-01"
  step "gen" {
    module   = "test_echo"
    message  = "relative"
    register = "r"
  }
  step "s" {
    module = "test_argerr"
    dest   = self.r.message
  }
}`
	pb := mustCompile(t, src, playbooks.Options{})
	_, err := step(t, pb, "p", "s").Build(&runner.StepContext{Host: host(t, inventory(t), "app-01"), Results: map[string]map[string]cty.Value{"app-01": {"r": cty.ObjectVal(map[string]cty.Value{"message": cty.StringVal("relative")})}}})
	require.ErrorContains(t, err, "test.hcl:"+strings.Split(at(t, src, "self.r"), ":")[0]+": module test_argerr: dest: must be an absolute path")
}

func TestMetaArgumentNamesAreReserved(t *testing.T) {
	src := `play "p" {
  hosts = "all"
  step "wait" {
    module  = "test_wait"
    port    = 80
  }
}`
	_, diags := compile(t, src, playbooks.Options{})
	require.Equal(t, []string{at(t, src, `"test_wait"`) + " Unusable module"}, positions(diags))
	require.Contains(t, diags[0].Detail, "argument timeout is named like a step meta-argument")
}

// TestRegisteredModulesDoNotReuseMetaArguments checks every module of the
// test registry (the stock ones included) against the reserved names; the
// test modules that reuse them on purpose are skipped.
func TestRegisteredModulesDoNotReuseMetaArguments(t *testing.T) {
	all := testRegistry(t).All()
	require.Greater(t, len(all), 10, "the stock modules are registered")
	for _, info := range all {
		if info.Name == "test_wait" {
			continue
		}
		require.NoError(t, playbooks.CheckModule(info))
	}
}

func TestHostileValuesAreRefusedWithTheirPosition(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	deep := filepath.Join(dir, "deep.tftpl")
	require.NoError(t, os.WriteFile(deep, []byte(strings.Repeat("${(", 200)), 0o644))
	cases := map[string]struct{ expr, want string }{
		"format width":  {`format("%2000000000s", "x")`, "larger than 16 MiB"},
		"indent":        {`indent(2e9, "a\nb")`, "larger than 16 MiB"},
		"setproduct":    {`jsonencode(setproduct(range(1000), range(1000), range(1000)))`, "larger than 16 MiB"},
		"NUL":           {`"a\u0000b"`, "NUL byte"},
		"NUL in base64": {`base64decode("YQBi")`, "NUL byte"},
		"/dev/zero":     {`file("/dev/zero")`, "/dev/zero is not a regular file"},
		"FIFO":          {fmt.Sprintf("file(%q)", fifo), "is not a regular file"},
		"template FIFO": {fmt.Sprintf("templatefile(%q, {})", fifo), "is not a regular file"},
		"deep template": {fmt.Sprintf("templatefile(%q, {})", deep), "Nesting too deep"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			src := fmt.Sprintf("play \"p\" {\n  hosts = \"all\"\n  step \"s\" {\n    module  = \"test_echo\"\n    message = %s\n  }\n}", tc.expr)
			done := make(chan hcl.Diagnostics, 1)
			go func() { _, diags := compile(t, src, playbooks.Options{}); done <- diags }()
			var diags hcl.Diagnostics
			select {
			case diags = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("compile blocked")
			}
			require.True(t, diags.HasErrors())
			require.Equal(t, 5, diags[0].Subject.Start.Line, dump(diags))
			require.Contains(t, diags.Error(), tc.want)
		})
	}
	// Names with control characters, and NUL bytes in the source.
	_, diags := playbooks.Parse([]byte("play \"p\\u0000\" {\n  hosts = \"all\"\n}\n"), "test.hcl")
	require.Equal(t, []string{"1:6 Invalid name"}, positions(diags))
	_, diags = playbooks.Parse([]byte("play \"p\" {\n  hosts = \"all\"\x00\n}\n"), "test.hcl")
	require.Equal(t, []string{"2:16 NUL byte in source"}, positions(diags))
	// A value doubled through locals stops at MaxValueSize.
	var sb strings.Builder
	sb.WriteString("locals {\n  l0 = format(\"%1000000s\", \"\")\n")
	for i := 1; i <= 8; i++ {
		fmt.Fprintf(&sb, "  l%d = \"${local.l%d}${local.l%d}\"\n", i, i-1, i-1)
	}
	sb.WriteString("}\nplay \"p\" {\n  hosts = \"app-01\"\n  step \"s\" {\n    module  = \"test_echo\"\n    message = local.l8\n  }\n}\n")
	_, diags = compile(t, sb.String(), playbooks.Options{})
	require.Contains(t, diags.Error(), "Value too large")
	require.Equal(t, 8, diags[0].Subject.Start.Line, dump(diags))
}

// TestFunctionArgumentsAreBounded: a list holding one list a thousand
// times is cheap to build, but flattening it is not.
func TestFunctionArgumentsAreBounded(t *testing.T) {
	src := `locals {
  r = range(1024)
}
play "p" {
  hosts = "app-01"
  step "s" {
    module  = "test_echo"
    message = "x"
    count   = length(flatten([for i in range(1024) : local.r]))
  }
}`
	_, diags := compile(t, src, playbooks.Options{})
	require.Equal(t, []string{at(t, src, "flatten(") + " Error in function call"}, positions(diags))
	require.Contains(t, diags.Error(), "flatten: the arguments are larger than 32 MiB")
}

func TestDeepNestingIsRefusedBeforeParsing(t *testing.T) {
	src := "play \"p\" {\n  hosts = " + strings.Repeat("(", 100000) + "\"all\"" + strings.Repeat(")", 100000) + "\n}\n"
	f, diags := playbooks.Parse([]byte(src), "test.hcl")
	require.NotNil(t, f)
	require.Equal(t, []string{fmt.Sprintf("2:%d Nesting too deep", 10+inventories.MaxNesting)}, positions(diags))
	// -e values are read as HCL literals only when they are safe to parse.
	pb := mustCompile(t, `variable "n" { type = any }
play "p" {
  hosts = "all"
  step "s" {
    module  = "test_echo"
    message = "x"
    count   = length(var.n)
  }
}`, playbooks.Options{ExtraVars: map[string]string{"n": strings.Repeat("[", 100000)}})
	require.NotNil(t, pb)
}

func TestLoadRefusesWhatIsNotASmallRegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	for _, p := range []string{"/dev/zero", fifo, dir} {
		done := make(chan hcl.Diagnostics, 1)
		go func() { _, diags := playbooks.Load(p); done <- diags }()
		select {
		case diags := <-done:
			require.Contains(t, diags.Error(), "Cannot read playbook file "+p)
		case <-time.After(10 * time.Second):
			t.Fatalf("Load(%s) blocked", p)
		}
	}
}
