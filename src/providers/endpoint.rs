//! A provider's base URL, parsed once, and the Pingora peer that reaches it.
//!
//! The host, port and TLS settings of every upstream request come from here and nothing a
//! caller sends can change them. DNS is resolved off the request path (at start and by a
//! background refresher), so a request never blocks on a lookup.
//!
//! TLS to a provider always verifies the certificate and the host name, against the roots of
//! its [`Trust`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{HeaderValue, Uri};
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;

use super::trust::Trust;

/// Timeouts applied to every connection to a provider.
#[derive(Debug, Clone, Copy)]
pub struct PeerTimeouts {
    pub connect: Duration,
    /// Waiting for response headers (the first byte).
    pub read: Duration,
    /// Waiting between two body chunks.
    pub idle: Duration,
}

#[derive(Debug)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix of the base URL without a trailing slash ("" for none).
    pub base_path: String,
    /// The `Host` header value sent upstream.
    pub authority: HeaderValue,
    addr: ArcSwapOption<SocketAddr>,
    /// Roots trusted for this endpoint's TLS; None: the connector's default (platform) store.
    trust: Option<Trust>,
}

impl Endpoint {
    /// Parses an `http://` or `https://` base URL without credentials, query or fragment.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: Uri = url
            .parse()
            .map_err(|_| format!("`{url}` is not a valid URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("`{url}` must start with https:// or http://")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{url}` has no host"))?;
        if authority.as_str().contains('@') {
            return Err("the endpoint URL must not contain credentials".into());
        }
        if uri.query().is_some() {
            return Err(format!("`{url}` must not have a query string"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(format!("`{url}` has no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let base_path = uri.path().trim_end_matches('/').to_owned();
        let addr = host
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| Arc::new(SocketAddr::new(ip, port)));
        Ok(Endpoint {
            tls,
            authority: HeaderValue::from_str(authority.as_str())
                .map_err(|_| format!("`{url}` has an invalid host"))?,
            host,
            port,
            base_path,
            addr: ArcSwapOption::new(addr),
            trust: None,
        })
    }

    /// Sets the roots trusted for this endpoint (from [`Trust::load`]).
    pub fn set_trust(&mut self, trust: Trust) {
        self.trust = Some(trust);
    }

    /// Whether [`Self::set_trust`] was called.
    pub fn has_trust(&self) -> bool {
        self.trust.is_some()
    }

    /// Resolves the host now (blocking). Used at start-up, never on the request path.
    pub fn resolve_blocking(&self) -> Result<(), String> {
        if self.addr.load().is_some() && self.host.parse::<std::net::IpAddr>().is_ok() {
            return Ok(());
        }
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", self.host))?;
        self.addr.store(Some(Arc::new(addr)));
        Ok(())
    }

    /// Re-resolves the host asynchronously, keeping the old address on failure.
    pub async fn refresh(&self) {
        if self.host.parse::<std::net::IpAddr>().is_ok() {
            return;
        }
        match tokio::net::lookup_host((self.host.as_str(), self.port)).await {
            Ok(mut addrs) => {
                if let Some(a) = addrs.next() {
                    self.addr.store(Some(Arc::new(a)));
                }
            }
            Err(e) => log::warn!(
                "DNS refresh for {} failed, keeping the last address: {e}",
                self.host
            ),
        }
    }

    pub fn is_resolved(&self) -> bool {
        self.addr.load().is_some()
    }

    /// A peer for one request, or None while the host has no address.
    pub fn peer(&self, timeouts: PeerTimeouts) -> Option<Box<HttpPeer>> {
        let addr = **self.addr.load().as_ref()?;
        let mut peer = HttpPeer::new(addr, self.tls, self.host.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(timeouts.connect);
        o.total_connection_timeout = Some(timeouts.connect);
        o.read_timeout = Some(timeouts.read);
        o.write_timeout = Some(timeouts.read);
        o.idle_timeout = Some(Duration::from_secs(60));
        o.verify_cert = true;
        o.verify_hostname = true;
        o.alpn = ALPN::H1;
        if let Some(trust) = &self.trust {
            trust.apply(&mut peer);
        }
        Some(Box::new(peer))
    }

    /// The upstream path for `rest` (which starts with `/`), under the base path.
    pub fn path(&self, rest: &str) -> String {
        let mut p = String::with_capacity(self.base_path.len() + rest.len());
        p.push_str(&self.base_path);
        p.push_str(rest);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base_urls() {
        let e = Endpoint::parse("https://api.openai.com").unwrap();
        assert!(e.tls);
        assert_eq!(
            (e.host.as_str(), e.port, e.base_path.as_str()),
            ("api.openai.com", 443, "")
        );
        let e = Endpoint::parse("http://127.0.0.1:9000/openai/").unwrap();
        assert_eq!((e.port, e.base_path.as_str()), (9000, "/openai"));
        assert!(e.is_resolved());
        assert_eq!(e.path("/v1/models"), "/openai/v1/models");
    }

    #[test]
    fn refuses_odd_urls() {
        for bad in [
            "ftp://x",
            "api.openai.com",
            "https://user:pw@x.com",
            "https://x.com/?a=1",
            "https://",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
