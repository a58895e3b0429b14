#!/usr/bin/env bash
# hugepages.sh - reserve, show and release the hugepages tidegate-gateway's
# DPDK memory lives in, around Debian's dpdk-hugepages.py (package dpdk).
#
# Why a wrapper: dpdk-hugepages.py sets a reservation to exactly what it is
# told (so a second call with a smaller figure takes pages from a gateway
# that is about to start), reserves the figure on every NUMA node when no
# node is named, ignores a failed mount, and says nothing about pages in
# use. This script makes "reserve" idempotent (it only ever raises a
# reservation: at least N pages), verifies what the kernel really granted
# and what got mounted, and never lowers a reservation below the pages a
# running process holds. tidegate-hugepages.service runs "reserve" at boot,
# early, while memory is not yet fragmented.
#
# Exit status: 0 done (or nothing to do), 1 the system refused (not enough
# memory, no such page size, mount failed, not root), 2 usage error.
set -euo pipefail

PROG=${0##*/}
DPDK_HUGEPAGES=${DPDK_HUGEPAGES:-dpdk-hugepages.py}
SYS_MM=/sys/kernel/mm/hugepages
SYS_NODES=/sys/devices/system/node

usage() {
	cat <<EOF
Usage: $PROG [--dry-run] COMMAND [OPTIONS]

Commands:
  reserve -n PAGES [-s SIZE] [--node N] [-m DIR | --no-mount] [-g GROUP]
        Make sure at least PAGES hugepages of SIZE are reserved (on every NUMA
        node, or on node N only) and that hugetlbfs of that page size is
        mounted on DIR (default /dev/hugepages). Never lowers a reservation;
        running it twice changes nothing the second time.
  release [-n PAGES] [-s SIZE] [--node N] [--unmount [-m DIR]]
        Lower the reservation to PAGES (default 0), but never below the pages
        in use by running processes (those are kept, with a warning).
        --unmount also unmounts DIR when no process has files open in it.
  show  [-s SIZE]
        dpdk-hugepages.py --show, then one line per node and page size:
          size=2048kB node=0 total=512 free=500 in_use=12
        and one line per hugetlbfs mount:  mount=/dev/hugepages pagesize=2048kB

Options:
  -n, --pages PAGES   number of pages (per NUMA node when --node is not given)
  -s, --size SIZE     page size: 2M, 1G, 2048K, 2048kB (default: the kernel's
                      default page size, $(default_kb)kB here)
      --node N        one NUMA node only
  -m, --mount DIR     hugetlbfs mount point (default /dev/hugepages)
      --no-mount      reserve only
  -g, --group GROUP   group owning the mount (default: root's)
      --unmount       (release) unmount DIR as well
      --dry-run       print what would be done, change nothing
  -h, --help          this help

Examples:
  $PROG reserve -n 1024 -s 2M          # 2 GiB of 2 MiB pages on every node
  $PROG reserve -n 4 -s 1G --node 0    # 4 GiB of 1 GiB pages on node 0
  $PROG show
  $PROG release -n 0 -s 2M
EOF
}

die() { printf '%s: %s\n' "$PROG" "$*" >&2; exit 1; }
usage_err() { printf '%s: %s (see --help)\n' "$PROG" "$*" >&2; exit 2; }
note() { printf '%s: %s\n' "$PROG" "$*"; }

# default_kb: the kernel's default hugepage size in kB ("" if none).
default_kb() {
	awk '$1 == "Hugepagesize:" { print $2 }' /proc/meminfo 2>/dev/null || true
}

# size_kb SIZE: 2M, 1G, 2048K, 2048kB, 2048KB, 1GB -> kB on stdout.
size_kb() {
	local s=${1^^} n u
	s=${s%B}
	[[ $s =~ ^([0-9]+)([KMG]?)$ ]] || return 1
	n=$((10#${BASH_REMATCH[1]}))
	u=${BASH_REMATCH[2]}
	case $u in
	K | "") ;;
	M) n=$((n * 1024)) ;;
	G) n=$((n * 1024 * 1024)) ;;
	esac
	((n > 0)) || return 1
	echo "$n"
}

valid_sizes() {
	local d out=""
	for d in "$SYS_MM"/hugepages-*kB; do
		[[ -d $d ]] && out+="${d##*/hugepages-} "
	done
	echo "${out% }"
}

# The nodes to act on: "node0 node1 ..." or "" on a kernel without NUMA sysfs.
numa_nodes() {
	local d out=""
	[[ -d $SYS_NODES ]] || { echo ""; return; }
	for d in "$SYS_NODES"/node[0-9]*; do
		[[ -d $d/hugepages ]] && out+="${d##*/} "
	done
	echo "${out% }"
}

# pool_dir NODE KB: the sysfs directory of one pool ("" NODE: system wide).
pool_dir() {
	if [[ -n $1 ]]; then
		echo "$SYS_NODES/$1/hugepages/hugepages-$2kB"
	else
		echo "$SYS_MM/hugepages-$2kB"
	fi
}

read_num() { local v; read -r v <"$1" && echo "${v:-0}"; }

# mount_of DIR: the pagesize (kB) of the hugetlbfs mounted on DIR, "" if none.
mount_of() {
	local mnt fs opts rest o kb opt
	while read -r _ mnt fs opts rest; do
		[[ $fs == hugetlbfs && $mnt == "$1" ]] || continue
		kb=$(default_kb)
		IFS=, read -ra o <<<"$opts"
		for opt in "${o[@]}"; do
			[[ $opt == pagesize=* ]] && kb=$(size_kb "${opt#pagesize=}")
		done
		echo "$kb"
		return 0
	done </proc/mounts
	echo ""
}

run() {
	if ((dry_run)); then
		printf 'would run:'
		printf ' %q' "$@"
		printf '\n'
		return 0
	fi
	"$@"
}

# ---- arguments ----

dry_run=0 cmd="" pages="" size="" node="" mnt=/dev/hugepages no_mount=0 group="" unmount=0
while (($#)); do
	case $1 in
	-h | --help) usage; exit 0 ;;
	--dry-run) dry_run=1 ;;
	-n | --pages) (($# >= 2)) || usage_err "$1 needs a value"; pages=$2; shift ;;
	-s | --size) (($# >= 2)) || usage_err "$1 needs a value"; size=$2; shift ;;
	--node) (($# >= 2)) || usage_err "$1 needs a value"; node=$2; shift ;;
	-m | --mount) (($# >= 2)) || usage_err "$1 needs a value"; mnt=$2; shift ;;
	--no-mount) no_mount=1 ;;
	-g | --group) (($# >= 2)) || usage_err "$1 needs a value"; group=$2; shift ;;
	--unmount) unmount=1 ;;
	-*) usage_err "unknown option '$1'" ;;
	*)
		[[ -z $cmd ]] || usage_err "unexpected argument '$1'"
		cmd=$1
		;;
	esac
	shift
done

case $cmd in
reserve | release | show) ;;
"") usage_err "no command: reserve, release or show" ;;
*) usage_err "unknown command '$cmd': reserve, release or show" ;;
esac

