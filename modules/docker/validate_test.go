package docker_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/docker"
	"github.com/stretchr/testify/require"
)

// requireArgError checks that err is an ArgError bound to arg and says want.
func requireArgError(t *testing.T, err error, arg, want string) {
	t.Helper()
	var ae *modules.ArgError
	require.True(t, errors.As(err, &ae), "%v is not an ArgError", err)
	require.Equal(t, arg, ae.Arg)
	require.ErrorContains(t, err, want)
}

// TestStackDeployValidateLocalFiles: the compose and env files are read on
// the control machine, so a missing one (or a directory) fails Validate,
// before any host is touched, bound to its argument.
func TestStackDeployValidateLocalFiles(t *testing.T) {
	compose := filepath.Join("testdata", "swarm", "stack.yml")
	env := filepath.Join("testdata", "swarm", "GREETING.env")
	missing := filepath.Join(t.TempDir(), "nope.yml")
	tests := []struct {
		name      string
		m         docker.StackDeploy
		arg, want string
	}{
		{"missing compose", docker.StackDeploy{Name: "s", Compose: []string{compose, missing}}, "compose", missing},
		{"compose is a directory", docker.StackDeploy{Name: "s", Compose: []string{t.TempDir()}}, "compose", "not a regular file"},
		{"missing env file", docker.StackDeploy{Name: "s", Compose: []string{compose}, EnvFiles: []string{missing}}, "env_files", missing},
		{"env file is a directory", docker.StackDeploy{Name: "s", Compose: []string{compose}, EnvFiles: []string{t.TempDir()}}, "env_files", "not a regular file"},
		{"bad name", docker.StackDeploy{Name: "a b", Compose: []string{compose}}, "name", "bad stack name"},
		{"relative remote_dir", docker.StackDeploy{Name: "s", Compose: []string{compose}, RemoteDir: "x"}, "remote_dir", "must be absolute"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			requireArgError(t, tc.m.Validate(), tc.arg, tc.want)
		})
	}
	ok := docker.StackDeploy{Name: "s", Compose: []string{compose}, EnvFiles: []string{env}}
	require.NoError(t, ok.Validate())
}

// TestDockerSecretValidateFile: a missing or directory file fails Validate
// for docker_secret and docker_config alike.
func TestDockerSecretValidateFile(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope")
	present := filepath.Join("testdata", "swarm", "GREETING.env")
	for _, kind := range []struct {
		name string
		mk   func(file string) *docker.DockerSecret
	}{
		{"docker_secret", func(f string) *docker.DockerSecret { return &docker.DockerSecret{Name: "s", File: f} }},
		{"docker_config", func(f string) *docker.DockerSecret {
			m := docker.NewDockerConfig()
			m.Name, m.File = "c", f
			return m
		}},
	} {
		t.Run(kind.name, func(t *testing.T) {
			requireArgError(t, kind.mk(missing).Validate(), "file", missing)
			requireArgError(t, kind.mk(dir).Validate(), "file", "not a regular file")
			require.NoError(t, kind.mk(present).Validate())
		})
	}
	requireArgError(t, (&docker.DockerSecret{File: present}).Validate(), "name", "name is required")
	requireArgError(t, (&docker.DockerSecret{Name: "s", Generate: 5000}).Validate(), "generate", "between 1 and 4096")
}

// TestHostNamers: swarm_init and node_label name inventory hosts, so the
// compiler can check them against the inventory.
func TestHostNamers(t *testing.T) {
	var hn modules.HostNamer = &docker.SwarmInit{Managers: []string{"m1", "m2"}, Workers: []string{"w1"}}
	require.Equal(t, map[string][]string{"managers": {"m1", "m2"}, "workers": {"w1"}}, hn.HostArgs())
	hn = &docker.NodeLabel{Labels: map[string]string{"a": "b"}, Manager: "m1"}
	require.Equal(t, map[string][]string{"manager": {"m1"}}, hn.HostArgs())
	hn = &docker.NodeLabel{Labels: map[string]string{"a": "b"}}
	require.Empty(t, hn.HostArgs(), "no manager named: the play's first manager is used")
}

func TestDockerArgErrors(t *testing.T) {
	tests := []struct {
		name      string
		m         modules.Validator
		arg, want string
	}{
		{"swarm_init without managers", &docker.SwarmInit{}, "managers", "at least one host"},
		{"swarm_init join_timeout", &docker.SwarmInit{Managers: []string{"a"}, JoinTimeout: "soon"}, "join_timeout", "join_timeout"},
		{"node_label mode", &docker.NodeLabel{Labels: map[string]string{"a": "b"}, Mode: "add"}, "mode", "not merge or replace"},
		{"node_label key", &docker.NodeLabel{Labels: map[string]string{"a=b": "c"}}, "labels", "bad label key"},
		{"docker_network name", &docker.DockerNetwork{}, "name", "name is required"},
		{"service_wait services", &docker.ServiceWait{}, "services", "services is required"},
		{"service_wait max_wait", &docker.ServiceWait{Services: []string{"s"}, MaxWait: "soon"}, "max_wait", `max_wait "soon"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			requireArgError(t, tc.m.Validate(), tc.arg, tc.want)
		})
	}
}
