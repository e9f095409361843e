#!/usr/bin/env bash
# Runs the benchmark three times (cargo bench --bench portcullis) and prints, per target, the
# median of the three runs as one line:
#   P2 2143.0 sessions/s target >= 2000 met
# P1-P5 run on SQLite; P2 and P6 (three replicas) run again on PostgreSQL (a throwaway server
# started here, or PORTCULLIS_BENCH_DATABASE_URL). Each run's full output is kept in
# $BENCH_LOG_DIR (default: a temporary directory). P4 and P6 run against moto's EC2 server,
# started here unless PORTCULLIS_BENCH_MOTO_URL is set.
set -euo pipefail
cd "$(dirname "$0")/.."

peers=()
trap 'for stop in "${peers[@]}"; do $stop; done' EXIT
postgres=${PORTCULLIS_BENCH_DATABASE_URL:-}
if [[ -z "$postgres" ]]; then
    pgdir=$(mktemp -d -u "${TMPDIR:-/tmp}/portcullis-bench-pg.XXXXXX")
    peers+=("scripts/postgres.sh stop $pgdir")
    eval "$(scripts/postgres.sh start "$pgdir")"
    postgres=$PORTCULLIS_TEST_DATABASE_URL
fi

# One pass of the bench: `ONLY`'s parts, on a moto of its own unless one is given. The rules a
# pass leaves behind slow every later describe call (moto scans the region's rules for each).
pass() {
    local only=$1 log=$2 moto=${PORTCULLIS_BENCH_MOTO_URL:-} motodir=""
    shift 2
    if [[ -z "$moto" ]]; then
        motodir=$(mktemp -d -u "${TMPDIR:-/tmp}/portcullis-bench-moto.XXXXXX")
        peers+=("scripts/moto.sh stop $motodir")
        eval "$(scripts/moto.sh start "$motodir")"
        moto=$PORTCULLIS_TEST_MOTO_URL
    fi
    env "$@" PORTCULLIS_BENCH_MOTO_URL="$moto" PORTCULLIS_BENCH_ONLY="$only" \
        cargo bench -q --bench portcullis > "$log"
    if [[ -n "$motodir" ]]; then
        scripts/moto.sh stop "$motodir"
    fi
}

runs=${BENCH_RUNS:-3}
logs=${BENCH_LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")}
mkdir -p "$logs"
cargo bench --bench portcullis --no-run >&2
for run in $(seq 1 "$runs"); do
    echo "bench run $run of $runs (logs: $logs/run-$run.txt, $logs/run-$run-pg.txt)" >&2
    pass P1,P2,P3,P4,P5 "$logs/run-$run.txt" -u PORTCULLIS_BENCH_DATABASE_URL
    pass P2,P6 "$logs/run-$run-pg.txt" PORTCULLIS_BENCH_DATABASE_URL="$postgres"
done

# The target lines of every run: ID VALUE UNIT target OP GOAL met|short.
cat "$logs"/run-*.txt | awk '/^## Targets/ { on = 1; next } on && NF == 7 && $4 == "target"' |
    sort -k1,1 -k2,2g |
    awk '
        { id = $1; values[id, ++count[id]] = $2; unit[id] = $3; op[id] = $5; goal[id] = $6
          if (!(id in seen)) { seen[id] = 1; order[++ids] = id } }
        END {
            for (i = 1; i <= ids; i++) {
                id = order[i]; n = count[id]
                median = (n % 2) ? values[id, (n + 1) / 2] : (values[id, n / 2] + values[id, n / 2 + 1]) / 2
                met = (op[id] == ">=") ? (median >= goal[id]) : (median <= goal[id])
                printf "%s %.1f %s target %s %s %s\n", id, median, unit[id], op[id], goal[id], met ? "met" : "short"
            }
        }'
