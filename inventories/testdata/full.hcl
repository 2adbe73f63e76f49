# A full inventory exercising every attribute. Used by the parse and pattern
# tests: the host order and group shapes matter there.

defaults {
  user               = "iklim"
  port               = 2222
  key                = "~/.ssh/id_ed25519"
  known_hosts        = "~/.ssh/known_hosts"
  trust_on_first_use = false
  proxy_jump         = "jump@bastion:22"
  become             = true
  become_user        = "root"
  backup_root        = "/var/backups/iklim"
  connect_timeout    = "15s"
  vars = {
    stack  = "iklimco"
    nested = { a = 1, b = ["x", "y"] }
  }
  labels = { env = "test" }
}

host "iklim-app-01" {
  address = "192.0.2.11"
  port    = 22
  vars    = { swarm_bootstrap = true }
  labels  = { zone = "a" }
}

host "iklim-app-02" {
  address = "192.0.2.12"
}

host "iklim-app-03" {
  address = "192.0.2.13"
}

host "iklim-db-01" {
  address = "192.0.2.21"
}

host "iklim-db-02" {
  address = "192.0.2.22"
}

host "iklim-db-03" {
  address     = "192.0.2.23"
  user        = upper("admin")
  key         = ""
  become      = false
  become_user = "postgres"
}

host "control" {
  local      = true
  proxy_jump = ""
}

group "app" {
  hosts  = ["iklim-app-01", "iklim-app-02", "iklim-app-03"]
  labels = { type = "service" }
}

group "db" {
  hosts       = ["iklim-db-01", "iklim-db-02", "iklim-db-03"]
  labels      = { type = "db" }
  backup_root = "/srv/backups"
  vars        = { etcd_port = 2379 }
}

group "swarm" {
  children = ["managers", "workers"]
  vars     = { swarm_role = "unknown" }
}

group "managers" {
  hosts = ["iklim-app-01", "iklim-app-02", "iklim-app-03"]
  vars  = { swarm_role = "manager" }
}

group "workers" {
  hosts = ["iklim-db-01", "iklim-db-02", "iklim-db-03"]
  vars  = { swarm_role = "worker" }
}

group "redis" {
  hosts = concat(["iklim-app-01"], ["iklim-app-02", "iklim-app-03"])
  vars = {
    sentinel_quorum = 2
    sentinels       = [for n in [1, 2, 3] : format("sentinel-%d", n)]
  }
}

group "spare" {}
