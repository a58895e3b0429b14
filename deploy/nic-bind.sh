#!/usr/bin/env bash
# nic-bind.sh - hand a NIC to DPDK (vfio-pci) and give it back to its kernel
# driver, around Debian's dpdk-devbind.py (package dpdk).
#
# Why a wrapper: binding the wrong NIC to vfio-pci cuts a server off its
# network, and dpdk-devbind.py only notices an interface that carries a
# route. This script refuses before touching anything when an interface of
# the NIC carries a default route (any table, IPv4 or IPv6), has an IP
# address (IPv6 link-local excepted: the kernel adds those by itself) or is
# enslaved to a bridge or bond, unless --force. It loads vfio-pci, records
# the kernel driver it took the NIC from (so "unbind" knows where to give it
# back), verifies the result in sysfs, and does nothing when the NIC is
# already where it should be, so tidegate-nic-bind@.service can run it at
# every start.
#
# Exit status: 0 done (or nothing to do), 1 failed, 2 usage error, 3 refused
# (the NIC is in use by the host; nothing was changed).
#
# NIC_BIND_SYSFS (default /sys) lets the tests point the script at a fake
# sysfs tree; it is not meant for anything else.
set -euo pipefail

PROG=${0##*/}
DEVBIND=${DPDK_DEVBIND:-dpdk-devbind.py}
SYSFS=${NIC_BIND_SYSFS:-/sys}
DPDK_DRIVERS="vfio-pci uio_pci_generic igb_uio"

usage() {
	cat <<EOF
Usage: $PROG [OPTIONS] COMMAND [DEVICE...]

Commands:
  bind DEVICE...     load vfio-pci and bind each DEVICE to it. Refused (exit 3,
                     nothing changed) when an interface of the NIC carries a
                     default route, has an IP address or is in a bridge/bond,
                     unless --force. A NIC already on vfio-pci is left alone.
  unbind DEVICE...   give each DEVICE back to a kernel driver: --driver DRV, or
                     the one bind recorded, or the one dpdk-devbind.py lists as
                     "unused=". A NIC not on a DPDK driver is left alone.
  status             dpdk-devbind.py --status-dev net

DEVICE is a PCI address (0000:3b:00.0 or 3b:00.0) or, for a NIC still on its
kernel driver, its interface name (eth1).

Options:
  --driver DRV       bind: the DPDK driver (default vfio-pci); unbind: the kernel
                     driver to give the NIC back to
  --force            bind even a NIC the host uses (you may lose the network)
  --noiommu          let vfio run without an IOMMU (enable_unsafe_noiommu_mode;
                     VMs without a vIOMMU: no DMA isolation, root only)
  --allow-none       with no DEVICE, succeed doing nothing (for units whose
                     TG_NICS is empty because the gateway uses a --vdev)
  --state-dir DIR    where bind records kernel drivers (default /run/tidegate/nic)
  --dry-run          check and print what would be done, change nothing
  -h, --help         this help

Examples:
  $PROG status
  $PROG --dry-run bind 0000:3b:00.0
  $PROG bind 0000:3b:00.0 0000:3b:00.1
  $PROG unbind 0000:3b:00.0
EOF
}

die() { printf '%s: %s\n' "$PROG" "$*" >&2; exit 1; }
usage_err() { printf '%s: %s (see --help)\n' "$PROG" "$*" >&2; exit 2; }
refuse() { printf '%s: refusing: %s\n' "$PROG" "$*" >&2; exit 3; }
note() { printf '%s: %s\n' "$PROG" "$*"; }

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

dry_run=0 force=0 noiommu=0 allow_none=0 driver="" state_dir=/run/tidegate/nic cmd=""
devs=()
while (($#)); do
	case $1 in
	-h | --help) usage; exit 0 ;;
	--dry-run) dry_run=1 ;;
	--force) force=1 ;;
	--noiommu) noiommu=1 ;;
	--allow-none) allow_none=1 ;;
	--driver) (($# >= 2)) || usage_err "$1 needs a value"; driver=$2; shift ;;
	--state-dir) (($# >= 2)) || usage_err "$1 needs a value"; state_dir=$2; shift ;;
	-*) usage_err "unknown option '$1'" ;;
	*)
		if [[ -z $cmd ]]; then
			cmd=$1
		else
			devs+=("$1")
		fi
		;;
	esac
	shift
done

case $cmd in
bind | unbind | status) ;;
"") usage_err "no command: bind, unbind or status" ;;
*) usage_err "unknown command '$cmd': bind, unbind or status" ;;
esac

