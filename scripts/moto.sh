#!/usr/bin/env bash
# Starts moto's EC2 server (a real EC2 API implementation from PyPI) on a free loopback port and
# prints the environment the AWS tests read. Installs the tests' Python peers (moto and boto3,
# and aiosmtpd for the login tests' SMTP server) into a virtualenv under the tools directory.
# Usage: eval "$(scripts/moto.sh start DIR)"   ...   scripts/moto.sh stop DIR
set -euo pipefail

action=${1:?start or stop}
dir=${2:?state directory}
tools=${PORTCULLIS_TOOLS:-$HOME/.cache/portcullis/tools}
venv="$tools/venv"
requirements=("moto[server,ec2]==5.2.5" "boto3==1.44.5" "aiosmtpd==1.4.6")

case "$action" in
start)
    if ! "$venv/bin/python" -c 'import moto, boto3, aiosmtpd' 2>/dev/null; then
        echo "installing moto into $venv" >&2
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install -q "${requirements[@]}" >&2
    fi
    mkdir -p "$dir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # The request recorder (tests/support/ec2.py start-recording) writes beside the log.
    MOTO_RECORDER_FILEPATH="$dir/recording" "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$dir/log" 2>&1 &
    echo $! >"$dir/pid"
    for _ in $(seq 100); do
        if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    echo "export PORTCULLIS_TEST_MOTO_URL=http://127.0.0.1:$port"
    echo "export PORTCULLIS_TEST_PYTHON=$venv/bin/python"
    # moto accepts any credentials; the SDK's default chain must find some, and no instance metadata.
    echo "export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true"
    # A resource's role_arn is assumed through STS, which moto serves too.
    echo "export AWS_ENDPOINT_URL_STS=http://127.0.0.1:$port"
    ;;
stop)
    [ -f "$dir/pid" ] && kill "$(cat "$dir/pid")" 2>/dev/null || true
    rm -rf "$dir"
    ;;
*)
    echo "unknown action $action" >&2
    exit 2
    ;;
esac
