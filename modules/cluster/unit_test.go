package cluster_test

import (
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/cluster"
	"github.com/iklimco/iklim/modules/internal/modtest"
	"github.com/stretchr/testify/require"
	"github.com/zclconf/go-cty/cty"
)

func TestModules(t *testing.T) {
	modtest.CheckModules(t, cluster.Modules())
	for _, info := range cluster.Modules() {
		_, isVal := info.New().(modules.Validator)
		require.True(t, isVal, "%s should validate", info.Name)
		_, isOut := info.New().(modules.Outputter)
		require.True(t, isOut, "%s should register its result", info.Name)
	}
}

func TestValidate(t *testing.T) {
	var ae *modules.ArgError
	for _, tc := range []struct {
		m   modules.Validator
		arg string
	}{
		{&cluster.RabbitJoin{}, "seed"},
		{&cluster.RabbitJoin{Seed: "a", Service: "s", Container: "c"}, "container"},
		{&cluster.RabbitJoin{Seed: "a", NodeType: "ssd"}, "node_type"},
		{&cluster.RabbitJoin{Seed: "a", JoinTimeout: "soon"}, "join_timeout"},
		{&cluster.RabbitJoin{Seed: "a", Policies: []cluster.RabbitPolicy{{Name: "p", Pattern: ".*", Definition: cty.StringVal("x")}}}, "policy"},
		{&cluster.RabbitJoin{Seed: "a", Policies: []cluster.RabbitPolicy{{Name: "p", Pattern: ".*", ApplyTo: "bindings", Definition: cty.EmptyObjectVal}}}, "policy"},
		{&cluster.SentinelCheck{MasterName: "m", Sentinels: 3}, "service"},
		{&cluster.SentinelCheck{Service: "s", Sentinels: 3}, "master_name"},
		{&cluster.SentinelCheck{Service: "s", MasterName: "m"}, "sentinels"},
		{&cluster.SentinelCheck{Service: "s", MasterName: "m", Sentinels: 3, Password: "x", PasswordFile: "/f"}, "password_file"},
		{&cluster.SentinelCheck{Service: "s", MasterName: "m", Sentinels: 3, ConvergeWithin: "-1s"}, "converge_within"},
	} {
		err := tc.m.Validate()
		require.ErrorAs(t, err, &ae, "%#v", tc.m)
		require.Equal(t, tc.arg, ae.Arg)
	}
	require.NoError(t, (&cluster.RabbitJoin{Seed: "a", Policies: []cluster.RabbitPolicy{
		{Name: "p", Pattern: ".*", Definition: cty.ObjectVal(map[string]cty.Value{"ha-mode": cty.StringVal("all")})}}}).Validate())
	require.NoError(t, (&cluster.SentinelCheck{Service: "s", MasterName: "m", Sentinels: 3, Replicas: 2}).Validate())
}
