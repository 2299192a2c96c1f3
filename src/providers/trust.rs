//! The roots trusted for TLS to providers: by the Pingora peers of an [`Endpoint`] and by the
//! `reqwest` clients of token exchanges (GCP, IBM IAM, Entra ID).
//!
//! Every connection verifies the certificate and the host name. The roots are the system's,
//! plus the bundle named by `SSL_CERT_FILE` (and `SSL_CERT_DIR`), plus the provider's own
//! `ca_file`. The variables add to the distribution's bundle, they never replace it (as they do
//! in rustls-native-certs). What the system offers is read once per process; a `ca_file` is
//! read for each provider that names it.
//!
//! [`Endpoint`]: super::Endpoint

use std::sync::{Arc, OnceLock};

use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, WrappedX509};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Where distributions keep the system CA bundle (the files openssl-probe looks for).
pub const SYSTEM_BUNDLES: [&str; 8] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/ssl/certs/ca-bundle.crt",
    "/usr/local/etc/openssl/cert.pem",
    "/usr/local/share/certs/ca-root-nss.crt",
];

/// The first of [`SYSTEM_BUNDLES`] present on this machine.
fn system_bundle() -> Option<&'static str> {
    SYSTEM_BUNDLES
        .iter()
        .find(|p| std::path::Path::new(p).is_file())
        .copied()
}

/// Whether `SSL_CERT_FILE` or `SSL_CERT_DIR` is set (then the connector's default store holds
/// only what they name).
fn env_overrides_roots() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    set("SSL_CERT_FILE") || set("SSL_CERT_DIR")
}

/// What the system offers, read once per process.
struct System {
    /// Whether `SSL_CERT_FILE` or `SSL_CERT_DIR` is set.
    from_env: bool,
    /// The distribution's bundle; empty when there is none or it cannot be read (logged: not
    /// the operator's fault).
    bundle: Vec<CertificateDer<'static>>,
    /// What rustls-native-certs finds (the platform store, or only `SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` when one is set), or why it cannot be read.
    native: Result<Vec<CertificateDer<'static>>, String>,
}

impl System {
    fn get() -> &'static System {
        static SYSTEM: OnceLock<System> = OnceLock::new();
        SYSTEM.get_or_init(|| {
            let from_env = env_overrides_roots();
            let native = pingora::tls::load_native_certs().map_err(|e| {
                if from_env {
                    format!(
                        "the CA certificates named by SSL_CERT_FILE / SSL_CERT_DIR cannot be read: {e}"
                    )
                } else {
                    format!("the system CA certificates cannot be read: {e}")
                }
            });
            let bundle = match system_bundle().map(read_pem_certs) {
                Some(Ok(certs)) => certs,
                Some(Err(why)) => {
                    log::warn!("ignoring the system CA bundle: {why}");
                    Vec::new()
                }
                None => Vec::new(),
            };
            System {
                from_env,
                bundle,
                native,
            }
        })
    }
}

/// The roots every provider's endpoint trusts: the system store, plus `SSL_CERT_FILE` /
/// `SSL_CERT_DIR`.
struct Ambient {
    /// Set when `SSL_CERT_FILE` or `SSL_CERT_DIR` is: the default store is then not enough.
    from_env: bool,
    certs: Vec<CertificateDer<'static>>,
    /// `certs` ready for a peer (built once, shared by providers without a `ca_file`).
    shared: Arc<CaType>,
}

impl Ambient {
    fn get() -> &'static Result<Ambient, String> {
        static AMBIENT: OnceLock<Result<Ambient, String>> = OnceLock::new();
        AMBIENT.get_or_init(|| {
            let system = System::get();
            let native = system.native.clone()?;
            if system.from_env && native.is_empty() {
                return Err("SSL_CERT_FILE / SSL_CERT_DIR name no PEM certificate".into());
            }
            Ambient::combine(system.from_env, &system.bundle, native)
        })
    }

    /// The roots: `native`, plus the distribution's `bundle` when `from_env` (the environment
    /// variables then replaced it in `native`).
    fn combine(
        from_env: bool,
        bundle: &[CertificateDer<'static>],
        native: Vec<CertificateDer<'static>>,
    ) -> Result<Ambient, String> {
        let mut certs = Vec::new();
        if from_env {
            certs.extend_from_slice(bundle);
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
}

/// The roots trusted for one provider's TLS connections (its [`super::Endpoint`]'s peers).
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

impl Trust {
    /// The trust for a provider with an optional `ca_file` (a PEM bundle of extra roots).
    /// The error names the file or variable at fault and says why.
    pub fn load(ca_file: Option<&str>) -> Result<Trust, TrustError> {
        let extra = read_provider_ca_file(ca_file)?;
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

    /// Gives `peer` these roots, unless they are the connector's default store.
    pub fn apply(&self, peer: &mut HttpPeer) {
        if let Some(roots) = &self.roots {
            // A per-peer CA list replaces the connector's store for this connection, so it
            // holds the system roots too. The group keeps pooled connections made under one
            // trust from being reused under another.
            peer.options.ca = Some(roots.clone());
            peer.group_key = self.group;
        }
    }
}

/// Why a provider's [`Trust`] or token client cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustError {
    /// The provider's `ca_file` is unusable.
    CaFile(String),
    /// The system roots or `SSL_CERT_FILE` / `SSL_CERT_DIR` are unusable.
    Ambient(String),
    /// The HTTP client for token exchanges cannot be set up.
    Client(String),
}

/// Whether a token client may be built when the system roots (or `SSL_CERT_FILE` /
/// `SSL_CERT_DIR`) cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemRoots {
    /// Yes: it is logged once and the other roots are trusted (GCP, IBM IAM).
    BestEffort,
    /// No: [`TrustError::Ambient`], a problem on the provider (Entra ID).
    Required,
}

/// Every token client's roots besides the provider's `ca_file`, built once: the distribution's
/// bundle and what rustls-native-certs finds, whether or not `SSL_CERT_*` is set, keeping only
/// roots rustls accepts (one it refuses would fail the client).
fn token_roots() -> &'static [reqwest::Certificate] {
    static ROOTS: OnceLock<Vec<reqwest::Certificate>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let system = System::get();
        let native = match &system.native {
            Ok(certs) => certs.as_slice(),
            Err(why) => {
                log::warn!("token exchanges: {why}");
                &[]
            }
        };
        system
            .bundle
            .iter()
            .chain(native)
            .filter(|c| usable_root(c).is_ok())
            .filter_map(|c| reqwest::Certificate::from_der(c.as_ref()).ok())
            .collect()
    })
}

