"""The README's example script, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import portcullis
from conftest import Dex, Server
from portcullis.v1 import user_pb2

EXAMPLE = Path(__file__).parent.parent / "examples" / "start_session.py"


def run_example(server: Server, *args: str, api_key: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PORTCULLIS_API_KEY"}
    if api_key is not None:
        env["PORTCULLIS_API_KEY"] = api_key
    return subprocess.run(
        [sys.executable, str(EXAMPLE), "--addr", server.addr, "--insecure", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_example_opens_and_stops(server: Server) -> None:
    opened = run_example(server, "--ipv4", "203.0.113.9", "--stop", api_key=server.admin_key)
    assert opened.returncode == 0, opened.stderr
    assert "SESSION_STATUS_ACTIVE" in opened.stdout
    assert "staging-db 203.0.113.9 RESOURCE_IP_STATUS_APPLIED" in opened.stdout
    assert "open until" in opened.stdout

    # Stopped, so the same address starts again; without --stop it stays open, and a third run
    # is told the address already has a live session.
    assert run_example(server, "--ipv4", "203.0.113.9", api_key=server.admin_key).returncode == 0
    duplicate = run_example(server, "--ipv4", "203.0.113.9", api_key=server.admin_key)
    assert duplicate.returncode == 1
    assert "already has a live session" in duplicate.stderr

    unauthenticated = run_example(server, api_key=None)
    assert unauthenticated.returncode == 2
    assert "PORTCULLIS_API_KEY" in unauthenticated.stderr


SSO_EXAMPLE = Path(__file__).parent.parent / "examples" / "sso_login.py"


def test_sso_example_waits_for_the_browser_and_uses_the_token(sso_server: tuple[Server, Dex]) -> None:
    server, dex = sso_server
    with portcullis.Client(server.addr, api_key=server.admin_key, insecure=True) as client:
        organization = client.users.GetCurrentUser(user_pb2.GetCurrentUserRequest()).user.organization_id
    example = subprocess.Popen(
        [sys.executable, str(SSO_EXAMPLE), "--addr", server.addr, "--insecure", "--organization", organization],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert example.stdout is not None
    url = next(line.strip() for line in example.stdout if line.strip().startswith("http"))
    assert dex.log_in(url) == 200
    out, err = example.communicate(timeout=60)
    assert example.returncode == 0, err
    assert "logged in as admin@example.com, groups ['ops']" in out
