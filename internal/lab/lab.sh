#!/usr/bin/env bash
# iklim lab: six "hosts" on this machine, each a network + mount + UTS
# namespace with its own real OpenSSH sshd and real dockerd.
#
#   bash internal/lab/lab.sh up|down|status|images [--rebuild]|purge
#
# See internal/lab/README.md. Must run as root. Never kills anything by name:
# daemons are stopped through their pid files, leftovers through the pids the
# kernel lists for the host's own network namespace or the host's own
# container cgroups.
set -euo pipefail

LAB_DIR=${IKLIM_LAB_DIR:-/var/lib/iklim-lab}
LAB_DIR=${LAB_DIR%/}
BRIDGE=iklimlab0
BRIDGE_ADDR=10.77.0.1
NS_DIR=/run/iklim-lab/ns
LAB_USER=iklim
# vfs is the contract (works everywhere); overlay2 also works on this kernel and
# makes container creation much faster: IKLIM_LAB_STORAGE_DRIVER=overlay2.
STORAGE_DRIVER=${IKLIM_LAB_STORAGE_DRIVER:-vfs}
# Bump when an image recipe changes: cached tarballs are keyed by it.
IMAGE_RECIPE=4
HOSTS=(
	"iklim-app-01 10.77.0.11"
	"iklim-app-02 10.77.0.12"
	"iklim-app-03 10.77.0.13"
	"iklim-db-01 10.77.0.21"
	"iklim-db-02 10.77.0.22"
	"iklim-db-03 10.77.0.23"
)
# Directories that are private per host: "host-path state-subdir".
PRIVATE_DIRS=(
	"/var/backups backups"
	"/srv srv"
	"/etc/iklim etc-iklim"
	"/opt/iklim opt-iklim"
	"/etc/docker etc-docker"
	"/home/$LAB_USER home"
	"/tmp tmp"
)
APT_PACKAGES=(docker.io docker-compose openssh-server openssh-client iproute2 sudo debootstrap busybox-static iptables util-linux procps curl)
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=$LAB_DIR/cache
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export DOCKER_CLI_HINTS=false

log() { printf 'lab: %s\n' "$*"; }
die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }
hlog() { printf '%-13s %s\n' "$1:" "${*:2}"; }

