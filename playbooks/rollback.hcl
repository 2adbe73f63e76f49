# Undo a recorded run on every host it changed:
#
#   iklim play playbooks/rollback.hcl -e run=2026-11-21T10-15-04Z [-l PATTERN]
#
# Each host restores the files the run replaced (byte-exact, with mode and
# owner; files the run created are deleted) and undoes module changes from
# their records, newest first, by itself. `iklim rollback --run ID` does the
# same phase by phase across hosts (a later play undone on every host before
# an earlier one): use it when the run's plays depend on each other across
# hosts, as a cluster's nodes depend on its service on the manager. A host
# that changed since the run is refused and its drift listed; -e force=true
# rolls back anyway. Hosts without records of the run report ok. The rollback
# is recorded as a run of its own, so it can be rolled back in turn.
#
# Runs are listed with `iklim backups list`.

variable "run" {
  type        = string
  description = "id of the run to undo, e.g. 2026-11-21T10-15-04Z"
}

variable "force" {
  type        = bool
  default     = false
  description = "roll back even when a host changed since that run"
}

play "rollback" {
  hosts = "all"

  step "roll back run" {
    module = "rollback"
    run    = var.run
    force  = var.force
  }
}
