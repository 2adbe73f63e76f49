package playbooks_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/stock"
	"github.com/iklimco/iklim/playbooks"
	"github.com/iklimco/iklim/runner"
	"github.com/stretchr/testify/require"
	"github.com/zclconf/go-cty/cty"
)

func TestCompileShape(t *testing.T) {
	src := `variable "dir" { default = "/srv/app" }
lock "prod-deploy" {
  host            = "app-01"
  wait            = "5m"
  ttl             = "2m"
  take_over_stale = true
}
play "bootstrap" {
  hosts  = "all:!db-01"
  serial = 2
  step "ensure dir" {
    module        = "test_echo"
    message       = var.dir
    register      = "dir"
    run_once      = true
    delegate      = true
    tags          = ["setup", "dirs"]
    timeout       = "30s"
    ignore_errors = true
  }
  step "wait" {
    module  = "test_echo"
    message = "x"
    timeout = "10s"
  }
  step "barrier" {
    module  = "test_echo"
    message = "x"
    barrier = true
  }
}`
	pb := mustCompile(t, src, playbooks.Options{})
	require.Equal(t, "test.hcl", pb.File)
	require.Equal(t, &runner.LockSpec{Name: "prod-deploy", Host: "app-01", Wait: 5 * time.Minute, TTL: 2 * time.Minute, TakeOverStale: true}, pb.Lock)
	require.Len(t, pb.Plays, 1)
	p := pb.Plays[0]
	require.Equal(t, "bootstrap", p.Name)
	require.Equal(t, "all:!db-01", p.Hosts)
	require.Equal(t, 2, p.Serial)
	require.Len(t, p.Steps, 3)

	s := p.Steps[0]
	require.Equal(t, "ensure dir", s.Name)
	require.Equal(t, "test_echo", s.Module)
	require.Equal(t, "test.hcl:11", s.Source)
	require.Equal(t, "dir", s.Register)
	require.True(t, s.RunOnce)
	require.True(t, s.Delegate)
	require.True(t, s.IgnoreErrors)
	require.False(t, s.Barrier)
	require.Equal(t, []string{"setup", "dirs"}, s.Tags)
	require.Equal(t, 30*time.Second, s.Timeout)
	require.Nil(t, s.When)
	require.NotNil(t, s.Build)

	require.Equal(t, 10*time.Second, p.Steps[1].Timeout)

	require.True(t, p.Steps[2].Barrier)
}

func TestBuildWhenAndResults(t *testing.T) {
	src := `play "p" {
  hosts = "all"
  step "gen" {
    module   = "test_echo"
    message  = host.name
    register = "swarm"
  }
  step "use" {
    module  = "test_echo"
    when    = self.swarm.manager && !run.check
    message = result["app-01"].swarm.token
    count   = length([for h, r in result : h if try(r.swarm.manager, false)])
    labels  = [hosts["app-02"].address, hosts.db-01.name, lookup(host.labels, "type", "none")]
    env     = { port = try(tostring(host.vars.http_port), "none") }
  }
}
play "later" {
  hosts = "app"
  step "read" {
    module  = "test_echo"
    message = result["app-01"].swarm.token
  }
}`
	inv := inventory(t)
	pb := mustCompile(t, src, playbooks.Options{})
	use := step(t, pb, "p", "use")
	require.True(t, use.Barrier, "reads another host's result registered in the same play")
	require.False(t, step(t, pb, "later", "read").Barrier, "the result comes from an earlier play")

	results := map[string]map[string]cty.Value{
		"app-01": {"swarm": cty.ObjectVal(map[string]cty.Value{"manager": cty.True, "token": cty.StringVal("SWMTKN-1-abc")})},
		"app-02": {"swarm": cty.ObjectVal(map[string]cty.Value{"manager": cty.False, "token": cty.StringVal("")})},
	}
	sc := func(name string, check bool) *runner.StepContext {
		return &runner.StepContext{Host: host(t, inv, name), Results: results, Check: check}
	}

	run, err := use.When(sc("app-01", false))
	require.NoError(t, err)
	require.True(t, run)
	run, err = use.When(sc("app-01", true))
	require.NoError(t, err)
	require.False(t, run)
	run, err = use.When(sc("app-02", false))
	require.NoError(t, err)
	require.False(t, run)

	e := buildEcho(t, use, sc("app-02", false))
	require.Equal(t, "SWMTKN-1-abc", e.Message)
	require.Equal(t, 1, e.Count)
	require.Equal(t, []string{"10.0.0.2", "db-01", "service"}, e.Labels)
	require.Equal(t, map[string]string{"port": "8081"}, e.Env)

	// A host without the result: the error names the file and line.
	_, err = use.When(sc("db-01", false))
	require.Error(t, err)
	require.Contains(t, err.Error(), "test.hcl:10")
	var ee *playbooks.EvalError
	require.True(t, errors.As(err, &ee))
	var diags hcl.Diagnostics
	require.True(t, errors.As(err, &diags))

	delete(results, "app-01")
	_, err = use.Build(sc("app-02", false))
	require.Error(t, err)
	require.Contains(t, err.Error(), "test.hcl:11")
}

