//! Which endpoints a resource may send the server's cloud credentials to: the cloud's own, and
//! those the operator allows (`providers.allowed_endpoints`). Anything else would hand the
//! server's bearer token or signatures to whoever runs that host.

use super::ProviderKind;

/// Azure Resource Manager in the public, US Government and China clouds.
pub const AZURE_RESOURCE_MANAGERS: &[&str] =
    &["management.azure.com", "management.usgovcloudapi.net", "management.chinacloudapi.cn"];

/// Whether `url` may be called for a resource of `provider_kind`.
///
/// The cloud's own endpoints (HTTPS on `*.amazonaws.com` for AWS, `*.googleapis.com` for GCP,
/// [`AZURE_RESOURCE_MANAGERS`] for Azure) are always allowed. Otherwise `url` must match an entry of `allowed`: `scheme://host:port`,
/// where the port may be `*` (any port) and a missing port means the scheme's default.
pub fn endpoint_allowed(url: &str, provider_kind: ProviderKind, allowed: &[String]) -> bool {
    let Some(target) = Origin::parse(url) else { return false };
    let host = target.host.as_str();
    let own = match provider_kind {
        ProviderKind::Aws => host.ends_with(".amazonaws.com"),
        ProviderKind::Gcp => host.ends_with(".googleapis.com"),
        ProviderKind::Azure => AZURE_RESOURCE_MANAGERS.contains(&host),
        ProviderKind::Memory => return false,
    };
    if target.scheme == "https" && own {
        return true;
    }
    allowed.iter().filter_map(|entry| Origin::parse(entry)).any(|entry| entry.admits(&target))
}

/// Whether `url` falls under one of `prefixes` (`scheme://host[:port][/path]`, the port may be
/// `*`): the same scheme, host and port, and a path beginning with the prefix's path. A plain
/// string prefix would let `http://10.0.0.5.attacker.example` pass for `http://10.0.0.5`.
pub fn under_prefix(url: &str, prefixes: &[String]) -> bool {
    let Some((target, path)) = Origin::parse_with_path(url) else { return false };
    if target.port.is_none() {
        return false;
    }
    prefixes
        .iter()
        .filter_map(|entry| Origin::parse_with_path(entry))
        .any(|(entry, prefix)| entry.admits(&target) && (path.starts_with(prefix) || prefix == "/" && path.is_empty()))
}

