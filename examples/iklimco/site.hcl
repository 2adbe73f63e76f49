# examples/iklimco/site.hcl: seed 000's production deploy pipeline
# (.gitea/workflows/deploy-prod.yml, 24 steps under concurrency.group
# prod-deploy) as one iklim playbook, on the six-host lab.
#
#   just demo        # builds, runs it twice (the second must change nothing)
#
#   IKLIM_VAR_registry_password="$(cat /var/lib/iklim-lab/registry/password)" \
#   IKLIM_VAR_tsig_secret="$(cat /var/lib/iklim-lab/bind/tsig.secret)" \
#   iklim play -i inventories/lab.hcl -e cert_dir=DIR examples/iklimco/site.hcl
#
# The CI job is the control machine; the lock "prod-deploy" stands in for
# the workflow's concurrency group, so two pipelines never overlap. Every
# step the deploy tool owns is here, in the seed's order; the seed's step
# number is in each step's comment. The ones the lab cannot have are named
# where they would run, with the reason.
#
# Lab stand-ins: iklim-app-01 is the runner's workspace (/opt/iklim/deploy)
# and SWAG's node (/etc/iklim/swag is SWAG's /config); iklim-db-03 is the
# StorageBox (/srv/storagebox for /mnt/storagebox) and runs the etcd that
# Patroni and APISIX share in prod (lab.sh); the lab's BIND in iklim-db-01
# stands in for GoDaddy's DNS; iklim-db-02:5000 is Harbor.

variable "registry_password" {
  description = "Password of the lab registry's user iklim (/var/lib/iklim-lab/registry/password)."
  sensitive   = true
}
variable "tsig_secret" {
  description = "TSIG secret of the lab's BIND (/var/lib/iklim-lab/bind/tsig.secret); prod: the GoDaddy key."
  sensitive   = true
}
variable "cert_dir" {
  description = "Directory on the control machine with fullchain.pem and privkey.pem for api.<domain>: what SWAG's ACME client wrote."
  type        = string
}
variable "floating_ip" {
  description = "Address the api, apigw, rabbitmq and grafana records point at (prod: the floating IP on the SWAG node)."
  type        = string
  default     = "10.77.0.11"
}
variable "runner" {
  description = "The host that is the CI job's workspace and deploys (a manager)."
  type        = string
  default     = "iklim-app-01"
}
variable "storagebox" {
  description = "The host that stands in for the StorageBox."
  type        = string
  default     = "iklim-db-03"
}
variable "check_sentinel" {
  description = "Run the Sentinel check (it needs swarm service DNS on the app nodes)."
  type        = bool
  default     = true
}
variable "domain" {
  type    = string
  default = "lab.iklim.test"
}
variable "stack" {
  type    = string
  default = "iklimco"
}

locals {
  managers   = [for h in hosts : h.name if contains(h.groups, "managers")]
  workers    = [for h in hosts : h.name if contains(h.groups, "workers")]
  box        = "/srv/storagebox/prod/secrets/iklim.co" # prod: /mnt/storagebox/prod/secrets/iklim.co
  work       = "/opt/iklim/deploy"                      # the job's checkout + fetched env
  swag       = "/etc/iklim/swag"                        # SWAG's /config (prod: on the StorageBox)
  registry   = "iklim-db-02:5000"                       # prod: Harbor
  api_name   = "api.${var.domain}"
  secrets    = ["shared", "swag", "user-service"] # .env.secrets.<name>
}

# All production deploy workflows share concurrency.group prod-deploy.
lock "prod-deploy" {
  host = "iklim-app-01"
  wait = "10m"
  ttl  = "2m"
}

