"""The asyncio client, on ``grpc.aio``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from grpc import aio

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

__all__ = ["Client"]


class Client:
    """Client is ``portcullis.Client`` for asyncio: the same stubs, awaited, and an async
    ``watch_session``. Create it inside a running event loop.

    >>> async with Client("localhost:50051", api_key=key, insecure=True) as client:
    ...     session = (await client.sessions.StartSession(StartSessionRequest())).session
    ...     async for state in client.watch_session(session.id):
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
        metadata = credential_metadata(api_key, bearer_token)
        interceptors: list[aio.ClientInterceptor] = [_UnaryInterceptor(metadata), _StreamInterceptor(metadata)]
        if insecure:
            self.channel = aio.insecure_channel(target, options=options, interceptors=interceptors)
        else:
            self.channel = aio.secure_channel(
                target, credentials or grpc.ssl_channel_credentials(), options=options, interceptors=interceptors
            )
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

    async def watch_session(self, session_id: str) -> AsyncIterator[session_pb2.Session]:
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
                async for response in call:
                    delays.reset()
                    if revisions.is_new(response.session):
                        yield response.session
                        if is_terminal(response.session.status):
                            return
            except Unavailable:
                pass  # reconnect below
            finally:
                call.cancel()
            await asyncio.sleep(delays.take())

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self.channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _mapped(error: aio.AioRpcError) -> PortcullisError:
    return from_status(error.code(), error.details() or "", error.trailing_metadata())


class _Credentials:
    """Adds the credentials to every call's metadata."""

    def __init__(self, metadata: Sequence[tuple[str, str]]) -> None:
        self._metadata = metadata

    def _details(self, details: aio.ClientCallDetails) -> aio.ClientCallDetails:
        return aio.ClientCallDetails(
            method=details.method,
            timeout=details.timeout,
            metadata=aio.Metadata(*(details.metadata or ()), *self._metadata),
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )


# grpc.aio files each interceptor under one kind of call only, hence one class per kind.
class _UnaryInterceptor(_Credentials, aio.UnaryUnaryClientInterceptor):
    """Authenticates unary calls and turns their failures into PortcullisError."""

    async def intercept_unary_unary(
        self, continuation: Callable[[aio.ClientCallDetails, Any], Any], details: aio.ClientCallDetails, request: Any
    ) -> Any:
        call = await continuation(self._details(details), request)
        try:
            await call
        except aio.AioRpcError as error:
            raise _mapped(error) from None
        return call


class _StreamInterceptor(_Credentials, aio.UnaryStreamClientInterceptor):
    """Authenticates server-streaming calls and turns their failures into PortcullisError."""

    async def intercept_unary_stream(
        self, continuation: Callable[[aio.ClientCallDetails, Any], Any], details: aio.ClientCallDetails, request: Any
    ) -> Any:
        call = await continuation(self._details(details), request)
        return _mapped_stream(call)


async def _mapped_stream(call: Any) -> AsyncIterator[Any]:
    try:
        async for response in call:
            yield response
    except aio.AioRpcError as error:
        raise _mapped(error) from None
