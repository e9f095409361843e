"""Exceptions raised for failed calls, one class per gRPC code, with the server's details."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2

from portcullis.v1 import error_reason_pb2

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """FieldViolation names one bad request field and what is wrong with it."""

    field: str
    description: str


class PortcullisError(Exception):
    """PortcullisError is a failed call: its gRPC code, message and the details the server attached.

    ``reason`` is ``google.rpc.ErrorInfo.reason``, an ``ErrorReason`` value name such as
    ``"ERROR_REASON_SESSION_ALREADY_ACTIVE"``; it is empty when the error did not come from
    Portcullis (a transport failure, a proxy).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code.name} ({reason}): {message}" if reason else f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations = list(field_violations)
        self.retry_after = retry_after

    @property
    def error_reason(self) -> int:
        """error_reason is ``reason`` as an ``ErrorReason`` number, to compare with
        ``error_reason_pb2.ERROR_REASON_…``; UNSPECIFIED when absent or newer than this SDK."""
        if self.reason in error_reason_pb2.ErrorReason.keys():
            return error_reason_pb2.ErrorReason.Value(self.reason)
        return error_reason_pb2.ERROR_REASON_UNSPECIFIED


class InvalidArgument(PortcullisError):
    """InvalidArgument: the request is malformed; ``field_violations`` names the fields."""


class Unauthenticated(PortcullisError):
    """Unauthenticated: credentials are missing, unknown, expired or revoked."""


class PermissionDenied(PortcullisError):
    """PermissionDenied: the caller may not do this."""


class NotFound(PortcullisError):
    """NotFound: the object does not exist or is not visible to the caller."""


class AlreadyExists(PortcullisError):
    """AlreadyExists: an object with the same unique key exists (e.g. a live session)."""


class FailedPrecondition(PortcullisError):
    """FailedPrecondition: the object's state does not allow the call."""


class ResourceExhausted(PortcullisError):
    """ResourceExhausted: rate limited; ``retry_after`` says when to try again."""


class Unavailable(PortcullisError):
    """Unavailable: the server or one of its dependencies cannot be reached; retry later."""


class DeadlineExceeded(PortcullisError):
    """DeadlineExceeded: the call's timeout passed."""


class Internal(PortcullisError):
    """Internal: an unexpected server failure."""


_BY_CODE: dict[grpc.StatusCode, type[PortcullisError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INTERNAL: Internal,
}


def from_status(
    code: grpc.StatusCode, message: str, trailing_metadata: Iterable[tuple[str, str | bytes]] | None
) -> PortcullisError:
    """from_status builds the exception for a failed call from its code, message and trailers."""
    reason, metadata, violations, retry_after = "", {}, [], None
    for key, value in trailing_metadata or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        for detail in status_pb2.Status.FromString(value).details:
            info, bad_request, retry = (
                error_details_pb2.ErrorInfo(),
                error_details_pb2.BadRequest(),
                error_details_pb2.RetryInfo(),
            )
            if detail.Unpack(info):
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Unpack(bad_request):
                violations = [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
            elif detail.Unpack(retry):
                retry_after = retry.retry_delay.ToTimedelta().total_seconds()
    return _BY_CODE.get(code, PortcullisError)(
        code,
        message,
        reason=reason,
        metadata=metadata,
        field_violations=violations,
        retry_after=retry_after,
    )