# Seed 1 (checkout) and 3 (SSH key, known_hosts) are the CI job's: the job
# checks this repository out and gives iklim its key and known_hosts
# through the inventory. Swarm membership and node labels are setup 09's
# (seed 004); the pipeline keeps them so that it runs on any lab state.
play "prepare" {
  hosts = "swarm"

  step "swarm membership" {
    module       = "swarm_init"
    managers     = local.managers
    workers      = local.workers
    join_timeout = "90s"
  }
  step "node labels" {
    module         = "node_label"
    from_inventory = true
  }
  # Seed 2: Prepare Folders.
  step "folders" {
    module = "file"
    path   = "/opt/iklim/db-init"
    state  = "directory"
    mode   = "0750"
    when   = contains(host.groups, "db")
  }
  step "workspace" {
    module = "file"
    path   = local.work
    state  = "directory"
    mode   = "0700"
    when   = host.name == var.runner
  }
  # Seed 4: Update Apt Repository and Install Required Tools. jq is what the
  # seed's GoDaddy calls need; installed where the job's scripts run.
  step "tools" {
    module = "apt"
    name   = ["gettext", "tree", "jq"]
    when   = host.name == var.runner
  }
}

# The StorageBox. The first step is the lab's only: it puts the demo env
# files there when they are missing (in prod an operator keeps them).
play "storagebox" {
  hosts = var.storagebox

  step "storagebox (lab)" {
    module  = "shell"
    cmd     = "mkdir -p ${local.box} && cd ${local.box} && umask 077 && printf %s \"$ENV_FILE\" > .env && printf %s \"$SHARED\" > .env.secrets.shared && printf %s \"$SWAG\" > .env.secrets.swag && printf %s \"$USER_SVC\" > .env.secrets.user-service"
    creates = "${local.box}/.env"
    env = {
      ENV_FILE = file("${path.dir}/storagebox/env")
      SHARED   = file("${path.dir}/storagebox/env.secrets.shared")
      SWAG     = file("${path.dir}/storagebox/env.secrets.swag")
      USER_SVC = file("${path.dir}/storagebox/env.secrets.user-service")
    }
  }
  # Seed 5: Fetch Prod Env From Storagebox (.env and .env.secrets.shared).
  # Read-only steps: the content is registered for the workspace play, the
  # secrets files with sensitive_output so no part of them is shown and
  # what is written from them is sealed in backups.
  step "fetch .env" {
    module   = "command"
    argv     = ["cat", "${local.box}/.env"]
    changed  = false
    register = "env"
  }
  step "fetch .env.secrets.shared" {
    module           = "command"
    argv             = ["cat", "${local.box}/.env.secrets.shared"]
    changed          = false
    sensitive_output = true
    register         = "shared"
  }
  # Seed 6: Fetch Service Secret Files (.env.secrets.<svc>, .env.secrets.swag).
  step "fetch .env.secrets.swag" {
    module           = "command"
    argv             = ["cat", "${local.box}/.env.secrets.swag"]
    changed          = false
    sensitive_output = true
    register         = "swag"
  }
  step "fetch .env.secrets.user-service" {
    module           = "command"
    argv             = ["cat", "${local.box}/.env.secrets.user-service"]
    changed          = false
    sensitive_output = true
    register         = "user_service"
  }
}

# Seeds 5 and 6, continued: the fetched files in the job's workspace.
play "workspace" {
  hosts = var.runner

  step ".env" {
    module  = "copy"
    dest    = "${local.work}/.env"
    content = result[var.storagebox].env.stdout
    mode    = "0600"
  }
  step ".env.secrets.shared" {
    module  = "copy"
    dest    = "${local.work}/.env.secrets.shared"
    content = result[var.storagebox].shared.stdout
    mode    = "0600"
  }
  step ".env.secrets.swag" {
    module  = "copy"
    dest    = "${local.work}/.env.secrets.swag"
    content = result[var.storagebox].swag.stdout
    mode    = "0600"
  }
  step ".env.secrets.user-service" {
    module  = "copy"
    dest    = "${local.work}/.env.secrets.user-service"
    content = result[var.storagebox].user_service.stdout
    mode    = "0600"
  }
}

