#!/usr/bin/env bash
# The whole test suite: unit and integration tests on SQLite and on a throwaway PostgreSQL
# (started here unless PORTCULLIS_TEST_DATABASE_URL is already set), then the README's grpcurl
# walkthrough, the Go and Python SDKs' live tests and the web page's browser tests (Debian's
# chromium) against the server binary; `pcl`'s tests run the real client against it too. The AWS provider
# tests run against moto's EC2 server (started here unless PORTCULLIS_TEST_MOTO_URL is set), the
# single sign-on tests against Dex (built once by scripts/dex.sh unless PORTCULLIS_TEST_DEX is set).
# Installs grpcurl, PostgreSQL, moto, Dex and the SDKs' dependencies when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=${PORTCULLIS_TOOLS:-$HOME/.cache/portcullis/tools}
export PATH="$tools/bin:$PATH"
if ! command -v grpcurl >/dev/null; then
    echo "installing grpcurl" >&2
    GOBIN="$tools/bin" go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3
fi

# The host agent's tests drive nftables in namespaces of their own (unshare -Urn, no root needed).
if ! command -v nft >/dev/null; then
    echo "installing nftables" >&2
    (apt-get install -y -qq nftables >/dev/null || (apt-get update -qq && apt-get install -y -qq nftables >/dev/null)) >&2
fi

pgdir=$(mktemp -d -u "${TMPDIR:-/tmp}/portcullis-pg.XXXXXX")
motodir=$(mktemp -d -u "${TMPDIR:-/tmp}/portcullis-moto.XXXXXX")
trap 'scripts/postgres.sh stop "$pgdir"; scripts/moto.sh stop "$motodir"' EXIT
if [ -z "${PORTCULLIS_TEST_DATABASE_URL:-}" ]; then
    eval "$(scripts/postgres.sh start "$pgdir")"
fi
echo "PostgreSQL for tests: $PORTCULLIS_TEST_DATABASE_URL"
if [ -z "${PORTCULLIS_TEST_MOTO_URL:-}" ]; then
    eval "$(scripts/moto.sh start "$motodir")"
fi
echo "moto (EC2) for tests: $PORTCULLIS_TEST_MOTO_URL"
if [ -z "${PORTCULLIS_TEST_DEX:-}" ]; then
    eval "$(scripts/dex.sh)"
fi
echo "Dex (OpenID Connect) for tests: $PORTCULLIS_TEST_DEX"

# The server's tests, pcl's and the host agent's (the first two run the binaries this builds).
cargo test --workspace --all-targets
# The agent's systemd unit, as systemd reads it (with the binary this built in place).
if command -v systemd-analyze >/dev/null; then
    unit=$(mktemp -d)/portcullis-agent.service
    sed "s#/usr/local/bin/portcullis-agent#$(realpath "${CARGO_TARGET_DIR:-target}/debug/portcullis-agent")#" \
        agent/systemd/portcullis-agent.service >"$unit"
    # It exits 0 on unknown keys and other warnings: any word from it is a failure.
    verdict=$(systemd-analyze verify "$unit" 2>&1)
    if [ -n "$verdict" ]; then
        echo "systemd-analyze verify agent/systemd/portcullis-agent.service:" >&2
        echo "$verdict" >&2
        exit 1
    fi
    echo "systemd-analyze verify: agent/systemd/portcullis-agent.service is sound"
fi
scripts/grpcurl-smoke.sh "${CARGO_TARGET_DIR:-target}/debug/portcullis"
scripts/sdk-tests.sh "${CARGO_TARGET_DIR:-target}/debug/portcullis"
scripts/web-tests.sh "${CARGO_TARGET_DIR:-target}/debug/portcullis"
