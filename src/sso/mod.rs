//! Single sign-on through an organization's OpenID Connect provider: the one HTTP client every
//! provider URL is fetched with (held to the same destination rule as webhooks), and the
//! provider client that runs the code flow and checks ID tokens.

pub mod http;
pub mod oidc;

use crate::settings::{Minutes, Seconds, Unworkable};
use serde::{Deserialize, Serialize};

/// Single sign-on settings of the operator (each organization's providers are API objects).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SsoConfig {
    /// Issuer URL prefixes (for example `http://127.0.0.1:5556/dex`) that may be plain http or
    /// reach private, loopback or link-local addresses: a test or in-house identity provider.
    /// Every other issuer, and every URL its discovery names, must be https to a public address.
    pub allowed_private_issuers: Vec<String>,
    /// How often each SSO user's refresh token is redeemed at their provider: a refused one
    /// disables the user, lost groups take their mapped role and resources away.
    pub refresh_check_secs: Seconds<1, 86_400>,
    /// How long a started SSO login waits for its browser to come back.
    pub login_minutes: Minutes<1, 60>,
    /// The longest one request to an identity provider may take.
    pub http_timeout_secs: Seconds<1, 60>,
}

impl Default for SsoConfig {
    fn default() -> Self {
        SsoConfig {
            allowed_private_issuers: Vec::new(),
            refresh_check_secs: Seconds::of::<900>(),
            login_minutes: Minutes::of::<10>(),
            http_timeout_secs: Seconds::of::<10>(),
        }
    }
}

impl SsoConfig {
    /// Refuses a private issuer prefix that is no URL with an origin.
    pub fn check(&self) -> Result<(), Unworkable> {
        for prefix in &self.allowed_private_issuers {
            let origin =
                prefix.split_once("://").map(|(scheme, rest)| (scheme, rest.split('/').next().unwrap_or_default()));
            if !matches!(origin, Some(("http" | "https", host)) if !host.is_empty()) {
                return Err(format!(
                    "sso.allowed_private_issuers: {prefix:?} must be a URL prefix such as http://127.0.0.1:5556/dex"
                )
                .into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
