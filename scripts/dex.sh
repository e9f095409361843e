#!/usr/bin/env bash
# Builds Dex, the OpenID Connect provider the single sign-on tests log in through, from the Go
# module proxy (once: cached in the tools directory) and prints the variable the tests read.
# `go install …/cmd/dex@…` is refused (Dex's go.mod has a replace), so a wrapper module requires
# the v2.45.1 commit and its api/v2, and builds the command from there (cgo, for SQLite storage).
# Usage: eval "$(scripts/dex.sh)"
set -euo pipefail

tools=${PORTCULLIS_TOOLS:-$HOME/.cache/portcullis/tools}
dex="$tools/bin/dex-2.45.1"
if [ ! -x "$dex" ]; then
    echo "building dex into $dex (a few minutes, once)" >&2
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    cat >"$work/go.mod" <<'MOD'
module portcullis.test/dex

go 1.24

require (
	github.com/dexidp/dex v0.0.0-20260303133905-11d2eeb52b42
	github.com/dexidp/dex/api/v2 v2.4.0
)
MOD
    mkdir -p "$tools/bin"
    (cd "$work" && GOFLAGS=-mod=mod CGO_ENABLED=1 go build -o "$dex.partial" github.com/dexidp/dex/cmd/dex) >&2
    mv "$dex.partial" "$dex"
fi
echo "export PORTCULLIS_TEST_DEX=$dex"
