//! The client-facing HTTPS listener's certificate, reloadable without a restart, and the
//! optional client-certificate check (mutual TLS).
//!
//! The certificate is served through a rustls resolver backed by an `ArcSwap`, so a SIGHUP that
//! finds a renewed certificate swaps it in for new handshakes; a broken new file is refused
//! and the running certificate kept.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use crate::config::TlsListener;

/// The server certificate in force for the HTTPS listener.
pub struct ReloadableCert {
    cert_file: String,
    key_file: String,
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableCert")
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

impl ReloadableCert {
    pub fn load(cert_file: &str, key_file: &str) -> Result<ReloadableCert, String> {
        Ok(ReloadableCert {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: ArcSwap::new(Arc::new(certified_key(cert_file, key_file)?)),
        })
    }

    /// Re-reads the files; on error the running certificate stays.
    pub fn reload(&self) -> Result<(), String> {
        let next = certified_key(&self.cert_file, &self.key_file)?;
        self.current.store(Arc::new(next));
        Ok(())
    }

    /// The leaf certificate currently served (for tests and logs).
    pub fn leaf(&self) -> CertificateDer<'static> {
        self.current.load().cert[0].clone()
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Reads a PEM certificate chain and private key into a rustls signing identity.
fn certified_key(cert_file: &str, key_file: &str) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("cannot read {cert_file}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert_file}: invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{cert_file} holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("{key_file}: no usable private key: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("{key_file}: unsupported private key: {e}"))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match()
        .map_err(|e| format!("{cert_file} and {key_file} do not match: {e}"))?;
    Ok(ck)
}

/// A verifier that requires client certificates issued by the CAs in `ca_file`.
pub fn client_verifier(
    ca_file: &str,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca_file).map_err(|e| format!("cannot read {ca_file}: {e}"))?
    {
        let cert = cert.map_err(|e| format!("{ca_file}: invalid PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("{ca_file}: unusable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{ca_file} holds no CA certificate"));
    }
    WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| format!("{ca_file}: {e}"))
}

/// Validates `server.tls` at config time: every problem as `(path, why)`.
pub fn check(t: &TlsListener) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    let cert_ok = match CertificateDer::pem_file_iter(&t.cert_file) {
        Ok(mut certs) => match certs.next() {
            Some(Ok(_)) => true,
            _ => {
                problems.push((
                    "server.tls.cert_file",
                    format!("{} holds no PEM certificate", t.cert_file),
                ));
                false
            }
        },
        Err(e) => {
            problems.push((
                "server.tls.cert_file",
                format!("cannot read {}: {e}", t.cert_file),
            ));
            false
        }
    };
    let key_ok = match PrivateKeyDer::from_pem_file(&t.key_file) {
        Ok(_) => true,
        Err(e) => {
            problems.push((
                "server.tls.key_file",
                format!("{}: no usable private key: {e}", t.key_file),
            ));
            false
        }
    };
    if cert_ok && key_ok {
        if let Err(why) = certified_key(&t.cert_file, &t.key_file) {
            problems.push(("server.tls.cert_file", why));
        }
    }
    if let Some(ca) = &t.client_ca_file {
        if let Err(why) = client_verifier(ca) {
            problems.push(("server.tls.client_ca_file", why));
        }
    }
    problems
}
