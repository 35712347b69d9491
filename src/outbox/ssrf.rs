//! Keeps webhook calls from reaching what they should not: a subscription's address must not
//! lead to this machine or the private network (a server-side request forgery through a
//! subscription) unless the subscription says `allow_private`. Checked twice: the address as
//! written when the file loads (`literal_refusal`), and every address a host name resolves
//! to when a call is made (`GuardedResolver`), so a name that later resolves to 127.0.0.1
//! is refused too. Redirects are never followed (`sender.rs`).
//!
//! This module must not make connections of its own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why `ip` may not be called, or `None` if it is a public address.
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => refusal_v4(v4),
            None => refusal_v6(v6),
        },
    }
}

fn refusal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address (this machine)")
    } else if ip.is_unspecified() || a == 0 {
        Some("an unspecified address")
    } else if ip.is_link_local() {
        Some("a link-local address (such as a cloud metadata service)")
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Some("a private-network address")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("a multicast, broadcast or reserved address")
    } else {
        None
    }
}

fn refusal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("a loopback address (this machine)")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if first & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a private-network (unique local) address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else {
        None
    }
}

/// The refusal of an address whose host is written as an IP address or as `localhost`;
/// names are checked when they are resolved.
pub fn literal_refusal(url: &reqwest::Url) -> Option<String> {
    let refused = match url.host()? {
        url::Host::Ipv4(ip) => refusal(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => refusal(IpAddr::V6(ip)),
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            (d == "localhost" || d.ends_with(".localhost"))
                .then_some("a loopback address (this machine)")
        }
    }?;
    Some(format!(
        "`{}` is {refused}: webhooks may only call public addresses",
        url.host_str().unwrap_or_default()
    ))
}

/// Resolves host names for webhook calls and drops every address `refusal` names; a name
/// left with none fails the call with the reason.
#[derive(Debug, Default, Clone)]
pub struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| refusal(a.ip()).is_none())
                .collect();
            if public.is_empty() {
                let why = all
                    .first()
                    .and_then(|a| refusal(a.ip()))
                    .unwrap_or("no address");
                return Err(format!("`{host}` resolves to {why}: refused").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_and_public_ones_pass() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(refusal(bad.parse().unwrap()).is_some(), "{bad}");
        }
        for good in ["93.184.216.34", "2606:2800:220:1::"] {
            assert!(refusal(good.parse().unwrap()).is_none(), "{good}");
        }
    }

    #[test]
    fn literal_hosts_are_checked_when_the_file_loads() {
        for bad in [
            "http://127.0.0.1:8080/x",
            "http://[::1]/x",
            "http://localhost/x",
            "http://169.254.169.254/latest/meta-data",
        ] {
            assert!(
                literal_refusal(&reqwest::Url::parse(bad).unwrap()).is_some(),
                "{bad}"
            );
        }
        assert!(
            literal_refusal(&reqwest::Url::parse("https://crm.example.com/h").unwrap()).is_none()
        );
    }
}
