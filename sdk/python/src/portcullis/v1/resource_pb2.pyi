import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_STATUS_UNSPECIFIED: _ClassVar[CheckStatus]
    CHECK_STATUS_OK: _ClassVar[CheckStatus]
    CHECK_STATUS_NOT_FOUND: _ClassVar[CheckStatus]
    CHECK_STATUS_ACCESS_DENIED: _ClassVar[CheckStatus]
    CHECK_STATUS_UNREACHABLE: _ClassVar[CheckStatus]
    CHECK_STATUS_UNSUPPORTED: _ClassVar[CheckStatus]
CHECK_STATUS_UNSPECIFIED: CheckStatus
CHECK_STATUS_OK: CheckStatus
CHECK_STATUS_NOT_FOUND: CheckStatus
CHECK_STATUS_ACCESS_DENIED: CheckStatus
CHECK_STATUS_UNREACHABLE: CheckStatus
CHECK_STATUS_UNSUPPORTED: CheckStatus

class MemoryProvider(_message.Message):
    __slots__ = ("latency_ms", "fail_addresses", "transient_failures")
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    FAIL_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    TRANSIENT_FAILURES_FIELD_NUMBER: _ClassVar[int]
    latency_ms: int
    fail_addresses: _containers.RepeatedScalarFieldContainer[str]
    transient_failures: int
    def __init__(self, latency_ms: _Optional[int] = ..., fail_addresses: _Optional[_Iterable[str]] = ..., transient_failures: _Optional[int] = ...) -> None: ...

class AwsSecurityGroup(_message.Message):
    __slots__ = ("region", "group_id", "protocol", "from_port", "to_port", "endpoint_url", "role_arn", "max_rules")
    REGION_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    FROM_PORT_FIELD_NUMBER: _ClassVar[int]
    TO_PORT_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_URL_FIELD_NUMBER: _ClassVar[int]
    ROLE_ARN_FIELD_NUMBER: _ClassVar[int]
    MAX_RULES_FIELD_NUMBER: _ClassVar[int]
    region: str
    group_id: str
    protocol: str
    from_port: int
    to_port: int
    endpoint_url: str
    role_arn: str
    max_rules: int
    def __init__(self, region: _Optional[str] = ..., group_id: _Optional[str] = ..., protocol: _Optional[str] = ..., from_port: _Optional[int] = ..., to_port: _Optional[int] = ..., endpoint_url: _Optional[str] = ..., role_arn: _Optional[str] = ..., max_rules: _Optional[int] = ...) -> None: ...

class GcpFirewall(_message.Message):
    __slots__ = ("project", "network", "protocol", "ports", "target_tags", "target_service_accounts", "priority", "endpoint_url")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    TARGET_TAGS_FIELD_NUMBER: _ClassVar[int]
    TARGET_SERVICE_ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_URL_FIELD_NUMBER: _ClassVar[int]
    project: str
    network: str
    protocol: str
    ports: _containers.RepeatedScalarFieldContainer[str]
    target_tags: _containers.RepeatedScalarFieldContainer[str]
    target_service_accounts: _containers.RepeatedScalarFieldContainer[str]
    priority: int
    endpoint_url: str
    def __init__(self, project: _Optional[str] = ..., network: _Optional[str] = ..., protocol: _Optional[str] = ..., ports: _Optional[_Iterable[str]] = ..., target_tags: _Optional[_Iterable[str]] = ..., target_service_accounts: _Optional[_Iterable[str]] = ..., priority: _Optional[int] = ..., endpoint_url: _Optional[str] = ...) -> None: ...

class HostFirewall(_message.Message):
    __slots__ = ("agent_id", "protocol", "ports")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    protocol: str
    ports: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, agent_id: _Optional[str] = ..., protocol: _Optional[str] = ..., ports: _Optional[_Iterable[int]] = ...) -> None: ...

class AzureNetworkSecurityGroup(_message.Message):
    __slots__ = ("subscription_id", "resource_group", "nsg_name", "protocol", "destination_port_ranges", "destination_address_prefix", "priority_range", "endpoint_url")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_GROUP_FIELD_NUMBER: _ClassVar[int]
    NSG_NAME_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PORT_RANGES_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_ADDRESS_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_RANGE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_URL_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    resource_group: str
    nsg_name: str
    protocol: str
    destination_port_ranges: _containers.RepeatedScalarFieldContainer[str]
    destination_address_prefix: str
    priority_range: PriorityRange
    endpoint_url: str
    def __init__(self, subscription_id: _Optional[str] = ..., resource_group: _Optional[str] = ..., nsg_name: _Optional[str] = ..., protocol: _Optional[str] = ..., destination_port_ranges: _Optional[_Iterable[str]] = ..., destination_address_prefix: _Optional[str] = ..., priority_range: _Optional[_Union[PriorityRange, _Mapping]] = ..., endpoint_url: _Optional[str] = ...) -> None: ...

