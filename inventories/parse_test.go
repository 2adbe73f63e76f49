package inventories

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/stretchr/testify/require"
	"github.com/zclconf/go-cty/cty"
)

// diagLines renders diagnostics as "file:line,col: Severity: Summary" so
// that a test can assert every position at once.
func diagLines(diags hcl.Diagnostics) []string {
	var out []string
	for _, d := range diags {
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		pos := "-"
		if d.Subject != nil {
			pos = fmt.Sprintf("%s:%d,%d", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
		}
		out = append(out, fmt.Sprintf("%s: %s: %s", pos, sev, d.Summary))
	}
	return out
}

func names(hosts []*Host) []string {
	out := []string{}
	for _, h := range hosts {
		out = append(out, h.Name)
	}
	return out
}

func str(t *testing.T, v cty.Value) string {
	t.Helper()
	require.True(t, v.Type() == cty.String, "want string, got %s", v.Type().FriendlyName())
	return v.AsString()
}

func loadFull(t *testing.T) *Inventory {
	t.Helper()
	t.Setenv("HOME", "/home/op")
	inv, diags := Load(filepath.Join("testdata", "full.hcl"))
	require.False(t, diags.HasErrors(), "%v", diags)
	require.Empty(t, diags)
	return inv
}

func TestLoadFull(t *testing.T) {
	inv := loadFull(t)
	require.Equal(t, filepath.Join("testdata", "full.hcl"), inv.File)
	require.Equal(t, []string{
		"iklim-app-01", "iklim-app-02", "iklim-app-03",
		"iklim-db-01", "iklim-db-02", "iklim-db-03", "control",
	}, names(inv.Hosts))

	groups := make([]string, 0, len(inv.Groups))
	for n := range inv.Groups {
		groups = append(groups, n)
	}
	sort.Strings(groups)
	require.Equal(t, []string{"app", "db", "managers", "redis", "spare", "swarm", "workers"}, groups)
	require.Equal(t, []string{"managers", "workers"}, inv.Groups["swarm"].Children)
	require.Equal(t, []string{"iklim-app-01", "iklim-app-02", "iklim-app-03"}, inv.Groups["redis"].Hosts)
	require.Empty(t, inv.Groups["spare"].Hosts)
	require.Equal(t, "manager", str(t, inv.Groups["managers"].Vars["swarm_role"]))

	app1, ok := inv.Host("iklim-app-01")
	require.True(t, ok)
	require.Equal(t, &Host{
		Name:            "iklim-app-01",
		Address:         "192.0.2.11",
		Port:            22,
		User:            "iklim",
		Key:             "/home/op/.ssh/id_ed25519",
		KnownHosts:      "/home/op/.ssh/known_hosts",
		TrustOnFirstUse: false,
		ProxyJump:       "jump@bastion:22",
		Become:          true,
		BecomeUser:      "root",
		BackupRoot:      "/var/backups/iklim",
		ConnectTimeout:  15 * time.Second,
		Labels:          map[string]string{"env": "test", "type": "service", "zone": "a"},
		Vars:            app1.Vars, // checked below
		Groups:          []string{"all", "app", "redis", "swarm", "managers"},
	}, app1)
	require.Equal(t, "iklimco", str(t, app1.Vars["stack"]))
	require.Equal(t, "manager", str(t, app1.Vars["swarm_role"]))
	require.True(t, app1.Vars["swarm_bootstrap"].True())
	require.True(t, app1.Vars["sentinel_quorum"].Equals(cty.NumberIntVal(2)).True())
	require.Equal(t, cty.TupleVal([]cty.Value{
		cty.StringVal("sentinel-1"), cty.StringVal("sentinel-2"), cty.StringVal("sentinel-3"),
	}), app1.Vars["sentinels"])
	nested := app1.Vars["nested"]
	require.True(t, nested.Type().IsObjectType())
	require.Equal(t, "y", nested.GetAttr("b").Index(cty.NumberIntVal(1)).AsString())

	app2, _ := inv.Host("iklim-app-02")
	require.Equal(t, 2222, app2.Port, "defaults port applies where the host sets none")

	db3, _ := inv.Host("iklim-db-03")
	require.Equal(t, "ADMIN", db3.User, "function calls are evaluated")
	require.Equal(t, "", db3.Key, "a host can clear a default with an empty string")
	require.False(t, db3.Become)
	require.Equal(t, "postgres", db3.BecomeUser)
	require.Equal(t, "/srv/backups", db3.BackupRoot, "group connection attributes apply to members")
	require.Equal(t, map[string]string{"env": "test", "type": "db"}, db3.Labels)
	require.Equal(t, []string{"all", "db", "swarm", "workers"}, db3.Groups)
	require.Equal(t, "worker", str(t, db3.Vars["swarm_role"]), "child group beats parent group")
	_, hasRedis := db3.Vars["sentinel_quorum"]
	require.False(t, hasRedis)

	ctl, _ := inv.Host("control")
	require.True(t, ctl.Local)
	require.Equal(t, "control", ctl.Address, "address defaults to the name")
	require.Equal(t, "", ctl.ProxyJump)
	require.Equal(t, []string{"all"}, ctl.Groups)
}

func TestResolutionDefaults(t *testing.T) {
	t.Setenv("HOME", "/home/op")
	inv, diags := Parse([]byte(`
host "bare" {}
host "tilde" {
  key         = "~"
  known_hosts = "~other/known_hosts"
}
`), "t.hcl")
	require.Empty(t, diags)
	bare := inv.Hosts[0]
	require.Equal(t, &Host{
		Name: "bare", Address: "bare", BecomeUser: "root", BackupRoot: DefaultBackupRoot,
		Labels: map[string]string{}, Vars: map[string]cty.Value{}, Groups: []string{"all"},
	}, bare)
	tilde := inv.Hosts[1]
	require.Equal(t, "/home/op", tilde.Key)
	require.Equal(t, "~other/known_hosts", tilde.KnownHosts, "~user is not expanded")
}

func TestPrecedence(t *testing.T) {
	src := `
defaults {
  user   = "defaults"
  port   = 2200
  become = true
  vars = {
    a = "defaults", b = "defaults", c = "defaults", d = "defaults", e = "defaults"
    obj = { x = 1, y = 2 }
  }
  labels = { type = "defaults", zone = "defaults", rack = "defaults" }
}

host "h1" {
  become = false
  vars   = { e = "host", obj = { x = 3 } }
  labels = { zone = "host" }
}

host "h2" {}

group "parent" {
  children = ["child"]
  user     = "parent"
  vars     = { a = "parent", b = "parent", c = "parent" }
  labels   = { type = "parent" }
}

group "child" {
  hosts = ["h1"]
  port  = 2201
  vars  = { a = "child" }
}

group "aaa" {
  hosts  = ["h1"]
  vars   = { b = "aaa", d = "aaa" }
  labels = { rack = "aaa" }
}

group "bbb" {
  hosts  = ["h1"]
  vars   = { d = "bbb" }
  labels = { rack = "bbb" }
}

# Depth beats name: zzz is an ancestor of deep, so deep wins.
group "zzz" {
  children = ["deep"]
  vars     = { f = "zzz" }
}

group "deep" {
  hosts = ["h1"]
  vars  = { f = "deep" }
}
`
	inv, diags := Parse([]byte(src), "t.hcl")
	require.Empty(t, diags)
	h1, _ := inv.Host("h1")
	require.Equal(t, []string{"all", "aaa", "bbb", "parent", "zzz", "child", "deep"}, h1.Groups)

	for key, want := range map[string]string{
		"a": "child",  // child group beats its parent
		"b": "parent", // siblings by name: parent > aaa
		"c": "parent", // group beats defaults
		"d": "bbb",    // bbb after aaa
		"e": "host",   // host beats everything
		"f": "deep",   // a descendant beats an ancestor whatever the names
	} {
		require.Equal(t, want, str(t, h1.Vars[key]), "var %s", key)
	}
	// Vars merge by top-level key only: the host's obj replaces the default's.
	require.True(t, cty.ObjectVal(map[string]cty.Value{"x": cty.NumberIntVal(3)}).RawEquals(h1.Vars["obj"]), "%#v", h1.Vars["obj"])
	require.Equal(t, map[string]string{"type": "parent", "zone": "host", "rack": "bbb"}, h1.Labels)
	require.Equal(t, "parent", h1.User)
	require.Equal(t, 2201, h1.Port)
	require.False(t, h1.Become)

	h2, _ := inv.Host("h2")
	require.Equal(t, []string{"all"}, h2.Groups)
	require.Equal(t, "defaults", h2.User)
	require.Equal(t, 2200, h2.Port)
	require.True(t, h2.Become)
	require.Equal(t, "defaults", str(t, h2.Vars["a"]))
	require.Equal(t, map[string]string{"type": "defaults", "zone": "defaults", "rack": "defaults"}, h2.Labels)
}

func TestFunctionsAndEnv(t *testing.T) {
	t.Setenv("IKLIM_TEST_USER", "Deploy")
	inv, diags := Parse([]byte(`
host "a" {
  user    = lower(env("IKLIM_TEST_USER"))
  address = format("%s.%s", "a", "example.test")
  vars = {
    unset = env("IKLIM_TEST_SURELY_UNSET")
    list  = concat(["x"], ["y"])
    joined = join(",", ["x", "y"])
    merged = merge({ p = 1 }, { q = 2 })
    up     = upper("z")
  }
}
`), "t.hcl")
	require.Empty(t, diags)
	h := inv.Hosts[0]
	require.Equal(t, "deploy", h.User)
	require.Equal(t, "a.example.test", h.Address)
	require.Equal(t, "", str(t, h.Vars["unset"]))
	require.Equal(t, "x,y", str(t, h.Vars["joined"]))
	require.Equal(t, "Z", str(t, h.Vars["up"]))
	require.Equal(t, 2, h.Vars["list"].LengthInt())
	require.Equal(t, 2, h.Vars["merged"].LengthInt())
}

func TestNullMeansUnset(t *testing.T) {
	inv, diags := Parse([]byte(`
defaults {
  user = "d"
}
host "a" {
  user = null
  vars = null
}
`), "t.hcl")
	require.Empty(t, diags)
	require.Equal(t, "d", inv.Hosts[0].User)
}

func TestDiagnostics(t *testing.T) {
	tests := []struct {
		name   string
		src    string
		want   []string
		detail string // a substring of the first diagnostic's detail
	}{
		{
			name: "syntax error",
			src:  "host \"a\" {\n  user = \"x\"\n",
			want: []string{"t.hcl:1,10: error: Unclosed configuration block"},
		},
		{
			name: "syntax error in expression",
			src:  "host \"a\" {\n  user = \n}\n",
			want: []string{"t.hcl:2,10: error: Invalid expression"},
		},
		{
			name:   "unknown attribute",
			src:    "host \"a\" {\n  adress = \"x\"\n}\n",
			want:   []string{"t.hcl:2,3: error: Unsupported argument"},
			detail: `Did you mean "address"?`,
		},
		{
			name: "host-only attribute in a group",
			src:  "group \"g\" {\n  address = \"x\"\n}\n",
			want: []string{"t.hcl:2,3: error: Unsupported argument"},
		},
		{
			name: "group-only attribute in defaults",
			src:  "defaults {\n  hosts = []\n}\n",
			want: []string{"t.hcl:2,3: error: Unsupported argument"},
		},
		{
			name: "top-level attribute",
			src:  "user = \"x\"\n",
			want: []string{"t.hcl:1,1: error: Unsupported argument"},
		},
		{
			name:   "unknown block",
			src:    "hots \"a\" {}\n",
			want:   []string{"t.hcl:1,1: error: Unsupported block type"},
			detail: `Did you mean "host"?`,
		},
		{
			name: "nested block",
			src:  "host \"a\" {\n  vars {\n  }\n}\n",
			want: []string{"t.hcl:2,3: error: Unsupported block type"},
		},
		{
			name: "missing host name",
			src:  "host {}\n",
			want: []string{"t.hcl:1,6: error: Missing name for host"},
		},
		{
			name: "wrong types",
			src: `host "a" {
  port   = "abc"
  become = "maybe"
  labels = { a = [1] }
  vars   = "x"
  user   = ["u"]
  local  = {}
}
group "g" {
  hosts    = "a"
  children = [[]]
}
`,
			want: []string{
				"t.hcl:2,12: error: Incorrect attribute value type",
				"t.hcl:3,12: error: Incorrect attribute value type",
				"t.hcl:4,12: error: Incorrect attribute value type",
				"t.hcl:5,12: error: Incorrect attribute value type",
				"t.hcl:6,12: error: Incorrect attribute value type",
				"t.hcl:7,12: error: Incorrect attribute value type",
				"t.hcl:10,14: error: Incorrect attribute value type",
				"t.hcl:11,15: error: Incorrect attribute value type",
			},
			detail: `Inappropriate value for attribute "port": number required.`,
		},
		{
			name:   "null label value",
			src:    "host \"a\" {\n  labels = { a = null }\n}\n",
			want:   []string{"t.hcl:2,12: error: Incorrect attribute value type"},
			detail: "map of string",
		},
		{
			name:   "duplicate host",
			src:    "host \"a\" {}\n\nhost \"b\" {}\nhost \"a\" {\n  port = 0\n}\n",
			want:   []string{"t.hcl:4,6: error: Duplicate host \"a\"", "t.hcl:5,10: error: Invalid port"},
			detail: "previous definition was at t.hcl:1",
		},
		{
			name:   "duplicate group",
			src:    "group \"g\" {}\ngroup \"g\" {}\n",
			want:   []string{"t.hcl:2,7: error: Duplicate group \"g\""},
			detail: "previous definition was at t.hcl:1",
		},
		{
			name:   "duplicate defaults",
			src:    "defaults {}\n\ndefaults {}\n",
			want:   []string{"t.hcl:3,1: error: Duplicate defaults block"},
			detail: "previous definition was at t.hcl:1",
		},
		{
			name: "unknown host in group",
			src: `host "iklim-app-01" {}
group "g" {
  hosts = [
    "iklim-app-01",
    "iklim-app-1",
    "zzz",
  ]
}
`,
			want: []string{
				"t.hcl:5,5: error: Unknown host",
				"t.hcl:6,5: error: Unknown host",
			},
			detail: `Group "g" lists host "iklim-app-1", which is not defined in this inventory. Did you mean "iklim-app-01"?`,
		},
		{
			name:   "unknown child group",
			src:    "group \"swarm\" {\n  children = [\"managers\", \"workerz\"]\n}\ngroup \"workers\" {}\n",
			want:   []string{"t.hcl:2,15: error: Unknown group", "t.hcl:2,27: error: Unknown group"},
			detail: `Group "swarm" lists group "managers", which is not defined in this inventory.`,
		},
		{
			name: "child cycle",
			src: `group "a" {
  children = ["b"]
}
group "b" {
  children = ["c"]
}
group "c" {
  children = ["a"]
}
`,
			want:   []string{"t.hcl:8,15: error: Group cycle"},
			detail: `Group "a" is its own descendant: a -> b -> c -> a.`,
		},
		{
			name:   "self child",
			src:    "group \"a\" {\n  children = [\"a\"]\n}\n",
			want:   []string{"t.hcl:2,15: error: Group cycle"},
			detail: "a -> a.",
		},
		{
			name: "invalid ports",
			src:  "defaults {\n  port = 0\n}\nhost \"a\" {\n  port = 65536\n}\ngroup \"g\" {\n  port = 22.5\n}\nhost \"b\" {\n  port = -1\n}\n",
			want: []string{
				"t.hcl:2,10: error: Invalid port",
				"t.hcl:5,10: error: Invalid port",
				"t.hcl:8,10: error: Invalid port",
				"t.hcl:11,10: error: Invalid port",
			},
			detail: "port must be a whole number from 1 to 65535; got 0.",
		},
		{
			name: "variable references",
			src: `host "a" {
  user = var.user
  vars = { a = foo, b = [for x in [1] : x], c = upper(bar[0]) }
}
group "g" {
  hosts = [a]
}
`,
			want: []string{
				"t.hcl:2,10: error: Variables not allowed",
				"t.hcl:3,16: error: Variables not allowed",
				"t.hcl:3,55: error: Variables not allowed",
				"t.hcl:6,12: error: Variables not allowed",
			},
			detail: `"var.user" is a reference to a variable`,
		},
		{
			name: "unknown function",
			src:  "host \"a\" {\n  key = nope(\"x\")\n}\n",
			want: []string{"t.hcl:2,9: error: Call to unknown function"},
		},
		{
			name:   "function error",
			src:    "host \"a\" {\n  user = element([], 0)\n}\n",
			want:   []string{"t.hcl:2,10: error: Error in function call"},
			detail: "cannot use element function with an empty list",
		},
		{
			name:   "invalid duration",
			src:    "host \"a\" {\n  connect_timeout = \"15\"\n}\ngroup \"g\" {\n  connect_timeout = \"-1s\"\n}\n",
			want:   []string{"t.hcl:2,21: error: Invalid duration", "t.hcl:5,21: error: Invalid duration"},
			detail: `got "15"`,
		},
		{
			name:   "relative backup_root",
			src:    "defaults {\n  backup_root = \"backups\"\n}\n",
			want:   []string{"t.hcl:2,17: error: Invalid backup_root"},
			detail: "absolute path",
		},
		{
			name: "invalid names",
			src:  "host \"a:b\" {}\nhost \"all\" {}\ngroup \"web servers\" {}\ngroup \"all\" {}\nhost \"\" {}\n",
			want: []string{
				"t.hcl:1,6: error: Invalid host name",
				"t.hcl:2,6: error: Invalid host name",
				"t.hcl:3,7: error: Invalid group name",
				"t.hcl:4,7: error: Invalid group name",
				"t.hcl:5,6: error: Invalid host name",
			},
			detail: "may not contain whitespace or any of : , & ! * ? [ ]",
		},
		{
			name: "everything is collected",
			src: `defaults {
  port = 0
}
host "a" {
  bogus = 1
}
host "a" {}
group "g" {
  hosts    = ["a", "b"]
  children = ["g"]
}
group "g" {
  hosts = ["zzz"]
}
`,
			want: []string{
				"t.hcl:2,10: error: Invalid port",
				"t.hcl:5,3: error: Unsupported argument",
				"t.hcl:7,6: error: Duplicate host \"a\"",
				"t.hcl:9,20: error: Unknown host",
				"t.hcl:10,15: error: Group cycle",
				"t.hcl:12,7: error: Duplicate group \"g\"",
				"t.hcl:13,12: error: Unknown host",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, diags := Parse([]byte(tt.src), "t.hcl")
			require.Equal(t, tt.want, diagLines(diags), "%v", diags)
			require.Nil(t, inv, "no inventory when there are errors")
			if tt.detail != "" {
				require.Contains(t, diags[0].Detail, tt.detail)
			}
		})
	}
}

func TestDuplicateHostMessage(t *testing.T) {
	_, diags := Parse([]byte("host \"x\" {}\nhost \"x\" {}\n"), "inv.hcl")
	require.Len(t, diags, 1)
	require.Equal(t, `inv.hcl:2,6-9: Duplicate host "x"; previous definition was at inv.hcl:1`, diags[0].Error())
}

func TestGroupHostNameClashWarns(t *testing.T) {
	inv, diags := Parse([]byte("host \"web\" {}\nhost \"b\" {}\ngroup \"web\" {\n  hosts = [\"b\"]\n}\n"), "t.hcl")
	require.Equal(t, []string{"t.hcl:3,1: warning: Group and host share a name"}, diagLines(diags))
	require.NotNil(t, inv)
	got, err := inv.Select("web")
	require.NoError(t, err)
	require.Equal(t, []string{"web", "b"}, names(got), "the name selects both")
}

func TestDuplicateListEntriesCollapse(t *testing.T) {
	inv, diags := Parse([]byte("host \"a\" {}\ngroup \"c\" {}\ngroup \"g\" {\n  hosts = [\"a\", \"a\"]\n  children = [\"c\", \"c\"]\n}\n"), "t.hcl")
	require.Empty(t, diags)
	require.Equal(t, []string{"a"}, inv.Groups["g"].Hosts)
	require.Equal(t, []string{"c"}, inv.Groups["g"].Children)
}

func TestLoadMissingFile(t *testing.T) {
	inv, diags := Load(filepath.Join(t.TempDir(), "nope.hcl"))
	require.Nil(t, inv)
	require.Len(t, diags, 1)
	require.Equal(t, "Failed to read inventory", diags[0].Summary)
	require.Contains(t, diags[0].Detail, "nope.hcl")
}

func TestLoadWithKeepsFilesForSnippets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.hcl")
	require.NoError(t, os.WriteFile(path, []byte("host \"a\" {\n  port = 0\n}\n"), 0o600))
	p := hclparse.NewParser()
	_, diags := LoadWith(p, path)
	require.True(t, diags.HasErrors())
	var sb strings.Builder
	w := hcl.NewDiagnosticTextWriter(&sb, p.Files(), 80, false)
	require.NoError(t, w.WriteDiagnostics(diags))
	require.Contains(t, sb.String(), "port = 0", "the writer found the source")
	require.Contains(t, sb.String(), "bad.hcl line 2")
}

