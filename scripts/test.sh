#!/usr/bin/env bash
# Every check and test tier, in order, with the time each took. Called by `./lab.sh test`
# (after scripts/setup.sh). Integration tests that need kernel features this kernel lacks
# run inside ONE full-kernel VM boot (see testbed/pytest_plugin.py); nothing is skipped.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${TESTBED_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"
declare -a TIMES=()
REPORTS="$(mktemp -d)"
trap 'rm -rf "$REPORTS"' EXIT

tier() {
    local name="$1"; shift
    local t0=$SECONDS
    printf '\n===== %s =====\n' "$name"
    local rc=0
    "$@" || rc=$?
    TIMES+=("$name: $((SECONDS - t0)) s (exit $rc)")
    return "$rc"
}

# shellcheck disable=SC2317  # called through tier()
lint() {
    "$VENV/bin/ruff" check .
    shellcheck lab.sh .ci/run scripts/*.sh
    if command -v vagrant >/dev/null; then
        vagrant validate --ignore-provider  # no provider (VirtualBox, libvirt) here
    else
        echo "vagrant is not packaged for this distribution: Vagrantfile not validated here"
    fi
}

tier "lint (ruff, shellcheck, vagrant validate)" lint
tier "doctor" "$VENV/bin/testbed" doctor
status=0
tier "unit tests" "$PY" -m pytest tests/unit -q -p no:cacheprovider \
    --junitxml="$REPORTS/unit.xml" || status=$?
tier "integration tests (host, then the full-kernel VM where needed)" \
    "$PY" -m pytest tests/integration -v -p no:cacheprovider --durations=15 \
    --junitxml="$REPORTS/integration.xml" || status=$?
printf '\n===== durations =====\n'
printf '%s\n' "${TIMES[@]}"
# One closing line over both tiers.
"$PY" - "$REPORTS"/*.xml <<'PYEOF'
import sys
import xml.etree.ElementTree as ET

n = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for path in sys.argv[1:]:
    for suite in ET.parse(path).getroot().iter("testsuite"):
        for key in n:
            n[key] += int(suite.get(key, 0))
failed = n["failures"] + n["errors"]
passed = n["tests"] - failed - n["skipped"]
print(f"tests: {passed} passed, {failed} failed, {n['skipped']} skipped")
PYEOF
exit "$status"
