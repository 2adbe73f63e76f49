package docker_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/docker"
	"github.com/stretchr/testify/require"
)

// TestDockerImageLab tags the lab's busybox into a fresh repository of the
// lab registry and pushes it, pulls it back after the local tag is gone,
// pushes a second image under the same tag, and rolls each step back; every
// step has a check-mode run that names what it would do and a rerun that
// changes nothing.
func TestDockerImageLab(t *testing.T) {
	r := requireRegistryLab(t, "iklim-app-03")
	r.lab.UseDockerd(t)
	cfg := r.config()
	dk := "docker --config " + cfg
	_, err := r.sh("mkdir -p " + cfg + " && printf '%s' '" + r.password + "' | " + dk + " login -u " + labRegistryUser + " --password-stdin " + labRegistry + " >/dev/null")
	require.NoError(t, err)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := labRegistry + "/itest/img-" + hex.EncodeToString(b) + ":v1"
	localID := func(ref string) string {
		out, _ := r.sh(dk + " image inspect --format '{{.Id}}' " + ref + " 2>/dev/null")
		return strings.TrimSpace(out)
	}
	remoteConfig := func() string {
		out, err := r.sh(dk + " manifest inspect -v " + name)
		if err != nil {
			return ""
		}
		var m struct {
			SchemaV2Manifest struct{ Config struct{ Digest string } }
		}
		require.NoError(t, json.Unmarshal([]byte(out), &m))
		return m.SchemaV2Manifest.Config.Digest
	}
	idA := localID("local/busybox:1")
	require.NotEmpty(t, idA)
	// A second image: busybox with a label, built locally (no network).
	_, err = r.sh("printf 'FROM local/busybox:1\\nLABEL iklim.test=b\\n' | docker build -q -t iklim-itest-b:" + hex.EncodeToString(b) + " - >/dev/null")
	require.NoError(t, err)
	bRef := "iklim-itest-b:" + hex.EncodeToString(b)
	t.Cleanup(func() { _, _ = r.sh("docker rmi -f " + bRef + " " + name + " >/dev/null 2>&1") })
	idB := localID(bRef)
	require.NotEqual(t, idA, idB)

	push := func(from string) modules.Module {
		return &docker.DockerImage{Name: name, From: from, Push: true, Config: cfg}
	}
	pull := func() modules.Module { return &docker.DockerImage{Name: name, Config: cfg} }

	// Tag and push A.
	run := r.play(true, "docker_image", push("local/busybox:1"))
	require.Empty(t, run.err())
	require.Equal(t, []string{"tag local/busybox:1 as " + name + " (" + idA[:19] + "), then push " + name + " (image " + idA[:19] + "; the registry has nothing)"}, run.summaries())
	require.Empty(t, localID(name), "check mode tags nothing")
	require.Empty(t, remoteConfig(), "check mode pushes nothing")
	pushA := r.play(false, "docker_image", push("local/busybox:1"))
	require.Empty(t, pushA.err())
	require.Equal(t, idA, localID(name))
	require.Equal(t, idA, remoteConfig(), "the registry has image A")
	run = r.play(false, "docker_image", push("local/busybox:1"))
	require.Empty(t, run.err())
	require.Zero(t, run.changed(), "rerun: same image locally and in the registry")

	// Pull it back once the local tag is gone; check mode names the digest.
	_, err = r.sh(dk + " rmi " + name + " >/dev/null")
	require.NoError(t, err)
	out, err := r.sh(dk + " manifest inspect -v " + name)
	require.NoError(t, err)
	var man struct{ Descriptor struct{ Digest string } }
	require.NoError(t, json.Unmarshal([]byte(out), &man))
	run = r.play(true, "docker_image", pull())
	require.Empty(t, run.err())
	require.Equal(t, []string{"pull " + name + " (" + man.Descriptor.Digest + ")"}, run.summaries())
	require.Empty(t, localID(name))
	pulled := r.play(false, "docker_image", pull())
	require.Empty(t, pulled.err())
	require.Equal(t, idA, localID(name))
	require.Equal(t, man.Descriptor.Digest, pulled.output()["digest"])
	run = r.play(false, "docker_image", pull())
	require.Empty(t, run.err())
	require.Zero(t, run.changed(), "rerun: the local image is the registry's")

	// Push B under the same tag, then point the local tag back at A: a
	// pull brings B (by digest, not by tag).
	pushB := r.play(false, "docker_image", push(bRef))
	require.Empty(t, pushB.err())
	require.Equal(t, idB, remoteConfig())
	_, err = r.sh(dk + " tag local/busybox:1 " + name)
	require.NoError(t, err)
	pullB := r.play(false, "docker_image", pull())
	require.Empty(t, pullB.err())
	require.Equal(t, 1, pullB.changed())
	require.Equal(t, idB, localID(name))

	// Rollbacks, newest first.
	run = r.rollback(pullB.id)
	require.Empty(t, run.err())
	require.Equal(t, idA, localID(name), "the local tag points at A again")
	run = r.rollback(pushB.id)
	require.Empty(t, run.err())
	require.Equal(t, idA, remoteConfig(), "the registry has A again, re-pushed")
	run = r.rollback(pulled.id)
	require.Empty(t, run.err())
	require.Empty(t, localID(name), "the tag the pull made is gone")
}

func TestDockerImageValidate(t *testing.T) {
	for _, tc := range []struct {
		m   docker.DockerImage
		arg string
	}{
		{docker.DockerImage{Name: "Bad/Name"}, "name"},
		{docker.DockerImage{Name: "r/x:1", From: "not valid!"}, "from"},
	} {
		var ae *modules.ArgError
		require.ErrorAs(t, tc.m.Validate(), &ae, "%+v", tc.m)
		require.Equal(t, tc.arg, ae.Arg)
	}
	require.NoError(t, (&docker.DockerImage{Name: "iklim-db-02:5000/lab/busybox:1", From: "local/busybox:1", Push: true}).Validate())
	require.NoError(t, (&docker.DockerImage{Name: "registry.example.com/framework"}).Validate())
}