# Seed 7: Prepare Database Init Files, rendered from the prod .env (the seed
# runs envsubst) on the DB nodes. Seed 21 (MongoDB replica set) and 22
# (running these scripts on the Patroni primary and the replica set) are
# not here: the lab has neither Patroni nor MongoDB (no Debian package for
# either server), and faking them would prove nothing.
play "db init files" {
  hosts = "db"

  step "postgres init" {
    module = "template"
    src    = "${path.dir}/templates/postgres-init.sql.tmpl"
    dest   = "/opt/iklim/db-init/01-postgres-init.sql"
    mode   = "0640"
    vars = {
      db   = regex("(?m)^DATABASE_POSTGRES_DB=(.*)$", result[var.storagebox].env.stdout)[0]
      user = regex("(?m)^DATABASE_POSTGRES_USER=(.*)$", result[var.storagebox].env.stdout)[0]
    }
  }
  step "mongodb init" {
    module = "template"
    src    = "${path.dir}/templates/mongo-init.js.tmpl"
    dest   = "/opt/iklim/db-init/01-mongo-init.js"
    mode   = "0640"
    vars   = { db = regex("(?m)^DATABASE_MONGODB_DB=(.*)$", result[var.storagebox].env.stdout)[0] }
  }
}

play "swag and registry" {
  hosts = var.runner

  # Seed 8: Docker Login to Harbor (the password on stdin, never argv).
  step "registry login" {
    module   = "docker_login"
    registry = local.registry
    username = "iklim"
    password = var.registry_password
  }

  # Seed 9: Prepare SWAG Directories: dns-conf and site-confs rendered,
  # node-local SWAG reloaded only if one of them changed.
  step "swag dirs" {
    module = "file"
    path   = "${local.swag}/site-confs"
    state  = "directory"
    mode   = "0755"
  }
  step "swag dns-conf dir" {
    module = "file"
    path   = "${local.swag}/dns-conf"
    state  = "directory"
    mode   = "0700"
  }
  step "swag ssl dir" {
    module = "file"
    path   = "${local.swag}/ssl"
    state  = "directory"
    mode   = "0755"
  }
  step "swag nginx.conf" {
    module   = "copy"
    dest     = "${local.swag}/nginx.conf"
    content  = file("${path.dir}/nginx.conf")
    mode     = "0644"
    register = "nginx_conf"
  }
  step "swag dns-conf" {
    module = "template"
    src    = "${path.dir}/templates/rfc2136.ini.tmpl"
    dest   = "${local.swag}/dns-conf/rfc2136.ini"
    mode   = "0600"
    vars   = { server = "10.77.0.21", tsig_name = "iklim-lab", tsig_secret = var.tsig_secret }
    register = "dns_conf"
  }
  step "swag site-confs" {
    module   = "template"
    src      = "${path.dir}/templates/default.conf.tmpl"
    dest     = "${local.swag}/site-confs/default.conf"
    mode     = "0644"
    vars     = { domain = var.domain, upstream = "apisix:9080" }
    register = "site_conf"
  }
  # SWAG starts with a self-signed certificate until seed 20 installs the
  # real one; existing certificates are never replaced here.
  step "swag placeholder certificate" {
    module      = "cert_reload"
    placeholder = true
    names       = [local.api_name]
    cert        = "${local.swag}/ssl/fullchain.pem"
    key         = "${local.swag}/ssl/privkey.pem"
  }
  step "reload swag" {
    module = "shell"
    cmd    = "c=$(docker ps -q -f label=com.docker.swarm.service.name=${var.stack}_swag); if [ -n \"$c\" ]; then docker kill -s HUP $c >/dev/null; echo reloaded; else echo 'swag not running here'; fi"
    when   = self.nginx_conf.changed || self.dns_conf.changed || self.site_conf.changed
  }
}

# Seed 10: Bootstrap Vault TLS Placeholder, only if missing, on the nodes
# Vault runs on. Vault itself is not deployed: see seed 14 below.
play "vault tls" {
  hosts = "app"

  step "vault tls dir" {
    module = "file"
    path   = "/etc/iklim/vault"
    state  = "directory"
    mode   = "0750"
  }
  step "vault tls placeholder" {
    module      = "cert_reload"
    placeholder = true
    names       = ["vault.${var.domain}", "127.0.0.1"]
    cert        = "/etc/iklim/vault/tls.crt"
    key         = "/etc/iklim/vault/tls.key"
  }
}

