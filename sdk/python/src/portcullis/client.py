"""The synchronous client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc

from portcullis._common import Backoff, Revisions, credential_metadata, is_terminal
from portcullis.errors import PortcullisError, Unavailable, from_status
from portcullis.v1 import (
    agent_pb2_grpc,
    approval_pb2_grpc,
    audit_pb2_grpc,
    auth_pb2_grpc,
    identity_provider_pb2_grpc,
    organization_pb2_grpc,
    resource_ip_pb2_grpc,
    resource_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    user_pb2_grpc,
    webhook_pb2_grpc,
)


class Client:
    """Client holds one channel to a Portcullis server and a stub for each of its services.

    Every call carries the credentials as metadata and raises a ``PortcullisError`` subclass
    on failure (from ``.result()`` for a stub's ``.future()``).

    >>> with Client("localhost:50051", api_key=key, insecure=True) as client:
    ...     session = client.sessions.StartSession(StartSessionRequest()).session
    ...     for state in client.watch_session(session.id):
    ...         print(state.status)
    """

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        bearer_token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        insecure: bool = False,
        options: Sequence[tuple[str, Any]] = (),
        watch_backoff: Backoff = Backoff(),
    ) -> None:
        """Connect to ``target`` over TLS (system roots unless ``credentials``), or in plaintext
        with ``insecure=True`` for a local server. ``api_key`` or ``bearer_token`` authenticates."""
        interceptor = _Interceptor(credential_metadata(api_key, bearer_token))
        if insecure:
            raw = grpc.insecure_channel(target, options=options)
        else:
            raw = grpc.secure_channel(target, credentials or grpc.ssl_channel_credentials(), options=options)
        self._raw_channel = raw
        self.channel = grpc.intercept_channel(raw, interceptor)
        self.sessions = session_pb2_grpc.SessionServiceStub(self.channel)
        self.resource_ips = resource_ip_pb2_grpc.ResourceIpServiceStub(self.channel)
        self.resources = resource_pb2_grpc.ResourceServiceStub(self.channel)
        self.users = user_pb2_grpc.UserServiceStub(self.channel)
        self.organizations = organization_pb2_grpc.OrganizationServiceStub(self.channel)
        self.audit = audit_pb2_grpc.AuditServiceStub(self.channel)
        self.auth = auth_pb2_grpc.AuthServiceStub(self.channel)
        self.webhooks = webhook_pb2_grpc.WebhookServiceStub(self.channel)
        self.identity_providers = identity_provider_pb2_grpc.IdentityProviderServiceStub(self.channel)
        self.approvals = approval_pb2_grpc.ApprovalServiceStub(self.channel)
        self.agents = agent_pb2_grpc.AgentServiceStub(self.channel)
        self._watch_backoff = watch_backoff

    def watch_session(self, session_id: str) -> Iterator[session_pb2.Session]:
        """Yield the session as it is now and after every change, ending after a terminal state
        (FAILED, EXPIRED, CANCELLED). When the stream breaks (UNAVAILABLE or an early end) it waits
        for the connection, retries with backoff and carries on; the server resends the current
        state, and states not newer than the last one yielded are skipped. Other errors raise."""
        revisions, delays = Revisions(), self._watch_backoff.delays()
        while True:
            # Waiting for the connection, rather than failing fast while it is re-established,
            # lets the channel's own reconnection pace a server outage.
            call = self.sessions.WatchSession(session_pb2.WatchSessionRequest(id=session_id), wait_for_ready=True)
            try:
                for response in call:
                    delays.reset()
                    if revisions.is_new(response.session):
                        yield response.session
                        if is_terminal(response.session.status):
                            return
            except Unavailable:
                pass  # reconnect below
            finally:
                call.cancel()
            time.sleep(delays.take())

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._raw_channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, base: grpc.ClientCallDetails, metadata: Sequence[tuple[str, str]]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = (*(base.metadata or ()), *metadata)
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


def _mapped(error: grpc.RpcError) -> PortcullisError:
    call: Any = error  # every RpcError a channel raises is also a grpc.Call
    return from_status(call.code(), call.details() or "", call.trailing_metadata())


class _Interceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
):
    """Adds the credentials to every call and turns failures into PortcullisError."""

    def __init__(self, metadata: Sequence[tuple[str, str]]) -> None:
        self._metadata = metadata

    def intercept_unary_unary(
        self, continuation: Callable[[grpc.ClientCallDetails, Any], Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return _MappedCall(continuation(_CallDetails(details, self._metadata), request))

    def intercept_unary_stream(
        self, continuation: Callable[[grpc.ClientCallDetails, Any], Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return _MappedCall(continuation(_CallDetails(details, self._metadata), request))


class _MappedCall:
    """A call whose failure surfaces as PortcullisError, whether read as a unary outcome or
    future (``result``, ``exception``) or as a server stream; everything else is the call's."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def result(self, timeout: float | None = None) -> Any:
        try:
            return self._call.result(timeout)
        except grpc.RpcError as error:
            raise _mapped(error) from None

    def exception(self, timeout: float | None = None) -> BaseException | None:
        error = self._call.exception(timeout)
        return _mapped(error) if isinstance(error, grpc.RpcError) else error

    def __iter__(self) -> _MappedCall:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except grpc.RpcError as error:
            raise _mapped(error) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)
