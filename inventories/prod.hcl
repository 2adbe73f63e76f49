# prod.hcl: the iklim.co production Docker Swarm.
#
# Six nodes. The three app nodes carry the swarm node label type=service, so
# every infra service placed with `node.labels.type == service` lands on them
# (seed 004): APISIX and its dashboard, the 3-node Vault raft cluster, Redis
# Sentinel (1 master + 2 replicas + 3 sentinels, quorum 2), the 3-node
# RabbitMQ Erlang cluster, Prometheus and Grafana. SWAG and cert-reloader are
# pinned to iklim-app-01. The three DB nodes run Patroni with its 3-node etcd
# (shared with APISIX under /apisix) and the MongoDB replica set, in their own
# stacks.
#
# The app nodes are the swarm managers (three, so raft survives the loss of
# one); the DB nodes join as workers.
#
# ADDRESSES: 192.0.2.0/24 is the RFC 5737 documentation range and reaches
# nothing. Operators replace these addresses with the real ones before the
# first run (or write a site inventory with the same shape).

defaults {
  user               = "iklim"
  port               = 22
  key                = "~/.ssh/id_ed25519"
  known_hosts        = "~/.ssh/known_hosts"
  trust_on_first_use = false
  become             = true
  become_user        = "root"
  backup_root        = "/var/backups/iklim"
  connect_timeout    = "15s"

  vars = {
    stack_name      = "iklimco"
    overlay_network = "iklimco-net"
    # Deploy backups kept per host (seed 001 keeps the last 5).
    backup_keep = 5
  }
}

host "iklim-app-01" {
  address = "192.0.2.11" # replace with the real address
  vars = {
    # The first manager: `docker swarm init` runs here, SWAG and
    # cert-reloader are pinned here, and the other RabbitMQ nodes join it.
    swarm_bootstrap = true
  }
}

host "iklim-app-02" {
  address = "192.0.2.12" # replace with the real address
}

host "iklim-app-03" {
  address = "192.0.2.13" # replace with the real address
}

host "iklim-db-01" {
  address = "192.0.2.21" # replace with the real address
}

host "iklim-db-02" {
  address = "192.0.2.22" # replace with the real address
}

host "iklim-db-03" {
  address = "192.0.2.23" # replace with the real address
}

# Roles by machine.

group "app" {
  hosts  = ["iklim-app-01", "iklim-app-02", "iklim-app-03"]
  labels = { type = "service" } # placement: node.labels.type == service
}

group "db" {
  hosts  = ["iklim-db-01", "iklim-db-02", "iklim-db-03"]
  labels = { type = "db" }
  vars = {
    etcd_client_port = 2379
  }
}

# The swarm.

group "swarm" {
  children = ["managers", "workers"]
}

group "managers" {
  hosts = ["iklim-app-01", "iklim-app-02", "iklim-app-03"]
  vars = {
    swarm_role = "manager"
  }
}

group "workers" {
  hosts = ["iklim-db-01", "iklim-db-02", "iklim-db-03"]
  vars = {
    swarm_role = "worker"
  }
}

# Clustered infra services, by the nodes their replicas run on (max one per
# node, spread across the app nodes).

group "redis" {
  hosts = ["iklim-app-01", "iklim-app-02", "iklim-app-03"]
  vars = {
    redis_sentinel_master = "prod-master"
    redis_sentinel_quorum = 2
    redis_sentinel_port   = 26379
    redis_password_secret = "redis_password"
  }
}

group "rabbitmq" {
  hosts = ["iklim-app-01", "iklim-app-02", "iklim-app-03"]
  vars = {
    # Nodes join the cluster with stop_app / join_cluster / start_app.
    rabbitmq_seed_node     = "rabbit@rabbitmq-iklim-app-01"
    rabbitmq_cookie_secret = "rabbitmq_erlang_cookie"
  }
}
