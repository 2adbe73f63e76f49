#!/usr/bin/env bash
# bench/run.sh [HOSTS]: benchmark iklim against Ansible and the raw SSH floor
# on HOSTS loopback hosts (default 100) served by OpenSSH sshd (one per 250
# hosts), optionally behind a delaying proxy.
#
# Everything lives in a temp dir (sshd config, host key, client key,
# known_hosts, inventories, the hosts' files, logs) that is removed at the end;
# sshd is stopped by its pid. See bench/README.md.
#
# Environment:
#   BENCH_SKIP_ANSIBLE=1   skip Ansible (at 500 hosts it takes ~10 minutes)
#   BENCH_PORT=2299        first port tried for sshd (the next free one is used)
#   BENCH_REPEAT=3         floor runs, iklim no-change and steady-state runs,
#                          and further first runs on fresh hosts, taken in
#                          turns (so that all see the same background load);
#                          the medians are reported
#   BENCH_KEEP=1           keep the temp dir (logs) instead of removing it
#   BENCH_ANSIBLE_STRATEGY=linear  Ansible strategy (linear or free)
#   BENCH_HANDSHAKES=64    iklim --max-handshakes (sshd here allows 400 at once)
#   BENCH_IKLIM_FLAGS=...  extra flags for `iklim play`
#   BENCH_HOSTS_PER_SSHD=250  hosts per sshd: more hosts are sharded over
#                          several sshds, each on its own port (one sshd's
#                          MaxStartups cannot take 1000 handshakes at once)
#   BENCH_RTT_MS=0         when > 0, every host is behind bench/delayproxy
#                          adding this round-trip time (no netem here)
set -euo pipefail

