//! Pure types and rules of Portcullis: no tonic, no sea-orm, no I/O.

mod actor;
mod approval;
mod duration;
mod endpoint;
pub mod host;
pub mod identity_provider;
mod ip;
mod permission;
mod policy;
mod resource;
mod scope;
pub mod session;
mod validate;

use std::fmt;
use std::str::FromStr;

pub use actor::Actor;
pub use approval::{ApprovalInput, ApprovalPolicy, Combined as CombinedApproval, Decision, SessionApproval};
pub use duration::{Requested, requested};
pub use endpoint::{AZURE_RESOURCE_MANAGERS, clean_path, endpoint_allowed, plain_origin, under_prefix};
pub use identity_provider::{GroupMapping, IdentityProviderInput, IdentityProviderSpec};
pub use ip::{
    IpVersion, check_public_address, check_session_address, client_address, normalize, parse_session_address,
    rate_limit_key,
};
pub use permission::Permission;
pub use policy::{MemberAccess, Reach, Rule};
pub use resource::{
    AwsSecurityGroup, AzureNetworkSecurityGroup, GcpFirewall, HostFirewall, MemoryProvider, ProviderConfig,
};
pub use scope::{CloudScopes, glob_matches};
pub use validate::{
    FieldViolation, Invalid, Violations, normalize_email, validate_description, validate_full_name, validate_name,
};

/// A new identifier: a UUIDv7, so identifiers sort in creation order (keyset pagination relies on it).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Whether `value` is an identifier this service could have issued.
pub fn is_valid_id(value: &str) -> bool {
    uuid::Uuid::try_parse(value).is_ok()
}

/// The current time, truncated to microseconds: what PostgreSQL stores, so every backend returns
/// exactly the value that was written.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::{DurationRound, TimeDelta};
    let now = chrono::Utc::now();
    now.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(now)
}

/// An error from parsing one of the enums below out of its stored name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariant(pub String);

impl fmt::Display for UnknownVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown value {:?}", self.0)
    }
}

impl std::error::Error for UnknownVariant {}

/// Declares an enum stored by name, with `as_str`, `Display` and `FromStr`.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored name of the variant.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = $crate::domain::UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err($crate::domain::UnknownVariant(other.to_owned())),
                }
            }
        }
    };
}
pub(crate) use named_enum;

named_enum!(
    /// What a user may do in its organization.
    Role {
        /// Starts and manages its own sessions.
        User => "USER",
        /// Also manages users, resources, the organization and everyone's sessions.
        Admin => "ADMIN",
        /// Runs the platform: creates, suspends and scopes organizations; a member of none, and
        /// never the role of a user (its keys come from `portcullis operator-key`).
        Operator => "OPERATOR",
    }
);

named_enum!(
    /// The plan of an organization; it bounds session length.
    Tier {
        Free => "FREE",
        Business => "BUSINESS",
        Enterprise => "ENTERPRISE",
    }
);

impl Tier {
    /// The longest session an organization on this tier may start.
    pub fn max_session_hours(self) -> u32 {
        match self {
            Tier::Free => 2,
            Tier::Business | Tier::Enterprise => 24,
        }
    }
}

named_enum!(
    /// The roll-up of a session's rules.
    SessionStatus {
        /// Waiting for its approvers: no rule is opened until they say yes.
        AwaitingApproval => "AWAITING_APPROVAL",
        Pending => "PENDING",
        Active => "ACTIVE",
        Partial => "PARTIAL",
        Failed => "FAILED",
        Expiring => "EXPIRING",
        Expired => "EXPIRED",
        Cancelled => "CANCELLED",
    }
);

named_enum!(
    /// The lifecycle of one rule on one resource.
    ResourceIpStatus {
        /// Its session waits for approval: nothing is sent to the provider yet.
        AwaitingApproval => "AWAITING_APPROVAL",
        Pending => "PENDING",
        Applied => "APPLIED",
        Failed => "FAILED",
        Removing => "REMOVING",
        Removed => "REMOVED",
    }
);

impl ResourceIpStatus {
    /// Rules that hold, or may yet hold, a provider rule.
    pub const LIVE: [ResourceIpStatus; 3] =
        [ResourceIpStatus::Pending, ResourceIpStatus::Applied, ResourceIpStatus::Removing];
}

named_enum!(
    /// Why a session ended.
    EndedReason {
        Expired => "EXPIRED",
        Manual => "MANUAL",
        Admin => "ADMIN",
        /// No watch of its owner was open for its heartbeat: the client is gone.
        ClientGone => "CLIENT_GONE",
        /// An approver said no.
        Denied => "DENIED",
        /// The approvals did not come within the policy's pending timeout.
        ApprovalTimeout => "APPROVAL_TIMEOUT",
    }
);

named_enum!(
    /// A firewall provider, by its short name (as logs, metrics and Cargo features spell it).
    ProviderKind {
        /// Rules kept in the server's memory.
        Memory => "memory",
        /// AWS security groups (Cargo feature `aws`).
        Aws => "aws",
        /// GCP firewall rules (Cargo feature `gcp`).
        Gcp => "gcp",
        /// Azure network security groups (Cargo feature `azure`).
        Azure => "azure",
        /// Linux hosts, through their agents.
        Host => "host",
    }
);

named_enum!(
    /// Where one webhook delivery stands.
    DeliveryStatus {
        /// Waiting for its (next) attempt.
        Pending => "PENDING",
        /// The receiver answered 2xx.
        Delivered => "DELIVERED",
        /// Given up: its attempts ran out, or its webhook was disabled.
        Failed => "FAILED",
    }
);
