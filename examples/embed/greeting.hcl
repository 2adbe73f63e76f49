# A playbook for examples/embed that uses the program's own module,
# greeting, which the program adds to its registry:
#   go run ./examples/embed -playbook examples/embed/greeting.hcl -e dir=/tmp/iklim-embed
variable "dir" {}

play "greet" {
  hosts = "all"
  step "directory" {
    module = "file"
    path   = var.dir
    state  = "directory"
    mode   = "0755"
  }
  step "greeting" {
    module = "greeting"
    path   = "${var.dir}/greeting-${host.name}"
    name   = host.name
  }
}
