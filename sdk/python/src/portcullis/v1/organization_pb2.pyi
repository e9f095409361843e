import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from portcullis.v1 import user_pb2 as _user_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIER_UNSPECIFIED: _ClassVar[Tier]
    TIER_FREE: _ClassVar[Tier]
    TIER_BUSINESS: _ClassVar[Tier]
    TIER_ENTERPRISE: _ClassVar[Tier]
TIER_UNSPECIFIED: Tier
TIER_FREE: Tier
TIER_BUSINESS: Tier
TIER_ENTERPRISE: Tier

class CloudScopes(_message.Message):
    __slots__ = ("unrestricted", "aws_accounts", "aws_role_arns", "gcp_projects", "azure_subscriptions")
    UNRESTRICTED_FIELD_NUMBER: _ClassVar[int]
    AWS_ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    AWS_ROLE_ARNS_FIELD_NUMBER: _ClassVar[int]
    GCP_PROJECTS_FIELD_NUMBER: _ClassVar[int]
    AZURE_SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    unrestricted: bool
    aws_accounts: _containers.RepeatedScalarFieldContainer[str]
    aws_role_arns: _containers.RepeatedScalarFieldContainer[str]
    gcp_projects: _containers.RepeatedScalarFieldContainer[str]
    azure_subscriptions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, unrestricted: _Optional[bool] = ..., aws_accounts: _Optional[_Iterable[str]] = ..., aws_role_arns: _Optional[_Iterable[str]] = ..., gcp_projects: _Optional[_Iterable[str]] = ..., azure_subscriptions: _Optional[_Iterable[str]] = ...) -> None: ...

class Organization(_message.Message):
    __slots__ = ("id", "name", "tier", "suspended", "allow_private_addresses", "created_at", "updated_at", "cloud_scopes")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    SUSPENDED_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PRIVATE_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    CLOUD_SCOPES_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    tier: Tier
    suspended: bool
    allow_private_addresses: bool
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    cloud_scopes: CloudScopes
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., tier: _Optional[_Union[Tier, str]] = ..., suspended: _Optional[bool] = ..., allow_private_addresses: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cloud_scopes: _Optional[_Union[CloudScopes, _Mapping]] = ...) -> None: ...

class GetOrganizationRequest(_message.Message):
    __slots__ = ("organization_id",)
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    def __init__(self, organization_id: _Optional[str] = ...) -> None: ...

class GetOrganizationResponse(_message.Message):
    __slots__ = ("organization",)
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    organization: Organization
    def __init__(self, organization: _Optional[_Union[Organization, _Mapping]] = ...) -> None: ...

class UpdateOrganizationRequest(_message.Message):
    __slots__ = ("organization", "update_mask")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    organization: Organization
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, organization: _Optional[_Union[Organization, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateOrganizationResponse(_message.Message):
    __slots__ = ("organization",)
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    organization: Organization
    def __init__(self, organization: _Optional[_Union[Organization, _Mapping]] = ...) -> None: ...

class CreateOrganizationRequest(_message.Message):
    __slots__ = ("organization", "admin_email", "admin_full_name")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    ADMIN_EMAIL_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    organization: Organization
    admin_email: str
    admin_full_name: str
    def __init__(self, organization: _Optional[_Union[Organization, _Mapping]] = ..., admin_email: _Optional[str] = ..., admin_full_name: _Optional[str] = ...) -> None: ...

class CreateOrganizationResponse(_message.Message):
    __slots__ = ("organization", "admin", "admin_api_key")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    ADMIN_API_KEY_FIELD_NUMBER: _ClassVar[int]
    organization: Organization
    admin: _user_pb2.User
    admin_api_key: str
    def __init__(self, organization: _Optional[_Union[Organization, _Mapping]] = ..., admin: _Optional[_Union[_user_pb2.User, _Mapping]] = ..., admin_api_key: _Optional[str] = ...) -> None: ...

class ListOrganizationsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListOrganizationsResponse(_message.Message):
    __slots__ = ("organizations", "next_page_token")
    ORGANIZATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    organizations: _containers.RepeatedCompositeFieldContainer[Organization]
    next_page_token: str
    def __init__(self, organizations: _Optional[_Iterable[_Union[Organization, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SuspendOrganizationRequest(_message.Message):
    __slots__ = ("organization_id", "reason")
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    reason: str
    def __init__(self, organization_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SuspendOrganizationResponse(_message.Message):
    __slots__ = ("organization",)
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    organization: Organization
    def __init__(self, organization: _Optional[_Union[Organization, _Mapping]] = ...) -> None: ...

class ResumeOrganizationRequest(_message.Message):
    __slots__ = ("organization_id",)
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    def __init__(self, organization_id: _Optional[str] = ...) -> None: ...

class ResumeOrganizationResponse(_message.Message):
    __slots__ = ("organization",)
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    organization: Organization
    def __init__(self, organization: _Optional[_Union[Organization, _Mapping]] = ...) -> None: ...
