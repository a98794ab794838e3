#!/usr/bin/env bash
# Runs the Python RLS tests (test_rls.py) against a built `floodgate` binary, with a client we did not write:
# envoy-data-plane (betterproto2-generated Envoy protos) over grpclib. Builds nothing itself.
#
#   crates/floodgate-server/tests/python/run.sh PATH/TO/floodgate
#
# The virtualenv lives in $FLOODGATE_PYENV, default ${CARGO_TARGET_DIR:-target}/pyenv, and is created (and the
# two pinned packages installed from PyPI) when missing. Exits non-zero if any case fails; the last line of
# output is `N passed, N failed`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../../.." && pwd)"
binary="${1:?usage: run.sh PATH/TO/floodgate}"
[ -x "$binary" ] || { echo "run.sh: $binary is not an executable" >&2; exit 2; }
target="${CARGO_TARGET_DIR:-$root/target}"
venv="${FLOODGATE_PYENV:-$target/pyenv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import envoy_data_plane, grpclib' 2>/dev/null; then
    echo "run.sh: creating the virtualenv $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi
exec timeout 120 "$venv/bin/python" "$here/test_rls.py" "$binary"
