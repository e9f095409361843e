"""The synchronous client against a live server."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from conftest import Server
from google.protobuf import field_mask_pb2

import portcullis
from portcullis.v1 import approval_pb2, error_reason_pb2, resource_ip_pb2, resource_pb2, session_pb2, user_pb2

ADDRESS = "203.0.113.7"
FAST = portcullis.Backoff(initial=0.05, maximum=0.5)
# Reconnect to a restarted server quickly rather than after grpc's default second.
FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 500)]


def client_for(server: Server, api_key: str | None = None) -> portcullis.Client:
    return portcullis.Client(server.addr, api_key=api_key, insecure=True, watch_backoff=FAST)


def client_for_token(server: Server, token: str) -> portcullis.Client:
    return portcullis.Client(server.addr, bearer_token=token, insecure=True, watch_backoff=FAST)


def start(client: portcullis.Client) -> session_pb2.Session:
    request = session_pb2.StartSessionRequest(ipv4_address=ADDRESS, duration_hours=1)
    return client.sessions.StartSession(request).session


def test_session_lifecycle(server: Server) -> None:
    with client_for(server, api_key=server.admin_key) as client:
        session = start(client)
        assert session.status == session_pb2.SESSION_STATUS_PENDING
        assert len(session.resource_ips) == 1

        for state in client.watch_session(session.id):
            if state.status == session_pb2.SESSION_STATUS_ACTIVE:
                break
            assert not portcullis.is_terminal(state.status), state
        assert state.resource_ips[0].status == resource_ip_pb2.RESOURCE_IP_STATUS_APPLIED
        assert state.resource_ips[0].resource_name == "staging-db"

        stopped = client.sessions.StopSession(session_pb2.StopSessionRequest(id=session.id)).session
        assert stopped.ended_reason == session_pb2.ENDED_REASON_MANUAL

        # A fresh watch starts from the current state and ends by itself after CANCELLED.
        states = list(client.watch_session(session.id))
        revisions = [s.revision for s in states]
        assert revisions == sorted(set(revisions))
        assert states[-1].status == session_pb2.SESSION_STATUS_CANCELLED
        assert states[-1].resource_ips[0].status == resource_ip_pb2.RESOURCE_IP_STATUS_REMOVED


def test_watch_reconnects_across_a_restart(server: Server) -> None:
    client = portcullis.Client(
        server.addr, api_key=server.admin_key, insecure=True, watch_backoff=FAST, options=FAST_RECONNECT
    )
    with client, ThreadPoolExecutor(max_workers=1) as background:
        session = start(client)
        watch = client.watch_session(session.id)
        active = next(s for s in watch if s.status == session_pb2.SESSION_STATUS_ACTIVE)

        server.restart()
        # The next state is awaited in the background, so the watch notices the broken stream and
        # reconnects now; the server then resends ACTIVE, which must not be yielded a second time.
        after_restart = background.submit(next, watch)
        time.sleep(1)  # reconnection takes well under this with the test's backoff
        client.sessions.StopSession(session_pb2.StopSessionRequest(id=session.id), wait_for_ready=True, timeout=30)

        states = [after_restart.result(timeout=30), *watch]
        revisions = [s.revision for s in states]
        assert revisions == sorted(set(revisions)) and revisions[0] > active.revision, revisions
        assert states[-1].status == session_pb2.SESSION_STATUS_CANCELLED


def test_errors_carry_code_and_reason(server: Server) -> None:
    with client_for(server) as anonymous:
        with pytest.raises(portcullis.Unauthenticated) as missing:
            anonymous.sessions.ListSessions(session_pb2.ListSessionsRequest())
        assert missing.value.reason == "ERROR_REASON_MISSING_CREDENTIALS"
        assert missing.value.code == grpc.StatusCode.UNAUTHENTICATED

    with client_for(server, api_key="pcl_not-a-real-key") as forged:
        with pytest.raises(portcullis.Unauthenticated) as invalid:
            forged.sessions.ListSessions(session_pb2.ListSessionsRequest())
        assert invalid.value.error_reason == error_reason_pb2.ERROR_REASON_INVALID_CREDENTIALS

    with client_for(server, api_key=server.admin_key) as client:
        start(client)
        with pytest.raises(portcullis.AlreadyExists) as duplicate:
            start(client)
        assert duplicate.value.reason == "ERROR_REASON_SESSION_ALREADY_ACTIVE"

        with pytest.raises(portcullis.InvalidArgument) as bad:
            client.resources.CreateResource(
                resource_pb2.CreateResourceRequest(resource=resource_pb2.Resource(memory=resource_pb2.MemoryProvider()))
            )
        assert bad.value.reason == "ERROR_REASON_INVALID_INPUT"
        assert [v.field for v in bad.value.field_violations] == ["resource.name"]

        unknown = "0190b8a0-0000-7000-8000-000000000000"
        with pytest.raises(portcullis.NotFound):
            list(client.watch_session(unknown))
        future = client.sessions.GetSession.future(session_pb2.GetSessionRequest(id=unknown))
        assert isinstance(future.exception(timeout=30), portcullis.NotFound)
        with pytest.raises(portcullis.NotFound):
            future.result()


def test_credentials_are_checked_before_any_call() -> None:
    with pytest.raises(ValueError):
        portcullis.Client("localhost:1", api_key="", insecure=True)
    with pytest.raises(ValueError):
        portcullis.Client("localhost:1", api_key="pcl_x", bearer_token="t", insecure=True)


def test_tls(tls_server: Server) -> None:
    """Over TLS with the server's certificate the API works; a plaintext client gets nowhere."""
    assert tls_server.certificate is not None
    port = tls_server.addr.rsplit(":", 1)[1]
    credentials = grpc.ssl_channel_credentials(root_certificates=tls_server.certificate)
    with portcullis.Client(f"localhost:{port}", api_key=tls_server.admin_key, credentials=credentials) as client:
        me = client.users.GetCurrentUser(user_pb2.GetCurrentUserRequest()).user
        assert me.email == "admin@example.com"
    with portcullis.Client(tls_server.addr, api_key=tls_server.admin_key, insecure=True) as plain:
        with pytest.raises(portcullis.PortcullisError):
            plain.users.GetCurrentUser(user_pb2.GetCurrentUserRequest(), timeout=5)