play "infra" {
  hosts = var.runner

  # Seed 11: Create Infrastructure Docker Secrets, only if missing,
  # generated on the host from random bytes: no value exists anywhere else
  # and none is shown.
  step "rabbitmq_erlang_cookie" {
    module   = "docker_secret"
    name     = "rabbitmq_erlang_cookie"
    generate = 32
    labels   = { project = "co.iklim" }
  }
  step "redis_password" {
    module   = "docker_secret"
    name     = "redis_password"
    generate = 32
    labels   = { project = "co.iklim" }
  }
  # The fetched SWAG secrets file as a versioned secret: a new version when
  # the StorageBox's file changes, old unused ones pruned.
  step "swag_env" {
    module    = "docker_secret"
    name      = "swag_env"
    value     = result[var.storagebox].swag.stdout
    versioned = true
    keep      = 1
    labels    = { project = "co.iklim" }
    register  = "swag_env"
  }
  # Seed 13: the overlay network. The seed's stack creates it and step 13
  # connects the job's container; here the job is not a container and the
  # stack names the network external, so it is made before the deploy.
  step "overlay network" {
    module     = "docker_network"
    name       = "iklimco-net"
    driver     = "overlay"
    attachable = true
  }
  # Seed 12: Deploy Swarm Stacks: base + prod overlay, only changed
  # services redeployed, a deploy that does not converge put back.
  step "infra stack" {
    module             = "stack_deploy"
    name               = var.stack
    compose            = ["${path.dir}/docker-stack-infra.yml", "${path.dir}/docker-stack-infra.prod.yml"]
    env                = { SWAG_ENV_SECRET = self.swag_env.name } # stack env is sensitive: the name is redacted in output
    resolve_image      = "never" # the local/* images are on every node; the registry one is pulled with the login
    with_registry_auth = true
    converge_timeout   = "300s"
    register           = "stack"
  }
  # Seed 15: Wait for Infrastructure Services.
  step "infra services" {
    module   = "service_wait"
    services = self.stack.services
    max_wait = "180s"
  }
}

# Seed 14: Initialize Production Infrastructure. Its RabbitMQ part: the
# three nodes become one cluster and keep the HA policy. Its Vault part
# (vault-bootstrap.sh: docker-stack-vault.yml, Raft init and unseal) and
# seed 16 (AppRole IDs per service from Vault) are not here: Vault is not
# packaged in Debian and the lab has no image of it.
play "rabbitmq cluster" {
  hosts = "app"

  step "rabbitmq cluster" {
    module       = "rabbit_join"
    seed         = var.runner
    service      = "${var.stack}_rabbitmq"
    start_within = "180s"
    # The seed sets {"queue-type":"quorum"}; Debian's RabbitMQ 3.10 refuses
    # that policy key, so the lab keeps the HA intent with classic mirroring.
    policy "ha-all" {
      pattern    = ".*"
      apply_to   = "queues"
      definition = { "ha-mode" = "all", "ha-sync-mode" = "automatic" }
    }
  }
}

play "redis and env" {
  hosts = var.runner

  # Seed 14/15 for Redis: the Sentinel set agrees on one master.
  step "redis sentinel" {
    module          = "sentinel_check"
    service         = "${var.stack}_redis-sentinel"
    master_name     = "prod-master"
    sentinels       = 3
    replicas        = 2
    password_file   = "/run/secrets/redis_password"
    converge_within = "150s"
    when            = var.check_sentinel
  }
  # Seed 17 first half: what this run learnt goes into the workspace's
  # .env (in prod, seed 16 writes the AppRole IDs into .env.secrets.*).
  step "env: swag secret" {
    module = "line"
    path   = "${local.work}/.env"
    regexp = "^SWAG_ENV_SECRET="
    line   = "SWAG_ENV_SECRET=${result[var.runner].swag_env.name}"
  }
  step "read .env" {
    module   = "command"
    argv     = ["cat", "${local.work}/.env"]
    changed  = false
    register = "env"
  }
  step "read .env.secrets.shared" {
    module           = "command"
    argv             = ["cat", "${local.work}/.env.secrets.shared"]
    changed          = false
    sensitive_output = true
    register         = "shared"
  }
  step "read .env.secrets.swag" {
    module           = "command"
    argv             = ["cat", "${local.work}/.env.secrets.swag"]
    changed          = false
    sensitive_output = true
    register         = "swag"
  }
  step "read .env.secrets.user-service" {
    module           = "command"
    argv             = ["cat", "${local.work}/.env.secrets.user-service"]
    changed          = false
    sensitive_output = true
    register         = "user_service"
  }
}

