//! Which endpoints a resource may send the server's cloud credentials to: the cloud's own, and
//! those the operator allows (`providers.allowed_endpoints`). Anything else would hand the
//! server's bearer token or signatures to whoever runs that host.

use super::Invalid;
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
        ProviderKind::Memory | ProviderKind::Host => return false,
    };
    if target.scheme == "https" && own {
        return true;
    }
    allowed.iter().filter_map(|entry| Origin::parse(entry)).any(|entry| entry.admits(&target))
}

/// Whether `url` falls under one of `prefixes` (`scheme://host[:port][/path]`, the port may be
/// `*`): the same scheme, host and port, and a path under the prefix's path, segment by segment.
/// A plain string prefix would let `http://10.0.0.5.attacker.example` pass for `http://10.0.0.5`;
/// paths are compared as a receiver that decodes and resolves them would read them, and a path
/// that any reading could make climb (see [`clean_path`]) is under no prefix.
pub fn under_prefix(url: &str, prefixes: &[String]) -> bool {
    let Some((target, rest)) = Origin::parse_with_path(url) else { return false };
    let Some(path) = clean_path(path_of(rest)) else { return false };
    if target.port.is_none() {
        return false;
    }
    prefixes.iter().filter_map(|entry| Origin::parse_with_path(entry)).any(|(entry, rest)| {
        let Some(prefix) = clean_path(path_of(rest)) else { return false };
        entry.admits(&target)
            && (prefix.ends_with('/') && path.starts_with(&prefix)
                || path == prefix
                || path.strip_prefix(&prefix).is_some_and(|below| below.starts_with('/')))
    })
}

/// The path part of what follows an origin (`/a/b?q#f` → `/a/b`), `/` when there is none.
fn path_of(rest: &str) -> &str {
    match rest.split(['?', '#']).next().unwrap_or_default() {
        "" => "/",
        path => path,
    }
}

/// `path` percent-decoded, if no way of reading it can climb out of where it appears to be: no
/// dot segments (also encoded, `%2e%2e`, or with parameters, `..;` as Tomcat reads them), no
/// backslashes (a slash to some servers), no encoded slashes, no percent sign left after one
/// decoding (`%252e` is a dot to a server that decodes twice), no control characters.
pub fn clean_path(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut decoded = Vec::new();
    for segment in path.split('/') {
        let plain = percent_encoding::percent_decode_str(segment).decode_utf8().ok()?;
        if plain.contains(['/', '\\', '%']) || plain.chars().any(char::is_control) {
            return None;
        }
        if matches!(plain.split(';').next(), Some("." | "..")) {
            return None;
        }
        decoded.push(plain);
    }
    Some(decoded.join("/"))
}