// TestResultFree: a step is marked as reading no registered result only
// when neither its arguments nor its when reads self or result.
func TestResultFree(t *testing.T) {
	src := `variable "dir" { default = "/srv" }
locals {
  plain = "/srv/${host.name}"
}
play "p" {
  hosts = "all"
  step "gen" {
    module   = "test_echo"
    message  = host.name
    register = "gen"
  }
  step "plain" {
    module  = "test_echo"
    message = "${var.dir}/${local.plain}"
    when    = !run.check
  }
  step "self arg" {
    module  = "test_echo"
    message = "x"
    labels  = [self.gen.message]
  }
  step "result when" {
    module  = "test_echo"
    message = "x"
    when    = result["app-01"].gen.message != ""
  }
}`
	pb := mustCompile(t, src, playbooks.Options{})
	free := map[string]bool{}
	for _, s := range pb.Plays[0].Steps {
		free[s.Name] = s.ResultFree
	}
	require.Equal(t, map[string]bool{"gen": true, "plain": true, "self arg": false, "result when": false}, free)
}

func TestBuildConcurrent(t *testing.T) {
	src := `locals { greeting = "hi ${host.name}" }
play "p" {
  hosts = "all"
  step "s" {
    module  = "test_echo"
    when    = length(self) == 0
    message = "${local.greeting} ${jsonencode(self)}"
  }
}`
	inv := inventory(t)
	s := mustCompile(t, src, playbooks.Options{}).Plays[0].Steps[0]
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		for _, h := range inv.Hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sc := &runner.StepContext{Host: h, Results: map[string]map[string]cty.Value{}}
				ok, err := s.When(sc)
				if err != nil || !ok {
					t.Errorf("when: %v %v", ok, err)
					return
				}
				m, err := s.Build(sc)
				if err != nil {
					t.Errorf("build: %v", err)
					return
				}
				if got, want := m.(*echo).Message, "hi "+h.Name+" {}"; got != want {
					t.Errorf("message %q, want %q", got, want)
				}
			}()
		}
	}
	wg.Wait()
}

func TestExtraVars(t *testing.T) {
	tests := []struct {
		name, decl, raw, want string // want: jsonencode of var.v
		env                   bool
	}{
		{"number", `variable "v" {}`, "3", `3`, false},
		{"negative number", `variable "v" {}`, "-2.5", `-2.5`, false},
		{"bool", `variable "v" {}`, "true", `true`, false},
		{"list", `variable "v" {}`, `["a", 1]`, `["a",1]`, false},
		{"object", `variable "v" {}`, `{ a = 1, b = "x" }`, `{"a":1,"b":"x"}`, false},
		{"quoted string", `variable "v" {}`, `"3"`, `"3"`, false},
		{"bare word", `variable "v" {}`, `hello`, `"hello"`, false},
		{"version", `variable "v" {}`, `1.4.2`, `"1.4.2"`, false},
		{"date is not arithmetic", `variable "v" {}`, `2026-11-21`, `"2026-11-21"`, false},
		{"string type keeps text", `variable "v" { type = string }`, `007`, `"007"`, false},
		{"string default keeps text", `variable "v" { default = "1.0" }`, `2.0`, `"2.0"`, false},
		{"typed number", `variable "v" { type = number }`, `42`, `42`, false},
		{"typed list", `variable "v" { type = list(string) }`, `["a", 1]`, `["a","1"]`, false},
		{"typed bool from word", `variable "v" { type = bool }`, `false`, `false`, false},
		{"default", `variable "v" { default = { a = [1] } }`, ``, `{"a":[1]}`, false},
		{"environment", `variable "v" { type = number }`, `7`, `7`, true},
	}
	inv := inventory(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := tt.decl + `
play "p" {
  hosts = "app-01"
  step "s" {
    module  = "test_echo"
    message = jsonencode(var.v)
  }
}`
			var extra map[string]string
			switch {
			case tt.env:
				t.Setenv(playbooks.EnvPrefix+"v", tt.raw)
			case tt.raw != "":
				extra = map[string]string{"v": tt.raw}
			}
			pb := mustCompile(t, src, playbooks.Options{ExtraVars: extra, Inventory: inv})
			e := buildEcho(t, pb.Plays[0].Steps[0], &runner.StepContext{Host: host(t, inv, "app-01")})
			require.Equal(t, tt.want, e.Message)
		})
	}

	t.Run("-e wins over the environment", func(t *testing.T) {
		t.Setenv(playbooks.EnvPrefix+"v", "env")
		src := `variable "v" { default = "default" }
play "p" {
  hosts = "app-01"
  step "s" {
    module  = "test_echo"
    message = var.v
  }
}`
		pb := mustCompile(t, src, playbooks.Options{ExtraVars: map[string]string{"v": "cli"}, Inventory: inv})
		require.Equal(t, "cli", buildEcho(t, pb.Plays[0].Steps[0], &runner.StepContext{Host: host(t, inv, "app-01")}).Message)
	})
}

