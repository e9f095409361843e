#!/usr/bin/env bash
# The Go and Python SDKs' checks and live tests, against the server binary given (each test
# starts its own server on a free port with a temporary SQLite database).
# Usage: scripts/sdk-tests.sh PATH_TO_PORTCULLIS_BINARY
set -euo pipefail
cd "$(dirname "$0")/.."

export PORTCULLIS_BIN
PORTCULLIS_BIN=$(realpath "${1:?path to the portcullis binary}")
tools=${PORTCULLIS_TOOLS:-$HOME/.cache/portcullis/tools}

echo "--- Go SDK"
(
    cd sdk/go
    go vet ./...
    go test -count=1 ./...
)

echo "--- Python SDK"
venv="$tools/sdk-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# Installed the way a user installs it, so the tests see the package as shipped.
"$venv/bin/pip" install --quiet --disable-pip-version-check "./sdk/python[dev]"
"$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps ./sdk/python
(
    cd sdk/python
    "$venv/bin/mypy"
    "$venv/bin/python" -m pytest -q -p no:cacheprovider
)
