"""Starts the real server binary ($PORTCULLIS_BIN) for each test: a fresh SQLite database,
``portcullis init`` for an admin API key, ``portcullis serve`` on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import portcullis
from portcullis.v1 import resource_pb2, user_pb2


class Server:
    """Server is one running server; ``restart`` kills it as a crash would and starts it again."""

    def __init__(self, binary: str, directory: Path, tls: bool = False) -> None:
        self._binary = binary
        self._directory = directory
        self._env = {**os.environ, "PORTCULLIS_DATABASE_URL": f"sqlite://{directory / 'portcullis.db'}?mode=rwc"}
        # With tls, the server speaks TLS only, with a self-signed certificate for localhost
        # made as the README shows; ``certificate`` is what clients trust.
        self.certificate: bytes | None = None
        if tls:
            self.certificate = self._make_certificate()
        init = subprocess.run(
            [binary, "init", "--admin-email", "admin@example.com"],
            cwd=directory,
            env=self._env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert init.returncode == 0, f"portcullis init failed:\n{init.stderr}"
        self.admin_key = init.stdout.strip()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.addr = f"127.0.0.1:{probe.getsockname()[1]}"
        self._process: subprocess.Popen[bytes] | None = None
        self._serve()

    def _make_certificate(self) -> bytes:
        cert, key = self._directory / "cert.pem", self._directory / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
             "-keyout", str(key), "-out", str(cert)],
            capture_output=True,
            check=True,
        )
        self._env["PORTCULLIS_TLS__CERT_FILE"] = str(cert)
        self._env["PORTCULLIS_TLS__KEY_FILE"] = str(key)
        return cert.read_bytes()

    def _serve(self) -> None:
        with open(self._directory / "server.log", "ab") as log:
            self._process = subprocess.Popen(
                [self._binary, "serve", "--listen", self.addr],
                cwd=self._directory,
                env=self._env,
                stdout=log,
                stderr=log,
            )
        host, port = self.addr.rsplit(":", 1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"the server did not listen:\n{(self._directory / 'server.log').read_text()}")

    def restart(self) -> None:
        self.stop()
        self._serve()

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def assign_memory_resource(self, name: str) -> None:
        """Create an in-memory resource and assign it to the admin, so sessions have a rule."""
        with portcullis.Client(self.addr, api_key=self.admin_key, insecure=True) as client:
            resource = client.resources.CreateResource(
                resource_pb2.CreateResourceRequest(
                    resource=resource_pb2.Resource(name=name, memory=resource_pb2.MemoryProvider())
                )
            ).resource
            me = client.users.GetCurrentUser(user_pb2.GetCurrentUserRequest()).user
            client.resources.AssignResource(resource_pb2.AssignResourceRequest(resource_id=resource.id, user_id=me.id))


def _binary() -> str:
    binary = os.environ.get("PORTCULLIS_BIN")
    if not binary:
        pytest.fail("PORTCULLIS_BIN must name the server binary (cargo build; see the README's SDK section)")
    return binary


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(_binary(), tmp_path)
    running.assign_memory_resource("staging-db")
    yield running
    running.stop()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[Server]:
    running = Server(_binary(), tmp_path, tls=True)
    yield running
    running.stop()
