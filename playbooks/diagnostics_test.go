package playbooks_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/iklimco/iklim/playbooks"
	"github.com/stretchr/testify/require"
)

type wantDiag struct {
	at     string // marker on the subject's line; "" for no subject
	substr string // in Summary + "; " + Detail
}

func TestCompileDiagnostics(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		extra map[string]string
		want  []wantDiag
	}{
		{
			name: "unknown module",
			src: `play "p" {
  hosts = "all"
  step "s" {
    module  = "test_ecoh"
    message = "hi"
  }
}`,
			want: []wantDiag{{`"test_ecoh"`, `Unknown module; There is no module named "test_ecoh". Did you mean "test_echo"?`}},
		},
		{
			name: "unknown argument",
			src: `play "p" {
  hosts = "all"
  step "s" {
    module = "test_echo"
    messag = "hi"
  }
}`,
			want: []wantDiag{{`messag =`, `Unsupported argument`}, {`step "s"`, `Missing required argument`}},
		},
		{
			name: "misspelt meta-argument",
			src: `play "p" {
  hosts = "all"
  step "s" {
    module  = "test_echo"
    message = "hi"
    regster = "x"
  }
}`,
			want: []wantDiag{{`regster`, `Unsupported argument; An argument named "regster" is not expected here. Did you mean "register"? (a step meta-argument)`}},
		},
		{
			name: "missing required argument",
			src: `play "p" {
  hosts = "all"
  step "s" {
    module = "test_echo"
    count  = 2
  }
}`,
			want: []wantDiag{{`step "s"`, `Missing required argument; The argument "message" is required`}},
		},
		{
			name: "wrong type",
			src: `play "p" {
  hosts = "all"
  step "s" {
    module  = "test_echo"
    message = "hi"
    count   = "many"
  }
}`,
			want: []wantDiag{{`"many"`, `a number is required`}},
		},
		{
			name: "wrong type of a value known only at run time",
			src: `play "p" {
  hosts = "all"
  step "a" {
    module   = "test_echo"
    message  = "hi"
    register = "a"
  }
  step "b" {
    module  = "test_echo"
    message = "hi"
    labels  = "x-${self.a.message}"
  }
}`,
			want: []wantDiag{{`"x-${self.a.message}"`, `Unsuitable value type; Unsuitable value: list of string required`}},
		},
		{
			name: "undeclared variable",
			src: `variable "app" { default = "x" }
play "p" {
  hosts = "all"
  step "s" {
    module  = "test_echo"
    message = var.ap
  }
}`,
			want: []wantDiag{{`var.ap`, `Reference to undeclared variable; No variable "ap" is declared in this playbook; declare it with a variable block. Did you mean "app"?`}},
		},
		{
			name: "unknown root",
			src: `play "p" {
  hosts = "all"
  step "s" {
    module  = "test_echo"
    message = hots.name
  }
}`,
			want: []wantDiag{{`hots.name`, `Unknown variable; There is no variable named "hots". Did you mean "hosts"?`}},
		},
		{
			name: "unsupported host attribute",
			src: `play "p" {
  hosts = "all"
  step "s" {
    module  = "test_echo"
    message = host.adress
  }
}`,
			want: []wantDiag{{`host.adress`, `Did you mean "address"?`}},
		},
		{
			name: "label missing on some hosts",
			src: `play "p" {
  hosts = "all"
  step "s" {
    module  = "test_echo"
    message = host.labels.type
  }
}`,
			want: []wantDiag{{`host.labels.type`, `(on host db-01)`}},
		},
		{
			name: "when skips the hosts an argument does not fit",
			src: `play "p" {
  hosts = "all"
  step "s" {
    module  = "test_echo"
    when    = contains(host.groups, "app")
    message = "port ${host.vars.http_port}"
    count   = host.vars.nope
  }
}`,
			want: []wantDiag{{`host.vars.nope`, `Unsupported attribute`}},
		},
		{
			name: "bad host pattern",
			src: `play "p" {
  hosts = "app:&"
  step "s" {
    module  = "test_echo"
    message = "hi"
  }
}`,
			want: []wantDiag{{`"app:&"`, `Invalid host pattern`}},
		},
		{
			name: "pattern names nothing",
			src: `play "p" {
  hosts = "ap"
}`,
			want: []wantDiag{{`"ap"`, `matches no host or group`}},
		},
		{
			name: "pattern selects nothing",
			src: `play "p" {
  hosts = "app:&db"
}`,
			want: []wantDiag{{`"app:&db"`, `No hosts selected`}},
		},
		{
			name: "host-specific reference in hosts",
			src: `play "p" {
  hosts = host.name
}`,
			want: []wantDiag{{`host.name`, `Invalid reference; The hosts pattern cannot read host`}},
		},
		{
			name: "bad durations",
			src: `lock "deploy" {
  host = "app-01"
  wait = "5 minutes"
  ttl  = "-1m"
}
play "p" {
  hosts = "all"
  step "s" {
    module  = "test_echo"
    message = "hi"
    timeout = "30"
  }
}`,
			want: []wantDiag{
				{`"5 minutes"`, `Invalid duration; The lock wait must be a duration such as "30s", "5m" or "1h30m"; "5 minutes" is not.`},
				{`"-1m"`, `must not be negative`},
				{`"30"`, `The step timeout must be a duration`},
			},
		},
		{
			name: "lock host not in inventory",
			src: `lock "deploy" {
  host = "app-1"
}`,
			want: []wantDiag{{`"app-1"`, `The lock host "app-1" is not in the inventory. Did you mean "app-01"?`}},
		},
		{
			name: "duplicate lock",
			src: `lock "a" {
  host = "app-01"
}
lock "b" {
  host = "app-01"
}`,
			want: []wantDiag{{`lock "b"`, `Duplicate lock block; A playbook holds at most one lock; previous definition was at test.hcl:1.`}},
		},
		{
			name: "module validate",
			src: `play "p" {
  hosts = "all"
  step "s" {
    module  = "test_echo"
    message = "hi"
    mode    = "medium"
  }
}`,
			want: []wantDiag{{`step "s"`, `Invalid module arguments; Module test_echo: mode must be fast or slow.`}},
		},
		{
			name: "duplicates",
			src: `variable "v" {}
variable "v" {}
play "p" {
  hosts = "all"
  step "s" {
    module  = "test_echo"
    message = "hi"
  }
  step "s" {
    module  = "test_echo"
    message = "hi"
  }
}
play "p" {
  hosts = "all"
}
locals { a = 1 }
locals { a = 2 }`,
			extra: map[string]string{"v": "1"},
			want: []wantDiag{
				{`variable "v" {}` + "\nplay", `Duplicate variable "v"; previous definition was at test.hcl:1.`},
				{`step "s" {` + "\n    module  = \"test_echo\"\n    message = \"hi\"\n  }\n}", `Duplicate step "s"; previous definition was at test.hcl:5. Step names must be unique within a play.`},
				{`play "p" {` + "\n  hosts = \"all\"\n}", `Duplicate play "p"; previous definition was at test.hcl:3.`},
				{`a = 2`, `Duplicate local value "a"; previous definition was at test.hcl:17.`},
			},
		},
		{
			name: "when must be bool",
			src: `play "p" {
  hosts = "all"
  step "s" {
    module  = "test_echo"
    message = "hi"
    when    = host.name
  }
}`,
			want: []wantDiag{{`when    =`, `Invalid when condition; The when condition must be a bool`}},
		},
		{
			name: "unknown results",
			src: `play "p" {
  hosts = "all"
  step "a" {
    module   = "test_echo"
    message  = "hi"
    register = "first"
  }
  step "b" {
    module  = "test_echo"
    message = self.frist.message
    count   = length(result["app-03"].first)
    labels  = result["app-01"].later
  }
  step "c" {
    module   = "test_echo"
    message  = "hi"
    register = "later"
  }
}`,
			want: []wantDiag{
				{`self.frist`, `Unknown result; No earlier step registers "frist". Did you mean "first"?`},
				{`result["app-03"]`, `Unknown host; There is no host "app-03" in the inventory.`},
				{`result["app-01"].later`, `Result read before it is registered; Step "c" (test.hcl:14) registers "later", but it runs after this step: a step reads only the results of steps before it.`},
			},
		},
		{
			name: "reacting to a step that never registers",
			src: `play "p" {
  hosts = "all"
  step "conf" {
    module  = "test_echo"
    message = "hi"
  }
  step "reload" {
    module  = "test_echo"
    message = "reload"
    when    = self.conf.changed
  }
  step "again" {
    module   = "test_echo"
    message  = "x"
    when     = self.again.changed
    register = "again"
  }
  step "typo" {
    module  = "test_echo"
    message = "x"
    when    = result["app-01"].conff.changed
  }
}`,
			want: []wantDiag{
				{`self.conf.changed`, `Step does not register; Step "conf" (test.hcl:3) does not register its result: add register = "conf" to it to read self.conf.changed.`},
				{`self.again.changed`, `Result read before it is registered; Step "again" registers "again" itself: its own arguments and when cannot read it; only later steps can.`},
				{`result["app-01"].conff`, `Unknown result; No earlier step registers "conff".`},
			},
		},
		{
			name: "required variable missing",
			src: `variable "password" {
  sensitive = true
}
play "p" {
  hosts = "all"
  step "s" {
    module  = "test_echo"
    message = var.password
  }
}`,
			want: []wantDiag{{`variable "password"`, `Missing required variable; Variable "password" has no default; set it with -e password=VALUE or the environment variable IKLIM_VAR_password.`}},
		},
		{
			name:  "undeclared extra variable",
			src:   `variable "image_tag" { default = "1" }`,
			extra: map[string]string{"image_tags": "2"},
			want:  []wantDiag{{"", `Undeclared variable; -e sets "image_tags", but the playbook test.hcl declares no variable "image_tags". Did you mean "image_tag"?`}},
		},
		{
			name: "variable of the wrong type",
			src: `variable "replicas" {
  type    = number
  default = "three"
}
variable "port" { type = number }`,
			extra: map[string]string{"port": "http"},
			want: []wantDiag{
				{`"three"`, `Invalid value for variable; The value of variable "replicas" from the default is not a number`},
				{`variable "port"`, `The value of variable "port" from -e port=… is not a number`},
			},
		},
		{
			name: "bad serial and meta types",
			src: `play "p" {
  hosts  = "all"
  serial = 1.5
  step "s" {
    module   = "test_echo"
    message  = "hi"
    run_once = "maybe"
    tags     = "setup"
    register = "not a name"
  }
}`,
			want: []wantDiag{
				{`1.5`, `serial must be a whole number`},
				{`"maybe"`, `run_once must be a bool`},
				{`"not a name"`, `Invalid register name`},
			},
		},
		{
			name: "locals",
			src: `locals {
  a = local.b
  b = local.a
  c = result["app-01"]
  d = host.labels.type
}
play "p" {
  hosts = "all"
  step "s" {
    module  = "test_echo"
    message = local.e
  }
}`,
			want: []wantDiag{
				{`a = local.b`, `Circular reference`},
				{`result["app-01"]`, `Invalid reference; Local value "c" cannot read result`},
				{`host.labels.type`, `(on host db-01)`},
				{`local.e`, `Reference to undeclared local value`},
			},
		},
		{
			name: "variables in a default",
			src: `variable "a" { default = "x" }
variable "b" { default = var.a }`,
			want: []wantDiag{{`var.a }`, `Variables not allowed`}},
		},
		{
			name: "unknown block and play attribute",
			src: `plya "p" {}
play "q" {
  hosts = "all"
  forks = 3
}`,
			want: []wantDiag{{`plya`, `Unsupported block type`}, {`forks`, `Unsupported argument`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pb, diags := compile(t, tt.src, playbooks.Options{ExtraVars: tt.extra})
			require.True(t, diags.HasErrors(), "no errors")
			require.Nil(t, pb)
			for _, w := range tt.want {
				line := 0
				if w.at != "" {
					line = lineOf(t, tt.src, w.at)
				}
				require.True(t, hasDiag(diags, line, w.substr), "want test.hcl:%d %q in:\n%s", line, w.substr, dump(diags))
			}
		})
	}
}

