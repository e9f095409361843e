//! The Azure provider's settings (`[providers]`).

use crate::provider::quota::Rate;
use serde::{Deserialize, Serialize};

/// Resource Manager throttles a subscription's writes on a token bucket: 200 at once, then 10
/// a second (its documented default); security rule PUTs and DELETEs count against it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AzureQuota {
    pub writes: Rate,
}

impl Default for AzureQuota {
    fn default() -> Self {
        AzureQuota { writes: Rate { burst: 200, per_second: 10.0 } }
    }
}
