#!/usr/bin/env bash
# quickstart.sh - the README's first command. On a fresh Debian 12 machine, as
# root: install what is missing, build, reserve hugepages (or run without),
# make a network namespace and a veth pair, start redis-server,
# tidegate-control and tidegate-gateway (net_af_packet on the veth), create an
# organization, back up /usr/share/doc from inside the namespace, restore it,
# compare byte for byte and print a short report. Everything it starts or
# creates is removed on exit, whatever happens (trap).
#
# Usage: deploy/quickstart.sh [DIR]     (default DIR: /usr/share/doc)
# Environment: TG_QS_KEEP=1 keeps the work directory; TG_QS_NO_HUGE=1 runs the
# gateway with --no-huge; TG_QS_BUILD=DIR builds in DIR instead of ./build.
# Exit status: 0 when the restore is identical, 1 on any failure (the step
# that failed is named on stderr).
set -euo pipefail

src_dir=${1:-/usr/share/doc}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

n=0
step() { n=$((n + 1)); printf '\n[%d] %s\n' "$n" "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf '\nquickstart: FAILED: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root: the namespace, the veth pair and hugepages need it"
[[ -d $src_dir ]] || die "$src_dir is not a directory"

id=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
ns=tgc-$id host_if=tgg-$id prefix=tg-$id
gw_ip=169.254.77.1 cl_ip=169.254.77.2
work=""
redis_pid="" control_pid="" gw_pid="" child=""
# The trap may fire while a step's output is redirected to a file: keep the
# terminal's stdout and stderr for the cleanup's messages.
exec 3>&1 4>&2
net_made=0 huge_prev="" huge_mounted=""

stop_pid() { # stop_pid PID NAME: SIGTERM, then SIGKILL after 20 s
  local pid=$1 i
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  echo "quickstart: $2 ignored SIGTERM, killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  exec 1>&3 2>&4
  stop_pid "$child" "the client"
  printf '\n[cleanup] stopping processes, removing the namespace and the veth\n'
  stop_pid "$gw_pid" tidegate-gateway
  stop_pid "$control_pid" tidegate-control
  stop_pid "$redis_pid" redis-server
  if ((net_made)); then
    ip link del "$host_if" 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  fi
  rm -rf "/var/run/dpdk/$prefix"
  # Give the pages back unless something else is using them by now.
  local hp=/sys/kernel/mm/hugepages/hugepages-2048kB
  if [[ -n $huge_prev ]] && (($(cat $hp/free_hugepages) >= $(cat /proc/sys/vm/nr_hugepages))); then
    echo "$huge_prev" >/proc/sys/vm/nr_hugepages
  fi
  [[ -n $huge_mounted ]] && umount "$huge_mounted" 2>/dev/null
  if [[ -n $work ]]; then
    if [[ -n ${TG_QS_KEEP:-} || $rc -ne 0 ]]; then
      echo "[cleanup] logs kept in $work"
      rm -rf "$work/restore" "$work/store"
    else
      rm -rf "$work"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for SECONDS WHAT COMMAND...: poll COMMAND every 0.2 s.
wait_for() {
  local secs=$1 what=$2 i; shift 2
  for ((i = 0; i < secs * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "timed out after ${secs}s waiting for $what"
}

json_get() { # json_get FILE KEY
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

t_start=$(date +%s)

step "dependencies (deploy/install-deps.sh)"
bash deploy/install-deps.sh || die "could not install the Debian packages"

bdir=${TG_QS_BUILD:-build}
step "build (meson + ninja in ./$bdir)"
if [[ ! -f $bdir/build.ninja ]]; then
  meson setup "$bdir" >/tmp/tidegate-quickstart-setup.log 2>&1 ||
    { tail -30 /tmp/tidegate-quickstart-setup.log; die "meson setup failed"; }
fi
ninja -C "$bdir" >/tmp/tidegate-quickstart-build.log 2>&1 ||
  { tail -30 /tmp/tidegate-quickstart-build.log; die "the build failed"; }
B=$repo/$bdir
for b in control/tidegate-control control/tidegate-ctl gateway/tidegate-gateway \
         client/tidegate-push client/tidegate-restore; do
  [[ -x $B/$b ]] || die "$b was not built (is DPDK installed? see $bdir/meson-logs)"
done
info "ok"
work=$(mktemp -d /tmp/tidegate-quickstart.XXXXXX)

step "hugepages (512 x 2 MiB)"
eal_mem=(--no-huge -m 1024)
if [[ -z ${TG_QS_NO_HUGE:-} ]]; then
  if ! awk '$3 == "hugetlbfs" {f = 1} END {exit !f}' /proc/mounts; then
    mkdir -p /dev/hugepages
    mount -t hugetlbfs -o pagesize=2M nodev /dev/hugepages 2>/dev/null && huge_mounted=/dev/hugepages
  fi
  hp=/sys/kernel/mm/hugepages/hugepages-2048kB
  if [[ -r $hp/free_hugepages ]]; then
    free=$(cat $hp/free_hugepages)
    if ((free < 512)); then
      huge_prev=$(cat /proc/sys/vm/nr_hugepages)
      echo $((huge_prev + 512 - free)) >/proc/sys/vm/nr_hugepages 2>/dev/null || true
      free=$(cat $hp/free_hugepages)
    fi
    if ((free >= 512)) && awk '$3 == "hugetlbfs" {f = 1} END {exit !f}' /proc/mounts; then
      eal_mem=(--huge-unlink)
    fi
  fi
fi
if [[ ${eal_mem[0]} == --no-huge ]]; then
  info "no hugepages: the gateway runs with --no-huge -m 1024 (slower, fine for a demo)"
else
  info "reserved; the gateway runs with hugepages"
fi

step "network namespace $ns and veth pair $host_if <-> tgc0"
ip netns add "$ns"
net_made=1
ip link add "$host_if" type veth peer name tgc0 netns "$ns"
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" ip addr add "$cl_ip/24" dev tgc0
ip netns exec "$ns" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 || true
sysctl -q -w "net.ipv6.conf.$host_if.disable_ipv6=1" || true
ip netns exec "$ns" ip link set tgc0 up
ip netns exec "$ns" ethtool -K tgc0 tx off >/dev/null
ip link set "$host_if" up
info "client side: tgc0 $cl_ip/24 in $ns; gateway side: $host_if (DPDK), $gw_ip"

step "redis-server (private, loopback)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --dir "$work" --appendonly yes --save "" \
  --daemonize no --logfile "$work/redis.log" >/dev/null 2>&1 &
redis_pid=$!
wait_for 10 "redis-server to answer PING" redis-cli -p "$port" ping
info "127.0.0.1:$port"

step "tidegate-control"
admin=$work/admin.sock gwsock=$work/gateway.sock
"$B/control/tidegate-control" --redis-host 127.0.0.1 --redis-port "$port" \
  --admin-socket "$admin" --gateway-socket "$gwsock" --admin-group root \
  >"$work/control.log" 2>&1 &
control_pid=$!
ctl() { "$B/control/tidegate-ctl" --socket "$admin" "$@"; }
wait_for 15 "tidegate-control's admin socket" ctl provider show
kill -0 "$control_pid" 2>/dev/null || { tail "$work/control.log"; die "tidegate-control exited"; }
provider=$(ctl --json provider show | python3 -c 'import json,sys; print(json.load(sys.stdin)["guid"])')
info "provider $provider"

step "tidegate-gateway (net_af_packet on $host_if)"
mkdir -p "$work"/store/d{0,1,2,3}
"$B/gateway/tidegate-gateway" -l 0,1 --main-lcore 0 --file-prefix "$prefix" --no-pci \
  "${eal_mem[@]}" --vdev "net_af_packet0,iface=$host_if,framecnt=8192,qpairs=1" -- \
  --addr "0=$gw_ip/24" --control-sock "$gwsock" --name "quickstart-$id" \
  --store-dir "$work/store/d0" --store-dir "$work/store/d1" \
  --store-dir "$work/store/d2" --store-dir "$work/store/d3" >"$work/gateway.log" 2>&1 &
gw_pid=$!
for ((i = 0; i < 450; i++)); do
  grep -q ready "$work/gateway.log" && break
  kill -0 "$gw_pid" 2>/dev/null || { tail -20 "$work/gateway.log"; die "tidegate-gateway exited"; }
  sleep 0.2
done
grep -q ready "$work/gateway.log" || { tail -20 "$work/gateway.log"; die "tidegate-gateway not ready after 90 s"; }
if command -v ping >/dev/null; then
  ip netns exec "$ns" ping -c 1 -W 2 "$gw_ip" >/dev/null ||
    die "the gateway does not answer ping on $gw_ip from the namespace"
  info "ready, answers ping on $gw_ip"
else
  info "ready on $gw_ip"
fi

step "organization 'quickstart-$id' with a registration key"
ctl --json org add "quickstart-$id" --seats 5 --quota 10G >"$work/org.json" ||
  die "tidegate-ctl org add failed"
key=$(json_get "$work/org.json" registration_key)
info "registration key ${key:0:12}... (shown once; kept only in the credentials file's device credential)"

# client OUT COMMAND...: run COMMAND in the namespace with stdout to OUT, in
# the background so that a signal interrupts the wait at once.
client() {
  local out=$1 rc=0
  shift
  ip netns exec "$ns" "$@" >"$out" &
  child=$!
  wait "$child" || rc=$?
  child=""
  return "$rc"
}
creds=$work/credentials
step "backup of $src_dir from the namespace (tidegate-push)"
TIDEGATE_KEY=$key client "$work/push1.json" "$B/client/tidegate-push" -g "$gw_ip" \
  -P "$provider" -c "$creds" -n quickstart -l first --json -q "$src_dir" ||
  die "tidegate-push failed (exit $?): see above"
info "backup $(json_get "$work/push1.json" backup_id): $(json_get "$work/push1.json" files) files, $(json_get "$work/push1.json" logical_bytes) bytes"

step "second backup of the same tree (dedup: only what changed is sent)"
client "$work/push2.json" "$B/client/tidegate-push" -g "$gw_ip" -c "$creds" -n quickstart \
  -l second --json -q "$src_dir" || die "the second tidegate-push failed (exit $?)"
info "sent $(json_get "$work/push2.json" data_bytes) DATA bytes"

step "restore into $work/restore (tidegate-restore)"
client "$work/restore.json" "$B/client/tidegate-restore" -g "$gw_ip" -c "$creds" \
  -n quickstart --json -q "$work/restore" || die "tidegate-restore failed (exit $?)"
info "restored $(json_get "$work/restore.json" files) files, $(json_get "$work/restore.json" bytes) bytes"

step "byte-for-byte comparison (diff -r)"
got=$work/restore
base=$(basename "$src_dir")
if [[ -d $got/$base && $(ls -A "$got") == "$base" ]]; then got=$got/$base; fi
diff -r --no-dereference "$src_dir" "$got" >"$work/diff.txt" 2>&1 ||
  { head -20 "$work/diff.txt"; die "the restore differs from $src_dir"; }
info "identical: $src_dir == $got"

step "stop the gateway (SIGTERM: drain, commit usage, exit 0)"
kill -TERM "$gw_pid"
rc=0; wait "$gw_pid" || rc=$?
gw_pid=""
((rc == 0)) || { tail -20 "$work/gateway.log"; die "tidegate-gateway exited with $rc"; }
ctl --json usage "quickstart-$id" >"$work/usage.json" || die "tidegate-ctl usage failed"

step "report"
python3 - "$work" "$(($(date +%s) - t_start))" <<'PY'
import json, sys
w, total = sys.argv[1], int(sys.argv[2])
p1 = json.load(open(w + "/push1.json"))
p2 = json.load(open(w + "/push2.json"))
r = json.load(open(w + "/restore.json"))
u = json.load(open(w + "/usage.json"))
u = u[0] if isinstance(u, list) and u else u
MB = 1e6
def rate(b, s):
    return "%.1f MB/s" % (b / MB / s) if s else "-"
print("    tree            %d files, %.1f MB" % (p1["files"], p1["logical_bytes"] / MB))
print("    first backup    %d chunks (%d offered, %d needed, %d dedup hits), %.1f MB of DATA,"
      " %.1f s, %s" % (p1["chunks"], p1["chunks_offered"], p1["chunks_needed"], p1["chunks_dup"],
                       p1["data_bytes"] / MB, p1["seconds"], rate(p1["logical_bytes"], p1["seconds"])))
print("    second backup   %d of %d chunks sent, %.3f MB of DATA (%.2f %% of the tree), %.1f s"
      % (p2["chunks_needed"], p2["chunks_offered"], p2["data_bytes"] / MB,
         100.0 * p2["data_bytes"] / max(1, p2["logical_bytes"]), p2["seconds"]))
print("    restore         %d files, %.1f MB, %d chunks, %.1f s, %s"
      % (r["files"], r["bytes"] / MB, r["chunks"], r["seconds"], rate(r["bytes"], r["seconds"])))
print("    stored          %.1f MB received, %.1f MB stored; dedup ratio %.2f, compression ratio %.2f"
      % (u.get("bytes_received", 0) / MB, u.get("bytes_stored", 0) / MB,
         u.get("dedup_ratio", 0), u.get("compression_ratio", 0)))
print("    wall time       %d s for the whole quick start" % total)
PY
printf '\nquickstart: OK - backup and restore of %s are identical\n' "$src_dir"
