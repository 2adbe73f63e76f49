set shell := ["bash", "-euo", "pipefail", "-c"]

# List recipes.
default:
    @just --list

# Build the iklim binary into ./bin.
build:
    go build -o bin/iklim ./cmd/iklim

# Every test, with the race detector (lab-backed tests skip unless the lab is up or IKLIM_LAB=required).
# -p 8: the lab tests of several packages wait on the lab's swarm lock, and
# with only as many package slots as cores they would hold every slot while
# waiting, so the packages that need no lab would queue behind them.
test:
    go vet ./...
    test -z "$(gofmt -l .)" || { gofmt -l .; exit 1; }
    go test -race -shuffle=on -p 8 -timeout 60m ./...

# The main job: seed 000's production pipeline (examples/iklimco/site.hcl) on
# the lab, twice (the second run must change nothing), then --check --diff
# of one edited input (a copy in a temp dir), then the backups. Holds the
# lab's swarm lock, so it never overlaps a swarm test.
demo: build
    #!/usr/bin/env bash
    set -euo pipefail
    lab=${IKLIM_LAB_DIR:-/var/lib/iklim-lab}
    exec 8>"$lab/.swarm-test.lock"
    flock -w 900 8 || { echo "demo: the lab's swarm is busy (swarm lock)"; exit 1; }
    # A lab run that was killed may have left the deploy lock; every lab
    # user of it holds the swarm lock, so a lock still there is a leftover.
    # Without --force, release refuses a holder that still heartbeats.
    ./bin/iklim lock release --host iklim-app-01 -i inventories/lab.hcl prod-deploy >/dev/null 2>&1 || true
    # The lab's stand-in for what SWAG's ACME client wrote: a certificate
    # for api.lab.iklim.test, renewed when it has under 14 days left.
    acme=$lab/acme
    mkdir -p "$acme" && chmod 0700 "$acme"
    if ! openssl x509 -checkend 1209600 -noout -in "$acme/fullchain.pem" >/dev/null 2>&1; then
        (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 \
            -subj /CN=api.lab.iklim.test -addext subjectAltName=DNS:api.lab.iklim.test \
            -keyout "$acme/privkey.pem" -out "$acme/fullchain.pem" 2>/dev/null)
    fi
    export IKLIM_VAR_registry_password="$(cat "$lab/registry/password")"
    export IKLIM_VAR_tsig_secret="$(cat "$lab/bind/tsig.secret")"
    play() { ./bin/iklim play -i inventories/lab.hcl -e cert_dir="$acme" "$@"; }
    t0=$(date +%s.%N)
    play examples/iklimco/site.hcl
    t1=$(date +%s.%N)
    echo; echo "second run: must report changed=0 on every host"
    play examples/iklimco/site.hcl | tee /tmp/iklim-demo.out
    t2=$(date +%s.%N)
    if grep -E 'changed=[1-9]|failed=[1-9]|unreachable=[1-9]' /tmp/iklim-demo.out; then
        echo "demo: the second run changed something or failed"; exit 1
    fi
    echo; echo "review (seed 24): what runs"
    play -t review -v examples/iklimco/site.hcl | sed -n '/review/,/RECAP/p'
    awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "\nwall time: first run %.1f s, second run %.1f s\n", b - a, c - b }'
    # One input edited, in a copy: --check --diff shows exactly that change.
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    cp -r examples/iklimco "$tmp/"
    sed -i 's/return 200 "iklimco edge:/return 200 "iklimco edge (canary):/' "$tmp/iklimco/templates/default.conf.tmpl"
    echo; echo "edited in a copy: $tmp/iklimco/templates/default.conf.tmpl"
    diff -u examples/iklimco/templates/default.conf.tmpl "$tmp/iklimco/templates/default.conf.tmpl" || true
    echo; echo "--check --diff of the edited copy: only the site-conf (and the SWAG reload it triggers) would change"
    play --check --diff "$tmp/iklimco/site.hcl" | tee /tmp/iklim-demo-check.out
    grep -q 'canary' /tmp/iklim-demo-check.out || { echo "demo: the diff does not show the edit"; exit 1; }
    grep -E '^iklim-' /tmp/iklim-demo-check.out | grep -vE '^iklim-app-01 .*changed=2 ' | grep -E 'changed=[1-9]|failed=[1-9]' && { echo "demo: --check saw more than the edit"; exit 1; }
    echo; ./bin/iklim backups list -i inventories/lab.hcl

# The six-host lab: up | down | status | images.
lab ACTION="status":
    bash internal/lab/lab.sh {{ACTION}}

# Benchmark iklim against Ansible and the raw SSH floor on HOSTS loopback hosts.
bench HOSTS="100":
    bash bench/run.sh {{HOSTS}}

# The swarm site on the lab: N no-change runs against a plain `docker stack deploy` (holds the swarm lock; resets the swarm).
bench-swarm N="3":
    bash bench/swarm.sh {{N}}
