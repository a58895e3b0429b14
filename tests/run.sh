#!/usr/bin/env bash
# tests/run.sh - install what is missing, build, run every test suite, and end
# with one line: "N passed, N failed" (", N skipped" when any were skipped).
#
# Counts are per test case: cmocka suites and the integration scripts report
# each case through TAP. Suites:
#   unit         cmocka tests of dataplane/ and the gateway engine (no network)
#   integration  tidegate-control against a real redis-server; end to end: the
#                real gateway (DPDK, net_af_packet on a veth), the clients in a
#                network namespace (needs root, else those cases are skipped)
#   asan         the unit suite under AddressSanitizer + UndefinedBehaviorSanitizer
# Options: --quick (skip the sanitizer build), --suite NAME (only that meson
# suite), -h/--help.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here" || exit 2

quick=0
suite=""
while (($#)); do
  case "$1" in
    --quick) quick=1 ;;
    --suite) suite=${2:?--suite needs a name}; shift ;;
    -h|--help)
      sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
      exit 0 ;;
    *) echo "run.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '== %s\n' "$*"; }

log "dependencies"
bash deploy/install-deps.sh || { echo "0 passed, 1 failed"; exit 1; }

# build DIR [meson options...]: configure once, rebuild always.
build() {
  local dir=$1; shift
  if [[ ! -f $dir/build.ninja ]]; then
    meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 ||
      { cat "$dir.setup.log"; return 1; }
  fi
  ninja -C "$dir" >"$dir.ninja.log" 2>&1 || { tail -50 "$dir.ninja.log"; return 1; }
}

# Count TAP cases per test from meson's JSON log; a test that failed without a
# failing case (crash, timeout) counts as one failure.
count() {
  python3 - "$1" <<'PY'
import json, re, sys
p = f = s = 0
for line in open(sys.argv[1]):
    t = json.loads(line)
    out = t.get("stdout") or ""
    oks = nots = skips = 0
    for l in out.splitlines():
        if re.match(r"^ok \d+", l):
            if re.search(r"#\s*SKIP", l, re.I): skips += 1
            else: oks += 1
        elif re.match(r"^not ok \d+", l):
            nots += 1
    res = t.get("result", "")
    if oks + nots + skips == 0:
        if res == "OK": oks = 1
        elif res == "SKIP": skips = 1
        else: nots = 1
    elif res not in ("OK", "SKIP") and nots == 0:
        nots = 1
    if res not in ("OK", "SKIP") or nots:
        print(f"FAILED: {t.get('name')} ({res})", file=sys.stderr)
    p += oks; f += nots; s += skips
print(p, f, s)
PY
}

total_p=0 total_f=0 total_s=0
run_suite() { # run_suite BUILD_DIR LABEL [meson test args...]
  local dir=$1 label=$2; shift 2
  log "suite $label"
  meson test -C "$dir" --print-errorlogs "$@" 2>&1 | tail -n 25
  local counts
  counts=$(count "$dir/meson-logs/testlog.json") || counts="0 1 0"
  read -r p f s <<<"$counts"
  log "$label: $p passed, $f failed, $s skipped"
  total_p=$((total_p + p)); total_f=$((total_f + f)); total_s=$((total_s + s))
}

# What the end-to-end cases need beyond the build: root for the namespace, the
# veth pair and hugepages. tests/integration/gwenv.py reserves 512 x 2 MiB
# hugepages itself (and gives them back), or runs the gateway --no-huge.
e2e_check() {
  if [[ $(id -u) -ne 0 ]]; then
    log "not root: the end-to-end cases will be skipped (namespaces, veths, hugepages need root)"
    return
  fi
  local probe=tgc-probe$$
  if ip netns add "$probe" 2>/dev/null; then
    ip netns del "$probe"
  else
    log "cannot create network namespaces here: the end-to-end cases will fail"
  fi
  local free
  free=$(cat /sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages 2>/dev/null || echo 0)
  log "hugepages: $free free 2 MiB pages now (the tests reserve 512 if they can, else --no-huge)"
}

log "build"
if build build; then
  if [[ -z $suite || $suite == unit ]]; then run_suite build unit --suite unit; fi
  if [[ -z $suite || $suite == integration ]]; then
    e2e_check
    run_suite build integration --suite integration
  fi
else
  echo "build failed"; total_f=$((total_f + 1))
fi

if ((quick == 0)) && [[ -z $suite || $suite == asan ]]; then
  log "build (ASan + UBSan)"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  if build build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dgateway=disabled; then
    run_suite build-asan asan --suite unit
  else
    echo "sanitizer build failed"; total_f=$((total_f + 1))
  fi
fi

line="$total_p passed, $total_f failed"
((total_s > 0)) && line+=", $total_s skipped"
echo "$line"
((total_f == 0))
