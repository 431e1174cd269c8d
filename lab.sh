#!/usr/bin/env bash
# The two commands of the README:
#   ./lab.sh run    set up (idempotent) and run the default experiment suite
#   ./lab.sh test   set up (idempotent) and run the checks and every test tier
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
if [ -z "${TESTBED_VENV:-}" ] && [ -r /etc/default/testbed ]; then
    # shellcheck disable=SC1091
    . /etc/default/testbed
fi
export TESTBED_VENV="${TESTBED_VENV:-$ROOT/.venv}"
cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    run)
        bash scripts/setup.sh
        exec "$TESTBED_VENV/bin/testbed" run "$@" ;;
    test)
        bash scripts/setup.sh --tests
        exec bash scripts/test.sh "$@" ;;
    *)
        echo "usage: $0 run [SPEC...] [--out DIR] | test" >&2
        exit 2 ;;
esac
