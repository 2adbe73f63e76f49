# site.hcl: an example playbook over the lab inventory (inventories/lab.hcl),
# using only the generic modules. It prepares the app's directories and
# config on every swarm node, renders the app and Redis config on the app
# nodes with a sensitive password, checks across hosts that every app node
# got the same config, and keeps a record of each node's kernel on the
# control machine.
#
#   iklim play -i inventories/lab.hcl examples/site.hcl -e redis_password=…
#   IKLIM_VAR_redis_password=… iklim play -i inventories/lab.hcl examples/site.hcl --check --diff
#
# Expressions read var.* (below; -e and IKLIM_VAR_* override defaults),
# local.*, host (name, address, port, user, labels, vars, groups),
# hosts["NAME"], self.REGISTER (this host's results), result["HOST"].REGISTER
# (any host's results) and run.check.

variable "app" {
  description = "Application name: directories and config are named after it."
  default     = "iklimco"
}

variable "image_tag" {
  description = "Image tag the app runs."
  type        = string
  default     = "1.4.2"
}

variable "http_port" {
  type    = number
  default = 8080
}

variable "redis_password" {
  description = "Redis requirepass. Required: -e redis_password=… or IKLIM_VAR_redis_password."
  type        = string
  sensitive   = true # redacted from all output, diffs and backups
}

locals {
  base     = "/srv/${var.app}"
  conf_dir = "${local.base}/conf"
  is_app   = contains(host.groups, "app")
  # The Redis master is the first app node.
  redis_master = hosts["iklim-app-01"].address
}

# Runs never overlap: the lock file lives on the first manager.
lock "site" {
  host = "iklim-app-01"
  wait = "5m"
  ttl  = "2m"
}

play "base" {
  hosts = "swarm"

  step "app directories" {
    module = "file"
    path   = local.conf_dir
    state  = "directory"
    mode   = "0755"
    tags   = ["setup"]
  }

  step "data directory" {
    module = "file"
    path   = "${local.base}/data"
    state  = "directory"
    mode   = "0750"
    when   = local.is_app
    tags   = ["setup"]
  }

  step "motd" {
    module  = "copy"
    dest    = "/etc/iklim/motd" # the lab gives each host its own /etc/iklim
    content = "${host.name}: ${host.labels.role} node of ${var.app} (${host.labels.type})\n"
    mode    = "0644"
    tags    = ["setup"]
  }

  step "max map count" {
    module = "line"
    path   = "/etc/sysctl.d/60-${var.app}.conf"
    regexp = "^vm\\.max_map_count="
    line   = "vm.max_map_count=262144"
    create = true
    tags   = ["setup"]
  }

  step "kernel" {
    module   = "command"
    argv     = ["uname", "-r"]
    changed  = false # read-only: runs in check mode too, so it can be registered
    register = "kernel"
  }
}

play "app config" {
  hosts  = "app"
  serial = 2

  # Run once for the batch; every host of the batch gets the result.
  step "deploy stamp" {
    module   = "shell"
    cmd      = "date -u +%Y-%m-%dT%H:%M:%SZ"
    changed  = false
    run_once = true
    register = "stamp"
  }

  step "app env" {
    module = "template" # Go text/template, rendered on the control machine
    dest   = "${local.conf_dir}/app.env"
    mode   = "0600"
    content = <<-EOT
      IMAGE_TAG={{ .image_tag }}
      HTTP_PORT={{ .http_port }}
      REDIS_URL=redis://:{{ .redis_password }}@{{ .redis_master }}:6379/0
      PEERS={{ .peers }}
    EOT
    vars = {
      image_tag      = var.image_tag
      http_port      = var.http_port
      redis_password = var.redis_password
      redis_master   = local.redis_master
      peers          = join(",", [for h in hosts : h.address if contains(h.groups, "app")])
    }
    tags = ["config"]
  }

  step "redis config" {
    module = "copy"
    dest   = "${local.conf_dir}/redis.conf"
    mode   = "0600"
    content = join("\n", concat(
      ["port 6379", "requirepass ${var.redis_password}", "masterauth ${var.redis_password}"],
      host.name == "iklim-app-01" ? [] : ["replicaof ${local.redis_master} 6379"],
    ))
    tags = ["config"]
  }

  step "app env stat" {
    module   = "stat"
    path     = "${local.conf_dir}/app.env"
    register = "app_env"
  }

  # Reads another host's result: the runner waits for the batch first.
  step "same config as app-01" {
    module = "shell"
    cmd    = "echo 'app.env differs from iklim-app-01' >&2; exit 1"
    when = (!run.check && self.app_env.exists &&
    self.app_env.sha256 != result["iklim-app-01"].app_env.sha256)
  }

  step "app port" {
    module   = "wait_for"
    port     = 22     # sshd; the app itself is deployed by the swarm playbooks
    max_wait = "30s"  # how long wait_for waits; the step meta-argument timeout would bound the whole step
    tags     = ["check"]
  }
}

play "records" {
  hosts = "swarm"

  # On the control machine, once.
  step "records directory" {
    module   = "file"
    delegate = true
    run_once = true
    path     = "/tmp/iklim-site"
    state    = "directory"
    tags     = ["records"]
  }

  # On the control machine in each host's name: one file per host.
  step "kernel record" {
    module   = "copy"
    delegate = true
    dest     = "/tmp/iklim-site/${host.name}.kernel"
    content  = "${host.name} ${trimspace(self.kernel.stdout)}\n"
    tags     = ["records"]
    when     = !run.check
  }
}
