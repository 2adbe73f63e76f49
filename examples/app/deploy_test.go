package app_test

import (
	"testing"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/stock"
	"github.com/iklimco/iklim/playbooks"
	"github.com/stretchr/testify/require"
)

// TestDeployCompiles checks deploy.hcl against the lab inventory without a
// lab: the tag and the registry password are required, the password is
// sensitive, and with both the playbook compiles to the seed's steps.
func TestDeployCompiles(t *testing.T) {
	inv, diags := inventories.LoadStock("lab")
	require.False(t, diags.HasErrors(), "%s", diags)
	f, diags := playbooks.Load("deploy.hcl")
	require.False(t, diags.HasErrors(), "%s", diags)

	_, diags = playbooks.Compile(f, playbooks.Options{Inventory: inv, Modules: stock.Registry()})
	require.Len(t, diags, 2)
	require.Contains(t, diags[0].Detail, `"tag"`)
	require.Contains(t, diags[1].Detail, `"registry_password"`)

	secrets := modules.NewSecrets()
	pb, diags := playbooks.Compile(f, playbooks.Options{Inventory: inv, Secrets: secrets, Modules: stock.Registry(),
		ExtraVars: map[string]string{"tag": "abc1234", "registry_password": "lab-registry-pass"}})
	require.False(t, diags.HasErrors(), "%s", diags)
	require.Equal(t, modules.Redacted, secrets.Redact("lab-registry-pass"))
	require.Len(t, pb.Plays, 1)
	require.Equal(t, "iklim-db-01", pb.Plays[0].Hosts)
	var mods []string
	for _, s := range pb.Plays[0].Steps {
		mods = append(mods, s.Module)
	}
	require.Equal(t, []string{"file", "copy", "shell", "docker_login", "docker_image", "replace", "compose_up", "http_check"}, mods)
}