def test_a_session_on_a_resource_that_needs_approval_waits_for_it(server: Server) -> None:
    with client_for(server, api_key=server.admin_key) as client:
        # A second admin, so that someone other than the requester may approve.
        client.users.CreateUser(
            user_pb2.CreateUserRequest(user=user_pb2.User(email="grace@example.com", role=user_pb2.ROLE_ADMIN))
        )
        resource = client.resources.ListResources(resource_pb2.ListResourcesRequest()).resources[0]
        client.resources.UpdateResource(
            resource_pb2.UpdateResourceRequest(
                resource=resource_pb2.Resource(id=resource.id, approval=resource_pb2.ApprovalPolicy(required=True)),
                update_mask=field_mask_pb2.FieldMask(paths=["approval"]),
            )
        )
        session = start(client)
        assert session.status == session_pb2.SESSION_STATUS_AWAITING_APPROVAL
        assert session.approval.required == 1
        with pytest.raises(portcullis.PermissionDenied):
            client.approvals.ApproveSession(approval_pb2.ApproveSessionRequest(id=session.id))

    # The other admin finds it in their inbox and approves it: it opens.
    with client_for_token(server, server.log_in("grace@example.com")) as grace:
        inbox = grace.approvals.ListApprovalRequests(approval_pb2.ListApprovalRequestsRequest())
        assert [waiting.id for waiting in inbox.sessions] == [session.id]
        approved = grace.approvals.ApproveSession(approval_pb2.ApproveSessionRequest(id=session.id, reason="ok"))
        assert [d.user_email for d in approved.session.approval.decisions] == ["grace@example.com"]
    with client_for(server, api_key=server.admin_key) as client:
        for state in client.watch_session(session.id):
            if state.status == session_pb2.SESSION_STATUS_ACTIVE:
                break
            assert not portcullis.is_terminal(state.status), state
