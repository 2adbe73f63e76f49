package docker_test

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/docker"
	"github.com/stretchr/testify/require"
)

// composeTestFile is a one-service project: busybox httpd serving its TAG,
// with a healthcheck that fails for TAG=bad.
const composeTestFile = `services:
  web:
    image: local/busybox:1
    command: ["sh", "-c", "mkdir -p /www && echo tag=$$TAG > /www/index.html && exec httpd -f -p 8080 -h /www"]
    environment:
      TAG: "${TAG}"
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/ | grep -q tag= && [ \"$$TAG\" != bad ]"]
      interval: 1s
      timeout: 10s
      retries: 3
`

// TestComposeUpLab brings a compose project up on a lab host through the
// engine: check mode, a rerun that changes nothing, a changed env that
// recreates the service (and its diff), a rollback that brings the previous
// config back (after which the first config is unchanged again), a failing
// healthcheck that Apply rolls back by itself, and a rollback of the first
// run that removes the project.
func TestComposeUpLab(t *testing.T) {
	r := requireRegistryLab(t, "iklim-db-01")
	r.lab.LockSwarm(t) // swarm tests restart dockerd
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	project := "itc" + hex.EncodeToString(b)
	dir := r.dir + "/app"
	file := dir + "/docker-compose.yml"
	_, err := r.sh("mkdir -p " + dir + " && cat > " + file + " <<'EOF'\n" + composeTestFile + "EOF")
	require.NoError(t, err)
	lbl := "label=com.docker.compose.project=" + project
	t.Cleanup(func() {
		_, _ = r.sh("docker rm -f $(docker ps -aq --filter " + lbl + ") >/dev/null 2>&1; docker network rm $(docker network ls -q --filter " + lbl + ") >/dev/null 2>&1")
	})
	up := func(tag string) modules.Module {
		return &docker.ComposeUp{Project: project, Files: []string{file}, Env: map[string]string{"TAG": tag}, MaxWait: "40s"}
	}
	// served is the TAG the running container has and its state.
	served := func() string {
		out, _ := r.sh("for c in $(docker ps -aq --filter " + lbl + "); do docker inspect --format '{{.State.Status}} {{range .Config.Env}}{{println .}}{{end}}' $c | grep -E '^(running|exited|created)|^TAG=' | tr '\\n' ' '; done")
		return strings.TrimSpace(out)
	}

	t0 := time.Now()
	lap := func(what string) { t.Logf("%s: %s", what, time.Since(t0).Round(time.Millisecond)); t0 = time.Now() }
	defer lap("end")
	run := r.play(true, "compose_up", up("a"))
	lap("check")
	require.Empty(t, run.err())
	require.Equal(t, []string{"compose " + project + ": create web"}, run.summaries())
	require.Equal(t, "(no containers)\n", run.diffs()[0].Before)
	require.Contains(t, run.diffs()[0].After, "TAG: a")
	require.Empty(t, served(), "check mode starts nothing")

	runA := r.play(false, "compose_up", up("a"))
	lap("up a")
	require.Empty(t, runA.err())
	require.Equal(t, 1, runA.changed())
	require.Equal(t, "running TAG=a", served())
	require.Equal(t, map[string]any{project + "_web_1": "healthy"}, runA.output()["health"])
	state, err := r.sh("stat -c %a " + dir + "/.iklim-compose-" + project + ".yml")
	require.NoError(t, err)
	require.Equal(t, "600", strings.TrimSpace(state), "the kept config may hold env values")

	run = r.play(false, "compose_up", up("a"))
	require.Empty(t, run.err())
	require.Zero(t, run.changed(), "rerun: the running container has the config's hash")

	lap("recheck")
	runB := r.play(false, "compose_up", up("b"))
	lap("up b")
	require.Empty(t, runB.err())
	require.Equal(t, []string{"compose " + project + ": recreate web"}, runB.summaries())
	require.Contains(t, runB.diffs()[0].Before, "TAG: a")
	require.Contains(t, runB.diffs()[0].After, "TAG: b")
	require.Equal(t, "running TAG=b", served())

	run = r.rollback(runB.id)
	lap("rollback b")
	require.Empty(t, run.err())
	require.Equal(t, "running TAG=a", served(), "rollback brings the previous config back")
	run = r.play(true, "compose_up", up("a"))
	require.Empty(t, run.err())
	require.Zero(t, run.changed(), "after the rollback the first config is what runs")

	// A config whose healthcheck fails is rolled back by Apply itself.
	lap("check a")
	bad := r.play(false, "compose_up", up("bad"))
	lap("bad")
	require.Contains(t, bad.err(), "is unhealthy")
	require.Contains(t, bad.err(), project+"_web_1")
	require.Contains(t, bad.err(), "rolled back to the previous config")
	require.Equal(t, "running TAG=a", served())

	run = r.rollback(runA.id)
	require.Empty(t, run.err())
	require.Empty(t, served(), "rolling back the first up removes the project")
}

func TestComposeUpValidate(t *testing.T) {
	for _, tc := range []struct {
		m   docker.ComposeUp
		arg string
	}{
		{docker.ComposeUp{Project: "Bad Name", Files: []string{"/a.yml"}}, "project"},
		{docker.ComposeUp{Project: "app"}, "files"},
		{docker.ComposeUp{Project: "app", Files: []string{"/a.yml"}, MaxWait: "soon"}, "max_wait"},
		{docker.ComposeUp{Project: "app", Files: []string{"/a.yml"}, Env: map[string]string{"A-B": "x"}}, "env"},
	} {
		var ae *modules.ArgError
		require.ErrorAs(t, tc.m.Validate(), &ae, "%+v", tc.m)
		require.Equal(t, tc.arg, ae.Arg)
	}
	err := (&docker.ComposeUp{Project: "app", Files: []string{"rel.yml"}}).Validate()
	require.ErrorContains(t, err, "files")
	require.NoError(t, (&docker.ComposeUp{Project: "app", Files: []string{"/srv/app/a.yml", "/srv/app/b.yml"}, MaxWait: "30s"}).Validate())
}