class PriorityRange(_message.Message):
    __slots__ = ("first", "last")
    FIRST_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    first: int
    last: int
    def __init__(self, first: _Optional[int] = ..., last: _Optional[int] = ...) -> None: ...

class Resource(_message.Message):
    __slots__ = ("id", "name", "description", "memory", "aws_security_group", "gcp_firewall", "azure_network_security_group", "host_firewall", "created_at", "updated_at", "last_check", "approval")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    AWS_SECURITY_GROUP_FIELD_NUMBER: _ClassVar[int]
    GCP_FIREWALL_FIELD_NUMBER: _ClassVar[int]
    AZURE_NETWORK_SECURITY_GROUP_FIELD_NUMBER: _ClassVar[int]
    HOST_FIREWALL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_CHECK_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    memory: MemoryProvider
    aws_security_group: AwsSecurityGroup
    gcp_firewall: GcpFirewall
    azure_network_security_group: AzureNetworkSecurityGroup
    host_firewall: HostFirewall
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    last_check: ResourceCheck
    approval: ApprovalPolicy
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., memory: _Optional[_Union[MemoryProvider, _Mapping]] = ..., aws_security_group: _Optional[_Union[AwsSecurityGroup, _Mapping]] = ..., gcp_firewall: _Optional[_Union[GcpFirewall, _Mapping]] = ..., azure_network_security_group: _Optional[_Union[AzureNetworkSecurityGroup, _Mapping]] = ..., host_firewall: _Optional[_Union[HostFirewall, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_check: _Optional[_Union[ResourceCheck, _Mapping]] = ..., approval: _Optional[_Union[ApprovalPolicy, _Mapping]] = ...) -> None: ...

class ApprovalPolicy(_message.Message):
    __slots__ = ("required", "approvals", "approver_user_ids", "approver_groups", "justification_required", "pending_timeout", "auto_approve_groups")
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    APPROVER_USER_IDS_FIELD_NUMBER: _ClassVar[int]
    APPROVER_GROUPS_FIELD_NUMBER: _ClassVar[int]
    JUSTIFICATION_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    PENDING_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    AUTO_APPROVE_GROUPS_FIELD_NUMBER: _ClassVar[int]
    required: bool
    approvals: int
    approver_user_ids: _containers.RepeatedScalarFieldContainer[str]
    approver_groups: _containers.RepeatedScalarFieldContainer[str]
    justification_required: bool
    pending_timeout: _duration_pb2.Duration
    auto_approve_groups: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, required: _Optional[bool] = ..., approvals: _Optional[int] = ..., approver_user_ids: _Optional[_Iterable[str]] = ..., approver_groups: _Optional[_Iterable[str]] = ..., justification_required: _Optional[bool] = ..., pending_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., auto_approve_groups: _Optional[_Iterable[str]] = ...) -> None: ...

class ResourceCheck(_message.Message):
    __slots__ = ("status", "message", "checked_at")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    status: CheckStatus
    message: str
    checked_at: _timestamp_pb2.Timestamp
    def __init__(self, status: _Optional[_Union[CheckStatus, str]] = ..., message: _Optional[str] = ..., checked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateResourceRequest(_message.Message):
    __slots__ = ("resource",)
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    resource: Resource
    def __init__(self, resource: _Optional[_Union[Resource, _Mapping]] = ...) -> None: ...

class CreateResourceResponse(_message.Message):
    __slots__ = ("resource",)
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    resource: Resource
    def __init__(self, resource: _Optional[_Union[Resource, _Mapping]] = ...) -> None: ...

class GetResourceRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetResourceResponse(_message.Message):
    __slots__ = ("resource",)
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    resource: Resource
    def __init__(self, resource: _Optional[_Union[Resource, _Mapping]] = ...) -> None: ...

class ListResourcesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "user_id")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    user_id: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class ListResourcesResponse(_message.Message):
    __slots__ = ("resources", "next_page_token")
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    next_page_token: str
    def __init__(self, resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateResourceRequest(_message.Message):
    __slots__ = ("resource", "update_mask")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    resource: Resource
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, resource: _Optional[_Union[Resource, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateResourceResponse(_message.Message):
    __slots__ = ("resource",)
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    resource: Resource
    def __init__(self, resource: _Optional[_Union[Resource, _Mapping]] = ...) -> None: ...

class DeleteResourceRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteResourceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AssignResourceRequest(_message.Message):
    __slots__ = ("resource_id", "user_id")
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    resource_id: str
    user_id: str
    def __init__(self, resource_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class AssignResourceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UnassignResourceRequest(_message.Message):
    __slots__ = ("resource_id", "user_id")
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    resource_id: str
    user_id: str
    def __init__(self, resource_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class UnassignResourceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckResourceRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CheckResourceResponse(_message.Message):
    __slots__ = ("status", "message")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    status: CheckStatus
    message: str
    def __init__(self, status: _Optional[_Union[CheckStatus, str]] = ..., message: _Optional[str] = ...) -> None: ...
