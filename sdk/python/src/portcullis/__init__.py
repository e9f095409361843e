"""Python client for Portcullis, the just-in-time IP allowlisting service.

``portcullis.Client`` is synchronous, ``portcullis.aio.Client`` is for asyncio; both expose a
stub per service (``client.sessions``, ``client.resources`` …) and ``watch_session``. The
messages are in ``portcullis.v1`` (``from portcullis.v1 import session_pb2``).
"""

from portcullis._common import Backoff, is_terminal
from portcullis.client import Client
from portcullis.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PortcullisError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "AlreadyExists",
    "Backoff",
    "Client",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "PortcullisError",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "is_terminal",
]