/// `url` as a plain origin, `scheme://host[:port]` (lowercase, the scheme's default port left
/// out), or why it is not one. A provider builds its request URLs by appending its own paths to
/// the origin, so anything after it (a path, a query, a fragment), credentials, escapes or
/// backslashes could move those requests elsewhere: a path naming another subscription, a
/// fragment swallowing the provider's own path.
pub fn plain_origin(url: &str) -> Result<String, String> {
    let refuse =
        || format!("{url:?} must be an origin, scheme://host[:port], without path, query, fragment or credentials");
    let (scheme, rest) = url.split_once("://").ok_or_else(refuse)?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(refuse()),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
    if authority.is_empty() || !authority.chars().all(plain) {
        return Err(refuse());
    }
    let (host, port) = match authority.rsplit_once(':').filter(|(host, _)| !host.ends_with(':')) {
        // An IPv6 literal's colons are inside its brackets.
        Some((host, port)) if !port.contains(']') => (host, Some(port.parse::<u16>().map_err(|_| refuse())?)),
        _ => (authority, None),
    };
    let bracketed =
        host.starts_with('[') && host.ends_with(']') && host[1..host.len() - 1].parse::<std::net::Ipv6Addr>().is_ok();
    let named = !host.is_empty()
        && !host.contains([':', '[', ']'])
        && host.split('.').all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
    if !bracketed && !named {
        return Err(refuse());
    }
    let host = host.to_ascii_lowercase();
    Ok(match port.filter(|port| *port != default_port) {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

/// The parts of a URL that say where a request goes.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    /// None: any port (`*`).
    port: Option<u16>,
}

impl Origin {
    fn parse(url: &str) -> Option<Origin> {
        Origin::parse_with_path(url).map(|(origin, _)| origin)
    }

    /// The origin and what follows it (path, query), which may be empty.
    fn parse_with_path(url: &str) -> Option<(Origin, &str)> {
        let (scheme, rest) = url.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        // Userinfo would let `https://good.example@evil.example` pass a prefix check.
        let authority = rest.split(['/', '?', '#']).next()?;
        if authority.contains('@') || authority.is_empty() {
            return None;
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, "*")) => (host, None),
            Some((host, port)) => (host, Some(port.parse().ok()?)),
            _ => (authority, Some(default_port)),
        };
        if host.is_empty() {
            return None;
        }
        Some((Origin { scheme, host: host.to_ascii_lowercase(), port }, &rest[authority.len()..]))
    }

    fn admits(&self, target: &Origin) -> bool {
        self.scheme == target.scheme
            && self.host == target.host
            && self.port.is_none_or(|port| Some(port) == target.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_plain_origins() {
        let origin = |url: &str| plain_origin(url);
        assert_eq!(origin("https://Management.Azure.com/"), Ok("https://management.azure.com".into()));
        assert_eq!(origin("http://127.0.0.1:8080"), Ok("http://127.0.0.1:8080".into()));
        assert_eq!(origin("https://ec2.amazonaws.com:443"), Ok("https://ec2.amazonaws.com".into()));
        assert_eq!(origin("http://[::1]:9000"), Ok("http://[::1]:9000".into()));
        let escapes = [
            "https://management.azure.com/subscriptions/other/resourceGroups/rg?api-version=2024-05-01#",
            "https://management.azure.com#",
            "https://management.azure.com?x",
            "https://management.azure.com/.",
            "https://management.azure.com/%2e%2e",
            "https://management.azure.com/..;",
            "https://management.azure.com\\evil.example",
            "https://evil.example%40management.azure.com",
            "https://user@management.azure.com",
            "http://[fe80::1%25eth0]",
            "https://management.azure.com.",
            "https://management.azure.com:443:443",
            "https://management.azure.com:99999",
            "ftp://management.azure.com",
            "https://",
            "https:// management.azure.com",
        ];
        for url in escapes {
            assert!(origin(url).is_err(), "{url} passed as an origin");
        }
    }

    #[test]
    fn cloud_endpoints_and_listed_origins_only() {
        let allowed = vec!["http://127.0.0.1:*".to_owned(), "https://proxy.internal:8443".to_owned()];
        assert!(endpoint_allowed("https://vpce-1.ec2.eu-west-1.vpce.amazonaws.com", ProviderKind::Aws, &[]));
        assert!(endpoint_allowed("https://compute.googleapis.com", ProviderKind::Gcp, &[]));
        assert!(!endpoint_allowed("https://compute.googleapis.com", ProviderKind::Aws, &[]), "each cloud its own");
        assert!(
            !endpoint_allowed("http://ec2.amazonaws.com", ProviderKind::Aws, &[]),
            "plaintext to the cloud is not its endpoint"
        );
        assert!(!endpoint_allowed("https://attacker.example", ProviderKind::Aws, &[]));
        assert!(endpoint_allowed("http://127.0.0.1:5000", ProviderKind::Aws, &allowed));
        assert!(endpoint_allowed("http://127.0.0.1:5000/path", ProviderKind::Gcp, &allowed));
        assert!(endpoint_allowed("https://proxy.internal:8443/", ProviderKind::Gcp, &allowed));
        assert!(!endpoint_allowed("https://proxy.internal", ProviderKind::Gcp, &allowed), "another port");
        assert!(!endpoint_allowed("https://127.0.0.1:5000", ProviderKind::Aws, &allowed), "another scheme");
        assert!(!endpoint_allowed("http://127.0.0.1.attacker.example:5000", ProviderKind::Aws, &allowed));
        assert!(!endpoint_allowed("http://127.0.0.1:5000@attacker.example", ProviderKind::Aws, &allowed));
        assert!(!endpoint_allowed("https://ec2.amazonaws.com@attacker.example", ProviderKind::Aws, &[]));
        assert!(!endpoint_allowed("https://attacker.example/.amazonaws.com", ProviderKind::Aws, &[]));
        assert!(endpoint_allowed("https://management.azure.com/", ProviderKind::Azure, &[]));
        assert!(endpoint_allowed("https://management.usgovcloudapi.net", ProviderKind::Azure, &[]));
        assert!(
            !endpoint_allowed("https://evil.management.azure.com", ProviderKind::Azure, &[]),
            "the exact host only"
        );
        assert!(!endpoint_allowed("https://management.azure.com.attacker.example", ProviderKind::Azure, &[]));
        assert!(!endpoint_allowed("https://management.azure.com", ProviderKind::Gcp, &[]));
    }

    #[test]
    fn url_prefixes_compare_origins_then_paths() {
        let prefixes = vec!["http://10.0.0.5:8080/hooks/".to_owned(), "http://127.0.0.1:*".to_owned()];
        assert!(under_prefix("http://10.0.0.5:8080/hooks/portcullis", &prefixes));
        assert!(!under_prefix("http://10.0.0.5:8080/admin", &prefixes), "another path");
        assert!(!under_prefix("http://10.0.0.5:8081/hooks/", &prefixes), "another port");
        assert!(!under_prefix("https://10.0.0.5:8080/hooks/", &prefixes), "another scheme");
        assert!(!under_prefix("http://10.0.0.5.attacker.example:8080/hooks/", &prefixes));
        assert!(!under_prefix("http://10.0.0.5:8080@attacker.example/hooks/", &prefixes));
        assert!(under_prefix("http://127.0.0.1:4000", &prefixes));
        assert!(under_prefix("http://127.0.0.1:4000/any", &prefixes));
        assert!(!under_prefix("http://127.0.0.1:*/any", &prefixes), "a URL names one port");
    }
}