/// `url` as a plain origin, `scheme://host[:port]` (lowercase, the scheme's default port left
/// out), or why it is not one. A provider builds its request URLs by appending its own paths to
/// the origin, so anything after it (a path, a query, a fragment), credentials, escapes or
/// backslashes could move those requests elsewhere: a path naming another subscription, a
/// fragment swallowing the provider's own path.
pub fn plain_origin(url: &str) -> Result<String, Invalid> {
    let refuse = || {
        Invalid(format!(
            "{url:?} must be an origin, scheme://host[:port], without path, query, fragment or credentials"
        ))
    };
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
        // Written as a port is: `:0443` or `:+443` are spellings parsers disagree on.
        Some((host, port)) if !port.contains(']') => {
            let number = port.parse::<u16>().ok().filter(|number| number.to_string() == port).ok_or_else(refuse)?;
            (host, Some(number))
        }
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
    let origin = match port.filter(|port| *port != default_port) {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    };
    // What an HTTP client makes of it must be the same origin: hosts it would rewrite
    // (`0x7f.1` is 127.0.0.1 to it, `[::ffff:1.2.3.4]` another spelling) are not plain.
    match url::Url::parse(&origin) {
        Ok(parsed) if parsed.origin().ascii_serialization() == origin => Ok(origin),
        _ => Err(refuse()),
    }
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
        let climbs = [
            "http://10.0.0.5:8080/hooks/../admin/reset",
            "http://10.0.0.5:8080/hooks/%2e%2e/admin/reset",
            "http://10.0.0.5:8080/hooks/%2E./admin",
            "http://10.0.0.5:8080/hooks/..;/admin",
            "http://10.0.0.5:8080/hooks/..\\admin",
            "http://10.0.0.5:8080/hooks/%5c..%5cadmin",
            "http://10.0.0.5:8080/hooks/%2e%2e%2fadmin",
            "http://10.0.0.5:8080/hooks/%252e%252e/admin",
            "http://10.0.0.5:8080/hooks/./x",
        ];
        for url in climbs {
            assert!(!under_prefix(url, &prefixes), "{url} passed for a path under /hooks/");
        }
        let bare = vec!["http://10.0.0.5:8080/hooks".to_owned()];
        assert!(under_prefix("http://10.0.0.5:8080/hooks", &bare));
        assert!(under_prefix("http://10.0.0.5:8080/hooks/a?x=1", &bare));
        assert!(!under_prefix("http://10.0.0.5:8080/hooksevil", &bare), "segment by segment");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Pieces an attacker would put together, from the known bypasses.
        fn origin_like() -> impl Strategy<Value = String> {
            let scheme = prop::sample::select(vec!["https", "http", "HTTPS", "ftp", "", "https:"]);
            let userinfo = prop::sample::select(vec!["", "", "user@", "a:b@", "evil.example%40", "x@"]);
            let host = prop::sample::select(vec![
                "management.azure.com",
                "Management.Azure.COM",
                "management.azure.com.",
                "ec2.amazonaws.com",
                "127.0.0.1",
                "0x7f.1",
                "2130706433",
                "[::1]",
                "[::ffff:127.0.0.1]",
                "[fe80::1%25eth0]",
                "[::1",
                "a..b",
                "-a.example",
                "xn--nxasmq6b.example",
                "",
            ]);
            let port =
                prop::sample::select(vec!["", "", ":443", ":0443", ":80", ":8080", ":", ":99999", ":+443", ":443:443"]);
            let tail = prop::collection::vec(
                prop::sample::select(vec![
                    "/",
                    "/x",
                    "?",
                    "?a=b",
                    "#",
                    "#f",
                    "\\",
                    "/%2e%2e",
                    "/..;",
                    "%2e",
                    "/.",
                    "%40evil.example",
                    "%25",
                    " ",
                ]),
                0..3,
            );
            (scheme, userinfo, host, port, tail, "[ -~]{0,6}").prop_map(
                |(scheme, userinfo, host, port, tail, noise)| {
                    let mut url = format!("{scheme}://{userinfo}{host}{port}{}", tail.concat());
                    // Now and then some random printable characters at the end.
                    if noise.len() > 4 {
                        url.push_str(&noise);
                    }
                    url
                },
            )
        }

        /// Paths a webhook URL might take, from the known bypasses.
        fn path_like() -> impl Strategy<Value = String> {
            let segment = prop::sample::select(vec![
                "hooks",
                "admin",
                "reset",
                "",
                ".",
                "..",
                "%2e%2e",
                "%2E.",
                ".%2e",
                "..;",
                ";x",
                "..\\admin",
                "%5c",
                "%2f",
                "%2F..",
                "%252e%252e",
                "%40",
                "a%20b",
                "%00",
                "hooks;",
                "%",
                "%zz",
            ]);
            (prop::collection::vec(segment, 0..6), prop::sample::select(vec!["", "?a=b", "?../..", "#x"]))
                .prop_map(|(segments, query)| format!("/{}{query}", segments.join("/")))
        }

        /// How a receiver that decodes again and again, takes `\` and `;` as separators and
        /// resolves dot segments would read `path`.
        fn as_a_lenient_server_reads(path: &str) -> String {
            let mut path = path.split(['?', '#']).next().unwrap_or_default().to_owned();
            for _ in 0..4 {
                path = percent_encoding::percent_decode_str(&path).decode_utf8_lossy().into_owned();
            }
            let mut resolved: Vec<&str> = Vec::new();
            for segment in path.split(['/', '\\']).map(|segment| segment.split(';').next().unwrap_or_default()) {
                match segment {
                    "" | "." => {}
                    ".." => {
                        resolved.pop();
                    }
                    segment => resolved.push(segment),
                }
            }
            format!("/{}", resolved.join("/"))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4_000))]

            /// Whatever is accepted as an endpoint is a plain origin, and is the very origin an
            /// HTTP client would call: no path, query, fragment or credentials survive.
            #[test]
            fn an_accepted_endpoint_is_a_plain_origin(url in origin_like()) {
                if let Ok(origin) = plain_origin(&url) {
                    let after_scheme = origin.split_once("://").map(|(_, rest)| rest).unwrap_or_default();
                    prop_assert!(!after_scheme.contains(['/', '?', '#', '@', '%', '\\', ' ']), "{url} gave {origin}");
                    let parsed = url::Url::parse(&url).map_err(|err| TestCaseError::fail(format!("{url}: {err}")))?;
                    prop_assert_eq!(parsed.origin().ascii_serialization(), origin.clone(), "{}", url);
                    prop_assert_eq!(parsed.path(), "/", "{}", url);
                    prop_assert!(parsed.query().is_none() && parsed.fragment().is_none(), "{url}");
                    prop_assert!(parsed.username().is_empty() && parsed.password().is_none(), "{url}");
                    prop_assert_eq!(plain_origin(&origin), Ok(origin.clone()), "normalizing twice changes nothing");
                }
            }

            /// Whatever webhook URL passes for being under `/hooks/` is under it however its
            /// receiver reads the path.
            #[test]
            fn an_accepted_webhook_path_stays_under_its_prefix(path in path_like()) {
                let prefixes = vec!["http://10.0.0.5:8080/hooks/".to_owned()];
                let url = format!("http://10.0.0.5:8080{path}");
                if under_prefix(&url, &prefixes) {
                    let parsed = url::Url::parse(&url).map_err(|err| TestCaseError::fail(format!("{url}: {err}")))?;
                    prop_assert!(parsed.path().starts_with("/hooks/"), "{url} is {} to a WHATWG parser", parsed.path());
                    let read = as_a_lenient_server_reads(&path);
                    prop_assert!(read.starts_with("/hooks/") || read == "/hooks", "{url} reads as {read}");
                }
            }
        }

        #[test]
        fn known_bypasses_are_refused() {
            let bypasses = [
                "https://management.azure.com/%2e%2e",
                "https://management.azure.com/%2E.",
                "https://management.azure.com/..;",
                "https://management.azure.com\\@evil.example",
                "https://evil.example%40management.azure.com",
                "http://[fe80::1%25eth0]:80",
                "https://management.azure.com.",
                "https://management.azure.com:0443",
                "https://management.azure.com:+443",
                "https://management.azure.com?",
                "https://management.azure.com#",
                "http://0x7f.1:8080",
                "http://2130706433:8080",
            ];
            for url in bypasses {
                assert!(plain_origin(url).is_err(), "{url} passed as an origin");
            }
        }
    }
}