/// A client for one provider's token exchanges: `builder` (with the caller's timeouts and user
/// agent) over rustls, never following redirects (a form carrying a secret is never re-posted
/// elsewhere), verifying certificates against the provider's `ca_file`, the system bundle,
/// `SSL_CERT_FILE` / `SSL_CERT_DIR` and the Mozilla roots built into the client
/// (webpki-roots).
///
/// Every token client trusts that same set: the union of what the GCP / IBM IAM client (all of
/// them) and the Entra ID client (no Mozilla roots; the distribution's bundle only with
/// `SSL_CERT_*`) trusted before they shared this function.
pub fn token_client(
    builder: reqwest::ClientBuilder,
    ca_file: Option<&str>,
    system_roots: SystemRoots,
) -> Result<reqwest::Client, TrustError> {
    let extra = read_provider_ca_file(ca_file)?.unwrap_or_default();
    if system_roots == SystemRoots::Required {
        if let Err(why) = &System::get().native {
            return Err(TrustError::Ambient(why.clone()));
        }
    }
    let mut builder = builder
        .use_rustls_tls()
        .tls_built_in_root_certs(true)
        .redirect(reqwest::redirect::Policy::none());
    let extra = extra
        .iter()
        .filter_map(|c| reqwest::Certificate::from_der(c.as_ref()).ok());
    for cert in token_roots().iter().cloned().chain(extra) {
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|e| {
        TrustError::Client(format!(
            "cannot set up the HTTP client for token exchanges: {e}"
        ))
    })
}

/// The provider's `ca_file` when one is named (blank: none).
fn read_provider_ca_file(
    ca_file: Option<&str>,
) -> Result<Option<Vec<CertificateDer<'static>>>, TrustError> {
    match ca_file.map(str::trim).filter(|f| !f.is_empty()) {
        Some(path) => read_ca_file(path).map(Some).map_err(TrustError::CaFile),
        None => Ok(None),
    }
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
    use std::time::Duration;

    use super::super::endpoint::{Endpoint, PeerTimeouts};
    use super::*;

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
        let Some(system) = system_bundle() else {
            return; // no system bundle on this machine
        };
        let bundle = read_pem_certs(system).unwrap();
        let system_count = bundle.iter().filter(|c| usable_root(c).is_ok()).count();
        let env_file = read_ca_file(TEST_CA).unwrap();
        let a = Ambient::combine(true, &bundle, env_file.clone()).unwrap();
        assert_eq!(a.certs.len(), system_count + 1);
        assert!(a.certs.contains(&env_file[0]));
        // Without the variables, rustls-native-certs already returned the system store.
        let b = Ambient::combine(false, &bundle, env_file).unwrap();
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
        // A token client refuses the same files for the same reasons.
        for path in ["/nonexistent/ca.pem", garbage.to_str().unwrap()] {
            for roots in [SystemRoots::BestEffort, SystemRoots::Required] {
                match token_client(reqwest::Client::builder(), Some(path), roots) {
                    Err(TrustError::CaFile(why)) => assert_eq!(why, err(path)),
                    other => panic!("{path}: {other:?}"),
                }
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn token_clients_are_built_with_or_without_a_ca_file() {
        for ca_file in [None, Some(""), Some(TEST_CA)] {
            for roots in [SystemRoots::BestEffort, SystemRoots::Required] {
                let built = token_client(reqwest::Client::builder(), ca_file, roots);
                assert!(built.is_ok(), "{ca_file:?} {roots:?}: {built:?}");
            }
        }
    }
}