HOSTS=${1:-100}
[[ $HOSTS =~ ^[0-9]+$ ]] && ((HOSTS >= 1 && HOSTS <= 60000)) || { echo "bench: HOSTS must be a number from 1 to 60000" >&2; exit 2; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=${BENCH_PORT:-2299}
SKIP_ANSIBLE=${BENCH_SKIP_ANSIBLE:-0}
REPEAT=${BENCH_REPEAT:-3}
STRATEGY=${BENCH_ANSIBLE_STRATEGY:-linear}
HANDSHAKES=${BENCH_HANDSHAKES:-64}
PER_SSHD=${BENCH_HOSTS_PER_SSHD:-250}
RTT_MS=${BENCH_RTT_MS:-0}
[[ $PER_SSHD =~ ^[0-9]+$ && $PER_SSHD -ge 1 && $RTT_MS =~ ^[0-9]+$ ]] || { echo "bench: BENCH_HOSTS_PER_SSHD and BENCH_RTT_MS must be numbers" >&2; exit 2; }
SHARDS=$(((HOSTS + PER_SSHD - 1) / PER_SSHD))
IKLIM_FLAGS="-f $HOSTS --max-handshakes $HANDSHAKES ${BENCH_IKLIM_FLAGS:-}"
BENCH_USER=iklimtest
SSHD=/usr/sbin/sshd

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# --- requirements -----------------------------------------------------------
((EUID == 0)) || die "run as root (sshd, and logging in as $BENCH_USER)"
need_apt=()
[[ -x $SSHD ]] || need_apt+=(openssh-server)
command -v ssh-keygen >/dev/null || need_apt+=(openssh-client)
if [[ $SKIP_ANSIBLE != 1 ]] && ! command -v ansible-playbook >/dev/null; then need_apt+=(ansible-core); fi
if ((${#need_apt[@]})); then
  say "installing ${need_apt[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null; }
fi
command -v go >/dev/null || die "go is not on PATH"
# The login user's shell is /bin/sh: root's bash loads pyenv on every
# session, which serialises parallel sessions (see /work/shared/LAB.md).
if ! id "$BENCH_USER" >/dev/null 2>&1; then
  say "creating user $BENCH_USER (shell /bin/sh)"
  useradd -m -s /bin/sh "$BENCH_USER"
fi
usermod -s /bin/sh -p '*' "$BENCH_USER" # unlocked: with UsePAM no, '!' refuses keys
mkdir -p /run/sshd

# --- temp dir and cleanup ---------------------------------------------------
TMP=$(mktemp -d /tmp/iklim-bench.XXXXXX)
chmod 755 "$TMP" # sshd reads authorized_keys as the login user
SSHD_PIDS=()    # the sshd listeners (pid 1 of their pid namespaces)
UNSHARE_PIDS=() # their unshare parents
PORTS=()        # sshd ports, one per shard
PPORTS=()       # the proxy's ports, one per shard (BENCH_RTT_MS > 0)
PROXY_PID=
CGROOT=
children_of() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }
stop_sshd() {
  local i kids
  for i in "${!SSHD_PIDS[@]}"; do
    # Connections end when their clients exit; give them a moment, then end
    # the listener's remaining children and the listener, all by pid. The
    # listener is its pid namespace's init: when it exits, the kernel ends
    # whatever is left in the namespace.
    for _ in $(seq 50); do [[ -z $(children_of "${SSHD_PIDS[i]}") ]] && break; sleep 0.1; done
    kids=$(children_of "${SSHD_PIDS[i]}")
    [[ -z $kids ]] || kill -TERM $kids 2>/dev/null || true
    kill -TERM "${SSHD_PIDS[i]}" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "${SSHD_PIDS[i]}" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "${SSHD_PIDS[i]}" 2>/dev/null || true
    wait "${UNSHARE_PIDS[i]}" 2>/dev/null || true
  done
  SSHD_PIDS=() UNSHARE_PIDS=()
}
stop_proxy() {
  [[ -n $PROXY_PID ]] || return 0
  kill -TERM "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
  PROXY_PID=
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_proxy
  stop_sshd
  if [[ -n $CGROOT ]]; then
    rmdir "$CGROOT"/*/ 2>/dev/null || true
    rmdir "$CGROOT" 2>/dev/null || say "could not remove cgroup $CGROOT"
  fi
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then say "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$TMP"/{bin,logs,m,state,remote/iklim,remote/steady,remote/ansible,backups,ansible-local,ansible-remote-tmp}
chown "$BENCH_USER" "$TMP"/remote/iklim "$TMP"/remote/steady "$TMP"/remote/ansible "$TMP"/backups "$TMP"/ansible-remote-tmp

# --- build ------------------------------------------------------------------
say "building iklim, floor, timeit, delayproxy and report"
(cd "$ROOT" && go build -o "$TMP/bin/iklim" ./cmd/iklim && go build -o "$TMP/bin/floor" ./bench/floor &&
  go build -o "$TMP/bin/timeit" ./bench/timeit && go build -o "$TMP/bin/report" ./bench/report &&
  go build -o "$TMP/bin/delayproxy" ./bench/delayproxy)

# --- keys, hosts, sshd ------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -C 'iklim bench host' -f "$TMP/ssh_host_ed25519_key"
ssh-keygen -q -t ed25519 -N '' -C 'iklim bench client' -f "$TMP/id_ed25519"
cp "$TMP/id_ed25519.pub" "$TMP/authorized_keys"
chmod 644 "$TMP/authorized_keys"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# free_port N: the first port from N on that nothing listens on and that is
# not taken by this run already.
free_port() {
  local p=$1
  while port_busy "$p" || [[ " ${PORTS[*]} ${PPORTS[*]} " == *" $p "* ]]; do p=$((p + 1)); done
  echo "$p"
}
for ((s = 0; s < SHARDS; s++)); do
  PORTS[s]=$(free_port "$PORT")
  if ((RTT_MS > 0)); then PPORTS[s]=$(free_port $((PORTS[s] + 1000))); else PPORTS[s]=${PORTS[s]}; fi
done
PORT=${PORTS[0]}

width=${#HOSTS}; ((width < 3)) && width=3
hostkey=$(cut -d' ' -f1,2 "$TMP/ssh_host_ed25519_key.pub")
: >"$TMP/hosts.txt"
{
  printf 'defaults {\n  user        = "%s"\n  key         = "%s"\n  known_hosts = "%s"\n}\n' \
    "$BENCH_USER" "$TMP/id_ed25519" "$TMP/known_hosts"
} >"$TMP/inventory.hcl"
printf '[all]\n' >"$TMP/hosts.ini"
: >"$TMP/known_hosts"
# Host i is served by shard i % SHARDS; clients connect to the shard's proxy
# port when there is a proxy, else to its sshd.
for ((i = 0; i < HOSTS; i++)); do
  addr="127.0.$((1 + i / 254)).$((1 + i % 254))"
  name=$(printf "h%0${width}d" $((i + 1)))
  port=${PPORTS[i % SHARDS]}
  echo "$addr:$port" >>"$TMP/hosts.txt"
  echo "[$addr]:$port $hostkey" >>"$TMP/known_hosts"
  printf 'host "%s" {\n  address     = "%s"\n  port        = %d\n  backup_root = "%s"\n}\n' "$name" "$addr" "$port" "$TMP/backups/$name" >>"$TMP/inventory.hcl"
  printf '%s ansible_host=%s ansible_port=%d\n' "$name" "$addr" "$port" >>"$TMP/hosts.ini"
done
chmod 644 "$TMP/known_hosts"
# The first runs after iklim1 are on fresh hosts too: directories and
# backup roots of their own (inventory-firstN.hcl).
for ((r = 1; r <= REPEAT; r++)); do
  sed "s#$TMP/backups/#$TMP/backups-first$r/#" "$TMP/inventory.hcl" >"$TMP/inventory-first$r.hcl"
  mkdir -p "$TMP/backups-first$r" "$TMP/remote/first$r"
  chown "$BENCH_USER" "$TMP/backups-first$r" "$TMP/remote/first$r"
done

cat >"$TMP/sshd_config" <<EOF
ListenAddress 0.0.0.0
AddressFamily inet
HostKey $TMP/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile $TMP/authorized_keys
UsePAM no
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers $BENCH_USER
MaxStartups 400:30:800
MaxSessions 20
MaxAuthTries 20
UseDNS no
PrintMotd no
PrintLastLog no
Subsystem sftp internal-sftp
LogLevel ERROR
EOF
# OpenSSH 9.8+ penalises sources that drop connections; bookworm's 9.2 lacks
# the option, so keep it only when this sshd accepts it.
echo "PerSourcePenalties no" >>"$TMP/sshd_config"
"$SSHD" -t -f "$TMP/sshd_config" 2>/dev/null || sed -i '/^PerSourcePenalties/d' "$TMP/sshd_config"
"$SSHD" -t -f "$TMP/sshd_config"

# CPU time is read from cgroup v2 when there is one: a cgroup for sshd
# (every server-side process of every run) and one per measured run, created
# under this shell's own cgroup so that the accounting above is unchanged.
cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
cgrel=$(awk -F: '$1 == "0" { print $3 }' /proc/self/cgroup)
if [[ -n $cg2 && -n $cgrel ]] && mkdir "$cg2${cgrel%/}/iklim-bench-$$" 2>/dev/null; then
  CGROOT=$cg2${cgrel%/}/iklim-bench-$$
  mkdir "$CGROOT/sshd"
else
  say "no cgroup v2: CPU times come from getrusage, server CPU from sshd's reaped children"
fi

# Each sshd runs as the init of a pid namespace of its own, so that the
# namespace's last pid counts every process it spawned (see remote_pids).
for ((s = 0; s < SHARDS; s++)); do
  unshare --pid --fork --kill-child "$SSHD" -D -e -f "$TMP/sshd_config" -p "${PORTS[s]}" 2>"$TMP/logs/sshd$s.log" &
  UNSHARE_PIDS[s]=$!
  [[ -z $CGROOT ]] || echo "${UNSHARE_PIDS[s]}" >"$CGROOT/sshd/cgroup.procs"
  for _ in $(seq 100); do
    SSHD_PIDS[s]=$(children_of "${UNSHARE_PIDS[s]}" | awk '{ print $1 }')
    [[ -n ${SSHD_PIDS[s]} ]] && break
    sleep 0.02
  done
  [[ -n ${SSHD_PIDS[s]} ]] || die "sshd did not start: $(cat "$TMP/logs/sshd$s.log")"
  [[ -z $CGROOT ]] || echo "${SSHD_PIDS[s]}" >"$CGROOT/sshd/cgroup.procs"
  for _ in $(seq 100); do port_busy "${PORTS[s]}" && break; kill -0 "${SSHD_PIDS[s]}" 2>/dev/null || die "sshd exited: $(cat "$TMP/logs/sshd$s.log")"; sleep 0.05; done
  port_busy "${PORTS[s]}" || die "sshd does not listen on port ${PORTS[s]}"
done
SSHD_LIST=$(IFS=,; echo "${SSHD_PIDS[*]}")
say "$SHARDS sshd (pids $SSHD_LIST) on ports ${PORTS[*]}; $HOSTS hosts 127.0.1.1 … $(tail -n1 "$TMP/hosts.txt"); temp dir $TMP"

if ((RTT_MS > 0)); then
  pmap=
  for ((s = 0; s < SHARDS; s++)); do pmap+="${pmap:+,}${PPORTS[s]}=${PORTS[s]}"; done
  "$TMP/bin/delayproxy" -rtt "${RTT_MS}ms" -map "$pmap" -stats "$TMP/proxy.json" 2>"$TMP/logs/proxy.log" &
  PROXY_PID=$!
  for _ in $(seq 100); do port_busy "${PPORTS[SHARDS - 1]}" && break; sleep 0.05; done
  port_busy "${PPORTS[SHARDS - 1]}" || die "delayproxy does not listen: $(cat "$TMP/logs/proxy.log")"
  say "delayproxy pid $PROXY_PID adds ${RTT_MS} ms round-trip time on ports ${PPORTS[*]}"
fi

# remote_pids prints the sum over the sshds of their pid namespace's last
# pid. Pids are handed out in order, so between two readings it grows by the
# number of processes (and threads) spawned for the clients, plus one for
# the reading itself (cat runs in the namespace).
PID_MAX=$(cat /proc/sys/kernel/pid_max)
remote_pids() {
  local p sum=0
  for p in "${SSHD_PIDS[@]}"; do sum=$((sum + $(nsenter -t "$p" -p cat /proc/sys/kernel/ns_last_pid))); done
  echo "$sum"
}
# proxy_stats FILE: have the proxy write its counters and copy them to FILE.
proxy_stats() {
  local old=-1 new
  [[ -s $TMP/proxy.json ]] && old=$(jq .seq "$TMP/proxy.json")
  kill -USR1 "$PROXY_PID"
  for _ in $(seq 200); do
    new=$(jq .seq "$TMP/proxy.json" 2>/dev/null || echo "$old")
    [[ $new != "$old" ]] && break
    sleep 0.02
  done
  cp "$TMP/proxy.json" "$1"
}

# --- runs -------------------------------------------------------------------
# measure NAME CMD…: run CMD under timeit, output to logs/NAME.log, result to
# m/NAME.json. A failing run is recorded, not fatal: the report shows it.
measure() {
  local name=$1
  shift
  say "run $name"
  local cg=() before after
  [[ -z $CGROOT ]] || cg=(-cgroup "$CGROOT/$name" -server-cgroup "$CGROOT/sshd")
  [[ -z $PROXY_PID ]] || proxy_stats "$TMP/m/$name.proxy0.json"
  before=$(remote_pids)
  "$TMP/bin/timeit" -o "$TMP/m/$name.json" -sshd-pid "$SSHD_LIST" "${cg[@]}" -- "$@" >"$TMP/logs/$name.log" 2>&1 ||
    say "$name exited with status $? (see the report)"
  after=$(remote_pids)
  # Minus one reading per sshd; a namespace's pids wrap at pid_max (to 300).
  local n=$((after - before - SHARDS))
  ((n >= 0)) || n=$((n + PID_MAX - 300))
  echo "$n" >"$TMP/m/$name.procs"
  [[ -z $PROXY_PID ]] || proxy_stats "$TMP/m/$name.proxy1.json"
}

unset SSH_AUTH_SOCK # both tools log in with the bench key only

export IKLIM_STATE_DIR=$TMP/state
# shellcheck disable=SC2206 # IKLIM_FLAGS splits into flags
iklim_play=("$TMP/bin/iklim" play -i "$TMP/inventory.hcl" $IKLIM_FLAGS -e base="$TMP/remote/iklim" "$ROOT/bench/workload.hcl")
# shellcheck disable=SC2206
steady_play=("$TMP/bin/iklim" play -i "$TMP/inventory.hcl" $IKLIM_FLAGS -e base="$TMP/remote/steady" "$ROOT/bench/workload-steady.hcl")
# iklim1 is the first run; iklim2… are no-change runs, steady1… steady state
# runs (2 of 10 steps change) and first1… first runs on fresh hosts, in
# turns with the floor. steady0 sets up the steady-state hosts and is not
# reported.
measure iklim1 "${iklim_play[@]}"
measure steady0 "${steady_play[@]}" -e rev=0
for ((r = 1; r <= REPEAT; r++)); do
  measure "floor$r" "$TMP/bin/floor" -hosts "$TMP/hosts.txt" -port "$PORT" -user "$BENCH_USER" \
    -key "$TMP/id_ed25519" -known-hosts "$TMP/known_hosts" -n 10
  measure "iklim$((r + 1))" "${iklim_play[@]}"
  measure "steady$r" "${steady_play[@]}" -e rev="$r"
  # shellcheck disable=SC2086
  measure "first$r" "$TMP/bin/iklim" play -i "$TMP/inventory-first$r.hcl" $IKLIM_FLAGS -e base="$TMP/remote/first$r" "$ROOT/bench/workload.hcl"
done

if [[ $SKIP_ANSIBLE != 1 ]]; then
  for r in 1 2; do
    mkdir -p "$TMP/cp$r"
    cat >"$TMP/ansible$r.cfg" <<EOF
[defaults]
inventory = $TMP/hosts.ini
forks = $HOSTS
strategy = $STRATEGY
gathering = explicit
host_key_checking = True
interpreter_python = /usr/bin/python3
remote_user = $BENCH_USER
private_key_file = $TMP/id_ed25519
local_tmp = $TMP/ansible-local
remote_tmp = $TMP/ansible-remote-tmp
retry_files_enabled = False
timeout = 60

[ssh_connection]
pipelining = True
ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=$TMP/known_hosts -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o IdentityAgent=none
control_path_dir = $TMP/cp$r
control_path = %(directory)s/%%C
EOF
    # Each run starts without ControlPersist masters, like iklim's: timeit
    # ends the masters a run leaves behind (and counts their CPU time).
    export ANSIBLE_CONFIG=$TMP/ansible$r.cfg ANSIBLE_NOCOLOR=1
    measure "ansible$r" ansible-playbook -e base="$TMP/remote/ansible" "$ROOT/bench/workload.yml"
  done
  # Steady state on the hosts the two runs above left: 2 of 10 steps change.
  mkdir -p "$TMP/cp3"
  sed "s#$TMP/cp2#$TMP/cp3#" "$TMP/ansible2.cfg" >"$TMP/ansible3.cfg"
  export ANSIBLE_CONFIG=$TMP/ansible3.cfg
  measure ansible3 ansible-playbook -e base="$TMP/remote/ansible" -e rev=1 "$ROOT/bench/workload-steady.yml"
fi

stop_proxy
stop_sshd

# --- report -----------------------------------------------------------------
mkdir -p "$ROOT/bench/results"
"$TMP/bin/report" -dir "$TMP" -hosts "$HOSTS" -repeat "$REPEAT" -shards "$SHARDS" -rtt-ms "$RTT_MS" -skip-ansible="$([[ $SKIP_ANSIBLE == 1 ]] && echo true || echo false)" \
  -repo "$ROOT" -out "$ROOT/bench/results" \
  -setting "iklim=iklim play $IKLIM_FLAGS; a first run, then $REPEAT no-change, steady-state and first runs (on fresh hosts) each, in turns with the floor (medians)" \
  -setting "ansible=$([[ $SKIP_ANSIBLE == 1 ]] && echo "skipped (BENCH_SKIP_ANSIBLE=1)" ||
    echo "ansible-core, forks=$HOSTS, strategy=$STRATEGY, pipelining, ControlPersist=60s (masters ended between runs), gathering=explicit, same key and known_hosts")" \
  -setting "sshd=$SHARDS OpenSSH sshd ($( ((SHARDS == 1)) && echo "one for all hosts" || echo "hosts sharded round-robin, at most $PER_SSHD per sshd, each on its own port")), MaxStartups 400:30:800, MaxSessions 20, UsePAM no, login shell /bin/sh; each sshd in a pid namespace of its own to count the processes it spawns" \
  -setting "latency=$( ((RTT_MS > 0)) && echo "every host behind bench/delayproxy: ${RTT_MS} ms round trip (half each way, each chunk held, order kept)" || echo "none (loopback)")" \
  -setting "floor=x/crypto/ssh, one connection per host all at once, 10 sessions per host running true, median of $REPEAT runs"
