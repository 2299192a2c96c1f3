//! A provider's base URL, parsed once, and the Pingora peer that reaches it.
//!
//! The host, port and TLS settings of every upstream request come from here and nothing a
//! caller sends can change them. DNS is resolved off the request path (at start and by a
//! background refresher), so a request never blocks on a lookup.
//!
//! TLS to a provider always verifies the certificate and the host name. The trusted roots are
//! the system's, plus the bundle named by `SSL_CERT_FILE` (and `SSL_CERT_DIR`), plus the
//! provider's own `ca_file` (see [`Trust`]).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{HeaderValue, Uri};
use pingora::protocols::tls::CaType;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, WrappedX509};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

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
        if let Some(Trust {
            roots: Some(roots),
            group,
        }) = &self.trust
        {
            // A per-peer CA list replaces the connector's store for this connection, so it
            // holds the system roots too. The group keeps pooled connections made under one
            // trust from being reused under another.
            o.ca = Some(roots.clone());
            peer.group_key = *group;
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

/// The roots trusted for one provider's TLS connections.
///
/// Pingora's connector trusts the platform roots, or only `SSL_CERT_FILE` / `SSL_CERT_DIR`
/// when one of them is set (rustls-native-certs replaces the system store with them). A
/// provider gets its own root list whenever that default is not exactly "system roots +
/// `SSL_CERT_*` + its `ca_file`": when it has a `ca_file`, or when `SSL_CERT_FILE` /
/// `SSL_CERT_DIR` is set.
#[derive(Clone)]
pub struct Trust {
    /// The complete root list for this provider's peers; None: the connector's default store.
    roots: Option<Arc<CaType>>,
    /// Pool group of connections made under these roots (0 for the default store).
    group: u64,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("roots", &self.roots.as_ref().map(|r| r.len()))
            .finish()
    }
}

/// Where distributions keep the system CA bundle (the files openssl-probe looks for).
const SYSTEM_BUNDLES: [&str; 8] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/ssl/certs/ca-bundle.crt",
    "/usr/local/etc/openssl/cert.pem",
    "/usr/local/share/certs/ca-root-nss.crt",
];

/// The roots every provider trusts: the system store, plus `SSL_CERT_FILE` / `SSL_CERT_DIR`.
struct Ambient {
    /// Set when `SSL_CERT_FILE` or `SSL_CERT_DIR` is: the default store is then not enough.
    from_env: bool,
    certs: Vec<CertificateDer<'static>>,
    /// `certs` ready for a peer (built once, shared by providers without a `ca_file`).
    shared: Arc<CaType>,
}

/// Whether `SSL_CERT_FILE` or `SSL_CERT_DIR` is set (then the connector's default store holds
/// only what they name).
fn env_overrides_roots() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    set("SSL_CERT_FILE") || set("SSL_CERT_DIR")
}

impl Ambient {
    fn load() -> Result<Ambient, String> {
        let from_env = env_overrides_roots();
        // What rustls-native-certs finds: the platform store, or only SSL_CERT_FILE and
        // SSL_CERT_DIR when one is set.
        let native = pingora::tls::load_native_certs().map_err(|e| {
            if from_env {
                format!(
                    "the CA certificates named by SSL_CERT_FILE / SSL_CERT_DIR cannot be read: {e}"
                )
            } else {
                format!("the system CA certificates cannot be read: {e}")
            }
        })?;
        if from_env && native.is_empty() {
            return Err("SSL_CERT_FILE / SSL_CERT_DIR name no PEM certificate".into());
        }
        let system = SYSTEM_BUNDLES
            .iter()
            .find(|p| std::path::Path::new(p).is_file())
            .copied();
        Ambient::combine(from_env, system, native)
    }

    /// The roots: `native`, plus the distribution's bundle at `system` when `from_env` (the
    /// environment variables then replaced it in `native`).
    fn combine(
        from_env: bool,
        system: Option<&str>,
        native: Vec<CertificateDer<'static>>,
    ) -> Result<Ambient, String> {
        let mut certs = Vec::new();
        if let Some(path) = system.filter(|_| from_env) {
            match read_pem_certs(path) {
                Ok(c) => certs.extend(c),
                Err(why) => log::warn!("ignoring the system CA bundle: {why}"),
            }
        }
        certs.extend(native);
        // Only roots rustls accepts: one it refuses would fail every handshake.
        certs.retain(|c| usable_root(c).is_ok());
        let shared =
            wrap(&certs).map_err(|i| format!("system CA certificate #{i} cannot be parsed"))?;
        Ok(Ambient {
            from_env,
            certs,
            shared,
        })
    }

    fn get() -> &'static Result<Ambient, String> {
        static AMBIENT: OnceLock<Result<Ambient, String>> = OnceLock::new();
        AMBIENT.get_or_init(Ambient::load)
    }
}

impl Trust {
    /// The trust for a provider with an optional `ca_file` (a PEM bundle of extra roots).
    /// The error names the file or variable at fault and says why.
    pub fn load(ca_file: Option<&str>) -> Result<Trust, TrustError> {
        let extra = match ca_file.map(str::trim).filter(|f| !f.is_empty()) {
            Some(path) => Some(read_ca_file(path).map_err(TrustError::CaFile)?),
            None => None,
        };
        if extra.is_none() && !env_overrides_roots() {
            return Ok(Trust {
                roots: None,
                group: 0,
            });
        }
        let ambient = Ambient::get()
            .as_ref()
            .map_err(|e| TrustError::Ambient(e.clone()))?;
        Ok(match extra {
            None => Trust {
                roots: Some(ambient.shared.clone()),
                group: group_of(&[], true),
            },
            Some(extra) => {
                let mut all = ambient.certs.clone();
                all.extend(extra.iter().cloned());
                let roots = wrap(&all).map_err(|_| {
                    TrustError::CaFile("a certificate in it cannot be parsed".into())
                })?;
                Trust {
                    roots: Some(roots),
                    group: group_of(&extra, ambient.from_env),
                }
            }
        })
    }

