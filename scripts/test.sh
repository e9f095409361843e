#!/usr/bin/env bash
# The whole test suite: unit and integration tests on SQLite and on a throwaway PostgreSQL
# (started here unless PORTCULLIS_TEST_DATABASE_URL is already set), then the README's grpcurl
# walkthrough against a live server. Installs grpcurl and PostgreSQL when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=${PORTCULLIS_TOOLS:-$HOME/.cache/portcullis/tools}
export PATH="$tools/bin:$PATH"
if ! command -v grpcurl >/dev/null; then
    echo "installing grpcurl" >&2
    GOBIN="$tools/bin" go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3
fi

pgdir=$(mktemp -d -u "${TMPDIR:-/tmp}/portcullis-pg.XXXXXX")
trap 'scripts/postgres.sh stop "$pgdir"' EXIT
if [ -z "${PORTCULLIS_TEST_DATABASE_URL:-}" ]; then
    eval "$(scripts/postgres.sh start "$pgdir")"
fi
echo "PostgreSQL for tests: $PORTCULLIS_TEST_DATABASE_URL"

cargo test --all-targets
scripts/grpcurl-smoke.sh "${CARGO_TARGET_DIR:-target}/debug/portcullis"
