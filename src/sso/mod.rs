//! Single sign-on through an organization's OpenID Connect provider: the one HTTP client every
//! provider URL is fetched with (held to the same destination rule as webhooks), and the
//! provider client that runs the code flow and checks ID tokens.

pub mod http;
pub mod oidc;

#[cfg(test)]
mod tests;
