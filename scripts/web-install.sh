#!/usr/bin/env bash
# Installs the web page's packages (web/node_modules) exactly as web/package-lock.json pins them,
# unless that lock file is what was installed last.
set -euo pipefail
cd "$(dirname "$0")/../web"

stamp=node_modules/.portcullis-lock
if ! cmp -s package-lock.json "$stamp"; then
    npm ci --no-audit --no-fund --silent
    cp package-lock.json "$stamp"
fi
