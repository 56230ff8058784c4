#!/bin/sh
# The container image's install steps, runnable without Docker.
#
#   scripts/container-build.sh PREFIX
#
# makes PREFIX/opt/relay (a virtualenv holding the dependencies of requirements.lock,
# hashes checked, and the relay installed by `pip install --no-deps` from a clean
# copy of the sources, exactly what the image holds) and
# PREFIX/etc/relay/relay.toml (the default config). The Dockerfile's builder
# stage runs this very script with PREFIX=/, and tests/unit/test_container.py
# runs it into a temporary directory, then starts the image's ENTRYPOINT + CMD
# from there. So the image and the test cannot drift apart.
#
# Environment: PYTHON (default python3, must be 3.11+); pip's own PIP_* variables
# are honoured (the Dockerfile sets PIP_NO_CACHE_DIR=1 to keep the image small).
set -eu

prefix=${1:?usage: scripts/container-build.sh PREFIX}
python=${PYTHON:-python3}
src=$(cd "$(dirname "$0")/.." && pwd)
prefix=${prefix%/}
venv="$prefix/opt/relay"

"$python" -c 'import sys; assert sys.version_info >= (3, 11), "relay needs Python 3.11+"'

# Build from a copy holding only what the image's build context holds: no .venv,
# no data/, no egg-info or build/ left behind in the work tree.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -R "$src/pyproject.toml" "$src/README.md" "$src/relay" "$stage/"
find "$stage" -name __pycache__ -type d -prune -exec rm -rf {} +

# The dependencies at the exact versions and hashes of the lock, then the relay alone.
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r "$src/requirements.lock"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "$stage"

mkdir -p "$prefix/etc/relay"
cp "$src/configs/relay.toml" "$prefix/etc/relay/relay.toml"

# The image's ENTRYPOINT + CMD, for whoever runs this outside Docker.
echo "installed; the image runs: $venv/bin/relay serve -c $prefix/etc/relay/relay.toml"
