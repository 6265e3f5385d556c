#!/usr/bin/env bash
# CI for the Python binding (python/): builds the `t3fs` extension with maturin the way users install
# it (`pip install ./python`) into a persistent virtualenv, builds the `t3fs` binary the tests start
# a local cluster with, and runs the pytest suite (python/tests) against that real cluster.
#
# Called by .ci/run; also runs by hand from any directory. Idempotent, works on a clean clone (as
# root on Debian: it installs python3-venv if `python3 -m venv` cannot work). Builds use the dev
# profile and the shared CARGO_TARGET_DIR, so after the workspace's own debug build only the binding
# itself compiles (users' `pip install ./python` builds release).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/t3fs-target}"
export CARGO_TERM_COLOR=never
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in the source tree
VENV="${T3FS_PYENV:-/var/cache/t3fs-pyenv}"
MATURIN_VERSION=1.16.0
PYTEST_VERSION=9.2.0
start=$SECONDS
step() { echo "== python: $* ($((SECONDS - start)) s)"; }

step "virtualenv $VENV"
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    # Debian ships venv's ensurepip separately.
    rm -rf "$VENV"
    echo "python3 -m venv failed; apt-get install python3-venv"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
    python3 -m venv "$VENV"
  fi
fi
# Already-satisfied pins need no network.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "maturin==$MATURIN_VERSION" "pytest==$PYTEST_VERSION"

step "cargo build -p t3fs (the binary the tests start a cluster with)"
cargo build -p t3fs
export T3FS_BIN="$CARGO_TARGET_DIR/debug/t3fs"
export PATH="$VENV/bin:$CARGO_TARGET_DIR/debug:$PATH" # pip runs `maturin` from PATH

step "pip install ./python (maturin, dev profile)"
MATURIN_PEP517_ARGS="--profile dev" "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  --no-build-isolation --no-deps --force-reinstall ./python
"$VENV/bin/python" -c 'import t3fs; print("installed t3fs", t3fs.__version__, "from", t3fs.t3fs.__file__)'

step "pytest python/tests"
basetemp=$(mktemp -d /tmp/t3fs-pytest.XXXXXX)
trap 'rm -rf "$basetemp"' EXIT
(cd python && timeout 1200 "$VENV/bin/python" -m pytest -q -p no:cacheprovider --basetemp "$basetemp" tests)
step "OK"