    /// How many roots a peer gets (None: the connector's default store).
    pub fn root_count(&self) -> Option<usize> {
        self.roots.as_ref().map(|r| r.len())
    }
}

/// Why a provider's [`Trust`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustError {
    /// The provider's `ca_file` is unusable.
    CaFile(String),
    /// The system roots or `SSL_CERT_FILE` / `SSL_CERT_DIR` are unusable.
    Ambient(String),
}

/// Reads a `ca_file`: a PEM bundle with at least one certificate usable as a root.
pub fn read_ca_file(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = read_pem_certs(path)?;
    if certs.is_empty() {
        return Err(format!(
            "`{path}` contains no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    for (i, c) in certs.iter().enumerate() {
        usable_root(c)
            .map_err(|e| format!("certificate #{} in `{path}` cannot be trusted: {e}", i + 1))?;
    }
    Ok(certs)
}

fn read_pem_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{path}` is not a valid PEM file: {e}"))
}

fn usable_root(cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    rustls::RootCertStore::empty().add(cert.clone())
}

/// The certificates as Pingora's per-peer CA list; Err(index) for one that does not parse.
fn wrap(certs: &[CertificateDer<'_>]) -> Result<Arc<CaType>, usize> {
    let mut out = Vec::with_capacity(certs.len());
    for (i, c) in certs.iter().enumerate() {
        let der = c.to_vec();
        // Pingora's wrapper panics on a certificate x509-parser refuses; rustls accepted it
        // already, so this is a last line of defence, not an expected path.
        let w =
            std::panic::catch_unwind(move || WrappedX509::new(der, parse_x509)).map_err(|_| i)?;
        out.push(w);
    }
    Ok(Arc::from(out))
}

/// A pool group for connections made under `extra` roots (plus the ambient ones).
fn group_of(extra: &[CertificateDer<'_>], from_env: bool) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    "switchyard-trust".hash(&mut h);
    from_env.hash(&mut h);
    for c in extra {
        c.as_ref().hash(&mut h);
    }
    h.finish() | 1
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

    const TEST_CA: &str = "tests/fixtures/tls/ca.pem";

    fn timeouts() -> PeerTimeouts {
        let s = Duration::from_secs(1);
        PeerTimeouts {
            connect: s,
            read: s,
            idle: s,
        }
    }

    #[test]
    fn a_ca_file_adds_to_the_ambient_roots() {
        let t = Trust::load(Some(TEST_CA)).unwrap();
        let n = t.root_count().unwrap();
        assert!(n >= 1);
        let ca = read_ca_file(TEST_CA).unwrap();
        let mut e = Endpoint::parse("https://127.0.0.1:8443").unwrap();
        e.set_trust(t);
        let peer = e.peer(timeouts()).unwrap();
        let roots = peer.options.ca.as_ref().unwrap();
        assert_eq!(roots.len(), n);
        assert!(roots
            .iter()
            .any(|r| r.borrow_raw_cert().as_slice() == ca[0].as_ref()));
        assert!(peer.options.verify_cert && peer.options.verify_hostname);
        assert_ne!(peer.group_key, 0, "its connections are pooled apart");
    }

    #[test]
    fn without_ca_file_or_ssl_cert_env_the_default_store_is_used() {
        if env_overrides_roots() {
            return; // the environment of this run sets SSL_CERT_FILE / SSL_CERT_DIR
        }
        let t = Trust::load(None).unwrap();
        assert_eq!(t.root_count(), None);
        let mut e = Endpoint::parse("https://api.openai.com").unwrap();
        e.set_trust(t);
        e.resolve_blocking().ok();
        if let Some(peer) = e.peer(timeouts()) {
            assert!(peer.options.ca.is_none());
            assert_eq!(peer.group_key, 0);
        }
    }

    #[test]
    fn ssl_cert_file_is_added_to_the_system_bundle_not_swapped_for_it() {
        let Some(system) = SYSTEM_BUNDLES
            .iter()
            .find(|p| std::path::Path::new(p).is_file())
        else {
            return; // no system bundle on this machine
        };
        let system_count = read_pem_certs(system)
            .unwrap()
            .iter()
            .filter(|c| usable_root(c).is_ok())
            .count();
        let env_file = read_ca_file(TEST_CA).unwrap();
        let a = Ambient::combine(true, Some(system), env_file.clone()).unwrap();
        assert_eq!(a.certs.len(), system_count + 1);
        assert!(a.certs.contains(&env_file[0]));
        // Without the variables, rustls-native-certs already returned the system store.
        let b = Ambient::combine(false, Some(system), env_file).unwrap();
        assert_eq!(b.certs.len(), 1);
    }

    #[test]
    fn unusable_ca_files_are_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("switchyard-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = |path: &str| match Trust::load(Some(path)) {
            Err(TrustError::CaFile(why)) => why,
            other => panic!("{path}: {other:?}"),
        };
        assert!(err("/nonexistent/ca.pem").contains("cannot read"));
        assert!(err("tests/fixtures/tls/localhost.key").contains("no PEM certificate"));
        assert!(err(garbage.to_str().unwrap()).contains("cannot be trusted"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
