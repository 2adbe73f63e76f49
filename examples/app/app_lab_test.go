package app_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iklimco/iklim/internal/labtest"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/stock"
	"github.com/iklimco/iklim/playbooks"
	"github.com/iklimco/iklim/runner"
	"github.com/iklimco/iklim/runner/backup"
	"github.com/iklimco/iklim/runner/session"
	"github.com/stretchr/testify/require"
)

const (
	appHost  = "iklim-db-01"
	registry = "iklim-db-02:5000"
)

// TestAppLab is seed 001 end to end on a lab host, through deploy.hcl and
// playbooks/rollback.hcl as `iklim play` runs them (a session, recorded):
// four earlier releases, then A (the endpoint says A; a rerun changes
// nothing), then B (the run directory holds the compose file, the
// compose_up record with the replaced containers, the config brought up and
// the deployment metadata, and run.json; the endpoint says B; after these 7
// deploys the host keeps the last 5 run directories), roll B back (A
// again), and deploy a release whose healthcheck fails (compose_up rolls it
// back and the step names the check; still A).
func TestAppLab(t *testing.T) {
	if testing.Short() && os.Getenv("IKLIM_LAB") != "required" {
		t.Skip("lab tests disabled by -short")
	}
	l := labtest.Require(t)
	pw, err := os.ReadFile(filepath.Join(l.Dir, "registry", "password"))
	if err != nil {
		if os.Getenv("IKLIM_LAB") == "required" {
			t.Fatalf("the lab has no registry (bash internal/lab/lab.sh up starts it): %v", err)
		}
		t.Skipf("the lab has no registry (bash internal/lab/lab.sh up starts it): %v", err)
	}
	password := strings.TrimSpace(string(pw))
	l.LockSwarm(t) // swarm tests restart dockerd
	start := time.Now()
	defer func() { t.Logf("lab time under the swarm lock: %s", time.Since(start).Round(time.Second)) }()

	b := make([]byte, 4)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	dir := "/srv/iklim-apptest-" + id
	image := registry + "/lab/app-" + id
	project := "app" + id
	port := 20000 + int(b[0])<<4 + int(b[1]&0x0f)
	sh := func(cmd string) string {
		t.Helper()
		out, err := l.Exec(t, appHost, "sudo sh -c "+labtest.ShellQuote(cmd))
		require.NoError(t, err, "%s: %s", cmd, out)
		return out
	}
	lbl := "label=com.docker.compose.project=" + project
	t.Cleanup(func() {
		_, _ = l.Exec(t, appHost, "sudo sh -c "+labtest.ShellQuote("docker rm -f $(docker ps -aq --filter "+lbl+") >/dev/null 2>&1; "+
			"docker network rm $(docker network ls -q --filter "+lbl+") >/dev/null 2>&1; "+
			"docker rmi $(docker images -q "+image+") >/dev/null 2>&1; rm -rf "+dir))
	})

	// The releases: one image per tag, built from the lab's busybox and
	// pushed to the lab registry; "bad" serves no /health.
	df, err := os.ReadFile("Dockerfile")
	require.NoError(t, err)
	var build strings.Builder
	fmt.Fprintf(&build, "set -e; mkdir -p %s/build && cd %s/build && printf '%%s' %s > Dockerfile\n", dir, dir, labtest.ShellQuote(string(df)))
	fmt.Fprintf(&build, "printf '%%s' %s | docker --config %s/build login -u iklim --password-stdin %s >/dev/null\n", labtest.ShellQuote(password), dir, registry)
	tags := []string{"1", "2", "3", "4", "A", "B", "bad"}
	for _, tag := range tags {
		healthy := "yes"
		if tag == "bad" {
			healthy = "no"
		}
		fmt.Fprintf(&build, "docker build -q --build-arg VERSION=%s --build-arg HEALTHY=%s -t %s:%s . >/dev/null\n", tag, healthy, image, tag)
		fmt.Fprintf(&build, "docker --config %s/build push -q %s:%s >/dev/null\n", dir, image, tag)
	}
	sh(build.String())
	t.Logf("images built and pushed: %s", time.Since(start).Round(time.Second))

	inv, diags := inventories.LoadStock("lab")
	require.False(t, diags.HasErrors(), "%s", diags)
	h, ok := inv.Host(appHost)
	require.True(t, ok)
	h.BackupRoot = dir + "/backups"
	inv = &inventories.Inventory{Hosts: []*inventories.Host{h}}
	tmp := t.TempDir()
	t.Setenv("IKLIM_STATE_DIR", filepath.Join(tmp, "state"))
	secrets := modules.NewSecrets()
	var mu sync.Mutex
	var events []runner.Event
	s, err := session.New(session.Options{Inventory: inv, Secrets: secrets, Modules: stock.Registry(), // the playbooks use the stock modules
		Control: &inventories.Host{Name: "localhost", Address: "localhost", Local: true, BackupRoot: filepath.Join(tmp, "control")},
		Events:  func(ev runner.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() }})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })

	play := func(file string, vars map[string]string) *runner.Recap {
		t.Helper()
		f, diags := playbooks.Load(file)
		require.False(t, diags.HasErrors(), "%s", diags)
		pb, diags := playbooks.Compile(f, playbooks.Options{Inventory: inv, ExtraVars: vars, Secrets: secrets, Modules: s.Modules()})
		require.False(t, diags.HasErrors(), "%s", diags)
		recap, err := s.Play(context.Background(), pb, session.PlayOptions{})
		require.NoError(t, err)
		return recap
	}
	deploys := 0
	deploy := func(tag string) *runner.Recap {
		t.Helper()
		deploys++
		r := play("deploy.hcl", map[string]string{
			"host": appHost, "tag": tag, "image": image, "registry": registry, "registry_password": password,
			"app_dir": dir + "/app", "project": project, "port": fmt.Sprint(port),
			"git_commit": "c0ffee" + tag, "deployed_at": time.Now().UTC().Format(time.RFC3339),
		})
		t.Logf("deploy %s: %s changed, error %q", tag, fmt.Sprint(r.Changed()), r.Hosts[0].Error)
		return r
	}
	endpoint := func() string {
		t.Helper()
		out, _ := l.Exec(t, appHost, fmt.Sprintf("curl -s -m 5 http://127.0.0.1:%d/", port))
		return strings.TrimSpace(out)
	}

	// 1. Four earlier releases, then A; a rerun of A changes nothing.
	for _, tag := range []string{"1", "2", "3", "4", "A"} {
		r := deploy(tag)
		require.Empty(t, r.Hosts[0].Error)
		require.Equal(t, "version="+tag, endpoint())
	}
	r := deploy("A")
	require.Empty(t, r.Hosts[0].Error)
	require.Zero(t, r.Changed(), "a second deploy of A changes nothing")

	// 2. Deploy B: the endpoint says B and the run directory holds what
	// was deployed.
	runB := deploy("B")
	require.Empty(t, runB.Hosts[0].Error)
	require.Equal(t, "version=B", endpoint())
	rd := backup.RunDir(h.BackupRoot, appHost, runB.RunID)
	var run struct {
		ID        string `json:"id"`
		Started   string `json:"started"`
		GitCommit string `json:"git_commit"`
	}
	require.NoError(t, json.Unmarshal([]byte(sh("cat "+rd+"/run.json")), &run), "run.json")
	require.NotEmpty(t, run.Started)
	recs := sh("cat " + rd + "/changes/*.json")
	var up struct {
		Module string `json:"module"`
		Change struct {
			Files  []string `json:"files"`
			Before struct {
				Containers []struct {
					Service, Ref, Image, Status string
				} `json:"containers"`
				Config   string            `json:"config"`
				Deployed string            `json:"deployed"`
				Metadata map[string]string `json:"metadata"`
			} `json:"before"`
		} `json:"change"`
	}
	dec := json.NewDecoder(strings.NewReader(recs))
	for dec.More() {
		var rec struct {
			Module string          `json:"module"`
			Raw    json.RawMessage `json:"change"`
		}
		require.NoError(t, dec.Decode(&rec))
		if rec.Module == "compose_up" {
			up.Module = rec.Module
			require.NoError(t, json.Unmarshal(rec.Raw, &up.Change))
		}
	}
	require.Equal(t, "compose_up", up.Module, "the run recorded compose_up")
	bf := up.Change.Before
	require.Equal(t, "B", bf.Metadata["image_tag"])
	require.Equal(t, image+":B", bf.Metadata["image"])
	require.Equal(t, "c0ffeeB", bf.Metadata["git_commit"])
	require.NotEmpty(t, bf.Metadata["deployed_at"])
	require.Contains(t, bf.Deployed, "image: "+image+":B", "the config brought up")
	require.Contains(t, bf.Config, "image: "+image+":A", "the config it replaced")
	require.Len(t, bf.Containers, 1)
	require.Equal(t, "running", bf.Containers[0].Status, "the state of the container it replaced")
	require.Equal(t, image+":A", bf.Containers[0].Ref)
	require.Equal(t, []string{dir + "/app/docker-compose.yml"}, up.Change.Files)
	require.NotEmpty(t, strings.TrimSpace(sh("ls "+rd+"/files/")), "the compose file's snapshot")
	after := sh("cat " + rd + "/changes/*.after.json")
	require.Contains(t, after, `"applied"`, "compose_up applied only once the containers were healthy")

	// 5. Seven deploys (one of them changed nothing): the host keeps the
	// last five runs.
	require.Equal(t, 7, deploys)
	runs := strings.Fields(sh("ls " + backup.HostDir(h.BackupRoot, appHost)))
	var ids []string
	for _, name := range runs {
		if backup.ValidRunID(name) {
			ids = append(ids, name)
		}
	}
	require.Len(t, ids, 5, "run directories left: %v", runs)
	require.Contains(t, ids, runB.RunID)

	// 3. iklim play playbooks/rollback.hcl -e run=<B> brings A back.
	r = play("../../playbooks/rollback.hcl", map[string]string{"run": runB.RunID})
	require.Empty(t, r.Hosts[0].Error)
	require.Equal(t, "version=A", endpoint())

	// 4. A release whose healthcheck fails is rolled back by compose_up.
	r = deploy("bad")
	require.Contains(t, r.Hosts[0].Error, "is unhealthy")
	require.Contains(t, r.Hosts[0].Error, "wget")
	require.Contains(t, r.Hosts[0].Error, "rolled back to the previous config")
	require.Equal(t, "version=A", endpoint())

	mu.Lock()
	defer mu.Unlock()
	for _, ev := range events {
		require.NotContains(t, ev.Summary+ev.Error, password, "the registry password leaked into an event")
	}
}
