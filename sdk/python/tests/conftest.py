"""Starts the real server binary ($PORTCULLIS_BIN) for each test: a fresh SQLite database,
``portcullis init`` for an admin API key, ``portcullis serve`` on a free port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import portcullis
from portcullis.v1 import auth_pb2, identity_provider_pb2, resource_pb2, user_pb2


class Server:
    """Server is one running server; ``restart`` kills it as a crash would and starts it again."""

    def __init__(
        self, binary: str, directory: Path, tls: bool = False, addr: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        self._binary = binary
        self._directory = directory
        self._env = {
            **os.environ,
            "PORTCULLIS_DATABASE_URL": f"sqlite://{directory / 'portcullis.db'}?mode=rwc",
            **(env or {}),
        }
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
        self.addr = addr or free_addr()
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

    def log_in(self, email: str) -> str:
        """Log `email` in by the emailed code, read from the server's log (the default
        mail.transport = log prints it); answer the login's access token."""
        with portcullis.Client(self.addr, insecure=True) as client:
            started = client.auth.StartLogin(auth_pb2.StartLoginRequest(email=email))
            deadline = time.monotonic() + 10
            code = ""
            while not code:
                assert time.monotonic() < deadline, f"no login code for {email} in the server log"
                for line in (self._directory / "server.log").read_text(errors="replace").splitlines():
                    at = line.find("login code: ")
                    if at >= 0 and f"email={email}" in line:
                        code = line[at + 12 : at + 18]
                time.sleep(0.05)
            request = auth_pb2.VerifyLoginRequest(verification_code_id=started.verification_code_id, code=code)
            return str(client.auth.VerifyLogin(request).access_token)

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


def free_addr() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


class Dex:
    """A real OpenID Connect provider ($PORTCULLIS_TEST_DEX, which scripts/dex.sh builds) whose one
    user, admin@example.com, is in group "ops"; its client sends browsers back to ``redirect``."""

    # bcrypt of "password", as Dex's own examples spell it.
    PASSWORD_HASH = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W"

    def __init__(self, binary: str, directory: Path, redirect: str) -> None:
        self.redirect = redirect
        listen = free_addr()
        self.origin = f"http://{listen}/"
        self.issuer = f"http://{listen}/dex"
        config = {  # JSON is YAML: no YAML writer needed.
            "issuer": self.issuer,
            "storage": {"type": "sqlite3", "config": {"file": str(directory / "dex.db")}},
            "web": {"http": listen},
            "oauth2": {"skipApprovalScreen": True},
            "enablePasswordDB": True,
            "staticPasswords": [{
                "email": "admin@example.com", "hash": self.PASSWORD_HASH, "username": "admin",
                "userID": "b7d2c2a4-5e84-4b7c-9d55-8d0c1f3e8a11", "groups": ["ops"],
            }],
            "staticClients": [{
                "id": "portcullis", "secret": "portcullis-test-secret", "name": "Portcullis",
                "redirectURIs": [redirect],
            }],
        }
        (directory / "dex.yaml").write_text(json.dumps(config))
        with open(directory / "dex.log", "ab") as log:
            self._process = subprocess.Popen([binary, "serve", str(directory / "dex.yaml")], stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{self.issuer}/.well-known/openid-configuration", timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, (directory / "dex.log").read_text()
                time.sleep(0.05)

    def log_in(self, authorization_url: str) -> int:
        """Do what a browser does with the URL: fill in Dex's password form, follow the redirects
        back to the server and open its callback; answer the callback page's status."""
        url, posted = authorization_url, False
        for _ in range(10):
            if url.startswith(self.redirect):
                try:
                    with urllib.request.urlopen(url) as page:
                        return int(page.status)
                except urllib.error.HTTPError as refused:
                    return refused.code
            form = None
            status, location = _fetch(url)
            if status == 200 and not posted:
                posted = True
                form = urllib.parse.urlencode({"login": "admin@example.com", "password": "password"}).encode()
                status, location = _fetch(url, form)
            assert location, f"dex answered {status} at {url} without a redirect"
            url = location if location.startswith("http") else self.origin.rstrip("/") + location
        raise AssertionError(f"the login never came back to {self.redirect}")

    def stop(self) -> None:
        self._process.kill()
        self._process.wait()


def _fetch(url: str, form: bytes | None = None) -> tuple[int, str]:
    """One request, redirects not followed: its status and Location."""

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    try:
        with urllib.request.build_opener(Stay()).open(url, data=form) as answer:
            return int(answer.status), answer.headers.get("Location", "")
    except urllib.error.HTTPError as answer:
        return answer.code, answer.headers.get("Location", "")


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
def sso_server(tmp_path: Path) -> Iterator[tuple[Server, Dex]]:
    """A server whose organization logs in through a Dex ("ops" maps to ROLE_ADMIN)."""
    binary = os.environ.get("PORTCULLIS_TEST_DEX")
    if not binary:
        pytest.skip("PORTCULLIS_TEST_DEX is not set (scripts/test.sh builds Dex)")
    addr = free_addr()
    (tmp_path / "dex").mkdir()
    dex = Dex(binary, tmp_path / "dex", f"http://{addr}/sso/callback")
    env = {
        "PORTCULLIS_SEALING_KEY": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "PORTCULLIS_SERVER__PUBLIC_URL": f"http://{addr}",
        "PORTCULLIS_SSO__ALLOWED_PRIVATE_ISSUERS": json.dumps([dex.origin]),
    }
    running = Server(_binary(), tmp_path, addr=addr, env=env)
    with portcullis.Client(running.addr, api_key=running.admin_key, insecure=True) as client:
        client.identity_providers.CreateIdentityProvider(
            identity_provider_pb2.CreateIdentityProviderRequest(
                identity_provider=identity_provider_pb2.IdentityProvider(
                    display_name="Dex",
                    issuer_url=dex.issuer,
                    client_id="portcullis",
                    client_secret="portcullis-test-secret",
                    scopes=["openid", "email", "profile", "groups", "offline_access"],
                    group_mappings=[identity_provider_pb2.GroupMapping(group="ops", role=user_pb2.ROLE_ADMIN)],
                )
            )
        )
    yield running, dex
    running.stop()
    dex.stop()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[Server]:
    running = Server(_binary(), tmp_path, tls=True)
    yield running
    running.stop()