func hasDiag(diags hcl.Diagnostics, line int, substr string) bool {
	for _, d := range diags {
		if !strings.Contains(d.Summary+"; "+d.Detail, substr) {
			continue
		}
		if line == 0 && d.Subject == nil {
			return true
		}
		if d.Subject != nil && d.Subject.Filename == "test.hcl" && d.Subject.Start.Line == line {
			return true
		}
	}
	return false
}

func dump(diags hcl.Diagnostics) string {
	var b strings.Builder
	for _, d := range diags {
		if d.Subject != nil {
			fmt.Fprintf(&b, "%s:%d: ", d.Subject.Filename, d.Subject.Start.Line)
		}
		fmt.Fprintf(&b, "%s; %s\n", d.Summary, d.Detail)
	}
	return b.String()
}

// TestAllDiagnosticsCollected checks that errors in different steps and plays
// are all reported, once each.
func TestAllDiagnosticsCollected(t *testing.T) {
	src := `variable "tag" { default = "1" }
play "one" {
  hosts = "app"
  step "a" {
    module = "test_echoo"
  }
  step "b" {
    module  = "test_echo"
    message = var.tga
  }
}
play "two" {
  hosts = "all"
  step "c" {
    module  = "test_echo"
    message = "x"
    count   = "x"
    timeout = "soon"
  }
  step "d" {
    module = "test_echo"
  }
}`
	_, diags := compile(t, src, playbooks.Options{})
	require.GreaterOrEqual(t, len(diags), 5, dump(diags))
	for _, w := range []wantDiag{
		{`"test_echoo"`, "Unknown module"},
		{`var.tga`, "undeclared variable"},
		{`count   = "x"`, "a number is required"},
		{`"soon"`, "Invalid duration"},
		{`step "d"`, "Missing required argument"},
	} {
		require.True(t, hasDiag(diags, lineOf(t, src, w.at), w.substr), "want %q in\n%s", w.substr, dump(diags))
	}
	// Evaluated on three hosts, reported once.
	seen := map[string]bool{}
	for _, d := range diags {
		key := fmt.Sprintf("%s:%v", d.Summary, d.Subject)
		require.False(t, seen[key], "duplicate diagnostic %s", key)
		seen[key] = true
	}
	// Ordered by position.
	for i := 1; i < len(diags); i++ {
		require.LessOrEqual(t, diags[i-1].Subject.Start.Byte, diags[i].Subject.Start.Byte)
	}

	// Diagnose prints each with a snippet of its line.
	f, _ := playbooks.Parse([]byte(src), "test.hcl")
	var out bytes.Buffer
	require.NoError(t, playbooks.Diagnose(&out, f.Sources(), diags, false))
	require.Contains(t, out.String(), "on test.hcl line 18")
	require.Contains(t, out.String(), `timeout = "soon"`)
}