# ---- looking things up ----

PCI_RE='^(([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$'

# pci_norm ADDR: 3b:00.0 -> 0000:3b:00.0 (lowercase); 1 if not an address.
pci_norm() {
	[[ $1 =~ $PCI_RE ]] || return 1
	local dom=${BASH_REMATCH[2]:-0000}
	echo "${dom,,}:${BASH_REMATCH[3],,}:${BASH_REMATCH[4],,}.${BASH_REMATCH[5]}"
}

# pci_of_netdev IF: the PCI address its device hangs under ("" if virtual).
# The device link may point below the PCI function (virtio's virtioN), so
# take the last path component that is a PCI address.
pci_of_netdev() {
	local p comp found=""
	p=$(readlink -f "$SYSFS/class/net/$1/device" 2>/dev/null) || { echo ""; return; }
	IFS=/ read -ra comp <<<"$p"
	for c in "${comp[@]}"; do
		[[ $c =~ ^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$ ]] && found=$c
	done
	echo "$found"
}

# netdevs_of_pci ADDR: the kernel interfaces of one PCI function.
netdevs_of_pci() {
	local n out=""
	for n in "$SYSFS"/class/net/*; do
		[[ -e $n ]] || continue
		[[ $(pci_of_netdev "${n##*/}") == "$1" ]] && out+="${n##*/} "
	done
	echo "${out% }"
}

driver_of() {
	local d
	d=$(readlink "$SYSFS/bus/pci/devices/$1/driver" 2>/dev/null) || { echo ""; return; }
	echo "${d##*/}"
}

# in_use IF: why the host needs this interface, "" if it does not.
in_use() {
	local ifc=$1 why=() line master
	while read -r line; do
		[[ -n $line ]] && why+=("default route: '$line'")
	done < <({ ip -4 route show table all 2>/dev/null; ip -6 route show table all 2>/dev/null; } |
		awk -v d="$ifc" '$1 == "default" { for (i = 2; i < NF; i++) if ($i == "dev" && $(i+1) == d) { print; break } }')
	while read -r line; do
		[[ -n $line ]] && why+=("address $line")
	done < <(ip -o addr show dev "$ifc" 2>/dev/null |
		awk '$3 == "inet" || ($3 == "inet6" && $0 !~ / scope link/) { print $4 }')
	if [[ -e $SYSFS/class/net/$ifc/master ]]; then
		master=$(readlink -f "$SYSFS/class/net/$ifc/master")
		why+=("member of ${master##*/}")
	fi
	local IFS=';'
	echo "${why[*]}"
}

# resolve DEVICE: sets pci and ifs (the interfaces of that PCI function).
resolve() {
	local dev=$1 addr
	pci="" ifs=""
	if addr=$(pci_norm "$dev"); then
		[[ -e $SYSFS/bus/pci/devices/$addr ]] || die "$dev: no such PCI device (see '$PROG status')"
		pci=$addr
		ifs=$(netdevs_of_pci "$addr")
	elif [[ -e $SYSFS/class/net/$dev ]]; then
		ifs=$dev
		pci=$(pci_of_netdev "$dev")
	else
		die "$dev: neither a PCI address (0000:3b:00.0) nor a network interface"
	fi
}

state_file() { echo "$state_dir/$1.driver"; }

# ---- commands ----

load_vfio() {
	if ((noiommu)); then
		if [[ -w $SYSFS/module/vfio/parameters/enable_unsafe_noiommu_mode ]] || ((dry_run)); then
			run sh -c "echo Y > $SYSFS/module/vfio/parameters/enable_unsafe_noiommu_mode"
		else
			run modprobe vfio enable_unsafe_noiommu_mode=1 || die "modprobe vfio failed"
		fi
	elif [[ -d $SYSFS/kernel/iommu_groups ]] &&
		[[ -z $(find "$SYSFS/kernel/iommu_groups" -mindepth 1 -maxdepth 1 -print -quit 2>/dev/null) ]]; then
		printf '%s: warning: no IOMMU groups: vfio-pci will refuse the NIC; enable the IOMMU (intel_iommu=on or amd_iommu=on, and VT-d/AMD-Vi in the firmware) or use --noiommu in a VM without one\n' \
			"$PROG" >&2
	fi
	if [[ ! -d $SYSFS/bus/pci/drivers/$driver ]]; then
		run modprobe "$driver" || die "modprobe $driver failed (is the module available for this kernel?)"
	fi
}

