//! Client addresses: which ones a session may open, and how to find the caller's.

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

/// Checks that `text` is a single host a firewall rule may open, of family `version`.
/// Private ranges are refused unless `allow_private`.
pub fn parse_session_address(text: &str, version: IpVersion, allow_private: bool) -> Result<IpAddr, String> {
    let trimmed = text.trim();
    if trimmed.contains('/') {
        return Err("must be a single address, not a network".into());
    }
    let address = trimmed.parse::<IpAddr>().map(normalize).map_err(|_| "is not an IP address".to_owned())?;
    check_session_address(address, version, allow_private)?;
    Ok(address)
}

/// The rules of [`parse_session_address`] for an address already parsed (e.g. detected).
pub fn check_session_address(address: IpAddr, version: IpVersion, allow_private: bool) -> Result<(), String> {
    if IpVersion::of(address) != version {
        return Err(format!("must be an IPv{} address", version.number()));
    }
    let refused = if address.is_unspecified() {
        Some("unspecified")
    } else if address.is_loopback() {
        Some("loopback")
    } else if address.is_multicast() || is_broadcast(address) {
        Some("multicast or broadcast")
    } else if is_link_local(address) {
        Some("link-local")
    } else if !allow_private && is_private(address) {
        Some("private (the organization does not allow private addresses)")
    } else {
        None
    };
    match refused {
        Some(kind) => Err(format!("{address} is a {kind} address")),
        None => Ok(()),
    }
}

/// The caller's address: from `x-forwarded-for` (the rightmost hop that is not a trusted
/// proxy) or `x-real-ip`, but only when the TCP peer itself is a trusted proxy; otherwise the peer.
pub fn client_address(
    peer: IpAddr,
    forwarded_for: Option<&str>,
    real_ip: Option<&str>,
    trusted_proxies: &[IpNet],
) -> IpAddr {
    let peer = normalize(peer);
    let trusted = |address: IpAddr| trusted_proxies.iter().any(|net| net.contains(&address));
    if !trusted(peer) {
        return peer;
    }
    if let Some(header) = forwarded_for {
        let mut last_valid = None;
        for hop in header.rsplit(',') {
            let Ok(address) = hop.trim().parse::<IpAddr>().map(normalize) else {
                // A malformed hop ends the chain we can believe.
                break;
            };
            last_valid = Some(address);
            if !trusted(address) {
                return address;
            }
        }
        if let Some(address) = last_valid {
            return address;
        }
    }
    real_ip.and_then(|value| value.trim().parse::<IpAddr>().ok()).map(normalize).unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(text: &str) -> Result<IpAddr, String> {
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
        for bad in ["::", "::1", "fe80::1", "ff02::1", "fd00::1"] {
            assert!(v6(bad).is_err(), "{bad} accepted");
        }
        // IPv4-mapped IPv6 is the IPv4 host.
        assert_eq!(v4("::ffff:203.0.113.9"), Ok("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn forwarded_headers_are_believed_only_from_trusted_proxies() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // A spoofed header from an untrusted peer is ignored.
        assert_eq!(client_address(ip("198.51.100.1"), Some("203.0.113.5"), None, &proxies), ip("198.51.100.1"));
        // Behind our proxy: the rightmost untrusted hop, not the leftmost (client-controlled) one.
        assert_eq!(
            client_address(ip("10.0.0.2"), Some("1.1.1.1, 203.0.113.5, 10.0.0.9"), None, &proxies),
            ip("203.0.113.5")
        );
        assert_eq!(client_address(ip("10.0.0.2"), None, Some("203.0.113.6"), &proxies), ip("203.0.113.6"));
        assert_eq!(client_address(ip("10.0.0.2"), None, None, &proxies), ip("10.0.0.2"));
        assert_eq!(client_address(ip("::ffff:198.51.100.1"), None, None, &[]), ip("198.51.100.1"));
    }
}
