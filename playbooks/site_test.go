package playbooks_test

import (
	"testing"

	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/files"
	"github.com/iklimco/iklim/playbooks"
	"github.com/iklimco/iklim/runner"
	"github.com/stretchr/testify/require"
	"github.com/zclconf/go-cty/cty"
)

// TestExampleSite compiles examples/site.hcl against the lab inventory.
func TestExampleSite(t *testing.T) {
	inv, diags := inventories.Load("../inventories/lab.hcl")
	require.False(t, diags.HasErrors(), diags.Error())
	f, diags := playbooks.Load("../examples/site.hcl")
	require.False(t, diags.HasErrors(), diags.Error())

	// The password is required.
	_, diags = playbooks.Compile(f, playbooks.Options{Inventory: inv, Modules: testRegistry(t)})
	require.Len(t, diags, 1)
	require.Contains(t, diags[0].Summary, "Missing required variable")

	secrets := modules.NewSecrets()
	pb, diags := playbooks.Compile(f, playbooks.Options{
		Inventory: inv,
		ExtraVars: map[string]string{"redis_password": "lab-redis-pass"},
		Secrets:   secrets,
		Modules:   testRegistry(t),
	})
	require.Empty(t, diags, dump(diags))
	require.Equal(t, &runner.LockSpec{Name: "site", Host: "iklim-app-01", Wait: 300e9, TTL: 120e9}, pb.Lock)
	require.Len(t, pb.Plays, 3)
	require.Equal(t, modules.Redacted, secrets.Redact("lab-redis-pass"))

	check := step(t, pb, "app config", "same config as app-01")
	require.True(t, check.Barrier)
	require.Zero(t, step(t, pb, "app config", "app port").Timeout, "wait_for takes timeout itself")
	require.True(t, step(t, pb, "records", "kernel record").Delegate)

	// The cross-host check, as the runner would call it.
	app2 := host(t, inv, "iklim-app-02")
	stat := func(sum string) map[string]cty.Value {
		return map[string]cty.Value{"app_env": cty.ObjectVal(map[string]cty.Value{"exists": cty.True, "sha256": cty.StringVal(sum)})}
	}
	sc := &runner.StepContext{Host: app2, Results: map[string]map[string]cty.Value{"iklim-app-01": stat("aaa"), "iklim-app-02": stat("aaa")}}
	run, err := check.When(sc)
	require.NoError(t, err)
	require.False(t, run)
	sc.Results["iklim-app-02"] = stat("bbb")
	run, err = check.When(sc)
	require.NoError(t, err)
	require.True(t, run)

	// The redis config of a replica.
	m, err := step(t, pb, "app config", "redis config").Build(sc)
	require.NoError(t, err)
	content := *m.(*files.Copy).Content
	require.Equal(t, "port 6379\nrequirepass lab-redis-pass\nmasterauth lab-redis-pass\nreplicaof 10.77.0.11 6379", content)
	require.Equal(t, modules.Redacted, secrets.Redact(content))
}