func TestLoadStockProd(t *testing.T) {
	for _, name := range []string{"prod", "prod.hcl"} {
		inv, diags := LoadStock(name)
		require.Empty(t, diags, "%v", diags)
		require.Equal(t, "inventories/prod.hcl", inv.File)
		require.Equal(t, []string{
			"iklim-app-01", "iklim-app-02", "iklim-app-03",
			"iklim-db-01", "iklim-db-02", "iklim-db-03",
		}, names(inv.Hosts))
		for _, g := range []string{"app", "db", "managers", "workers", "swarm", "rabbitmq", "redis"} {
			require.Contains(t, inv.Groups, g)
		}
		require.Len(t, inv.Groups, 7)

		doc := netip.MustParsePrefix("192.0.2.0/24")
		for _, h := range inv.Hosts {
			addr, err := netip.ParseAddr(h.Address)
			require.NoError(t, err)
			require.True(t, doc.Contains(addr), "%s uses a documentation address", h.Name)
		}

		sel := func(p string) []string {
			hosts, err := inv.Select(p)
			require.NoError(t, err)
			return names(hosts)
		}
		app := []string{"iklim-app-01", "iklim-app-02", "iklim-app-03"}
		db := []string{"iklim-db-01", "iklim-db-02", "iklim-db-03"}
		require.Equal(t, app, sel("managers"))
		require.Equal(t, app, sel("rabbitmq"))
		require.Equal(t, app, sel("redis"))
		require.Equal(t, db, sel("workers"))
		require.Len(t, sel("swarm"), 6)

		for _, h := range inv.Hosts {
			role := "worker"
			typ := "db"
			if strings.HasPrefix(h.Name, "iklim-app-") {
				role, typ = "manager", "service"
			}
			require.Equal(t, typ, h.Labels["type"], h.Name)
			require.Equal(t, role, str(t, h.Vars["swarm_role"]), h.Name)
		}
	}
}

