package edge_test

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iklimco/iklim/internal/labtest"
	"github.com/iklimco/iklim/inventories"
	"github.com/iklimco/iklim/modules"
	"github.com/iklimco/iklim/modules/edge"
	"github.com/iklimco/iklim/runner/transport"
)

// TestCertReloadContainerOnLab reloads a SWAG-like nginx container (the
// lab's local/nginx:1, host network) on iklim-app-02 with a signal:
// install, verify through the SSH connection, rerun without change.
func TestCertReloadContainerOnLab(t *testing.T) {
	l := labtest.Require(t)
	l.UseDockerd(t)
	const host = "iklim-app-02"
	inv, diags := inventories.Load(l.InventoryPath)
	require.False(t, diags.HasErrors(), diags.Error())
	h, ok := inv.Host(host)
	require.True(t, ok)
	connector := transport.NewSSHConnector(transport.SSHOptions{})
	t.Cleanup(func() { _ = connector.Close() })
	ctx := context.Background()
	c, err := connector.Connect(ctx, h)
	require.NoError(t, err)

	id := fmt.Sprintf("%08x", rand.Uint32())
	name := "edge-swag-" + id
	dir := "/etc/iklim/edge-" + id
	port := 20000 + rand.IntN(20000)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	sh := func(cmd string) string {
		t.Helper()
		res, err := c.Run(ctx, cmd)
		require.NoError(t, err)
		require.NoError(t, res.Err(cmd))
		return res.Stdout
	}
	t.Cleanup(func() {
		_, _ = c.Run(context.Background(), "docker rm -f "+name+" >/dev/null 2>&1; rm -rf "+dir)
	})

	ca := newCA(t)
	src := t.TempDir()
	now := time.Now()
	names := []string{"swag.lab.iklim.test"}
	c0 := ca.issue(t, src, "c0", names, now.Add(-time.Hour), now.AddDate(0, 0, 60))
	c1 := ca.issue(t, src, "c1", names, now.Add(-time.Hour), now.AddDate(0, 0, 90))
	sh("mkdir -p " + dir + "/ssl")
	conf := fmt.Sprintf(`pid %[1]s/nginx.pid;
error_log stderr;
worker_processes 1;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %[1]s/tmp-body; proxy_temp_path %[1]s/tmp-proxy; fastcgi_temp_path %[1]s/tmp-fastcgi;
  uwsgi_temp_path %[1]s/tmp-uwsgi; scgi_temp_path %[1]s/tmp-scgi;
  server {
    listen %[2]s ssl;
    ssl_certificate %[1]s/ssl/fullchain.pem;
    ssl_certificate_key %[1]s/ssl/privkey.pem;
    location / { return 200 "swag ok\n"; }
  }
}
`, dir, addr)
	upload := func(p, content string, mode uint32) {
		require.NoError(t, c.Upload(ctx, p, strings.NewReader(content), modeOf(mode)))
	}
	upload(path.Join(dir, "nginx.conf"), conf, 0o644)
	upload(path.Join(dir, "ssl/fullchain.pem"), mustRead(t, c0.certPath)+mustRead(t, c0.chainPath), 0o644)
	upload(path.Join(dir, "ssl/privkey.pem"), mustRead(t, c0.key), 0o600)
	sh(fmt.Sprintf("docker run -d --name %s --network host -v %s:%s local/nginx:1 nginx -c %s/nginx.conf -g 'daemon off;' >/dev/null", name, dir, dir, dir))

	d := c.(modules.Dialer)
	deadline := time.Now().Add(30 * time.Second)
	for {
		fp, err := edge.ServedFingerprint(ctx, d, addr, names[0])
		if err == nil {
			require.Equal(t, c0.fp, fp)
			break
		}
		require.True(t, time.Now().Before(deadline), "the container never served TLS on %s: %v\n%s", addr, err, sh("docker logs "+name+" 2>&1 | tail -20"))
		time.Sleep(200 * time.Millisecond)
	}

	m := func() *edge.CertReload {
		return &edge.CertReload{SrcCert: c1.certPath, SrcChain: c1.chainPath, SrcKey: c1.key,
			Cert: path.Join(dir, "ssl/fullchain.pem"), Key: path.Join(dir, "ssl/privkey.pem"), Names: names,
			ReloadContainer: name, Verify: addr, VerifyTimeout: "30s"}
	}
	mod := m()
	ch, err := mod.Check(ctx, c)
	require.NoError(t, err)
	require.NotNil(t, ch)
	require.Contains(t, ch.Summary, "reload")
	require.NoError(t, mod.Apply(ctx, c, ch))
	fp, err := edge.ServedFingerprint(ctx, d, addr, names[0])
	require.NoError(t, err)
	require.Equal(t, c1.fp, fp, "SIGHUP made the container's nginx load the new certificate")
	require.Equal(t, true, mod.Output()["reloaded"])

	ch, err = m().Check(ctx, c)
	require.NoError(t, err)
	require.Nil(t, ch, "rerun: no change")
}

// modeOf is an fs.FileMode from Unix permission bits.
func modeOf(m uint32) fs.FileMode { return fs.FileMode(m) }
