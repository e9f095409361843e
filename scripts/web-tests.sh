#!/usr/bin/env bash
# The web page's browser tests: Debian's chromium driven by playwright-core (web/tests) against
# the server binary given, each run on its own port and SQLite database. The page's packages
# come from web/package-lock.json (npm ci); playwright never downloads a browser.
# Usage: scripts/web-tests.sh PATH_TO_PORTCULLIS_BINARY
set -euo pipefail
cd "$(dirname "$0")/.."

export PORTCULLIS_BIN
PORTCULLIS_BIN=$(realpath "${1:?path to the portcullis binary}")
export PORTCULLIS_TEST_CHROMIUM=${PORTCULLIS_TEST_CHROMIUM:-$(command -v chromium || true)}
if [ ! -x "$PORTCULLIS_TEST_CHROMIUM" ]; then
    echo "the browser tests need Debian's chromium: apt-get install -y chromium (or set PORTCULLIS_TEST_CHROMIUM)" >&2
    exit 1
fi

scripts/web-install.sh
cd web
node --test --test-reporter=spec tests/
echo "screenshots: web/test-results/"
