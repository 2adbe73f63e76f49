set shell := ["bash", "-euo", "pipefail", "-c"]

# List recipes.
default:
    @just --list

# Build the iklim binary into ./bin.
build:
    go build -o bin/iklim ./cmd/iklim

# Every test, with the race detector (lab-backed tests skip unless the lab is up or IKLIM_LAB=required).
test:
    go vet ./...
    test -z "$(gofmt -l .)" || { gofmt -l .; exit 1; }
    go test -race -shuffle=on -timeout 25m ./...

# Run the example site playbook against the lab twice; the second run must change nothing.
demo: build
    IKLIM_VAR_redis_password=demo-only-password ./bin/iklim play -i inventories/lab.hcl examples/site.hcl
    @echo; echo "second run: must report changed=0 on every host"
    IKLIM_VAR_redis_password=demo-only-password ./bin/iklim play -i inventories/lab.hcl examples/site.hcl | tee /tmp/iklim-demo.out
    ! grep -E 'changed=[1-9]|failed=[1-9]|unreachable=[1-9]' /tmp/iklim-demo.out
    ./bin/iklim backups list -i inventories/lab.hcl

# The six-host lab: up | down | status | images.
lab ACTION="status":
    bash internal/lab/lab.sh {{ACTION}}

# Benchmark iklim against Ansible and the raw SSH floor on HOSTS loopback hosts.
bench HOSTS="100":
    bash bench/run.sh {{HOSTS}}