[[ -d $SYS_MM ]] || die "this kernel has no hugepages ($SYS_MM missing): CONFIG_HUGETLBFS is off"

if [[ -n $size ]]; then
	kb=$(size_kb "$size") || usage_err "--size '$size' is not a size like 2M or 1G"
else
	kb=$(default_kb)
	[[ -n $kb ]] || die "no default hugepage size in /proc/meminfo: give --size"
fi
[[ -d $SYS_MM/hugepages-${kb}kB ]] ||
	die "this machine has no ${kb}kB hugepages (valid sizes: $(valid_sizes)); 1G pages may need 'hugepagesz=1G' on the kernel command line"

if [[ -n $pages ]]; then
	[[ $pages =~ ^[0-9]+$ ]] || usage_err "--pages '$pages' is not a number"
	pages=$((10#$pages))
fi
nodes=$(numa_nodes)
if [[ -n $node ]]; then
	[[ $node =~ ^[0-9]+$ ]] || usage_err "--node '$node' is not a number"
	[[ " $nodes " == *" node$node "* ]] || die "NUMA node $node does not exist (nodes: ${nodes:-none})"
	nodes=node$node
fi
[[ -n $group ]] && ! getent group "$group" >/dev/null && die "group '$group' does not exist"

need_root() {
	((dry_run)) || [[ $(id -u) -eq 0 ]] || die "$cmd needs root (it writes $SYS_MM and mounts hugetlbfs)"
}

# set_pool NODE N: one pool to exactly N pages through dpdk-hugepages.py,
# then check what the kernel really did.
set_pool() {
	local n=$1 want=$2 dir got out
	local args=(-p "${kb}K" -r "$((want * kb))K")
	[[ -n $n ]] && args+=(-n "${n#node}")
	command -v "$DPDK_HUGEPAGES" >/dev/null ||
		die "$DPDK_HUGEPAGES not found: install Debian's 'dpdk' package (deploy/install-deps.sh)"
	if ((dry_run)); then
		run "$DPDK_HUGEPAGES" "${args[@]}"
		return 0
	fi
	# It exits non-zero with its own reason when the kernel gives fewer
	# pages; the check below says the same in our words either way.
	out=$("$DPDK_HUGEPAGES" "${args[@]}" 2>&1) || printf '%s: %s\n' "$DPDK_HUGEPAGES" "$out" >&2
	dir=$(pool_dir "$n" "$kb")
	got=$(read_num "$dir/nr_hugepages")
	if ((got != want)); then
		die "the kernel gave ${got} of ${want} ${kb}kB pages${n:+ on $n} (memory too fragmented or too small: reserve at boot, or add hugepages=N to the kernel command line)"
	fi
}

cmd_reserve() {
	local n dir cur have
	[[ -n $pages ]] || usage_err "reserve needs --pages N"
	need_root
	for n in ${nodes:-""}; do
		dir=$(pool_dir "$n" "$kb")
		[[ -r $dir/nr_hugepages ]] || die "${n:-system}: no ${kb}kB hugepage pool"
		cur=$(read_num "$dir/nr_hugepages")
		if ((cur >= pages)); then
			note "${n:-system}: $cur x ${kb}kB reserved, at least $pages asked: nothing to do"
		else
			note "${n:-system}: $cur -> $pages x ${kb}kB"
			set_pool "$n" "$pages"
		fi
	done
	((no_mount)) && return 0
	have=$(mount_of "$mnt")
	if [[ -n $have ]]; then
		((have == kb)) ||
			die "$mnt is already hugetlbfs with ${have}kB pages, not ${kb}kB: give another --mount"
		note "$mnt: hugetlbfs (${kb}kB pages) already mounted"
		return 0
	fi
	[[ -e $mnt && ! -d $mnt ]] && die "$mnt exists and is not a directory"
	run mkdir -p "$mnt"
	local opts="pagesize=${kb}K"
	[[ -n $group ]] && opts+=",gid=$(getent group "$group" | cut -d: -f3),mode=1770"
	run mount -t hugetlbfs -o "$opts" nodev "$mnt" ||
		die "mount -t hugetlbfs -o $opts nodev $mnt failed"
	((dry_run)) && return 0
	have=$(mount_of "$mnt")
	[[ $have == "$kb" ]] || die "$mnt: hugetlbfs is not mounted after mount said yes"
	note "$mnt: mounted hugetlbfs (${kb}kB pages)"
}

cmd_release() {
	local n dir cur free used want
	need_root
	want=${pages:-0}
	for n in ${nodes:-""}; do
		dir=$(pool_dir "$n" "$kb")
		[[ -r $dir/nr_hugepages ]] || continue
		cur=$(read_num "$dir/nr_hugepages")
		free=$(read_num "$dir/free_hugepages")
		used=$((cur - free))
		local target=$want
		if ((target < used)); then
			printf '%s: warning: %s: %d x %skB pages are in use (a DPDK process runs: see /var/run/dpdk); keeping them\n' \
				"$PROG" "${n:-system}" "$used" "$kb" >&2
			target=$used
		fi
		if ((cur <= target)); then
			note "${n:-system}: $cur x ${kb}kB reserved, $target asked: nothing to release"
		else
			note "${n:-system}: $cur -> $target x ${kb}kB"
			set_pool "$n" "$target"
		fi
	done
	((unmount)) || return 0
	if [[ -z $(mount_of "$mnt") ]]; then
		note "$mnt: not a hugetlbfs mount: nothing to unmount"
		return 0
	fi
	if [[ -n $(find "$mnt" -mindepth 1 -maxdepth 1 -print -quit 2>/dev/null) ]]; then
		die "$mnt still holds hugepage files (a DPDK process runs or left them): not unmounting"
	fi
	run umount "$mnt" || die "umount $mnt failed (busy?)"
	note "$mnt: unmounted"
}

cmd_show() {
	local n d sz nr free
	if command -v "$DPDK_HUGEPAGES" >/dev/null; then
		"$DPDK_HUGEPAGES" --show || true
		echo
	fi
	for n in ${nodes:-""}; do
		for d in "$(dirname "$(pool_dir "$n" "$kb")")"/hugepages-*kB; do
			[[ -d $d ]] || continue
			sz=${d##*/hugepages-}
			[[ -z $size || $sz == "${kb}kB" ]] || continue
			nr=$(read_num "$d/nr_hugepages")
			free=$(read_num "$d/free_hugepages")
			printf 'size=%s node=%s total=%d free=%d in_use=%d\n' "$sz" "${n#node}" \
				"$nr" "$free" $((nr - free))
		done
	done
	local m fs opts rest
	while read -r _ m fs opts rest; do
		[[ $fs == hugetlbfs ]] || continue
		printf 'mount=%s pagesize=%skB\n' "$m" "$(mount_of "$m")"
	done </proc/mounts
}

"cmd_$cmd"
