#!/usr/bin/env bash
# install.sh - install a built tidegate on this host: the binaries, the
# hugepages and NIC scripts, the systemd units, the example configurations
# and the docs, and the tidegate group (its members may use tidegate-ctl)
# with the tidegate system user tidegate-control runs as.
#
# It installs what `ninja -C BUILD` made, never builds. Running it again
# upgrades binaries, units, examples and docs in place and keeps every
# configuration an operator wrote (control.conf, gateway-*.conf/.env,
# hugepages.env): an upgrade must never reset a provider's settings.
#
# The units carry /usr/local and /etc/tidegate; they are rewritten to
# --prefix and --sysconfdir on the way, so a unit always runs the binary that
# was installed with it.
#
# Exit status: 0 installed (or, with --dry-run, would have), 1 failed, 2 usage.
set -euo pipefail

PROG=${0##*/}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
	cat <<EOF
Usage: $PROG [OPTIONS]

Installs a built tidegate (run \`meson setup build && ninja -C build\` first).

Options:
  --build DIR        the build directory (default: $repo/build)
  --prefix DIR       where binaries, scripts and docs go: DIR/bin, DIR/sbin,
                     DIR/share/doc/tidegate (default /usr/local)
  --sysconfdir DIR   configuration directory (default /etc/tidegate for the
                     prefixes /usr and /usr/local, else PREFIX/etc/tidegate)
  --unitdir DIR      systemd units (default /etc/systemd/system for /usr and
                     /usr/local, else PREFIX/lib/systemd/system)
  --group NAME       the group that may use the control plane's sockets and
                     read its configuration (default tidegate)
  --user NAME        the system user tidegate-control runs as (default tidegate)
  --no-accounts      do not create the group and the user (they must exist for
                     the units to start)
  --dry-run          print every action, change nothing
  -h, --help         this help

After installing: docs/operations.md, "Install" (or
PREFIX/share/doc/tidegate/operations.md).
EOF
}

die() { printf '%s: %s\n' "$PROG" "$*" >&2; exit 1; }
usage_err() { printf '%s: %s (see --help)\n' "$PROG" "$*" >&2; exit 2; }

build=$repo/build prefix=/usr/local sysconfdir="" unitdir="" group=tidegate user=tidegate
accounts=1 dry_run=0
while (($#)); do
	case $1 in
	-h | --help) usage; exit 0 ;;
	--dry-run) dry_run=1 ;;
	--no-accounts) accounts=0 ;;
	--build | --prefix | --sysconfdir | --unitdir | --group | --user)
		if (($# < 2)) || [[ -z $2 ]]; then
			usage_err "$1 needs a value"
		fi
		v=$2
		case $1 in
		--build) build=$v ;;
		--prefix) prefix=$v ;;
		--sysconfdir) sysconfdir=$v ;;
		--unitdir) unitdir=$v ;;
		--group) group=$v ;;
		--user) user=$v ;;
		esac
		shift
		;;
	*) usage_err "unknown argument '$1'" ;;
	esac
	shift
done

name_re='^[a-z_][a-z0-9_-]{0,30}$'
[[ $group =~ $name_re ]] || usage_err "--group '$group' is not a valid group name"
[[ $user =~ $name_re ]] || usage_err "--user '$user' is not a valid user name"

# Absolute paths: the units and the messages must not depend on the cwd.
abspath() { [[ $1 == /* ]] && echo "$1" || echo "$PWD/$1"; }
prefix=$(abspath "$prefix")
prefix=${prefix%/}
build=$(abspath "$build")
if [[ $prefix == /usr || $prefix == /usr/local ]]; then
	sysconfdir=${sysconfdir:-/etc/tidegate}
	unitdir=${unitdir:-/etc/systemd/system}
else
	sysconfdir=${sysconfdir:-$prefix/etc/tidegate}
	unitdir=${unitdir:-$prefix/lib/systemd/system}
fi
sysconfdir=$(abspath "$sysconfdir")
unitdir=$(abspath "$unitdir")
bindir=$prefix/bin sbindir=$prefix/sbin docdir=$prefix/share/doc/tidegate

run() {
	if ((dry_run)); then
		printf 'would run:'
		printf ' %q' "$@"
		printf '\n'
		return 0
	fi
	"$@"
}

# ---- what there is to install ----

# build-relative path : required?
binaries=(
	control/tidegate-control:1
	control/tidegate-ctl:1
	control/tidegate-linkctl:0
	gateway/tidegate-gateway:1
	client/tidegate-push:1
	client/tidegate-restore:1
	bench/tidegate-bench:0
)
missing=()
for b in "${binaries[@]}"; do
	f=${b%:*}
	[[ -x $build/$f || ${b##*:} == 0 ]] || missing+=("$f")
done
((${#missing[@]} == 0)) ||
	die "not built in $build: ${missing[*]} (meson setup $build && ninja -C $build; the gateway needs libdpdk-dev)"
((dry_run)) || [[ $(id -u) -eq 0 ]] || [[ -w $(dirname "$prefix") || -w $prefix ]] ||
	die "run as root to install into $prefix (or give a --prefix you can write)"

echo "$PROG: installing from $build"
echo "    binaries   $bindir"
echo "    scripts    $sbindir"
echo "    config     $sysconfdir"
echo "    units      $unitdir"
echo "    docs       $docdir"
echo "    accounts   group $group, user $user$( ((accounts)) || echo ' (not created: --no-accounts)')"

# ---- accounts ----

if ((accounts)); then
	if getent group "$group" >/dev/null; then
		echo "$PROG: group $group exists"
	else
		run groupadd --system "$group" || die "groupadd $group failed"
	fi
	if getent passwd "$user" >/dev/null; then
		echo "$PROG: user $user exists"
	else
		nologin=$(command -v nologin || echo /usr/sbin/nologin)
		run useradd --system --gid "$group" --no-create-home --home-dir /nonexistent \
			--shell "$nologin" --comment "tidegate control plane" "$user" ||
			die "useradd $user failed"
	fi
fi
have_group=0
getent group "$group" >/dev/null && have_group=1

# ---- files ----

run install -d -m 0755 "$bindir" "$sbindir" "$docdir" "$unitdir"
for b in "${binaries[@]}"; do
	f=${b%:*}
	[[ -x $build/$f ]] || continue
	run install -m 0755 "$build/$f" "$bindir/${f##*/}"
done
run install -m 0755 "$repo/deploy/hugepages.sh" "$sbindir/tidegate-hugepages"
run install -m 0755 "$repo/deploy/nic-bind.sh" "$sbindir/tidegate-nic-bind"

# The units name /usr/local/{bin,sbin,share}, /etc/tidegate, the user and the
# group; sed the installed paths and names in.
esc() { printf '%s' "$1" | sed 's/[#&\\]/\\&/g'; }
subst=(
	-e "s#/usr/local/bin/#$(esc "$bindir")/#g"
	-e "s#/usr/local/sbin/#$(esc "$sbindir")/#g"
	-e "s#/usr/local/share/doc/tidegate/#$(esc "$docdir")/#g"
	-e "s#/etc/tidegate/#$(esc "$sysconfdir")/#g"
	-e "s#^User=tidegate\$#User=$user#"
	-e "s#^Group=tidegate\$#Group=$group#"
)
for u in "$repo"/deploy/systemd/*.service; do
	dst=$unitdir/${u##*/}
	if ((dry_run)); then
		echo "would write: $dst (paths rewritten)"
	else
		sed "${subst[@]}" "$u" >"$dst.tmp" && chmod 0644 "$dst.tmp" && mv "$dst.tmp" "$dst"
	fi
done

run install -d -m 0750 "$sysconfdir"
((have_group)) && run chgrp "$group" "$sysconfdir"
# Examples are ours: always the newest. Configurations are the operator's.
examples=(
	"deploy/tidegate-control.conf.example:tidegate-control.conf.example"
	"deploy/tidegate-gateway.conf.example:tidegate-gateway.conf.example"
	"deploy/systemd/tidegate-gateway.env.example:tidegate-gateway.env.example"
	"deploy/redis/redis.conf:redis.conf.example"
	"deploy/redis/sentinel.conf:sentinel.conf.example"
)
for e in "${examples[@]}"; do
	run install -m 0644 "$repo/${e%%:*}" "$sysconfdir/${e##*:}"
done
conf=$sysconfdir/control.conf
if [[ -e $conf ]]; then
	echo "$PROG: $conf exists: kept (compare with tidegate-control.conf.example)"
elif ((dry_run)); then
	echo "would write: $conf (the example, admin-group = $group), mode 0640"
else
	# The example is every option commented out: the defaults. Only the
	# group is ours to fill in.
	sed "s/^#admin-group = tidegate\$/admin-group = $group/" \
		"$repo/deploy/tidegate-control.conf.example" >"$conf.tmp"
	chmod 0640 "$conf.tmp"
	((have_group)) && chgrp "$group" "$conf.tmp"
	mv "$conf.tmp" "$conf"
fi

for d in operations.md control.md protocol.md benchmarks.md; do
	[[ -f $repo/docs/$d ]] && run install -m 0644 "$repo/docs/$d" "$docdir/$d"
done

if [[ $unitdir == /etc/systemd/system || $unitdir == /lib/systemd/system ||
	$unitdir == /usr/lib/systemd/system ]] && [[ -d /run/systemd/system ]]; then
	run systemctl daemon-reload
fi

cat <<EOF
$PROG: done$( ((dry_run)) && echo ' (dry run: nothing changed)').
Next (docs/operations.md):
  1. Redis: $sysconfdir/redis.conf.example -> /etc/redis/redis.conf, set requirepass,
     and the same password as redis-password in $conf
  2. systemctl enable --now tidegate-control
  3. per gateway NAME: $sysconfdir/gateway-NAME.conf and gateway-NAME.env from the examples,
     then systemctl enable --now tidegate-hugepages tidegate-gateway@NAME
  4. add administrators to the $group group; tidegate-ctl org add ...
EOF
