# workload-steady.hcl: the bench's steady-state workload, as most real
# deploys are: the ten steps of workload.hcl, except that "app config" writes
# a revision into app.conf and "limits line" then adds its line to the same
# file. Run with a different rev each time, these two steps change on every
# run and the other eight do not. workload-steady.yml is the same for Ansible.
#
#   iklim play -i INVENTORY -f HOSTS -e base=/some/dir -e rev=1 bench/workload-steady.hcl

variable "base" {
  description = "Directory under which every host gets a directory of its own."
  type        = string
}

variable "rev" {
  description = "The deploy's revision, written into app.conf."
  type        = string
}

locals {
  d = "${var.base}/${host.name}"
}

play "bench" {
  hosts = "all"

  step "kernel" {
    module   = "command"
    argv     = ["uname", "-r"]
    changed  = false
    register = "kernel"
  }

  step "app directory" {
    module = "file"
    path   = "${local.d}/app"
    state  = "directory"
    mode   = "0755"
  }

  step "app config" {
    module  = "copy"
    dest    = "${local.d}/app/app.conf"
    content = "name = ${host.name}\nport = 8080\nrev = ${var.rev}\n"
    mode    = "0644"
  }

  step "app secret" {
    module  = "copy"
    dest    = "${local.d}/app/secret.env"
    content = "TOKEN=not-a-real-secret\n"
    mode    = "0600"
  }

  step "limits line" {
    module = "line"
    path   = "${local.d}/app/app.conf"
    line   = "max_connections = 100"
    create = true
  }

  step "data directory" {
    module = "file"
    path   = "${local.d}/data"
    state  = "directory"
    mode   = "0750"
  }

  step "config stat" {
    module   = "stat"
    path     = "${local.d}/app/app.conf"
    register = "conf"
  }

  step "config present" {
    module  = "shell"
    cmd     = "test -f ${local.d}/app/app.conf"
    changed = false
  }

  step "current link" {
    module = "file"
    path   = "${local.d}/current"
    state  = "link"
    src    = "${local.d}/app"
  }

  step "noop" {
    module  = "command"
    argv    = ["true"]
    changed = false
  }
}
