//! Client addresses: which ones a session may open, and how to find the caller's.

use super::Invalid;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr};

/// The address family a request field is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVersion {
    V4,
    V6,
}

impl IpVersion {
    pub fn of(address: IpAddr) -> IpVersion {
        if address.is_ipv4() { IpVersion::V4 } else { IpVersion::V6 }
    }

    pub fn number(self) -> u8 {
        match self {
            IpVersion::V4 => 4,
            IpVersion::V6 => 6,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:203.0.113.7`) are the IPv4 host they carry.
pub fn normalize(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// The client a rate limit counts an address as: the address itself, or for IPv6 its /64 (one
/// host is commonly handed a whole /64, so its addresses are all one client).
pub fn rate_limit_key(address: IpAddr) -> String {
    match normalize(address) {
        IpAddr::V6(v6) => ipnet::Ipv6Net::new(v6, 64).map_or_else(|_| v6.to_string(), |net| net.trunc().to_string()),
        v4 => v4.to_string(),
    }
}

fn is_private(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.is_private() || is_shared_v4(v4),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// 100.64.0.0/10, carrier-grade NAT: as private as RFC 1918 for our purposes.
fn is_shared_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    a == 100 && (b & 0xc0) == 64
}

fn is_link_local(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn is_broadcast(address: IpAddr) -> bool {
    matches!(address, IpAddr::V4(v4) if v4.is_broadcast())
}

/// 0.0.0.0/8 ("this network") and 240.0.0.0/4 (reserved): never a host on the internet.
fn is_reserved(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.octets()[0] == 0 || v4.octets()[0] >= 240,
        // fec0::/10, the deprecated site-local range.
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfec0,
    }
}

/// `::a.b.c.d`, the deprecated IPv4-compatible form (`::` and `::1` are caught before).
fn is_ipv4_compatible(address: IpAddr) -> bool {
    matches!(address, IpAddr::V6(v6) if v6.segments()[..6].iter().all(|s| *s == 0))
}

/// The IPv4 host a translation or tunnelling address carries: NAT64 (64:ff9b::/96), 6to4
/// (2002::/16) and Teredo (2001::/32, the client's address inverted in the last 32 bits).
fn embedded_v4(address: IpAddr) -> Option<(&'static str, Ipv4Addr)> {
    let IpAddr::V6(v6) = address else { return None };
    let bits = u128::from(v6);
    let low = |shift: u32| Ipv4Addr::from(((bits >> shift) & 0xffff_ffff) as u32);
    let segments = v6.segments();
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(("NAT64", low(0)))
    } else if segments[0] == 0x2002 {
        Some(("6to4", low(80)))
    } else if segments[..2] == [0x2001, 0] {
        Some(("Teredo", Ipv4Addr::from(!(bits as u32))))
    } else {
        None
    }
}

/// Checks that `text` is a single host a firewall rule may open, of family `version`.
/// Private ranges are refused unless `allow_private`.
pub fn parse_session_address(text: &str, version: IpVersion, allow_private: bool) -> Result<IpAddr, Invalid> {
    let trimmed = text.trim();
    if trimmed.contains('/') {
        return Err("must be a single address, not a network".into());
    }
    let address = trimmed.parse::<IpAddr>().map(normalize).map_err(|_| "is not an IP address".to_owned())?;
    check_session_address(address, version, allow_private)?;
    Ok(address)
}

/// The rules of [`parse_session_address`] for an address already parsed (e.g. detected).
pub fn check_session_address(address: IpAddr, version: IpVersion, allow_private: bool) -> Result<(), Invalid> {
    if IpVersion::of(address) != version {
        return Err(format!("must be an IPv{} address", version.number()).into());
    }
    check_host(address, allow_private, "private (the organization does not allow private addresses)")
}

/// Refuses what is not a host (unspecified, multicast, reserved…) and, unless `allow_private`,
/// private hosts, naming them `private` in the error.
fn check_host(address: IpAddr, allow_private: bool, private: &str) -> Result<(), Invalid> {
    let refused = if address.is_unspecified() {
        Some("unspecified")
    } else if address.is_loopback() {
        Some("loopback")
    } else if address.is_multicast() || is_broadcast(address) {
        Some("multicast or broadcast")
    } else if is_link_local(address) {
        Some("link-local")
    } else if is_reserved(address) {
        Some("reserved")
    } else if is_ipv4_compatible(address) {
        Some("deprecated IPv4-compatible")
    } else if !allow_private && is_private(address) {
        Some(private)
    } else {
        None
    };
    if let Some(kind) = refused {
        return Err(format!("{address} is a {kind} address").into());
    }
    // A tunnel or translator address opens what it carries: it is refused as that host would be.
    if let Some((kind, carried)) = embedded_v4(address)
        && let Err(problem) = check_host(IpAddr::V4(carried), allow_private, private)
    {
        return Err(format!("{address} is a {kind} address carrying {carried}: {problem}").into());
    }
    Ok(())
}

/// Checks that `address` is a public host on the internet (no private, loopback, link-local,
/// reserved or translated-private address): where the server may send a request it is asked to.
pub fn check_public_address(address: IpAddr) -> Result<(), Invalid> {
    check_host(normalize(address), false, "private")
}

/// The caller's address: from `x-forwarded-for` (the rightmost hop that is not a trusted
/// proxy) or `x-real-ip`, but only when the TCP peer itself is a trusted proxy; otherwise the
/// peer. A trusted proxy that sends a malformed rightmost hop is broken or misconfigured: that
/// is an error, never a reason to believe `x-real-ip` instead.
pub fn client_address(
    peer: IpAddr,
    forwarded_for: Option<&str>,
    real_ip: Option<&str>,
    trusted_proxies: &[IpNet],
) -> Result<IpAddr, Invalid> {
    let peer = normalize(peer);
    let trusted = |address: IpAddr| trusted_proxies.iter().any(|net| net.contains(&address));
    if !trusted(peer) {
        return Ok(peer);
    }
    let parse = |hop: &str| hop.trim().parse::<IpAddr>().map(normalize);
    if let Some(header) = forwarded_for {
        let mut last_valid = None;
        for hop in header.rsplit(',') {
            let Ok(address) = parse(hop) else {
                // A malformed hop ends the chain we can believe; the rightmost one is an error.
                break;
            };
            last_valid = Some(address);
            if !trusted(address) {
                return Ok(address);
            }
        }
        return last_valid.ok_or_else(|| format!("the trusted proxy {peer} sent a malformed x-forwarded-for").into());
    }
    match real_ip {
        Some(value) => parse(value).map_err(|_| format!("the trusted proxy {peer} sent a malformed x-real-ip").into()),
        None => Ok(peer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(text: &str) -> Result<IpAddr, Invalid> {
        parse_session_address(text, IpVersion::V4, false)
    }

    #[test]
    fn session_addresses_must_be_single_public_hosts() {
        assert_eq!(v4("203.0.113.7"), Ok("203.0.113.7".parse().unwrap()));
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "169.254.1.1",
            "10.1.2.3",
            "192.168.0.1",
            "100.64.0.1",
            "203.0.113.0/24",
            "nope",
            "255.255.255.255",
        ] {
            assert!(v4(bad).is_err(), "{bad} accepted");
        }
        assert!(
            parse_session_address("10.1.2.3", IpVersion::V4, true).is_ok(),
            "private allowed when the org allows it"
        );
        assert!(v4("2001:db8::1").is_err(), "family must match the field");
        let v6 = |text| parse_session_address(text, IpVersion::V6, false);
        assert!(v6("2001:db8::1").is_ok());
        for bad in [
            "::",
            "::1",
            "fe80::1",
            "ff02::1",
            "fd00::1",
            "fec0::1",
            "::203.0.113.9",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "2002:0a00:0001::1",
            "2002:c0a8:0101::1",
            // Teredo: client 10.0.0.1, inverted in the last 32 bits.
            "2001:0:4136:e378:8000:63bf:f5ff:fffe",
        ] {
            assert!(v6(bad).is_err(), "{bad} accepted");
        }
        for good in ["64:ff9b::cb00:7109", "2002:cb00:7109::1", "2001:0:4136:e378:8000:63bf:34ff:8ef6"] {
            assert!(v6(good).is_ok(), "{good}: carries a public host");
        }
        for bad in ["0.1.2.3", "240.0.0.1", "250.1.2.3"] {
            assert!(v4(bad).is_err(), "{bad} accepted");
        }
        // IPv4-mapped IPv6 is the IPv4 host.
        assert_eq!(v4("::ffff:203.0.113.9"), Ok("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn forwarded_headers_are_believed_only_from_trusted_proxies() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // A spoofed header from an untrusted peer is ignored.
        let found = |peer, forwarded, real| client_address(ip(peer), forwarded, real, &proxies);
        assert_eq!(found("198.51.100.1", Some("203.0.113.5"), None), Ok(ip("198.51.100.1")));
        // Behind our proxy: the rightmost untrusted hop, not the leftmost (client-controlled) one.
        assert_eq!(found("10.0.0.2", Some("1.1.1.1, 203.0.113.5, 10.0.0.9"), None), Ok(ip("203.0.113.5")));
        assert_eq!(found("10.0.0.2", None, Some("203.0.113.6")), Ok(ip("203.0.113.6")));
        assert_eq!(found("10.0.0.2", None, None), Ok(ip("10.0.0.2")));
        assert_eq!(client_address(ip("::ffff:198.51.100.1"), None, None, &[]), Ok(ip("198.51.100.1")));
        // A malformed rightmost hop is an error, not a reason to believe x-real-ip.
        assert!(found("10.0.0.2", Some("203.0.113.5, garbage"), Some("203.0.113.6")).is_err());
        assert!(found("10.0.0.2", None, Some("garbage")).is_err());
        // Further left, a malformed hop only ends the chain: the last hop we could read counts.
        assert_eq!(found("10.0.0.2", Some("garbage, 10.0.0.9"), None), Ok(ip("10.0.0.9")));
    }

    #[test]
    fn rate_limits_count_an_ipv6_slash_64_as_one_client() {
        let key = |text: &str| rate_limit_key(text.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:198.51.100.7"), "198.51.100.7");
        assert_ne!(key("198.51.100.7"), key("198.51.100.8"));
    }
}
