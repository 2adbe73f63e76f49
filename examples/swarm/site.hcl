# examples/swarm/site.hcl: the prod swarm of seed 004 on the lab inventory.
#
# Play 1 brings all swarm hosts into one swarm (the managers group are the
# managers, iklim-app-01 first and so the bootstrap leader; the workers group
# joins as workers) and labels every node from the inventory
# (type = service | db, role = app | db), which the stack's placement
# constraints read. Play 2, on iklim-app-01 only, creates the overlay network
# and the Redis password secret, deploys docker-stack-infra.yml +
# docker-stack-infra.prod.yml as stack "iklimco" (only services that differ
# from what runs are redeployed; a deploy that does not converge is put
# back) and waits for every service.
#
#   iklim play -i inventories/lab.hcl examples/swarm/site.hcl -e redis_password=…
#   IKLIM_VAR_redis_password=… iklim play -i inventories/lab.hcl examples/swarm/site.hcl --check --diff
#   iklim backups list -i inventories/lab.hcl
#   iklim rollback -i inventories/lab.hcl --run RUN_ID
#
# A second run changes nothing. The password goes into the swarm secret only:
# the services read it from /run/secrets/redis_password, and iklim redacts it
# from all output, diffs and backups.

variable "redis_password" {
  description = "Redis password (requirepass, masterauth, sentinel auth-pass). Required: -e redis_password=… or IKLIM_VAR_redis_password."
  type        = string
  sensitive   = true
}

variable "stack" {
  description = "Stack name: services are named <stack>_<service>."
  type        = string
  default     = "iklimco"
}

variable "converge_timeout" {
  description = "How long a deploy may take to converge before it is put back."
  type        = string
  default     = "300s"
}

locals {
  # Inventory groups, in name order: iklim-app-01 is the bootstrap leader.
  managers = [for h in hosts : h.name if contains(h.groups, "managers")]
  workers  = [for h in hosts : h.name if contains(h.groups, "workers")]
}

# Seed 000: every prod deploy shares one concurrency group, prod-deploy.
lock "prod-deploy" {
  host = "iklim-app-01"
  wait = "5m"
  ttl  = "2m"
}

play "swarm" {
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
}

play "infra stack" {
  hosts = "iklim-app-01" # one manager deploys for the whole swarm

  step "overlay network" {
    module     = "docker_network"
    name       = "iklimco-net"
    driver     = "overlay"
    attachable = true
  }

  step "redis password" {
    module = "docker_secret"
    name   = "redis_password"
    value  = var.redis_password
    labels = { project = "co.iklim" }
  }

  step "infra stack" {
    module = "stack_deploy"
    name   = var.stack
    compose = [
      "${path.dir}/docker-stack-infra.yml",
      "${path.dir}/docker-stack-infra.prod.yml",
    ]
    resolve_image      = "never" # local images: there is no registry to ask
    with_registry_auth = false
    converge_timeout   = var.converge_timeout
    register           = "stack"
  }

  step "infra services" {
    module   = "service_wait"
    services = self.stack.services
    max_wait = "120s"
  }
}
