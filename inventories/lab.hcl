# lab.hcl: the six-host lab on this machine (`just lab up`, or
# `bash internal/lab/lab.sh up`; see internal/lab/README.md).
#
# Each host is a network + mount + UTS namespace on the bridge iklimlab0
# (10.77.0.1/24) with its own OpenSSH sshd on port 22 and its own dockerd.
# Same roles as prod.hcl (seed 004): the app nodes carry type=service and are
# the swarm managers; the db nodes carry type=db and join as workers.

defaults {
  user        = "iklim"
  port        = 22
  key         = "/var/lib/iklim-lab/id_ed25519"
  known_hosts = "/var/lib/iklim-lab/known_hosts"
  become      = true
  backup_root = "/var/backups/iklim"
}

host "iklim-app-01" {
  address = "10.77.0.11"
  labels  = { type = "service", role = "app" }
  vars    = {}
}

host "iklim-app-02" {
  address = "10.77.0.12"
  labels  = { type = "service", role = "app" }
  vars    = {}
}

host "iklim-app-03" {
  address = "10.77.0.13"
  labels  = { type = "service", role = "app" }
  vars    = {}
}

host "iklim-db-01" {
  address = "10.77.0.21"
  labels  = { type = "db", role = "db" }
  vars    = {}
}

host "iklim-db-02" {
  address = "10.77.0.22"
  labels  = { type = "db", role = "db" }
  vars    = {}
}

host "iklim-db-03" {
  address = "10.77.0.23"
  labels  = { type = "db", role = "db" }
  vars    = {}
}

group "app"      { hosts = ["iklim-app-01", "iklim-app-02", "iklim-app-03"] }
group "db"       { hosts = ["iklim-db-01", "iklim-db-02", "iklim-db-03"] }
group "managers" { hosts = ["iklim-app-01", "iklim-app-02", "iklim-app-03"] }
group "workers"  { hosts = ["iklim-db-01", "iklim-db-02", "iklim-db-03"] }
group "swarm"    { children = ["managers", "workers"] }
