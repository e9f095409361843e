//! The AWS provider's settings (`[providers]`).

use crate::provider::quota::Rate;
use crate::settings::Millis;
use serde::{Deserialize, Serialize};

/// EC2 throttles each API on a token bucket of its own per account and region; the engine paces
/// its calls to stay within them. The defaults are EC2's buckets for mutating and describe calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsQuota {
    /// Each of AuthorizeSecurityGroupIngress and RevokeSecurityGroupIngress.
    pub mutating: Rate,
    /// Each of DescribeSecurityGroupRules and DescribeSecurityGroups.
    pub describe: Rate,
    /// Least time from one write to a security group answering to the next write to it
    /// starting: sessions started together on one group go out in a call or two instead of one
    /// per wave, at the price of up to this much more wait for those arriving just after a call.
    /// 0 writes as soon as there is work and a token.
    pub group_write_interval_ms: Millis<0, 600_000>,
    /// A group waiting out its write interval is written as soon as no further work for it has
    /// come for this long: a burst of sessions goes out once it ends, not a whole
    /// interval after the last write. 0 always waits out the interval.
    pub group_write_quiet_ms: Millis<0, 600_000>,
}

impl Default for AwsQuota {
    fn default() -> Self {
        AwsQuota {
            mutating: Rate { burst: 50, per_second: 5.0 },
            describe: Rate { burst: 100, per_second: 20.0 },
            group_write_interval_ms: Millis::of::<1_000>(),
            group_write_quiet_ms: Millis::of::<100>(),
        }
    }
}
