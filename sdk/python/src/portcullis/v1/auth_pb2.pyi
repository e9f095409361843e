import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from portcullis.v1 import user_pb2 as _user_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SsoLoginState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SSO_LOGIN_STATE_UNSPECIFIED: _ClassVar[SsoLoginState]
    SSO_LOGIN_STATE_WAITING: _ClassVar[SsoLoginState]
    SSO_LOGIN_STATE_DONE: _ClassVar[SsoLoginState]
SSO_LOGIN_STATE_UNSPECIFIED: SsoLoginState
SSO_LOGIN_STATE_WAITING: SsoLoginState
SSO_LOGIN_STATE_DONE: SsoLoginState

class Browser(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class OperatingSystem(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("type",)
    TYPE_FIELD_NUMBER: _ClassVar[int]
    type: str
    def __init__(self, type: _Optional[str] = ...) -> None: ...

class LoginSession(_message.Message):
    __slots__ = ("id", "user_id", "created_at", "active_at", "expires_at", "idle_timeout_minutes", "ip", "user_agent", "browser", "operating_system", "device", "authenticators", "current")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_MINUTES_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    BROWSER_FIELD_NUMBER: _ClassVar[int]
    OPERATING_SYSTEM_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATORS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    user_id: str
    created_at: _timestamp_pb2.Timestamp
    active_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    idle_timeout_minutes: int
    ip: str
    user_agent: str
    browser: Browser
    operating_system: OperatingSystem
    device: Device
    authenticators: _containers.RepeatedScalarFieldContainer[str]
    current: bool
    def __init__(self, id: _Optional[str] = ..., user_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., active_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., idle_timeout_minutes: _Optional[int] = ..., ip: _Optional[str] = ..., user_agent: _Optional[str] = ..., browser: _Optional[_Union[Browser, _Mapping]] = ..., operating_system: _Optional[_Union[OperatingSystem, _Mapping]] = ..., device: _Optional[_Union[Device, _Mapping]] = ..., authenticators: _Optional[_Iterable[str]] = ..., current: _Optional[bool] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("id", "user_id", "name", "prefix", "permissions", "created_at", "last_used_at", "expires_at", "revoked_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    user_id: str
    name: str
    prefix: str
    permissions: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    last_used_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    revoked_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., user_id: _Optional[str] = ..., name: _Optional[str] = ..., prefix: _Optional[str] = ..., permissions: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_used_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StartLoginRequest(_message.Message):
    __slots__ = ("email", "password", "organization_id")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    email: str
    password: str
    organization_id: str
    def __init__(self, email: _Optional[str] = ..., password: _Optional[str] = ..., organization_id: _Optional[str] = ...) -> None: ...

class StartLoginResponse(_message.Message):
    __slots__ = ("verification_code_id", "expires_at")
    VERIFICATION_CODE_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    verification_code_id: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, verification_code_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class VerifyLoginRequest(_message.Message):
    __slots__ = ("verification_code_id", "code")
    VERIFICATION_CODE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    verification_code_id: str
    code: str
    def __init__(self, verification_code_id: _Optional[str] = ..., code: _Optional[str] = ...) -> None: ...

class VerifyLoginResponse(_message.Message):
    __slots__ = ("access_token", "expires_at", "login_session")
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LOGIN_SESSION_FIELD_NUMBER: _ClassVar[int]
    access_token: str
    expires_at: _timestamp_pb2.Timestamp
    login_session: LoginSession
    def __init__(self, access_token: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., login_session: _Optional[_Union[LoginSession, _Mapping]] = ...) -> None: ...

class StartSsoLoginRequest(_message.Message):
    __slots__ = ("organization_id", "email", "identity_provider_id")
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    email: str
    identity_provider_id: str
    def __init__(self, organization_id: _Optional[str] = ..., email: _Optional[str] = ..., identity_provider_id: _Optional[str] = ...) -> None: ...

class StartSsoLoginResponse(_message.Message):
    __slots__ = ("sso_login_id", "poll_secret", "authorization_url", "expires_at")
    SSO_LOGIN_ID_FIELD_NUMBER: _ClassVar[int]
    POLL_SECRET_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZATION_URL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    sso_login_id: str
    poll_secret: str
    authorization_url: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, sso_login_id: _Optional[str] = ..., poll_secret: _Optional[str] = ..., authorization_url: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WaitSsoLoginRequest(_message.Message):
    __slots__ = ("sso_login_id", "poll_secret")
    SSO_LOGIN_ID_FIELD_NUMBER: _ClassVar[int]
    POLL_SECRET_FIELD_NUMBER: _ClassVar[int]
    sso_login_id: str
    poll_secret: str
    def __init__(self, sso_login_id: _Optional[str] = ..., poll_secret: _Optional[str] = ...) -> None: ...

class WaitSsoLoginResponse(_message.Message):
    __slots__ = ("state", "login")
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOGIN_FIELD_NUMBER: _ClassVar[int]
    state: SsoLoginState
    login: VerifyLoginResponse
    def __init__(self, state: _Optional[_Union[SsoLoginState, str]] = ..., login: _Optional[_Union[VerifyLoginResponse, _Mapping]] = ...) -> None: ...

class GetCurrentLoginRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCurrentLoginResponse(_message.Message):
    __slots__ = ("user_id", "alias", "full_name", "roles", "groups", "expires_at", "ip", "user_agent", "verified", "login_session")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    LOGIN_SESSION_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    alias: str
    full_name: str
    roles: _containers.RepeatedScalarFieldContainer[_user_pb2.Role]
    groups: _containers.RepeatedScalarFieldContainer[str]
    expires_at: _timestamp_pb2.Timestamp
    ip: str
    user_agent: str
    verified: bool
    login_session: LoginSession
    def __init__(self, user_id: _Optional[str] = ..., alias: _Optional[str] = ..., full_name: _Optional[str] = ..., roles: _Optional[_Iterable[_Union[_user_pb2.Role, str]]] = ..., groups: _Optional[_Iterable[str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ip: _Optional[str] = ..., user_agent: _Optional[str] = ..., verified: _Optional[bool] = ..., login_session: _Optional[_Union[LoginSession, _Mapping]] = ...) -> None: ...

class ListLoginSessionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListLoginSessionsResponse(_message.Message):
    __slots__ = ("login_sessions", "next_page_token")
    LOGIN_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    login_sessions: _containers.RepeatedCompositeFieldContainer[LoginSession]
    next_page_token: str
    def __init__(self, login_sessions: _Optional[_Iterable[_Union[LoginSession, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ExtendLoginSessionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExtendLoginSessionResponse(_message.Message):
    __slots__ = ("login_session", "access_token", "expires_at")
    LOGIN_SESSION_FIELD_NUMBER: _ClassVar[int]
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    login_session: LoginSession
    access_token: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, login_session: _Optional[_Union[LoginSession, _Mapping]] = ..., access_token: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CloseLoginSessionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CloseLoginSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("name", "permissions", "expires_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    permissions: _containers.RepeatedScalarFieldContainer[str]
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., permissions: _Optional[_Iterable[str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "secret")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    secret: str
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("api_keys", "next_page_token")
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    api_keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    next_page_token: str
    def __init__(self, api_keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...
