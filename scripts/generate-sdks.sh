#!/usr/bin/env bash
# Regenerates the SDKs' protobuf and gRPC code and the web page's TypeScript from proto/ with buf
# and local plugins at pinned versions (installed here when missing), then rebuilds the page's
# bundle (web/dist, embedded in the server). `--check` fails when any committed output is stale.
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

# The page's toolchain (protoc-gen-es, esbuild, TypeScript) at the versions package-lock.json pins.
scripts/web-install.sh

# Old output goes first so a removed proto file leaves nothing behind. The Python package's
# hand-written modules sit beside the generated `portcullis/v1`, so only that directory is cleared.
rm -rf sdk/go/gen sdk/python/src/portcullis/v1 web/src/gen web/dist
PATH="$go_dir:$grpc_dir:$venv/bin:$PWD/web/node_modules/.bin:$PATH" "$buf" generate
touch sdk/python/src/portcullis/v1/__init__.py
(
    cd web
    npm run --silent typecheck
    npm run --silent build
)

if [ "${1:-}" = "--check" ]; then
    generated=(sdk web/src/gen web/dist)
    if ! git diff --exit-code --stat -- "${generated[@]}" || [ -n "$(git status --porcelain -- "${generated[@]}")" ]; then
        echo "the generated code is stale: run scripts/generate-sdks.sh and commit the result" >&2
        git status --short -- "${generated[@]}" >&2
        exit 1
    fi
fi
