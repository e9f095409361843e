#!/usr/bin/env bash
# The soak: SOAK_CYCLES (default 200) randomized SIGKILL/restart cycles of the server against
# moto behind a proxy that fails 30 % of EC2 calls, with concurrent starts, stops and expiries.
# Prints sessions, kills, leaked, missing and duplicate rules before a reconcile pass and after
# one, and fails unless all three are 0 before it. Not part of scripts/test.sh (it runs for
# minutes). On SQLite unless PORTCULLIS_TEST_DATABASE_URL points at a PostgreSQL server.
# Usage: scripts/soak.sh            SOAK_CYCLES=20 scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."

motodir=$(mktemp -d -u "${TMPDIR:-/tmp}/portcullis-soak-moto.XXXXXX")
trap 'scripts/moto.sh stop "$motodir"' EXIT
if [ -z "${PORTCULLIS_TEST_MOTO_URL:-}" ]; then
    eval "$(scripts/moto.sh start "$motodir")"
fi
cargo test --test it crash::soak_sigkill_restart_cycles_against_faulty_ec2 -- --ignored --nocapture --test-threads 1