func TestLoadStockEveryFileParses(t *testing.T) {
	require.Contains(t, StockNames(), "prod")
	for _, name := range StockNames() {
		inv, diags := LoadStock(name)
		require.False(t, diags.HasErrors(), "%s: %v", name, diags)
		require.NotEmpty(t, inv.Hosts, name)
	}
}

func TestLoadStockUnknown(t *testing.T) {
	for _, name := range []string{"nope", "../go.mod", "testdata/full"} {
		inv, diags := LoadStock(name)
		require.Nil(t, inv)
		require.Len(t, diags, 1)
		require.Equal(t, "Unknown stock inventory", diags[0].Summary)
	}
}

func TestAdd(t *testing.T) {
	t.Setenv("HOME", "/home/op")
	inv := New()
	h := &Host{Name: "web-1", Key: "~/.ssh/k", Groups: []string{"web"}}
	require.NoError(t, inv.Add(h))
	require.Equal(t, &Host{
		Name: "web-1", Address: "web-1", Key: "/home/op/.ssh/k", BecomeUser: "root",
		BackupRoot: DefaultBackupRoot, Labels: map[string]string{}, Vars: map[string]cty.Value{},
		Groups: []string{"all", "web"},
	}, h)
	require.Equal(t, []string{"web-1"}, inv.Groups["web"].Hosts)
	require.NoError(t, inv.Add(&Host{Name: "web-2", Address: "10.0.0.2", Port: 2222, Groups: []string{"web", "all"}}))
	require.NoError(t, inv.Add(&Host{Name: "db-1"}))

	got, err := inv.Select("web")
	require.NoError(t, err)
	require.Equal(t, []string{"web-1", "web-2"}, names(got))
	w2, _ := inv.Host("web-2")
	require.Equal(t, "10.0.0.2", w2.Address)
	require.Equal(t, 2222, w2.Port)

	for _, tt := range []struct {
		h    *Host
		want string
	}{
		{nil, "add host: nil host"},
		{&Host{Name: "web-1"}, `add host "web-1": duplicate host`},
		{&Host{Name: "a,b"}, `add host "a,b": the host name "a,b" may not contain`},
		{&Host{Name: ""}, `add host "": a host name may not be empty`},
		{&Host{Name: "x", Groups: []string{"bad group"}}, `add host "x": the group name "bad group" may not contain`},
	} {
		err := inv.Add(tt.h)
		require.ErrorContains(t, err, tt.want)
	}
	require.Len(t, inv.Hosts, 3, "rejected hosts are not added")
}

