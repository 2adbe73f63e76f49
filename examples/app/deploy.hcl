# examples/app/deploy.hcl: seed 001's application deploy on one host.
#
#   iklim play -i inventories/lab.hcl examples/app/deploy.hcl \
#     -e host=iklim-db-01 -e tag=A -e git_commit=abc1234 -e deployed_at=2026-11-29T04:00:00Z \
#     -e registry_password=…            (or IKLIM_VAR_registry_password)
#   iklim play -i inventories/lab.hcl playbooks/rollback.hcl -e run=RUN_ID
#   iklim backups list -i inventories/lab.hcl
#
# The steps are the seed's: log in to the registry, pull the new image,
# rewrite the image tag in the compose file with a regexp replace, bring the
# project up (compose_up recreates only what changed, waits for the
# containers' healthchecks and, when one fails, brings the previous config
# back and fails naming it), then check the endpoint from the host. Each
# run's backup directory on the host holds the compose file as it was, the
# compose_up record (the config brought up, the containers it replaced and
# the deployment metadata: timestamp, git commit, image) and run.json; the
# host keeps the last 5 runs (backup_keep). The registry password goes to
# docker login on stdin and is redacted everywhere.

variable "host" {
  description = "The inventory host the app runs on."
  type        = string
  default     = "iklim-db-01"
}

variable "tag" {
  description = "Image tag to deploy, e.g. abc1234-1696234567."
  type        = string
}

variable "image" {
  description = "Image repository, without the tag."
  type        = string
  default     = "iklim-db-02:5000/lab/app"
}

variable "registry" {
  description = "Registry host[:port] to log in to."
  type        = string
  default     = "iklim-db-02:5000"
}

variable "registry_user" {
  type    = string
  default = "iklim"
}

variable "registry_password" {
  description = "Registry password (-e registry_password=… or IKLIM_VAR_registry_password)."
  type        = string
  sensitive   = true
}

variable "app_dir" {
  description = "The app's directory on the host (seed: ~/deployment/stacks/application)."
  type        = string
  default     = "/srv/app"
}

variable "project" {
  type    = string
  default = "app"
}

variable "port" {
  description = "Host port the app is published on."
  type        = number
  default     = 8080
}

variable "git_commit" {
  type    = string
  default = "unknown"
}

variable "deployed_at" {
  description = "Deployment timestamp from CI (seed: deployment_timestamp)."
  type        = string
  default     = "unknown"
}

locals {
  compose = "${var.app_dir}/docker-compose.yml"
  config  = "${var.app_dir}/docker"
}

play "deploy" {
  hosts = var.host

  step "app dir" {
    module = "file"
    path   = var.app_dir
    state  = "directory"
    mode   = "0750"
  }

  step "compose template" {
    module  = "copy"
    dest    = "${var.app_dir}/docker-compose.template.yml"
    content = templatefile("${path.dir}/docker-compose.yml.tftpl", { image = var.image, port = var.port })
    mode    = "0644"
  }

  # The compose file lives on the host and is edited in place, as in the
  # seed: created once from the template, then only its image tag changes.
  step "compose file" {
    module  = "shell"
    cmd     = "cp ${var.app_dir}/docker-compose.template.yml ${local.compose}"
    creates = local.compose
  }

  step "registry login" {
    module   = "docker_login"
    registry = var.registry
    username = var.registry_user
    password = var.registry_password
    config   = local.config
  }

  step "pull" {
    module = "docker_image"
    name   = "${var.image}:${var.tag}"
    config = local.config
  }

  step "image tag" {
    module  = "replace"
    path    = local.compose
    regexp  = "^(\\s+image:\\s+${var.image}):\\S+$"
    replace = "\\1:${var.tag}"
  }

  step "up" {
    module   = "compose_up"
    project  = var.project
    files    = [local.compose]
    env      = { APP_GREETING = "hello" }
    max_wait = "60s"
    metadata = {
      deployed_at = var.deployed_at
      git_commit  = var.git_commit
      image       = "${var.image}:${var.tag}"
      image_tag   = var.tag
    }
    register = "up"
  }

  step "health" {
    module     = "http_check"
    url        = "http://127.0.0.1:${var.port}/"
    body_regex = "version=${var.tag}\\b"
    within     = "20s"
  }
}
