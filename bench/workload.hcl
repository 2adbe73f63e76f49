# workload.hcl: the benchmark's reference workload, ten steps per host, all
# under the host's own directory ${var.base}/${host.name}. workload.yml is the
# same workload for Ansible, with the equivalent stock modules.
#
#   iklim play -i INVENTORY -f HOSTS -e base=/some/dir bench/workload.hcl
#
# First run: six steps change (two directories, two files, a line, a link).
# Second run: nothing changes. The command and shell steps are declared
# read-only (changed = false), as Ansible's changed_when: false.

variable "base" {
  description = "Directory under which every host gets a directory of its own."
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
    content = "name = ${host.name}\nport = 8080\n"
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
    path   = "${local.d}/app/limits.conf"
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
