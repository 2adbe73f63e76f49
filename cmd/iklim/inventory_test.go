package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

const originsInventory = `defaults {
  user = "deploy"
  vars = { tier = "none", keep = 5 }
}
host "web-1" {
  address = "10.0.0.11"
  vars    = { tier = "edge" }
}
host "web-2" { address = "10.0.0.12" }
host "db-1" {
  address = "10.0.0.21"
}
host "lone" { address = "10.0.0.99" }
group "web" {
  hosts  = ["web-1", "web-2"]
  user   = "www"
  labels = { role = "web" }
  vars   = { tier = "web" }
}
group "db" { hosts = ["db-1"] }
group "swarm" { children = ["web", "db"] }
`

func TestInventoryGraph(t *testing.T) {
	inv := writeFile(t, t.TempDir(), "inv.hcl", originsInventory)
	out, errOut, code := iklim(t, nil, "inventory", "-i", inv, "--graph")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, `@all:
  |--@swarm:
  |  |--@db:
  |  |  |--db-1
  |  |--@web:
  |  |  |--web-1
  |  |  |--web-2
  |--@ungrouped:
  |  |--lone
`, out)
	out, _, code = iklim(t, nil, "inventory", "-i", inv, "web")
	require.Equal(t, 0, code)
	require.Equal(t, "@web:\n  |--web-1\n  |--web-2\n", out)
	_, errOut, code = iklim(t, nil, "inventory", "-i", inv, "webb")
	require.Equal(t, exitInvalid, code)
	require.Contains(t, errOut, `did you mean "web"?`)
}

// TestInventoryHostOrigins: each resolved value names the block and the
// file:line that set it; the host block beats groups, which beat defaults.
func TestInventoryHostOrigins(t *testing.T) {
	inv := writeFile(t, t.TempDir(), "inv.hcl", originsInventory)
	out, errOut, code := iklim(t, nil, "inventory", "-i", inv, "--host", "web-1")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "groups: all, swarm, web\n")
	require.Regexp(t, `address += "10\.0\.0\.11" +# host "web-1" at \S*inv\.hcl:6\n`, out)
	require.Regexp(t, `user += "www" +# group "web" at \S*inv\.hcl:16\n`, out)
	require.Regexp(t, `port += 22 +# default\n`, out)
	require.Regexp(t, `role += "web" +# group "web" at \S*inv\.hcl:17\n`, out)
	require.Regexp(t, `tier += "edge" +# host "web-1" at \S*inv\.hcl:7\n`, out)
	require.Regexp(t, `keep += 5 +# defaults at \S*inv\.hcl:3\n`, out)

	out, _, code = iklim(t, nil, "inventory", "-i", inv, "--host", "db-1")
	require.Equal(t, 0, code)
	require.Regexp(t, `user += "deploy" +# defaults at \S*inv\.hcl:2\n`, out)
	require.Regexp(t, `tier += "none" +# defaults at \S*inv\.hcl:3\n`, out)

	_, errOut, code = iklim(t, nil, "inventory", "-i", inv, "--host", "web-3")
	require.Equal(t, exitInvalid, code)
	require.Contains(t, errOut, `host "web-3" is not in the inventory`)
}