// TestParseErrors are syntax and structure errors, reported by Parse.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, src, at, substr string
	}{
		{"syntax", "play \"p\" {\n  hosts = \n}", "hosts", "Invalid expression"},
		{"module not literal", "play \"p\" {\n  hosts = \"all\"\n  step \"s\" {\n    module = var.m\n  }\n}", "var.m", "Invalid module name"},
		{"module missing", "play \"p\" {\n  hosts = \"all\"\n  step \"s\" {\n    message = \"x\"\n  }\n}", "step", "Missing required argument"},
		{"sensitive not literal", "variable \"v\" {\n  sensitive = \"yes\"\n}", `"yes"`, "A literal true or false is required here."},
		{"bad type", "variable \"v\" {\n  type = strin\n}", "strin", "type"},
		{"bad variable name", "variable \"1v\" {}", `"1v"`, "Invalid variable name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, diags := playbooks.Parse([]byte(tt.src), "test.hcl")
			require.NotNil(t, f)
			require.True(t, diags.HasErrors())
			require.True(t, hasDiag(diags, lineOf(t, tt.src, tt.at), tt.substr), dump(diags))
		})
	}
}

func TestUnknownModuleSuggestsRegisteredNames(t *testing.T) {
	require.Contains(t, testRegistry(t).Names(), "test_echo")
	_, diags := compile(t, "play \"p\" {\n  hosts = \"all\"\n  step \"s\" {\n    module = \"tset_echo\"\n  }\n}", playbooks.Options{})
	require.True(t, hasDiag(diags, 4, `Did you mean "test_echo"?`), dump(diags))
}
