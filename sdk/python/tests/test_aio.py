"""The asyncio client against a live server."""

from __future__ import annotations

import asyncio

import pytest
from conftest import Server
from test_client import FAST, FAST_RECONNECT

import portcullis
import portcullis.aio
from portcullis.v1 import session_pb2

ADDRESS = "203.0.113.8"


def test_session_lifecycle(server: Server) -> None:
    async def scenario() -> list[session_pb2.Session]:
        async with portcullis.aio.Client(server.addr, api_key=server.admin_key, insecure=True) as client:
            request = session_pb2.StartSessionRequest(ipv4_address=ADDRESS, duration_hours=1)
            session = (await client.sessions.StartSession(request)).session
            states = []
            async for state in client.watch_session(session.id):
                states.append(state)
                if state.status == session_pb2.SESSION_STATUS_ACTIVE:
                    await client.sessions.StopSession(session_pb2.StopSessionRequest(id=session.id))
            return states

    states = asyncio.run(scenario())
    statuses = [s.status for s in states]
    assert session_pb2.SESSION_STATUS_ACTIVE in statuses
    assert statuses[-1] == session_pb2.SESSION_STATUS_CANCELLED
    assert states[-1].ended_reason == session_pb2.ENDED_REASON_MANUAL


def test_watch_reconnects_across_a_restart(server: Server) -> None:
    async def scenario() -> tuple[session_pb2.Session, list[session_pb2.Session]]:
        async with portcullis.aio.Client(
            server.addr, api_key=server.admin_key, insecure=True, watch_backoff=FAST, options=FAST_RECONNECT
        ) as client:
            request = session_pb2.StartSessionRequest(ipv4_address=ADDRESS)
            session = (await client.sessions.StartSession(request)).session
            watch = client.watch_session(session.id)
            active = await anext(watch)
            while active.status != session_pb2.SESSION_STATUS_ACTIVE:
                active = await anext(watch)

            await asyncio.to_thread(server.restart)
            # Awaiting the next state now makes the watch reconnect at once; the server then
            # resends ACTIVE, which must not be yielded a second time.
            after_restart = asyncio.ensure_future(anext(watch))
            await asyncio.sleep(1)  # reconnection takes well under this with the test's backoff
            await client.sessions.StopSession(
                session_pb2.StopSessionRequest(id=session.id), wait_for_ready=True, timeout=30
            )
            return active, [await after_restart, *[state async for state in watch]]

    active, states = asyncio.run(scenario())
    revisions = [s.revision for s in states]
    assert revisions == sorted(set(revisions)) and revisions[0] > active.revision, revisions
    assert states[-1].status == session_pb2.SESSION_STATUS_CANCELLED


def test_errors_carry_code_and_reason(server: Server) -> None:
    async def scenario() -> None:
        async with portcullis.aio.Client(server.addr, insecure=True) as anonymous:
            with pytest.raises(portcullis.Unauthenticated) as missing:
                await anonymous.sessions.ListSessions(session_pb2.ListSessionsRequest())
            assert missing.value.reason == "ERROR_REASON_MISSING_CREDENTIALS"

        async with portcullis.aio.Client(server.addr, api_key=server.admin_key, insecure=True) as client:
            request = session_pb2.StartSessionRequest(ipv4_address=ADDRESS)
            await client.sessions.StartSession(request)
            with pytest.raises(portcullis.AlreadyExists) as duplicate:
                await client.sessions.StartSession(request)
            assert duplicate.value.reason == "ERROR_REASON_SESSION_ALREADY_ACTIVE"

            with pytest.raises(portcullis.NotFound):
                async for _ in client.watch_session("0190b8a0-0000-7000-8000-000000000000"):
                    pass

    asyncio.run(scenario())
