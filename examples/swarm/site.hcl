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
# back) and waits for every service. Play 3 joins the three RabbitMQ nodes
# into one cluster with the HA policy (rabbit_join); play 4 checks that the
# Redis sentinels agree on the master (sentinel_check).
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

variable "rabbitmq_cookie" {
  description = "Erlang cookie every RabbitMQ node shares (the rabbitmq_erlang_cookie secret). Required: -e rabbitmq_cookie=… or IKLIM_VAR_rabbitmq_cookie."
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

  step "rabbitmq cookie" {
    module = "docker_secret"
    name   = "rabbitmq_erlang_cookie"
    value  = var.rabbitmq_cookie
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

# Seed 004 step 6: the three RabbitMQ nodes become one cluster. Every app
# node runs the step against the RabbitMQ task on it (docker exec); the
# seed keeps the policy, the others join it one at a time.
play "rabbitmq cluster" {
  hosts = "app"

  step "rabbitmq cluster" {
    module       = "rabbit_join"
    seed         = "iklim-app-01"
    service      = "${var.stack}_rabbitmq"
    start_within = "180s" # the tasks were just (re)started by the deploy
    register     = "rabbit"

    # The seed sets '{"queue-type":"quorum"}' for ".*". Debian's RabbitMQ
    # 3.10 refuses that key ("not recognised policy settings": 3.10 sets a
    # queue's type only when it is declared, x-queue-type=quorum), so the
    # lab keeps the seed's HA intent with 3.10's classic mirroring.
    policy "ha-all" {
      pattern    = ".*"
      apply_to   = "queues"
      definition = { "ha-mode" = "all", "ha-sync-mode" = "automatic" }
    }
  }
}

# Seed 004 step 5's verification: the three sentinels agree on one master
# with two replicas. Read-only; registers the master for later steps.
play "redis sentinel" {
  hosts = "iklim-app-01" # a manager: it finds the sentinel tasks

  step "redis sentinel" {
    module          = "sentinel_check"
    service         = "${var.stack}_redis-sentinel"
    master_name     = "prod-master"
    sentinels       = 3
    replicas        = 2
    password_file   = "/run/secrets/redis_password"
    converge_within = "150s"
    register        = "redis"
  }
}