host_dir() { printf '%s/hosts/%s' "$LAB_DIR" "$1"; }
host_sock() { printf '%s/hosts/%s/fs/run/docker.sock' "$LAB_DIR" "$1"; }
veth_name() { local n=${1#iklim-}; printf 'il-%s' "$n"; }
hdocker() { local h=$1; shift; docker -H "unix://$(host_sock "$h")" "$@"; }
in_host() {
	local h=$1; shift
	nsenter --net="/run/netns/$h" --mount="$NS_DIR/$h.mnt" --uts="$NS_DIR/$h.uts" -- "$@"
}

check_root() {
	[[ $(id -u) == 0 ]] || die "must run as root"
	case "$LAB_DIR/" in
	/tmp/* | /run/* | /srv/* | /var/backups/* | /opt/iklim/* | /etc/iklim/* | /home/*) die "IKLIM_LAB_DIR=$LAB_DIR is hidden inside the hosts; choose another place" ;;
	/*) ;;
	*) die "IKLIM_LAB_DIR must be absolute" ;;
	esac
}

lock() {
	mkdir -p "$LAB_DIR"
	chmod 0755 "$LAB_DIR"
	exec 9>"$LAB_DIR/.lock"
	if ! flock -n 9; then
		log "another lab command is running; waiting for it"
		flock -w 900 9 || die "timed out waiting for $LAB_DIR/.lock"
	fi
}

# ---------------------------------------------------------------- setup ---

ensure_packages() {
	local missing=() p
	for p in "${APT_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return 0
	log "installing ${missing[*]} (apt-get)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# policy-rc.d keeps the packages' init scripts from starting a
	# system-wide dockerd or sshd.
	local prc=/usr/sbin/policy-rc.d created=0
	if [[ ! -e $prc ]]; then printf '#!/bin/sh\nexit 101\n' >"$prc"; chmod +x "$prc"; created=1; fi
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$LAB_DIR/apt.log" 2>&1 ||
		{ ((created)) && rm -f "$prc"; tail -20 "$LAB_DIR/apt.log"; die "apt-get install failed"; }
	((created)) && rm -f "$prc"
	return 0
}

ensure_user() {
	getent group docker >/dev/null || groupadd --system docker
	if ! id "$LAB_USER" >/dev/null 2>&1; then
		useradd --create-home --shell /bin/sh --groups docker "$LAB_USER"
		log "created user $LAB_USER"
	fi
	# Not locked ('!' refuses key logins with UsePAM no), no password.
	usermod -s /bin/sh -p '*' -a -G docker "$LAB_USER"
	mkdir -p "/home/$LAB_USER"
	local sud=/etc/sudoers.d/iklim-lab
	local want="$LAB_USER ALL=(ALL) NOPASSWD: ALL"
	if [[ ! -f $sud ]] || [[ $(cat "$sud") != "$want" ]]; then
		printf '%s\n' "$want" >"$sud.tmp"
		chmod 0440 "$sud.tmp"
		visudo -cqf "$sud.tmp" || die "bad sudoers file"
		mv "$sud.tmp" "$sud"
	fi
}

ensure_client_key() {
	if [[ ! -f $LAB_DIR/id_ed25519 ]]; then
		ssh-keygen -q -t ed25519 -N '' -C iklim-lab -f "$LAB_DIR/id_ed25519"
		log "created client key $LAB_DIR/id_ed25519"
	fi
	chmod 0600 "$LAB_DIR/id_ed25519"
}

ensure_bridge() {
	if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
		ip link add "$BRIDGE" type bridge
	fi
	ip -4 addr show dev "$BRIDGE" | grep -q "inet $BRIDGE_ADDR/24" || ip addr add "$BRIDGE_ADDR/24" dev "$BRIDGE"
	ip link set "$BRIDGE" up
}

ensure_ns_dir() {
	mkdir -p "$NS_DIR"
	# unshare --mount=FILE needs FILE on a privately propagated mount.
	mountpoint -q "$NS_DIR" || mount --bind "$NS_DIR" "$NS_DIR"
	mount --make-private "$NS_DIR"
}

ns_file_mounted() { findmnt -rn -o TARGET 2>/dev/null | grep -qxF "$1"; }

# pid_ok PIDFILE HOST: the pid file names a live process inside HOST's netns.
pid_ok() {
	local pf=$1 h=$2 pid want have
	[[ -s $pf ]] || return 1
	pid=$(<"$pf")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ -e /proc/$pid ]] || return 1
	[[ -e /run/netns/$h ]] || return 1
	want=$(stat -L -c %i "/run/netns/$h" 2>/dev/null) || return 1
	have=$(readlink "/proc/$pid/ns/net" 2>/dev/null) || return 1
	[[ $have == "net:[$want]" ]]
}

tcp_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

write_etc_hosts() {
	local f=$1 h a e
	{
		printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'
		printf '%s\tiklimlab-gw\n' "$BRIDGE_ADDR"
		for e in "${HOSTS[@]}"; do
			read -r h a <<<"$e"
			printf '%s\t%s\n' "$a" "$h"
		done
	} >"$f"
}

write_sshd_config() {
	local h=$1 d
	d=$(host_dir "$h")
	cat >"$d/ssh/sshd_config" <<EOF
# generated by internal/lab/lab.sh for $h
Port 22
ListenAddress 0.0.0.0
HostKey $d/ssh/ssh_host_ed25519_key
PidFile $d/sshd.pid
AllowUsers $LAB_USER
PermitRootLogin no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
X11Forwarding no
AllowTcpForwarding yes
MaxStartups 200:30:400
MaxSessions 200
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
EOF
}

# Create netns, veth, mount+uts namespace, private dirs. Idempotent.
ensure_namespaces() {
	local h=$1 a=$2 d v
	d=$(host_dir "$h")
	v=$(veth_name "$h")
	[[ -e /run/netns/$h ]] || ip netns add "$h"
	if ! ip -n "$h" link show eth0 >/dev/null 2>&1; then
		ip link del "$v" 2>/dev/null || true
		ip link add "$v" type veth peer name eth0 netns "$h"
	fi
	ip link set "$v" master "$BRIDGE" up
	ip -n "$h" link set lo up
	ip -n "$h" -4 addr show dev eth0 | grep -q "inet $a/24" || ip -n "$h" addr add "$a/24" dev eth0
	ip -n "$h" link set eth0 up

	ns_file_mounted "$NS_DIR/$h.mnt" && ns_file_mounted "$NS_DIR/$h.uts" && return 0
	# Half-made namespace files (crash): drop them and start over.
	umount "$NS_DIR/$h.mnt" 2>/dev/null || true
	umount "$NS_DIR/$h.uts" 2>/dev/null || true
	touch "$NS_DIR/$h.mnt" "$NS_DIR/$h.uts"

	local e src sub script
	mkdir -p "$d/fs/run"
	script="set -e; hostname $h"
	# Drop this namespace's copies of other hosts' netns / mntns handles so
	# they cannot keep those namespaces alive after 'down'.
	script+="; umount -l /run/netns 2>/dev/null || true; umount -l $NS_DIR 2>/dev/null || true"
	for e in "${PRIVATE_DIRS[@]}"; do
		read -r src sub <<<"$e"
		mkdir -p "$src" "$d/fs/$sub"
		script+="; mount --bind $d/fs/$sub $src"
	done
	script+="; mount --bind $d/etc-hosts /etc/hosts; mount --bind $d/etc-hostname /etc/hostname"
	script+="; mount --bind $d/fs/run /run; mkdir -p /run/sshd /run/lock; chmod 0755 /run/sshd; chmod 1777 /run/lock"
	chmod 1777 "$d/fs/tmp"
	write_etc_hosts "$d/etc-hosts"
	printf '%s\n' "$h" >"$d/etc-hostname"
	mkdir -p "$d/fs/home/.ssh"
	cp "$LAB_DIR/id_ed25519.pub" "$d/fs/home/.ssh/authorized_keys"
	chown -R "$LAB_USER:$LAB_USER" "$d/fs/home"
	chmod 0755 "$d/fs/home"
	chmod 0700 "$d/fs/home/.ssh"
	chmod 0600 "$d/fs/home/.ssh/authorized_keys"
	nsenter --net="/run/netns/$h" -- unshare --mount="$NS_DIR/$h.mnt" --uts="$NS_DIR/$h.uts" \
		--propagation private -- /bin/sh -c "$script"
}

start_sshd() {
	local h=$1 a=$2 d i
	d=$(host_dir "$h")
	mkdir -p "$d/ssh" "$d/log"
	chmod 0755 "$d/ssh"
	[[ -f $d/ssh/ssh_host_ed25519_key ]] ||
		ssh-keygen -q -t ed25519 -N '' -C "root@$h" -f "$d/ssh/ssh_host_ed25519_key"
	write_sshd_config "$h"
	in_host "$h" /usr/sbin/sshd -t -f "$d/ssh/sshd_config"
	rm -f "$d/sshd.pid"
	in_host "$h" /usr/sbin/sshd -f "$d/ssh/sshd_config" -E "$d/log/sshd.log" 9>&-
	for ((i = 0; i < 100; i++)); do
		pid_ok "$d/sshd.pid" "$h" && tcp_open "$a" 22 && return 0
		sleep 0.1
	done
	die "$h: sshd did not come up (see $d/log/sshd.log)"
}

start_dockerd() {
	local h=$1 d i
	d=$(host_dir "$h")
	mkdir -p "$d/docker" "$d/log"
	rm -f "$d/dockerd.pid"
	# /var/run is the host's private /run, so the default socket
	# /var/run/docker.sock and exec-root /var/run/docker are per host.
	# A plain command (not the in_host function) so bash execs it instead of
	# keeping a subshell around; 9>&- so the daemon does not hold the lab lock.
	nsenter --net="/run/netns/$h" --mount="$NS_DIR/$h.mnt" --uts="$NS_DIR/$h.uts" -- setsid /usr/sbin/dockerd \
		--data-root "$d/docker" \
		--pidfile "$d/dockerd.pid" \
		--host unix:///var/run/docker.sock \
		--storage-driver="$STORAGE_DRIVER" --iptables=false --bridge=none \
		>>"$d/log/dockerd.log" 2>&1 </dev/null 9>&- &
	for ((i = 0; i < 600; i++)); do
		if pid_ok "$d/dockerd.pid" "$h" && hdocker "$h" version >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	die "$h: dockerd did not come up (see $d/log/dockerd.log)"
}

host_up() {
	local h=$1 a=$2 d did=()
	d=$(host_dir "$h")
	mkdir -p "$d"
	if [[ ! -e /run/netns/$h ]] || ! ns_file_mounted "$NS_DIR/$h.mnt"; then
		# Namespaces gone (reboot, crash): pid files are stale.
		rm -f "$d/sshd.pid" "$d/dockerd.pid"
		ensure_namespaces "$h" "$a"
		did+=(namespaces)
	fi
	if ! pid_ok "$d/sshd.pid" "$h"; then start_sshd "$h" "$a"; did+=(sshd); fi
	if ! pid_ok "$d/dockerd.pid" "$h"; then start_dockerd "$h"; did+=(dockerd); fi
	if ((${#did[@]})); then
		hlog "$h" "started ${did[*]} (sshd $(<"$d/sshd.pid"), dockerd $(<"$d/dockerd.pid"))"
	else
		hlog "$h" "already up, nothing to do (sshd $(<"$d/sshd.pid"), dockerd $(<"$d/dockerd.pid"))"
	fi
}

write_known_hosts() {
	local tmp=$LAB_DIR/known_hosts.tmp h a key e
	: >"$tmp"
	for e in "${HOSTS[@]}"; do
		read -r h a <<<"$e"
		key=$(cut -d' ' -f1,2 "$(host_dir "$h")/ssh/ssh_host_ed25519_key.pub")
		printf '%s %s\n' "$a" "$key" >>"$tmp"
	done
	for e in "${HOSTS[@]}"; do
		read -r h a <<<"$e"
		key=$(cut -d' ' -f1,2 "$(host_dir "$h")/ssh/ssh_host_ed25519_key.pub")
		printf '%s %s\n' "$h" "$key" >>"$tmp"
	done
	chmod 0644 "$tmp"
	if cmp -s "$tmp" "$LAB_DIR/known_hosts"; then rm -f "$tmp"; return 0; fi
	mv "$tmp" "$LAB_DIR/known_hosts"
	log "wrote $LAB_DIR/known_hosts"
}

# Run FUNC for every host in parallel, prefixing nothing (FUNC logs itself).
each_host() {
	local fn=$1 e h a pids=() rc=0 p
	for e in "${HOSTS[@]}"; do
		read -r h a <<<"$e"
		"$fn" "$h" "$a" &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p" || rc=1; done
	return $rc
}

cmd_up() {
	check_root
	lock
	local t0=$SECONDS
	ensure_packages
	ensure_user
	ensure_client_key
	ensure_bridge
	ensure_ns_dir
	each_host host_up || die "some hosts failed to come up"
	write_known_hosts
	local t1=$SECONDS
	images_build
	each_host images_load_host || die "loading images failed"
	bind_up
	registry_up
	etcd_up
	log "up ($((SECONDS - t0))s: hosts $((t1 - t0))s, images $((SECONDS - t1))s). ssh -i $LAB_DIR/id_ed25519 -o UserKnownHostsFile=$LAB_DIR/known_hosts $LAB_USER@10.77.0.11"
}

# ----------------------------------------------------------------- down ---

# wait_gone PID SECONDS
wait_gone() {
	local pid=$1 n=$(($2 * 10)) i
	for ((i = 0; i < n; i++)); do
		[[ -e /proc/$pid ]] || return 0
		sleep 0.1
	done
	return 1
}

# stop_pidfile PIDFILE HOST NAME GRACE
stop_pidfile() {
	local pf=$1 h=$2 name=$3 grace=$4 pid
	if pid_ok "$pf" "$h"; then
		pid=$(<"$pf")
		kill -TERM "$pid" 2>/dev/null || true
		if ! wait_gone "$pid" "$grace"; then
			hlog "$h" "$name (pid $pid) still running after ${grace}s, sending KILL"
			kill -KILL "$pid" 2>/dev/null || true
			wait_gone "$pid" 5 || hlog "$h" "$name (pid $pid) did not die"
		fi
	fi
	rm -f "$pf"
}

# Pids of processes that belong to HOST: in its network namespace, or in a
# cgroup of one of its containers (containers have their own netns).
host_pids() {
	local h=$1 d ids=() c f
	d=$(host_dir "$h")
	[[ -e /run/netns/$h ]] && ip netns pids "$h" 2>/dev/null
	if [[ -d $d/docker/containers ]]; then
		for c in "$d"/docker/containers/*/; do
			[[ -d $c ]] && ids+=("$(basename "$c")")
		done
	fi
	((${#ids[@]})) || return 0
	for f in /proc/[0-9]*/cgroup; do
		for c in "${ids[@]}"; do
			if grep -qF "$c" "$f" 2>/dev/null; then
				f=${f#/proc/}
				printf '%s\n' "${f%/cgroup}"
				break
			fi
		done
	done
}

host_down() {
	local h=$1 d pids p i
	d=$(host_dir "$h")
	if [[ ! -d $d && ! -e /run/netns/$h ]]; then
		hlog "$h" "not up"
		return 0
	fi
	if pid_ok "$d/dockerd.pid" "$h"; then
		# Containers first, so dockerd's own shutdown is quick.
		local cs
		cs=$(timeout 20 docker -H "unix://$(host_sock "$h")" ps -aq 2>/dev/null || true)
		[[ -n $cs ]] && timeout 60 docker -H "unix://$(host_sock "$h")" rm -f $cs >/dev/null 2>&1 || true
	fi
	stop_pidfile "$d/dockerd.pid" "$h" dockerd 30
	stop_pidfile "$d/sshd.pid" "$h" sshd 5
	for ((i = 0; i < 3; i++)); do
		pids=$(host_pids "$h" | sort -u | tr '\n' ' ')
		[[ -z ${pids// /} ]] && break
		hlog "$h" "stopping leftover processes:$(for p in $pids; do printf ' %s(%s)' "$p" "$(cat /proc/"$p"/comm 2>/dev/null)"; done)"
		for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
		sleep 2
		for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
		sleep 0.5
	done
	pids=$(host_pids "$h" | sort -u | tr '\n' ' ')
	[[ -z ${pids// /} ]] || die "$h: processes still alive: $pids"
	for f in mnt uts; do
		if ns_file_mounted "$NS_DIR/$h.$f"; then umount "$NS_DIR/$h.$f"; fi
		rm -f "$NS_DIR/$h.$f"
	done
	[[ -e /run/netns/$h ]] && ip netns del "$h"
	ip link del "$(veth_name "$h")" 2>/dev/null || true
	if [[ -d $d ]]; then
		if findmnt -rn -o TARGET | grep -q "^$d/"; then
			die "$h: something is still mounted under $d; not deleting it"
		fi
		# Keep only the host key, so known_hosts stays valid across down/up.
		find "$d" -mindepth 1 -maxdepth 1 ! -name ssh -exec rm -rf {} +
	fi
	hlog "$h" "down"
}

cmd_down() {
	check_root
	lock
	local t0=$SECONDS
	etcd_down
	bind_down
	each_host host_down || die "some hosts failed to stop"
	if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; fi
	if mountpoint -q "$NS_DIR" 2>/dev/null; then umount "$NS_DIR"; fi
	rmdir "$NS_DIR" /run/iklim-lab 2>/dev/null || true
	log "down ($((SECONDS - t0))s); kept $LAB_DIR/{id_ed25519,known_hosts,cache,hosts/*/ssh}"
}

cmd_purge() {
	cmd_down
	log "removing $LAB_DIR"
	rm -rf "$LAB_DIR"
}

# --------------------------------------------------------------- status ---

cmd_status() {
	check_root
	local e h a d up=0 total=0 spid dpid sst dst info imgs ns
	printf '%-13s %-5s %-22s %-30s %s\n' HOST NS SSHD DOCKERD SWARM/IMAGES
	for e in "${HOSTS[@]}"; do
		read -r h a <<<"$e"
		d=$(host_dir "$h")
		total=$((total + 1))
		ns=no
		[[ -e /run/netns/$h ]] && ns_file_mounted "$NS_DIR/$h.mnt" && ns=yes
		spid=$(cat "$d/sshd.pid" 2>/dev/null || echo -)
		dpid=$(cat "$d/dockerd.pid" 2>/dev/null || echo -)
		if pid_ok "$d/sshd.pid" "$h"; then
			sst="pid $spid alive"
			tcp_open "$a" 22 && sst+=" :22" || sst+=" NOT-LISTENING"
		else
			sst="pid $spid dead"
		fi
		info=-
		if pid_ok "$d/dockerd.pid" "$h"; then
			dst="pid $dpid alive"
			if info=$(timeout 5 docker -H "unix://$(host_sock "$h")" info --format '{{.Name}} swarm={{.Swarm.LocalNodeState}}' 2>/dev/null); then
				dst+=" sock-ok"
				imgs=$(timeout 5 docker -H "unix://$(host_sock "$h")" images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep -c '^local/' || true)
				info+=" images=$imgs"
			else
				dst+=" sock-NOT-ANSWERING"
			fi
		else
			dst="pid $dpid dead"
		fi
		[[ $ns == yes && $sst == *":22" && $dst == *sock-ok ]] && up=$((up + 1))
		printf '%-13s %-5s %-22s %-30s %s\n' "$h" "$ns" "$sst" "$dst" "$info"
	done
	log "$up/$total hosts up (state $LAB_DIR)"
	((up == total))
}

# --------------------------------------------------------------- images ---

apt_mirror() {
	local m
	m=$(grep -rhoE '^(URIs:|deb)[[:space:]]+[a-z]+://[^[:space:]]+' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk '{print $2}' | grep -E '/debian/?$' | head -1 || true)
	printf '%s' "${m:-http://deb.debian.org/debian}"
}

# chroot_install ROOT PKG...: apt-get install inside a rootfs.
chroot_install() {
	local r=$1 rc=0
	shift
	cp /etc/resolv.conf "$r/etc/resolv.conf"
	printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
	chmod +x "$r/usr/sbin/policy-rc.d"
	mount -t proc proc "$r/proc"
	chroot "$r" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" || rc=$?
	umount "$r/proc"
	rm -f "$r/usr/sbin/policy-rc.d"
	return $rc
}

slim_rootfs() {
	local r=$1
	rm -rf "$r"/var/cache/apt/* "$r"/var/lib/apt/lists/* "$r"/usr/share/doc/* "$r"/usr/share/man/* \
		"$r"/usr/share/info/* "$r"/var/log/*.log "$r"/var/log/apt/* "$r"/var/cache/debconf/*-old \
		"$r"/tmp/* "$r"/var/tmp/*
	# iconv's legacy charsets: 8 MB nobody here needs.
	find "$r/usr/lib/x86_64-linux-gnu/gconv" -mindepth 1 ! -name 'gconv-modules*' ! -name 'UTF-*' ! -name 'UNICODE.so' -delete 2>/dev/null || true
	find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true
	: >"$r/etc/resolv.conf"
	printf 'lab-image\n' >"$r/etc/hostname"
}

# IMAGES: "tag tarball config" — config lines are docker import --change's.
image_specs() {
	cat <<'EOF'
local/busybox:1|busybox|CMD ["sh"]
local/debian:12|debian|CMD ["bash"]
local/redis:7|redis|ENTRYPOINT ["/usr/local/bin/iklim-redis"]|EXPOSE 6379|WORKDIR /data|VOLUME /data
local/redis-sentinel:7|redis|ENTRYPOINT ["/usr/local/bin/iklim-redis-sentinel"]|EXPOSE 26379|WORKDIR /data
local/rabbitmq:3|rabbitmq|ENTRYPOINT ["/usr/local/bin/iklim-rabbitmq"]|ENV RABBITMQ_LOGS=-|EXPOSE 4369 5672 15672 25672|VOLUME /var/lib/rabbitmq
local/nginx:1|nginx|CMD ["nginx", "-g", "daemon off;"]|EXPOSE 80
EOF
}

img_tar() { printf '%s/images/%s-r%s.tar' "$CACHE" "$1" "$IMAGE_RECIPE"; }

build_busybox() {
	local out=$1 w=$CACHE/work/busybox a
	rm -rf "$w"
	mkdir -p "$w/bin" "$w/etc" "$w/tmp" "$w/root" "$w/proc" "$w/sys" "$w/dev"
	cp /bin/busybox "$w/bin/busybox"
	for a in $(/bin/busybox --list); do
		[[ $a == busybox ]] || ln -sf busybox "$w/bin/$a"
	done
	chmod 1777 "$w/tmp"
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$w/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$w/etc/group"
	tar --numeric-owner -C "$w" -cf "$out.tmp" .
	mv "$out.tmp" "$out"
	rm -rf "$w"
}

ensure_debootstrap() {
	local base=$CACHE/debootstrap mirror
	[[ -f $base/.complete ]] && return 0
	mirror=$(apt_mirror)
	log "debootstrap --variant=minbase bookworm from $mirror (once, cached in $base)"
	rm -rf "$base"
	mkdir -p "$CACHE"
	debootstrap --variant=minbase bookworm "$base" "$mirror" >"$CACHE/debootstrap.log" 2>&1 ||
		{ tail -20 "$CACHE/debootstrap.log"; die "debootstrap failed"; }
	cp /etc/resolv.conf "$base/etc/resolv.conf"
	chroot "$base" apt-get update -qq >>"$CACHE/debootstrap.log" 2>&1 || die "apt-get update in rootfs failed"
	touch "$base/.complete"
}

# build_rootfs NAME OUT PKG...: base rootfs + packages + our entrypoints.
build_rootfs() {
	local name=$1 out=$2 w=$CACHE/work/$1
	shift 2
	rm -rf "$w"
	mkdir -p "$CACHE/work"
	cp -a "$CACHE/debootstrap" "$w"
	rm -f "$w/.complete"
	if (($#)); then
		chroot_install "$w" "$@" >"$CACHE/work/$name.log" 2>&1 ||
			{ tail -20 "$CACHE/work/$name.log"; die "image $name: apt-get install $* failed"; }
	fi
	local f
	for f in "$SCRIPT_DIR"/images/"$name"/*; do
		[[ -e $f ]] || continue
		install -m 0755 "$f" "$w/usr/local/bin/$(basename "$f")"
	done
	case $name in
	nginx)
		ln -sf /dev/stdout "$w/var/log/nginx/access.log"
		ln -sf /dev/stderr "$w/var/log/nginx/error.log"
		printf 'iklim lab nginx\n' >"$w/var/www/html/index.html"
		;;
	rabbitmq)
		printf '[rabbitmq_management].\n' >"$w/etc/rabbitmq/enabled_plugins"
		# python3 is only there for rabbitmqadmin: 27 MB that every
		# container would copy (vfs). rabbitmqctl and the HTTP API remain.
		rm -rf "$w"/usr/lib/python3* "$w"/usr/bin/python3* "$w"/usr/bin/rabbitmqadmin
		;;
	redis)
		mkdir -p "$w/data"
		;;
	esac
	slim_rootfs "$w"
	tar --numeric-owner -C "$w" -cf "$out.tmp" .
	mv "$out.tmp" "$out"
	rm -rf "$w"
}

images_build() {
	mkdir -p "$CACHE/images"
	local need=() n
	for n in busybox debian redis rabbitmq nginx; do
		[[ -f $(img_tar "$n") ]] || need+=("$n")
	done
	((${#need[@]})) || return 0
	local t0=$SECONDS pids=() p rc=0
	log "building image rootfs tarballs: ${need[*]} (cached in $CACHE/images)"
	for n in "${need[@]}"; do
		if [[ $n == busybox ]]; then build_busybox "$(img_tar busybox)"; fi
	done
	if [[ " ${need[*]} " == *" debian "* || " ${need[*]} " == *" redis "* || " ${need[*]} " == *" rabbitmq "* || " ${need[*]} " == *" nginx "* ]]; then
		ensure_debootstrap
	fi
	for n in "${need[@]}"; do
		case $n in
		debian) build_rootfs debian "$(img_tar debian)" & ;;
		redis) build_rootfs redis "$(img_tar redis)" redis-server redis-sentinel redis-tools busybox-static & ;;
		rabbitmq) build_rootfs rabbitmq "$(img_tar rabbitmq)" rabbitmq-server busybox-static & ;;
		nginx) build_rootfs nginx "$(img_tar nginx)" nginx busybox-static & ;;
		*) continue ;;
		esac
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p" || rc=1; done
	((rc == 0)) || die "image build failed"
	rm -rf "$CACHE/work"
	for n in "${need[@]}"; do sha256sum "$(img_tar "$n")" | cut -c1-16 >"$(img_tar "$n").sha"; done
	log "image tarballs built in $((SECONDS - t0))s: $(du -sh "$CACHE/images" | cut -f1)"
}

images_load_host() {
	local h=$1 spec tag name changes want have loaded=() args c
	while IFS= read -r spec; do
		IFS='|' read -r tag name changes <<<"$spec"
		want="iklim-lab $name r$IMAGE_RECIPE $(<"$(img_tar "$name").sha")"
		have=$(hdocker "$h" image inspect -f '{{.Comment}}' "$tag" 2>/dev/null || true)
		[[ $have == "$want" ]] && continue
		args=()
		IFS='|' read -ra cs <<<"$changes"
		for c in "${cs[@]}"; do args+=(--change "$c"); done
		hdocker "$h" import -m "$want" "${args[@]}" "$(img_tar "$name")" "$tag" >/dev/null
		loaded+=("$tag")
	done < <(image_specs)
	# Images from older recipes would only waste disk.
	hdocker "$h" image prune -f >/dev/null 2>&1 || true
	if ((${#loaded[@]})); then hlog "$h" "imported ${loaded[*]}"; else hlog "$h" "images up to date"; fi
}

cmd_images() {
	check_root
	lock
	if [[ ${1:-} == --rebuild ]]; then rm -rf "$CACHE/images" "$CACHE/debootstrap"; fi
	images_build
	local e h a running=()
	for e in "${HOSTS[@]}"; do
		read -r h a <<<"$e"
		pid_ok "$(host_dir "$h")/dockerd.pid" "$h" && running+=("$h")
	done
	if ((${#running[@]} == 0)); then
		log "no host is up; images load at 'lab up'"
		return 0
	fi
	each_host_running() {
		pid_ok "$(host_dir "$1")/dockerd.pid" "$1" || { hlog "$1" "not up, skipped"; return 0; }
		images_load_host "$1"
	}
	each_host each_host_running
}

# smoke [HOST]: prove every image really runs its service on HOST's dockerd
# (host networking, so the ports are on the host's 10.77.0.x address).
cmd_smoke() {
	check_root
	local h=${1:-iklim-app-01} a e n ok=0 fail=0 i out
	for e in "${HOSTS[@]}"; do read -r n a <<<"$e"; [[ $n == "$h" ]] && break; done
	[[ $n == "$h" ]] || die "unknown host $h"
	pid_ok "$(host_dir "$h")/dockerd.pid" "$h" || die "$h is not up"
	local c=(lab-smoke-redis lab-smoke-replica lab-smoke-sentinel lab-smoke-rabbit lab-smoke-nginx)
	# shellcheck disable=SC2064 # expand now: the locals are gone at exit
	trap "docker -H unix://$(host_sock "$h") rm -f ${c[*]} >/dev/null 2>&1 || true" EXIT
	hdocker "$h" rm -f "${c[@]}" >/dev/null 2>&1 || true
	check() { # check NAME CMD...
		local name=$1
		shift
		if out=$("$@" 2>&1); then
			printf '  ok    %-28s %s\n' "$name" "$(printf '%s' "$out" | tr '\n' ' ' | cut -c1-70)"
			ok=$((ok + 1))
		else
			printf '  FAIL  %-28s %s\n' "$name" "$(printf '%s' "$out" | tr '\n' ' ' | cut -c1-200)"
			fail=$((fail + 1))
		fi
	}
	log "smoke test on $h ($a)"
	check "busybox:1 runs" hdocker "$h" run --rm local/busybox:1 echo busybox-ok
	check "debian:12 runs" hdocker "$h" run --rm local/debian:12 sh -c '. /etc/os-release; echo $PRETTY_NAME'
	hdocker "$h" run -d --name lab-smoke-redis --network host -e REDIS_PASSWORD=smoke local/redis:7 >/dev/null
	hdocker "$h" run -d --name lab-smoke-replica --network host -e REDIS_PORT_NUMBER=6380 \
		-e REDIS_REPLICATION_MODE=replica -e REDIS_MASTER_HOST="$a" -e REDIS_PASSWORD=smoke local/redis:7 >/dev/null
	hdocker "$h" run -d --name lab-smoke-sentinel --network host -e REDIS_MASTER_HOST="$a" \
		-e REDIS_MASTER_PASSWORD=smoke -e REDIS_SENTINEL_MASTER_NAME=prod-master -e REDIS_SENTINEL_QUORUM=1 \
		local/redis-sentinel:7 >/dev/null
	hdocker "$h" run -d --name lab-smoke-rabbit --network host -e RABBITMQ_ERLANG_COOKIE=lab-smoke-cookie local/rabbitmq:3 >/dev/null
	hdocker "$h" run -d --name lab-smoke-nginx --network host local/nginx:1 >/dev/null
	for ((i = 0; i < 60; i++)); do
		hdocker "$h" exec lab-smoke-redis redis-cli -a smoke --no-auth-warning INFO replication 2>/dev/null | grep -q 'connected_slaves:1' && break
		sleep 1
	done
	check "redis:7 PING" hdocker "$h" exec lab-smoke-redis redis-cli -h "$a" -a smoke --no-auth-warning PING
	check "redis:7 replica attached" sh -c "docker -H unix://$(host_sock "$h") exec lab-smoke-redis redis-cli -a smoke --no-auth-warning INFO replication | grep -E 'role:master|connected_slaves:1' | tr -d '\r' | grep -c . | grep -qx 2 && echo role:master connected_slaves:1"
	check "redis-sentinel:7 master addr" hdocker "$h" exec lab-smoke-sentinel redis-cli -p 26379 SENTINEL get-master-addr-by-name prod-master
	for ((i = 0; i < 90; i++)); do
		hdocker "$h" exec lab-smoke-rabbit rabbitmq-diagnostics -q check_running >/dev/null 2>&1 && break
		sleep 1
	done
	check "rabbitmq:3 diagnostics ping" hdocker "$h" exec lab-smoke-rabbit rabbitmq-diagnostics -q ping
	check "rabbitmq:3 app running" hdocker "$h" exec lab-smoke-rabbit rabbitmq-diagnostics -q check_running
	check "rabbitmq:3 management api" curl -fsS -m 5 -u guest:guest "http://$a:15672/api/overview" -o /dev/null -w 'HTTP %{http_code}'
	check "nginx:1 serves" curl -fsS -m 5 "http://$a/"
	log "smoke: $ok ok, $fail failed"
	((fail == 0))
}

# ----------------------------------------------------------------- bind ---
# A real BIND 9 (Debian's named) in iklim-db-01's namespace: primary for
# lab.iklim.test on 10.77.0.21:53, updates allowed with the TSIG key
# iklim-lab (hmac-sha256), for dns_record (examples/edge). The key's secret
# is in $LAB_DIR/bind/tsig.secret (0600, root). Idempotent: a running named
# is left alone, an existing zone (and its journal of updates) is kept.
BIND_HOST=iklim-db-01
BIND_ADDR=10.77.0.21
BIND_ZONE=lab.iklim.test
BIND_KEY=iklim-lab

bind_up() {
	local d=$LAB_DIR/bind i secret
	[[ -x /usr/sbin/named ]] || { log "bind: /usr/sbin/named not installed (apt-get install bind9 bind9-utils); skipped"; return 0; }
	mkdir -p "$d"
	chmod 0700 "$d"
	if pid_ok "$d/named.pid" "$BIND_HOST"; then
		hlog "$BIND_HOST" "named already up (pid $(<"$d/named.pid"))"
		return 0
	fi
	if [[ ! -s $d/tsig.secret ]]; then
		(umask 077 && head -c 32 /dev/urandom | base64 >"$d/tsig.secret.tmp")
		mv "$d/tsig.secret.tmp" "$d/tsig.secret"
	fi
	secret=$(<"$d/tsig.secret")
	(umask 077 && cat >"$d/named.conf") <<EOF
options {
  directory "$d";
  pid-file "$d/named.pid";
  session-keyfile "$d/session.key";
  listen-on port 53 { $BIND_ADDR; 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  dnssec-validation no;
  allow-query { any; };
};
controls { };
key "$BIND_KEY" { algorithm hmac-sha256; secret "$secret"; };
zone "$BIND_ZONE" { type primary; file "$d/$BIND_ZONE.zone"; allow-update { key "$BIND_KEY"; }; };
EOF
	[[ -s $d/$BIND_ZONE.zone ]] || cat >"$d/$BIND_ZONE.zone" <<EOF
\$TTL 300
@   IN SOA ns.$BIND_ZONE. hostmaster.$BIND_ZONE. 1 3600 600 86400 300
@   IN NS  ns.$BIND_ZONE.
ns  IN A   $BIND_ADDR
EOF
	rm -f "$d/named.pid"
	named-checkconf "$d/named.conf" || die "bind: bad $d/named.conf"
	# named daemonizes itself; 9>&- so it does not hold the lab lock.
	nsenter --net="/run/netns/$BIND_HOST" --mount="$NS_DIR/$BIND_HOST.mnt" --uts="$NS_DIR/$BIND_HOST.uts" -- \
		/usr/sbin/named -4 -c "$d/named.conf" -L "$d/named.log" </dev/null 9>&-
	for ((i = 0; i < 100; i++)); do
		if pid_ok "$d/named.pid" "$BIND_HOST" && tcp_open "$BIND_ADDR" 53; then
			hlog "$BIND_HOST" "started named (pid $(<"$d/named.pid")) for $BIND_ZONE on $BIND_ADDR:53"
			return 0
		fi
		sleep 0.1
	done
	die "bind: named did not come up (see $d/named.log)"
}

# bind_down stops named by its pid file (lab.sh down), before the host's
# namespace goes.
bind_down() { stop_pidfile "$LAB_DIR/bind/named.pid" "$BIND_HOST" named 10; }

# ------------------------------------------------------------- registry ---
# A private image registry: Debian's docker-registry (distribution 2.8) in
# iklim-db-02 on 10.77.0.22:5000, with TLS (a self-signed certificate for the
# name and the address) and htpasswd auth (user iklim; the password is in
# $LAB_DIR/registry/password, 0600). Every host trusts the certificate through
# its private /etc/docker/certs.d/iklim-db-02:5000/ca.crt. The lab's busybox
# image is pushed once as iklim-db-02:5000/lab/busybox:1. A running registry
# is left alone; keys, password and data are kept across runs.
REGISTRY_HOST=iklim-db-02
REGISTRY_ADDR=10.77.0.22
REGISTRY_PORT=5000
REGISTRY_USER=iklim

registry_up() {
	local d=$LAB_DIR/registry reg=$REGISTRY_HOST:$REGISTRY_PORT e h a i
	[[ -x /usr/bin/docker-registry ]] || { log "registry: /usr/bin/docker-registry not installed (apt-get install docker-registry); skipped"; return 0; }
	mkdir -p "$d/data"
	chmod 0700 "$d"
	if [[ ! -s $d/password ]]; then
		(umask 077 && head -c 18 /dev/urandom | base64 | tr '+/' 'xy' >"$d/password.tmp")
		mv "$d/password.tmp" "$d/password"
		rm -f "$d/htpasswd"
	fi
	if [[ ! -s $d/htpasswd ]]; then
		# bcrypt through libxcrypt; the registry accepts only bcrypt.
		(umask 077 && python3 -W ignore -c 'import crypt, sys; print(sys.argv[1] + ":" + crypt.crypt(sys.stdin.read().strip(), crypt.mksalt(crypt.METHOD_BLOWFISH)))' \
			"$REGISTRY_USER" <"$d/password" >"$d/htpasswd.tmp")
		mv "$d/htpasswd.tmp" "$d/htpasswd"
	fi
	if [[ ! -s $d/tls.crt || ! -s $d/tls.key ]]; then
		(umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
			-subj "/CN=$REGISTRY_HOST" -addext "subjectAltName=DNS:$REGISTRY_HOST,IP:$REGISTRY_ADDR" \
			-addext "basicConstraints=critical,CA:TRUE" -keyout "$d/tls.key.tmp" -out "$d/tls.crt.tmp" 2>/dev/null) ||
			die "registry: openssl could not make a certificate"
		mv "$d/tls.key.tmp" "$d/tls.key"
		mv "$d/tls.crt.tmp" "$d/tls.crt"
	fi
	for e in "${HOSTS[@]}"; do
		read -r h a <<<"$e"
		install -D -m 0644 "$d/tls.crt" "$(host_dir "$h")/fs/etc-docker/certs.d/$reg/ca.crt"
	done
	if pid_ok "$d/registry.pid" "$REGISTRY_HOST"; then
		hlog "$REGISTRY_HOST" "registry already up (pid $(<"$d/registry.pid")) on $reg"
	else
		cat >"$d/config.yml" <<EOF
version: 0.1
log: { level: warn, accesslog: { disabled: true } }
storage:
  filesystem: { rootdirectory: $d/data }
  delete: { enabled: true }
http:
  addr: $REGISTRY_ADDR:$REGISTRY_PORT
  tls: { certificate: $d/tls.crt, key: $d/tls.key }
auth:
  htpasswd: { realm: iklim-lab, path: $d/htpasswd }
EOF
		rm -f "$d/registry.pid"
		# Not a process group leader here, so setsid does not fork: $! is
		# the registry itself. 9>&- so it does not hold the lab lock.
		nsenter --net="/run/netns/$REGISTRY_HOST" --mount="$NS_DIR/$REGISTRY_HOST.mnt" --uts="$NS_DIR/$REGISTRY_HOST.uts" -- \
			setsid /usr/bin/docker-registry serve "$d/config.yml" >>"$d/registry.log" 2>&1 </dev/null 9>&- &
		echo $! >"$d/registry.pid"
		for ((i = 0; i < 100; i++)); do
			pid_ok "$d/registry.pid" "$REGISTRY_HOST" && tcp_open "$REGISTRY_ADDR" "$REGISTRY_PORT" && break
			sleep 0.1
		done
		((i < 100)) || die "registry: did not come up (see $d/registry.log)"
		hlog "$REGISTRY_HOST" "started registry (pid $(<"$d/registry.pid")) on $reg"
	fi
	[[ -e $d/pushed-r$IMAGE_RECIPE ]] && return 0
	# The docker CLI keeps the login in its own config, not root's.
	(
		export DOCKER_CONFIG=$d/docker-config
		hdocker "$REGISTRY_HOST" login -u "$REGISTRY_USER" --password-stdin "$reg" <"$d/password" >/dev/null &&
			hdocker "$REGISTRY_HOST" tag local/busybox:1 "$reg/lab/busybox:1" &&
			hdocker "$REGISTRY_HOST" push -q "$reg/lab/busybox:1" >/dev/null &&
			hdocker "$REGISTRY_HOST" logout "$reg" >/dev/null
	) || die "registry: pushing the lab images failed (see $d/registry.log)"
	touch "$d/pushed-r$IMAGE_RECIPE"
	hlog "$REGISTRY_HOST" "pushed $reg/lab/busybox:1"
}

# ----------------------------------------------------------------- etcd ---
# Debian's etcd-server 3.4, one member in iklim-db-03 on 10.77.0.23:2379: it
# stands in for the etcd that Patroni and APISIX share in prod (seed 000 step
# 18 waits for its health; examples/iklimco). Idempotent: a running etcd is
# left alone, its data is kept across runs.
ETCD_HOST=iklim-db-03
ETCD_ADDR=10.77.0.23

etcd_up() {
	local d=$LAB_DIR/etcd i
	[[ -x /usr/bin/etcd ]] || { log "etcd: /usr/bin/etcd not installed (apt-get install etcd-server); skipped"; return 0; }
	mkdir -p "$d/data"
	chmod 0700 "$d" "$d/data"
	if pid_ok "$d/etcd.pid" "$ETCD_HOST"; then
		hlog "$ETCD_HOST" "etcd already up (pid $(<"$d/etcd.pid"))"
		return 0
	fi
	rm -f "$d/etcd.pid"
	# Not a process group leader here, so setsid does not fork: $! is etcd.
	nsenter --net="/run/netns/$ETCD_HOST" --mount="$NS_DIR/$ETCD_HOST.mnt" --uts="$NS_DIR/$ETCD_HOST.uts" -- \
		setsid /usr/bin/etcd --name "$ETCD_HOST" --data-dir "$d/data" \
		--listen-client-urls "http://$ETCD_ADDR:2379,http://127.0.0.1:2379" --advertise-client-urls "http://$ETCD_ADDR:2379" \
		--listen-peer-urls "http://$ETCD_ADDR:2380" --initial-advertise-peer-urls "http://$ETCD_ADDR:2380" \
		--initial-cluster "$ETCD_HOST=http://$ETCD_ADDR:2380" >>"$d/etcd.log" 2>&1 </dev/null 9>&- &
	echo $! >"$d/etcd.pid"
	for ((i = 0; i < 100; i++)); do
		pid_ok "$d/etcd.pid" "$ETCD_HOST" && tcp_open "$ETCD_ADDR" 2379 && break
		sleep 0.1
	done
	((i < 100)) || die "etcd: did not come up (see $d/etcd.log)"
	hlog "$ETCD_HOST" "started etcd (pid $(<"$d/etcd.pid")) on $ETCD_ADDR:2379"
}

# etcd_down stops etcd by its pid file (lab.sh down).
etcd_down() { stop_pidfile "$LAB_DIR/etcd/etcd.pid" "$ETCD_HOST" etcd 10; }

# cmd_restart_dockerd restarts the dockerd of each named host: what heals a
# dockerd whose swarm leave hung or whose network agent leaked the gossip
# port (moby/moby#38824, #31913). Its containers go with it, so it first
# waits for the tests that use a dockerd outside the swarm lock to end: they
# hold .dockerd.lock shared (labtest's UseDockerd). fd 9, which the daemons
# started here close.
cmd_restart_dockerd() {
	local h d
	(($#)) || die "restart-dockerd: name at least one host"
	exec 9>>"$LAB_DIR/.dockerd.lock"
	if ! flock -x -n 9; then
		log "waiting for the tests that use a dockerd to end ($LAB_DIR/.dockerd.lock)"
		flock -x -w 1800 9 || die "restart-dockerd: $LAB_DIR/.dockerd.lock was still held after 30 min"
	fi
	for h in "$@"; do
		d=$(host_dir "$h")
		[[ -d $d ]] || die "restart-dockerd: no lab host $h"
		stop_pidfile "$d/dockerd.pid" "$h" dockerd 30
		start_dockerd "$h"
		hlog "$h" "restarted dockerd ($(<"$d/dockerd.pid"))"
	done
}

usage() {
	cat <<EOF
usage: $0 up|down|status|images [--rebuild]|smoke [HOST]|restart-dockerd HOST...|purge
  up      create the six hosts (idempotent), write known_hosts, load images
  down    stop everything, remove namespaces, bridge and per-host state
          (keeps the client key, host keys, known_hosts and the image cache)
  status  show each host's sshd and dockerd; exit 1 unless all are up
  images  build missing image tarballs and import them into running hosts
  smoke   run every image's service on HOST (default iklim-app-01) and check it
  restart-dockerd HOST...
          restart those hosts' dockerd (heals a wedged swarm leave or a
          leaked gossip port)
  purge   down, then delete $LAB_DIR entirely
EOF
}

# Daemons started here must not inherit the caller's open files (a caller's
# lock fd would otherwise be held by dockerd until 'down').
close_inherited_fds() {
	local f n
	for f in /proc/$$/fd/*; do
		n=${f##*/}
		[[ $n =~ ^[0-9]+$ ]] && ((n > 2 && n < 255)) && eval "exec $n>&-" 2>/dev/null || true
	done
}

main() {
	close_inherited_fds
	local cmd=${1:-status}
	shift || true
	case $cmd in
	up) cmd_up "$@" ;;
	down) cmd_down "$@" ;;
	status) cmd_status "$@" ;;
	images) cmd_images "$@" ;;
	purge) cmd_purge "$@" ;;
	smoke) cmd_smoke "$@" ;;
	restart-dockerd) cmd_restart_dockerd "$@" ;;
	-h | --help | help) usage ;;
	*) usage >&2; exit 2 ;;
	esac
}

main "$@"