func TestSensitive(t *testing.T) {
	const secret = "s3cr3t-redis-pass"
	src := `variable "redis_password" {
  sensitive = true
}
variable "user" { default = "admin" }
play "p" {
  hosts = "app"
  step "ok" {
    module  = "test_echo"
    message = "requirepass ${var.redis_password}"
    token   = "literal-token-1234"
    env     = { PASS = base64encode(var.redis_password), USER = var.user }
  }
  step "bad" {
    module  = "test_echo"
    message = "x"
    count   = var.redis_password
  }
  step "bad2" {
    module  = "test_echo"
    message = tonumber(var.redis_password)
    labels  = [jsondecode(var.redis_password)]
    mode    = var.redis_password
  }
}`
	secrets := modules.NewSecrets()
	f, diags := playbooks.Parse([]byte(src), "test.hcl")
	require.False(t, diags.HasErrors())
	_, diags = playbooks.Compile(f, playbooks.Options{
		Inventory: inventory(t),
		ExtraVars: map[string]string{"redis_password": secret},
		Secrets:   secrets,
		Modules:   testRegistry(t),
	})
	require.True(t, diags.HasErrors())
	require.GreaterOrEqual(t, len(diags), 3, dump(diags))

	// The variable and what was computed from it are secrets now.
	require.Equal(t, modules.Redacted, secrets.Redact(secret))
	require.Equal(t, modules.Redacted, secrets.Redact("requirepass "+secret))
	require.NotContains(t, secrets.Redact("PASS="+b64(secret)), b64(secret))
	// A field tagged sensitive:"true" is a secret whatever its source.
	require.Equal(t, modules.Redacted, secrets.Redact("literal-token-1234"))
	require.Equal(t, "admin", secrets.Redact("admin"))

	// No diagnostic shows it, however printed.
	var out bytes.Buffer
	require.NoError(t, playbooks.Diagnose(&out, f.Sources(), diags, false))
	require.NotContains(t, out.String(), secret)
	require.NotContains(t, diags.Error(), secret)
	require.NotContains(t, dump(diags), secret)

	// At run time, too.
	src2 := strings.Replace(src, "step \"bad\"", "step \"unused\"", 1)
	src2 = src2[:strings.Index(src2, "  step \"unused\"")] + "}\n"
	secrets = modules.NewSecrets()
	inv := inventory(t)
	pb := mustCompile(t, src2, playbooks.Options{Inventory: inv, ExtraVars: map[string]string{"redis_password": secret}, Secrets: secrets})
	e := buildEcho(t, pb.Plays[0].Steps[0], &runner.StepContext{Host: host(t, inv, "app-01")})
	require.Equal(t, "requirepass "+secret, e.Message, "the module gets the clear value")
	require.Equal(t, modules.Redacted, secrets.Redact(e.Env["PASS"]))
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestFunctionsRelativeToPlaybook(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "files"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "files", "motd.txt"), []byte("welcome\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "files", "app.conf.tmpl"),
		[]byte("name=${name}\nport=${port}\n%{ for p in peers ~}\npeer=${p}\n%{ endfor ~}\nhash=${substr(sha256(name), 0, 8)}\n"), 0o644))
	pbPath := filepath.Join(dir, "site.hcl")
	require.NoError(t, os.WriteFile(pbPath, []byte(`variable "pw" {
  sensitive = true
  default   = "hunter2-hunter2"
}
play "p" {
  hosts = "app"
  step "motd" {
    module  = "test_echo"
    message = trimspace(file("files/motd.txt"))
  }
  step "conf" {
    module  = "test_echo"
    message = templatefile("files/app.conf.tmpl", {
      name  = host.name
      port  = host.vars.http_port
      peers = [for h in hosts : h.address if contains(h.groups, "app")]
    })
  }
  step "secret" {
    module  = "test_echo"
    message = templatefile("files/app.conf.tmpl", { name = var.pw, port = 1, peers = [] })
  }
  step "env" {
    module  = "test_echo"
    message = env("IKLIM_TEST_ENV")
  }
}`), 0o644))
	t.Setenv("IKLIM_TEST_ENV", "from-env")

	// Run from another directory: paths are relative to the playbook.
	t.Chdir(t.TempDir())
	f, diags := playbooks.Load(pbPath)
	require.False(t, diags.HasErrors(), diags.Error())
	inv := inventory(t)
	secrets := modules.NewSecrets()
	pb, diags := playbooks.Compile(f, playbooks.Options{Inventory: inv, Secrets: secrets, Modules: testRegistry(t)})
	require.False(t, diags.HasErrors(), diags.Error())
	sc := &runner.StepContext{Host: host(t, inv, "app-02")}

	require.Equal(t, "welcome", buildEcho(t, step(t, pb, "p", "motd"), sc).Message)
	require.Equal(t, "name=app-02\nport=8081\npeer=10.0.0.1\npeer=10.0.0.2\nhash=711785f3\n", buildEcho(t, step(t, pb, "p", "conf"), sc).Message)
	rendered := buildEcho(t, step(t, pb, "p", "secret"), sc).Message
	require.Contains(t, rendered, "name=hunter2-hunter2")
	require.Equal(t, modules.Redacted, strings.TrimSpace(secrets.Redact(rendered)), "a template of a sensitive value is sensitive")
	require.Equal(t, "from-env", buildEcho(t, step(t, pb, "p", "env"), sc).Message)
}

