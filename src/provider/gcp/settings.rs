//! The GCP provider's settings (`[providers]`).

use crate::provider::quota::Rate;
use serde::{Deserialize, Serialize};

/// Compute Engine counts a project's firewall writes (insert, patch, delete) per minute: the
/// default bucket never spends more than 1,500 in any minute (25 at once, then 24/s).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcpQuota {
    pub writes: Rate,
}

impl Default for GcpQuota {
    fn default() -> Self {
        GcpQuota { writes: Rate { burst: 25, per_second: 24.0 } }
    }
}
