"""What the sync and asyncio clients share: credentials, watch backoff, terminal states."""

from __future__ import annotations

import random
from dataclasses import dataclass

from portcullis.v1 import session_pb2

_TERMINAL = frozenset(
    {
        session_pb2.SESSION_STATUS_FAILED,
        session_pb2.SESSION_STATUS_EXPIRED,
        session_pb2.SESSION_STATUS_CANCELLED,
    }
)


def is_terminal(status: session_pb2.SessionStatus) -> bool:
    """is_terminal reports whether a session in this status can no longer change."""
    return status in _TERMINAL


@dataclass(frozen=True)
class Backoff:
    """Backoff is the delay before a watch reconnects: ``initial`` seconds, doubling up to ``maximum``."""

    initial: float = 0.2
    maximum: float = 10.0

    def delays(self) -> _Delays:
        return _Delays(self)


class _Delays:
    """The delays of one watch; ``reset`` after a message so the next break starts afresh."""

    def __init__(self, backoff: Backoff) -> None:
        self._backoff = backoff
        self._next = backoff.initial

    def reset(self) -> None:
        self._next = self._backoff.initial

    def take(self) -> float:
        """take returns the next delay, jittered over [d/2, d) so many watchers spread out."""
        delay = self._next
        self._next = min(delay * 2, self._backoff.maximum)
        return delay / 2 + random.random() * delay / 2


def credential_metadata(api_key: str | None, bearer_token: str | None) -> tuple[tuple[str, str], ...]:
    """credential_metadata is the call metadata that authenticates every call."""
    if api_key is not None and bearer_token is not None:
        raise ValueError("pass api_key or bearer_token, not both")
    if api_key is not None:
        if not api_key:
            raise ValueError("api_key is empty")
        return (("x-api-key", api_key),)
    if bearer_token is not None:
        if not bearer_token:
            raise ValueError("bearer_token is empty")
        return (("authorization", f"Bearer {bearer_token}"),)
    return ()


class Revisions:
    """Revisions drops the states a reconnected watch resends that were already yielded."""

    def __init__(self) -> None:
        self._last = 0

    def is_new(self, session: session_pb2.Session) -> bool:
        if self._last and session.revision <= self._last:
            return False
        self._last = session.revision
        return True
