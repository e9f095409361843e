import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from portcullis.v1 import resource_ip_pb2 as _resource_ip_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATUS_UNSPECIFIED: _ClassVar[SessionStatus]
    SESSION_STATUS_PENDING: _ClassVar[SessionStatus]
    SESSION_STATUS_ACTIVE: _ClassVar[SessionStatus]
    SESSION_STATUS_PARTIAL: _ClassVar[SessionStatus]
    SESSION_STATUS_FAILED: _ClassVar[SessionStatus]
    SESSION_STATUS_EXPIRING: _ClassVar[SessionStatus]
    SESSION_STATUS_EXPIRED: _ClassVar[SessionStatus]
    SESSION_STATUS_CANCELLED: _ClassVar[SessionStatus]
    SESSION_STATUS_AWAITING_APPROVAL: _ClassVar[SessionStatus]

class EndedReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENDED_REASON_UNSPECIFIED: _ClassVar[EndedReason]
    ENDED_REASON_EXPIRED: _ClassVar[EndedReason]
    ENDED_REASON_MANUAL: _ClassVar[EndedReason]
    ENDED_REASON_ADMIN: _ClassVar[EndedReason]
    ENDED_REASON_CLIENT_GONE: _ClassVar[EndedReason]
    ENDED_REASON_DENIED: _ClassVar[EndedReason]
    ENDED_REASON_APPROVAL_TIMEOUT: _ClassVar[EndedReason]
SESSION_STATUS_UNSPECIFIED: SessionStatus
SESSION_STATUS_PENDING: SessionStatus
SESSION_STATUS_ACTIVE: SessionStatus
SESSION_STATUS_PARTIAL: SessionStatus
SESSION_STATUS_FAILED: SessionStatus
SESSION_STATUS_EXPIRING: SessionStatus
SESSION_STATUS_EXPIRED: SessionStatus
SESSION_STATUS_CANCELLED: SessionStatus
SESSION_STATUS_AWAITING_APPROVAL: SessionStatus
ENDED_REASON_UNSPECIFIED: EndedReason
ENDED_REASON_EXPIRED: EndedReason
ENDED_REASON_MANUAL: EndedReason
ENDED_REASON_ADMIN: EndedReason
ENDED_REASON_CLIENT_GONE: EndedReason
ENDED_REASON_DENIED: EndedReason
ENDED_REASON_APPROVAL_TIMEOUT: EndedReason