cmd_bind() {
	local dev why cur ifc
	driver=${driver:-vfio-pci}
	# Every check first, for every device: refuse before changing anything.
	local pcis=()
	for dev in "${devs[@]}"; do
		resolve "$dev"
		for ifc in $ifs; do
			why=$(in_use "$ifc")
			if [[ -n $why ]]; then
				if ((force)); then
					printf '%s: warning: --force: %s (%s) is in use: %s\n' "$PROG" "$dev" "$ifc" "$why" >&2
				else
					refuse "$dev: interface $ifc is in use by this host (${why//;/; }); binding it to $driver would take it away from the kernel (use --force if you mean it)"
				fi
			fi
		done
		[[ -n $pci ]] || die "$dev is not a PCI device (a virtual interface): nothing to bind; give it to the gateway as --vdev net_af_packet0,iface=$dev instead"
		pcis+=("$pci")
	done
	load_vfio
	for pci in "${pcis[@]}"; do
		cur=$(driver_of "$pci")
		if [[ $cur == "$driver" ]]; then
			note "$pci: already bound to $driver"
			continue
		fi
		if [[ -n $cur && " $DPDK_DRIVERS " != *" $cur "* ]]; then
			run mkdir -p "$state_dir"
			if ((dry_run)); then
				note "would record kernel driver $cur in $(state_file "$pci")"
			else
				echo "$cur" >"$(state_file "$pci")"
			fi
		fi
		local extra=()
		((force)) && extra+=(--force)
		run "$DEVBIND" -b "$driver" "$pci" "${extra[@]}" || die "$pci: $DEVBIND -b $driver failed"
		if ((dry_run)); then
			continue
		fi
		[[ $(driver_of "$pci") == "$driver" ]] ||
			die "$pci: still on '$(driver_of "$pci")' after binding to $driver (dmesg may say why: IOMMU group shared with another device?)"
		note "$pci: ${cur:-no driver} -> $driver"
	done
}

# kernel_driver PCI: where to give it back.
kernel_driver() {
	local f line
	if [[ -n $driver ]]; then
		echo "$driver"
		return
	fi
	f=$(state_file "$1")
	if [[ -r $f ]]; then
		head -n1 "$f"
		return
	fi
	# dpdk-devbind.py knows which kernel modules claim the device's IDs.
	line=$("$DEVBIND" --status-dev net 2>/dev/null | grep -F "$1 " | head -n1) || true
	if [[ $line =~ unused=([^ ]*) ]]; then
		local IFS=, d
		for d in ${BASH_REMATCH[1]}; do
			[[ " $DPDK_DRIVERS " == *" $d "* ]] || { echo "$d"; return; }
		done
	fi
	echo ""
}

cmd_unbind() {
	local dev cur kdrv
	for dev in "${devs[@]}"; do
		resolve "$dev"
		[[ -n $pci ]] || die "$dev is not a PCI device: nothing to unbind"
		cur=$(driver_of "$pci")
		if [[ " $DPDK_DRIVERS " != *" $cur "* ]]; then
			note "$pci: on '${cur:-no driver}', not a DPDK driver: nothing to do"
			continue
		fi
		kdrv=$(kernel_driver "$pci")
		[[ -n $kdrv ]] || die "$pci: do not know its kernel driver: give --driver DRV (see '$PROG status')"
		run "$DEVBIND" -b "$kdrv" "$pci" || die "$pci: $DEVBIND -b $kdrv failed"
		if ((dry_run)); then
			continue
		fi
		[[ $(driver_of "$pci") == "$kdrv" ]] || die "$pci: not on $kdrv after binding it back"
		rm -f "$(state_file "$pci")"
		note "$pci: $cur -> $kdrv"
	done
}

cmd_status() {
	command -v "$DEVBIND" >/dev/null || die "$DEVBIND not found: install Debian's 'dpdk' package"
	"$DEVBIND" --status-dev net
}

if [[ $cmd == bind || $cmd == unbind ]]; then
	if ((${#devs[@]} == 0)); then
		((allow_none)) && { note "no device given: nothing to $cmd"; exit 0; }
		usage_err "$cmd needs at least one DEVICE"
	fi
	command -v "$DEVBIND" >/dev/null || ((dry_run)) ||
		die "$DEVBIND not found: install Debian's 'dpdk' package (deploy/install-deps.sh)"
	((dry_run)) || [[ $(id -u) -eq 0 ]] || die "$cmd needs root"
fi
"cmd_$cmd"