play "upload and etcd" {
  hosts = var.storagebox

  # Seed 17: Upload Updated Secrets to Storagebox (.env.secrets.* and .env).
  step "upload .env" {
    module  = "copy"
    dest    = "${local.box}/.env"
    content = result[var.runner].env.stdout
    mode    = "0600"
  }
  step "upload .env.secrets.shared" {
    module  = "copy"
    dest    = "${local.box}/.env.secrets.shared"
    content = result[var.runner].shared.stdout
    mode    = "0600"
  }
  step "upload .env.secrets.swag" {
    module  = "copy"
    dest    = "${local.box}/.env.secrets.swag"
    content = result[var.runner].swag.stdout
    mode    = "0600"
  }
  step "upload .env.secrets.user-service" {
    module  = "copy"
    dest    = "${local.box}/.env.secrets.user-service"
    content = result[var.runner].user_service.stdout
    mode    = "0600"
  }
  # Seed 18: Wait for etcd (the one Patroni and APISIX share; lab.sh runs
  # Debian's etcd-server here).
  step "etcd health" {
    module     = "http_check"
    url        = "http://10.77.0.23:2379/health"
    body_regex = "\"health\":\\s*\"true\""
    within     = "60s"
  }
  # Seed 19 (Run APISIX Init, SPRING_PROFILES_ACTIVE=prod) is not here:
  # APISIX is not packaged in Debian and the lab has no image of it.
}

play "edge" {
  hosts = var.runner

  # Seed 20: Bootstrap SWAG Certificate: what the ACME client wrote,
  # validated, installed atomically, SWAG reloaded, and the served
  # certificate checked by a TLS handshake through the SSH connection.
  step "swag certificate" {
    module         = "cert_reload"
    src_cert       = "${var.cert_dir}/fullchain.pem"
    src_key        = "${var.cert_dir}/privkey.pem"
    cert           = "${local.swag}/ssl/fullchain.pem"
    key            = "${local.swag}/ssl/privkey.pem"
    names          = [local.api_name]
    min_days       = 7
    reload_command = "docker kill -s HUP $(docker ps -q -f label=com.docker.swarm.service.name=${var.stack}_swag)"
    verify         = "127.0.0.1:9443"
    verify_name    = local.api_name
  }
  # Seed 23: Update DNS Records: api, apigw, rabbitmq and grafana A records,
  # from the control machine (prod: GoDaddy's API; the lab: its BIND).
  step "dns records" {
    module      = "dns_record"
    delegate    = true
    run_once    = true
    provider    = "rfc2136"
    server      = "10.77.0.21:53"
    zone        = var.domain
    tsig_name   = "iklim-lab"
    tsig_secret = var.tsig_secret
    names       = ["api", "apigw", "rabbitmq", "grafana"]
    values      = [var.floating_ip]
  }
  # Seed 24: Review Environment.
  step "review" {
    module   = "shell"
    cmd      = "docker node ls --format '{{.Hostname}} {{.ManagerStatus}} {{.Status}}'; docker stack services ${var.stack} --format '{{.Name}} {{.Replicas}} {{.Image}}'; docker secret ls --format '{{.Name}} {{.CreatedAt}}'; tree -L 2 ${local.swag}"
    changed  = false
    register = "review"
    tags     = ["review"] # iklim play -t review -v: just the summary
  }
}
