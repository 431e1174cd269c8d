#!/usr/bin/env bash
# Idempotent set-up of the testbed on Debian 12 / Ubuntu 24.04 (as root).
# Used by lab.sh (the README's two commands), the Vagrantfile and .ci/run.
# On a ready machine it only checks and returns within seconds.
#   scripts/setup.sh           what the lab needs (the main job, the Vagrant lab)
#   scripts/setup.sh --tests   and what the checks need too (shellcheck; Vagrant, to validate
#                              the Vagrantfile, where the distribution packages it)
set -euo pipefail
FOR_TESTS=0
[ "${1:-}" = "--tests" ] && FOR_TESTS=1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The Vagrant lab keeps its venv outside the synced folder (TESTBED_VENV=/opt/testbed-venv).
if [ -z "${TESTBED_VENV:-}" ] && [ -r /etc/default/testbed ]; then
    # shellcheck disable=SC1091
    . /etc/default/testbed
fi
VENV="${TESTBED_VENV:-$ROOT/.venv}"
say() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    say "run me as root (apt packages, network namespaces and the VM need it)"
    exit 1
fi

# --- distribution packages -------------------------------------------------
# shellcheck disable=SC1091
. /etc/os-release
PKGS=(
    mininet openvswitch-switch iperf3 libiperf0 iproute2 iputils-ping fping ethtool
    tcpdump libpcap0.8 stress-ng procps psmisc kmod nftables file bridge-utils
    python3 python3-venv python3-dev gcc
    # Soft-RoCE user space: verbs providers (librxe), the rdma tool's link commands come with
    # iproute2; pyverbs for the agents' RDMA transport (Debian's module for /usr/bin/python3,
    # which the venv below sees through its system site packages); perftest's ib_write_bw
    rdma-core ibverbs-providers ibverbs-utils rdmacm-utils python3-pyverbs perftest
)
[ "$FOR_TESTS" = 1 ] && PKGS+=(shellcheck)
case "${ID:-}" in
    debian)
        # A full kernel (netem, VRF, OVS datapath as modules) and what virtme-ng needs to boot it.
        PKGS+=(qemu-system-x86 linux-image-amd64 busybox-static)
        [ "$FOR_TESTS" = 1 ] && PKGS+=(vagrant) ;;
    ubuntu)
        PKGS+=(qemu-system-x86 busybox-static)
        # Ubuntu keeps sch_netem and friends in linux-modules-extra.
        if apt-cache show "linux-modules-extra-$(uname -r)" >/dev/null 2>&1; then
            PKGS+=("linux-modules-extra-$(uname -r)")
        fi ;;
    *)
        say "unsupported distribution '${ID:-unknown}': Debian 12 or Ubuntu 24.04 expected"
        exit 1 ;;
esac

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    say "distribution packages: all present"
fi

# --- Python environment ------------------------------------------------------
# The venv is made from the distribution's python3 with system site packages, because
# Mininet comes from the distribution (it ships mnexec; the PyPI wheel does not) and
# installs its module for that interpreter only.
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import mininet.net, pyverbs.device' 2>/dev/null; then
    say "creating $VENV from /usr/bin/python3 (with system site packages)"
    rm -rf "$VENV"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
stamp="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    say "installing the project (editable): the agents, the lab, plots and the test tools"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "${ROOT}[lab,plots,test]"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
else
    say "python environment: up to date"
fi
ln -sf "$VENV/bin/testbed" /usr/local/bin/testbed
say "ready: $(command -v testbed)"