class Session(_message.Message):
    __slots__ = ("id", "user_id", "user_name", "user_email", "ipv4_address", "ipv6_address", "status", "started_at", "expires_at", "ended_at", "ended_reason", "resource_ips", "created_at", "revision", "organization_id", "heartbeat_seconds", "approval", "justification", "ticket")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_NAME_FIELD_NUMBER: _ClassVar[int]
    USER_EMAIL_FIELD_NUMBER: _ClassVar[int]
    IPV4_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    IPV6_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_REASON_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_IPS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    JUSTIFICATION_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    id: str
    user_id: str
    user_name: str
    user_email: str
    ipv4_address: str
    ipv6_address: str
    status: SessionStatus
    started_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    ended_reason: EndedReason
    resource_ips: _containers.RepeatedCompositeFieldContainer[_resource_ip_pb2.ResourceIp]
    created_at: _timestamp_pb2.Timestamp
    revision: int
    organization_id: str
    heartbeat_seconds: int
    approval: SessionApproval
    justification: str
    ticket: str
    def __init__(self, id: _Optional[str] = ..., user_id: _Optional[str] = ..., user_name: _Optional[str] = ..., user_email: _Optional[str] = ..., ipv4_address: _Optional[str] = ..., ipv6_address: _Optional[str] = ..., status: _Optional[_Union[SessionStatus, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_reason: _Optional[_Union[EndedReason, str]] = ..., resource_ips: _Optional[_Iterable[_Union[_resource_ip_pb2.ResourceIp, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revision: _Optional[int] = ..., organization_id: _Optional[str] = ..., heartbeat_seconds: _Optional[int] = ..., approval: _Optional[_Union[SessionApproval, _Mapping]] = ..., justification: _Optional[str] = ..., ticket: _Optional[str] = ...) -> None: ...

class SessionApproval(_message.Message):
    __slots__ = ("required", "decisions", "deadline", "approved_at")
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    APPROVED_AT_FIELD_NUMBER: _ClassVar[int]
    required: int
    decisions: _containers.RepeatedCompositeFieldContainer[ApprovalDecision]
    deadline: _timestamp_pb2.Timestamp
    approved_at: _timestamp_pb2.Timestamp
    def __init__(self, required: _Optional[int] = ..., decisions: _Optional[_Iterable[_Union[ApprovalDecision, _Mapping]]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., approved_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ApprovalDecision(_message.Message):
    __slots__ = ("user_id", "user_email", "approve", "reason", "decided_at")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_EMAIL_FIELD_NUMBER: _ClassVar[int]
    APPROVE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    user_email: str
    approve: bool
    reason: str
    decided_at: _timestamp_pb2.Timestamp
    def __init__(self, user_id: _Optional[str] = ..., user_email: _Optional[str] = ..., approve: _Optional[bool] = ..., reason: _Optional[str] = ..., decided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StartSessionRequest(_message.Message):
    __slots__ = ("duration_hours", "ipv4_address", "ipv6_address", "duration_minutes", "heartbeat_seconds", "resource_ids", "justification", "ticket")
    DURATION_HOURS_FIELD_NUMBER: _ClassVar[int]
    IPV4_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    IPV6_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MINUTES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_IDS_FIELD_NUMBER: _ClassVar[int]
    JUSTIFICATION_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    duration_hours: int
    ipv4_address: str
    ipv6_address: str
    duration_minutes: int
    heartbeat_seconds: int
    resource_ids: _containers.RepeatedScalarFieldContainer[str]
    justification: str
    ticket: str
    def __init__(self, duration_hours: _Optional[int] = ..., ipv4_address: _Optional[str] = ..., ipv6_address: _Optional[str] = ..., duration_minutes: _Optional[int] = ..., heartbeat_seconds: _Optional[int] = ..., resource_ids: _Optional[_Iterable[str]] = ..., justification: _Optional[str] = ..., ticket: _Optional[str] = ...) -> None: ...

class StartSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "statuses", "user_id")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    statuses: _containers.RepeatedScalarFieldContainer[SessionStatus]
    user_id: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[SessionStatus, str]]] = ..., user_id: _Optional[str] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions", "next_page_token")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    next_page_token: str
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StopSessionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class StopSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class ExtendSessionRequest(_message.Message):
    __slots__ = ("id", "additional_hours", "additional_minutes")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_HOURS_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_MINUTES_FIELD_NUMBER: _ClassVar[int]
    id: str
    additional_hours: int
    additional_minutes: int
    def __init__(self, id: _Optional[str] = ..., additional_hours: _Optional[int] = ..., additional_minutes: _Optional[int] = ...) -> None: ...

class ExtendSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class WatchSessionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class WatchSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class GetClientAddressRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetClientAddressResponse(_message.Message):
    __slots__ = ("ip_address", "ip_version")
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    IP_VERSION_FIELD_NUMBER: _ClassVar[int]
    ip_address: str
    ip_version: int
    def __init__(self, ip_address: _Optional[str] = ..., ip_version: _Optional[int] = ...) -> None: ...

class ChangeSessionAddressRequest(_message.Message):
    __slots__ = ("id", "ipv4_address", "ipv6_address")
    ID_FIELD_NUMBER: _ClassVar[int]
    IPV4_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    IPV6_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    id: str
    ipv4_address: str
    ipv6_address: str
    def __init__(self, id: _Optional[str] = ..., ipv4_address: _Optional[str] = ..., ipv6_address: _Optional[str] = ...) -> None: ...

class ChangeSessionAddressResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...