func TestFileFunctionErrors(t *testing.T) {
	src := `play "p" {
  hosts = "app"
  step "s" {
    module  = "test_echo"
    message = file("nope.txt")
  }
}`
	_, diags := compile(t, src, playbooks.Options{})
	require.True(t, hasDiag(diags, 5, "Invalid function argument"), dump(diags))
}

func TestCompileWithoutInventory(t *testing.T) {
	src := `play "p" {
  hosts = "app"
  step "s" {
    module  = "test_echo"
    message = "${host.name} ${hosts[host.name].address}"
  }
}`
	f, diags := playbooks.Parse([]byte(src), "test.hcl")
	require.False(t, diags.HasErrors())
	pb, diags := playbooks.Compile(f, playbooks.Options{Modules: testRegistry(t)})
	require.False(t, diags.HasErrors(), diags.Error())
	h := &inventories.Host{Name: "x", Address: "10.1.1.1"}
	require.Equal(t, "x 10.1.1.1", buildEcho(t, pb.Plays[0].Steps[0], &runner.StepContext{Host: h}).Message)

	// Still checks what it can.
	_, diags = playbooks.Compile(mustParse(t, `play "p" {
  hosts = "app:"
  step "s" {
    module = "test_echo"
    count  = "x"
  }
}`), playbooks.Options{Modules: testRegistry(t)})
	require.True(t, hasDiag(diags, 2, "Invalid host pattern"), dump(diags))
	require.True(t, hasDiag(diags, 3, "Missing required argument"), dump(diags))
	require.True(t, hasDiag(diags, 5, "a number is required"), dump(diags))
}

func mustParse(t *testing.T, src string) *playbooks.File {
	t.Helper()
	f, diags := playbooks.Parse([]byte(src), "test.hcl")
	require.False(t, diags.HasErrors(), diags.Error())
	return f
}

func TestLoadMissingFile(t *testing.T) {
	f, diags := playbooks.Load(filepath.Join(t.TempDir(), "nope.hcl"))
	require.NotNil(t, f)
	require.True(t, diags.HasErrors())
	require.Contains(t, diags.Error(), "Failed to read playbook")
	require.NotNil(t, f.Sources())
}

// TestCompileNeedsARegistry: the registry is explicit; without one Compile
// says so instead of calling every module unknown, and a step may use only
// the modules of the registry it was given.
func TestCompileNeedsARegistry(t *testing.T) {
	src := "play \"p\" {\n  hosts = \"all\"\n  step \"s\" {\n    module  = \"test_echo\"\n    message = \"hi\"\n  }\n}"
	_, diags := playbooks.Compile(mustParse(t, src), playbooks.Options{Inventory: inventory(t)})
	require.True(t, diags.HasErrors())
	require.Equal(t, "No module registry", diags[0].Summary)

	_, diags = playbooks.Compile(mustParse(t, src), playbooks.Options{Inventory: inventory(t), Modules: stock.Registry()})
	require.True(t, hasDiag(diags, 4, `There is no module named "test_echo"`), dump(diags))
	mustCompile(t, src, playbooks.Options{Modules: testRegistry(t)})
}