func TestAddToParsedInventory(t *testing.T) {
	inv := loadFull(t)
	h := &Host{Name: "iklim-app-04", Groups: []string{"managers"}}
	require.NoError(t, inv.Add(h))
	require.Equal(t, []string{"all", "swarm", "managers"}, h.Groups, "ancestors are filled in")
	got, err := inv.Select("swarm:&managers")
	require.NoError(t, err)
	require.Equal(t, []string{"iklim-app-01", "iklim-app-02", "iklim-app-03", "iklim-app-04"}, names(got))
}

func TestZeroInventory(t *testing.T) {
	var inv Inventory
	require.NoError(t, inv.Add(&Host{Name: "a", Groups: []string{"g"}}))
	got, err := inv.Select("g")
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, names(got))
}

// Origins names, for every setting the file made, the block that won and
// its file:line.
func TestOrigins(t *testing.T) {
	src := `defaults {
  user = "d"
  port = 2222
  vars = { a = 1, b = 2 }
}
group "g" {
  hosts = ["h1"]
  user  = "g"
  labels = { role = "web" }
}
host "h1" {
  vars = { b = 3 }
}
host "h2" {}
`
	inv, diags := Parse([]byte(src), "o.hcl")
	require.False(t, diags.HasErrors(), diags.Error())
	require.Equal(t, map[string]string{
		"user":        `group "g" at o.hcl:8`,
		"port":        "defaults at o.hcl:3",
		"vars.a":      "defaults at o.hcl:4",
		"vars.b":      `host "h1" at o.hcl:12`,
		"labels.role": `group "g" at o.hcl:9`,
	}, inv.Origins("h1"))
	require.Equal(t, map[string]string{"user": "defaults at o.hcl:2", "port": "defaults at o.hcl:3",
		"vars.a": "defaults at o.hcl:4", "vars.b": "defaults at o.hcl:4"}, inv.Origins("h2"))
	require.Nil(t, inv.Origins("h3"))
}
