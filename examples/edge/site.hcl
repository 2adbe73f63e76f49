# examples/edge: the edge of seed 000's pipeline on the lab.
#
#  - step 10: a TLS placeholder, created only when no certificate exists;
#  - a SWAG-like nginx on iklim-app-01 serving it;
#  - step 20: the real certificate (what an ACME client wrote) installed with
#    cert_reload: validated, installed atomically, nginx reloaded, and the
#    served certificate checked by a TLS handshake through the SSH connection;
#  - step 23: the A records api, apigw, rabbitmq and grafana pointed at the
#    node, with an RFC 2136 update signed with TSIG to the lab's BIND
#    (named in iklim-db-01, started by `lab.sh up`).
#
#   IKLIM_VAR_tsig_secret="$(cat /var/lib/iklim-lab/bind/tsig.secret)" \
#   iklim play -i inventories/lab.hcl -e cert_dir=/dir/with/fullchain+privkey examples/edge/site.hcl
#
# cert_dir holds fullchain.pem and privkey.pem for app.lab.iklim.test on the
# control machine. The test (edge_lab_test.go) makes one, runs this twice
# (the second run changes nothing) and rolls the first run back.

variable "cert_dir" {}                       # on the control machine: fullchain.pem, privkey.pem
variable "tsig_secret" { sensitive = true }  # /var/lib/iklim-lab/bind/tsig.secret
variable "names" { default = ["app.lab.iklim.test"] }

locals {
  edge  = "/etc/iklim/edge"
  nginx = "nginx -p /etc/iklim/edge -c /etc/iklim/edge/nginx.conf"
}

play "edge" {
  hosts = "iklim-app-01"

  step "edge-dir" {
    module = "file"
    path   = local.edge
    state  = "directory"
    mode   = "0755"
  }
  step "ssl-dir" {
    module = "file"
    path   = "${local.edge}/ssl"
    state  = "directory"
    mode   = "0750"
  }
  step "nginx-conf" {
    module  = "copy"
    dest    = "${local.edge}/nginx.conf"
    content = file("${path.dir}/nginx.conf")
    mode    = "0644"
  }
  step "tls-placeholder" {
    module      = "cert_reload"
    placeholder = true
    names       = var.names
    cert        = "${local.edge}/ssl/fullchain.pem"
    key         = "${local.edge}/ssl/privkey.pem"
  }
  step "nginx" {
    module  = "shell"
    cmd     = "${local.nginx} </dev/null >/dev/null 2>${local.edge}/start.log || { cat ${local.edge}/start.log >&2; exit 1; }"
    creates = "/run/iklim-edge-nginx.pid"
  }
  step "certificate" {
    module         = "cert_reload"
    src_cert       = "${var.cert_dir}/fullchain.pem"
    src_key        = "${var.cert_dir}/privkey.pem"
    cert           = "${local.edge}/ssl/fullchain.pem"
    key            = "${local.edge}/ssl/privkey.pem"
    names          = var.names
    min_days       = 7
    reload_command = "${local.nginx} -s reload"
    verify         = "127.0.0.1:8443"
    verify_name    = var.names[0]
    register       = "cert"
  }
  step "dns" {
    module      = "dns_record"
    delegate    = true
    run_once    = true
    provider    = "rfc2136"
    server      = "10.77.0.21:53"
    zone        = "lab.iklim.test"
    tsig_name   = "iklim-lab"
    tsig_secret = var.tsig_secret
    names       = ["api", "apigw", "rabbitmq", "grafana"]
    values      = [host.address]
  }
}
