import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResourceIpStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOURCE_IP_STATUS_UNSPECIFIED: _ClassVar[ResourceIpStatus]
    RESOURCE_IP_STATUS_PENDING: _ClassVar[ResourceIpStatus]
    RESOURCE_IP_STATUS_APPLIED: _ClassVar[ResourceIpStatus]
    RESOURCE_IP_STATUS_FAILED: _ClassVar[ResourceIpStatus]
    RESOURCE_IP_STATUS_REMOVING: _ClassVar[ResourceIpStatus]
    RESOURCE_IP_STATUS_REMOVED: _ClassVar[ResourceIpStatus]
    RESOURCE_IP_STATUS_AWAITING_APPROVAL: _ClassVar[ResourceIpStatus]
RESOURCE_IP_STATUS_UNSPECIFIED: ResourceIpStatus
RESOURCE_IP_STATUS_PENDING: ResourceIpStatus
RESOURCE_IP_STATUS_APPLIED: ResourceIpStatus
RESOURCE_IP_STATUS_FAILED: ResourceIpStatus
RESOURCE_IP_STATUS_REMOVING: ResourceIpStatus
RESOURCE_IP_STATUS_REMOVED: ResourceIpStatus
RESOURCE_IP_STATUS_AWAITING_APPROVAL: ResourceIpStatus

class ResourceIp(_message.Message):
    __slots__ = ("id", "session_id", "resource_id", "resource_name", "ip_version", "ip_address", "status", "provider_rule_id", "applied_at", "removed_at", "error_message", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    IP_VERSION_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_RULE_ID_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    REMOVED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    session_id: str
    resource_id: str
    resource_name: str
    ip_version: int
    ip_address: str
    status: ResourceIpStatus
    provider_rule_id: str
    applied_at: _timestamp_pb2.Timestamp
    removed_at: _timestamp_pb2.Timestamp
    error_message: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., session_id: _Optional[str] = ..., resource_id: _Optional[str] = ..., resource_name: _Optional[str] = ..., ip_version: _Optional[int] = ..., ip_address: _Optional[str] = ..., status: _Optional[_Union[ResourceIpStatus, str]] = ..., provider_rule_id: _Optional[str] = ..., applied_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., removed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error_message: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetResourceIpRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetResourceIpResponse(_message.Message):
    __slots__ = ("resource_ip",)
    RESOURCE_IP_FIELD_NUMBER: _ClassVar[int]
    resource_ip: ResourceIp
    def __init__(self, resource_ip: _Optional[_Union[ResourceIp, _Mapping]] = ...) -> None: ...

class ListResourceIpsRequest(_message.Message):
    __slots__ = ("session_id", "resource_id", "statuses", "page_size", "page_token")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    resource_id: str
    statuses: _containers.RepeatedScalarFieldContainer[ResourceIpStatus]
    page_size: int
    page_token: str
    def __init__(self, session_id: _Optional[str] = ..., resource_id: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[ResourceIpStatus, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListResourceIpsResponse(_message.Message):
    __slots__ = ("resource_ips", "next_page_token")
    RESOURCE_IPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    resource_ips: _containers.RepeatedCompositeFieldContainer[ResourceIp]
    next_page_token: str
    def __init__(self, resource_ips: _Optional[_Iterable[_Union[ResourceIp, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RetryResourceIpRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RetryResourceIpResponse(_message.Message):
    __slots__ = ("resource_ip",)
    RESOURCE_IP_FIELD_NUMBER: _ClassVar[int]
    resource_ip: ResourceIp
    def __init__(self, resource_ip: _Optional[_Union[ResourceIp, _Mapping]] = ...) -> None: ...
