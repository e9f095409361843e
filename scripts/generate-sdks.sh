#!/usr/bin/env bash
# Regenerates the SDKs' protobuf and gRPC code from proto/ with buf and local plugins at pinned
# versions (installed here when missing). `--check` fails when the committed code is stale.
set -euo pipefail
cd "$(dirname "$0")/.."

BUF_VERSION=1.75.0
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
GRPCIO_TOOLS_VERSION=1.85.1
MYPY_PROTOBUF_VERSION=5.1.0

tools=${PORTCULLIS_TOOLS:-$HOME/.cache/portcullis/tools}
mkdir -p "$tools/bin"

buf="$tools/node_modules/.bin/buf"
if [ ! -x "$buf" ] || [ "$("$buf" --version)" != "$BUF_VERSION" ]; then
    npm install --prefix "$tools" --no-audit --no-fund --silent "@bufbuild/buf@$BUF_VERSION"
fi

# Each Go plugin lives under its version so a pin change reinstalls it.
go_plugin() { # package, version → directory holding the binary
    local dir="$tools/go-plugins/$(basename "$1")@$2"
    [ -x "$dir/$(basename "$1")" ] || GOBIN="$dir" go install "$1@$2"
    echo "$dir"
}
go_dir=$(go_plugin google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION")
grpc_dir=$(go_plugin google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION")

venv="$tools/codegen-venv"
stamp="grpcio-tools==$GRPCIO_TOOLS_VERSION mypy-protobuf==$MYPY_PROTOBUF_VERSION"
if [ "$(cat "$venv/stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086 # the stamp is the requirement list
    "$venv/bin/pip" install --quiet --disable-pip-version-check $stamp
    echo "$stamp" >"$venv/stamp"
fi

# Old output goes first so a removed proto file leaves nothing behind. The Python package's
# hand-written modules sit beside the generated `portcullis/v1`, so only that directory is cleared.
rm -rf sdk/go/gen sdk/python/src/portcullis/v1
PATH="$go_dir:$grpc_dir:$venv/bin:$PATH" "$buf" generate
touch sdk/python/src/portcullis/v1/__init__.py

if [ "${1:-}" = "--check" ]; then
    if ! git diff --exit-code --stat -- sdk || [ -n "$(git status --porcelain -- sdk)" ]; then
        echo "the generated SDK code is stale: run scripts/generate-sdks.sh and commit the result" >&2
        git status --short -- sdk >&2
        exit 1
    fi
fi
