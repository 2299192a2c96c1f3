//! Outbound TLS always verifies the provider's certificate and host name, against the system
//! roots plus `SSL_CERT_FILE` plus the provider's `ca_file`: a TLS mock upstream on loopback
//! with a certificate from a private test CA (tests/fixtures/tls) is reached only when that
//! CA is trusted, and never under a name its certificate does not carry.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pingora::tls::TlsAcceptor;
use support::oci::{api_key, provider_yaml};
use support::*;

const MODELS: &[u8] = br#"{"object":"list","data":[{"id":"gpt-4o","object":"model"}]}"#;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// An HTTPS server on `ip` presenting the test CA's certificate for `localhost` and
/// `127.0.0.1`; records each request and answers 200 with [`MODELS`] (or what `reply` says).
struct TlsUpstream {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl TlsUpstream {
    fn start(ip: &str, reply: fn(&Recorded) -> Reply) -> TlsUpstream {
        let (certs, key) = pingora::tls::load_certs_and_key_files(
            fixture("localhost.pem").to_str().unwrap(),
            fixture("localhost.key").to_str().unwrap(),
        )
        .unwrap()
        .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let recs = requests.clone();
        let addr = spawn_server(ip, move |sock| {
            let (acceptor, recs) = (acceptor.clone(), recs.clone());
            async move {
                if let Ok(tls) = acceptor.accept(sock).await {
                    let _ = serve(tls, recs, reply).await;
                }
            }
        });
        TlsUpstream { addr, requests }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// HTTP/1.1 over TLS, keep-alive, as the plain mock upstream speaks it.
async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send>(
    mut s: S,
    recs: Arc<Mutex<Vec<Recorded>>>,
    reply: fn(&Recorded) -> Reply,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(rec) = read_request(&mut s, &mut buf).await? {
        let answer = reply(&rec);
        recs.lock().unwrap().push(rec);
        if !write_reply(&mut s, answer).await? {
            break;
        }
    }
    Ok(())
}

fn models(_: &Recorded) -> Reply {
    Reply::Full(200, vec![], MODELS.to_vec())
}

fn openai_provider(endpoint: &str, ca_file: Option<&Path>) -> String {
    let ca = ca_file.map_or(String::new(), |p| {
        format!("    ca_file: \"{}\"\n", p.display())
    });
    format!(
        "  openai:\n    endpoint: \"{endpoint}\"\n{ca}    auth: {{method: api_key, config: {{api_key: \"{UPSTREAM_KEY}\"}}}}\n"
    )
}

async fn get_models(base: &str) -> (u16, Vec<u8>) {
    let r = client()
        .get(format!("{base}/providers/openai/v1/models"))
        .bearer_auth(GATEWAY_KEY)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn a_provider_ca_file_is_trusted_for_its_endpoint() {
    let up = TlsUpstream::start("127.0.0.1", models);
    let gw = gateway_with(
        "",
        &openai_provider(&up.url(), Some(&fixture("ca.pem"))),
        "",
    );
    let (status, body) = get_models(&gw.base).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, MODELS);
    let seen = up.recorded();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    // The same endpoint by name: `localhost` is in the certificate too.
    let by_name = up.url().replace("127.0.0.1", "localhost");
    let gw = gateway_with("", &openai_provider(&by_name, Some(&fixture("ca.pem"))), "");
    assert_eq!(get_models(&gw.base).await.0, 200);
}

#[tokio::test]
async fn signed_requests_trust_the_ca_file_too() {
    // OCI requests go through the gateway's own forwarder (the body is signed first).
    fn verified(rec: &Recorded) -> Reply {
        let key = api_key();
        match support::oci::verify(rec, &key.public, &key.key_id()) {
            Ok(()) => Reply::Full(200, vec![], br#"{"verified":true}"#.to_vec()),
            Err(_) => support::oci::not_authenticated(),
        }
    }
    let up = TlsUpstream::start("127.0.0.1", verified);
    let ca = format!("    ca_file: \"{}\"\n", fixture("ca.pem").display());
    let gw = gateway_with("", &provider_yaml("oci", &up.url(), api_key(), &ca), "");
    let r = client()
        .post(format!("{}/providers/oci/20231130/actions/chat", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .body(r#"{"chatRequest":{"apiFormat":"GENERIC"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"verified":true}"#);

    let gw = gateway_with("", &provider_yaml("oci", &up.url(), api_key(), ""), "");
    let r = client()
        .post(format!("{}/providers/oci/20231130/actions/chat", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502, "an untrusted certificate was accepted");
    assert!(r.text().await.unwrap().contains("TLS handshake failed"));
    assert_eq!(up.recorded().len(), 1);
}

#[tokio::test]
async fn without_the_ca_the_certificate_is_refused() {
    let up = TlsUpstream::start("127.0.0.1", models);
    let gw = gateway_with("", &openai_provider(&up.url(), None), "");
    let (status, body) = get_models(&gw.base).await;
    assert_eq!(status, 502);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TLS handshake failed"),
        "{v}"
    );
    assert!(
        up.recorded().is_empty(),
        "a request went over an unverified connection"
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    // Loopback answers on all of 127.0.0.0/8; the certificate names only 127.0.0.1 and
    // localhost, so reaching it as 127.0.0.2 must fail even with its CA trusted.
    let up = TlsUpstream::start("127.0.0.2", models);
    let gw = gateway_with(
        "",
        &openai_provider(&up.url(), Some(&fixture("ca.pem"))),
        "",
    );
    let (status, body) = get_models(&gw.base).await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("TLS handshake failed"));
    assert!(up.recorded().is_empty());
}

#[test]
fn a_bad_ca_file_is_a_config_problem() {
    let yaml = |ca: &str| {
        format!(
            "auth: {{keys: [{{user: a, key: {GATEWAY_KEY}}}]}}\nproviders:\n{}",
            openai_provider("https://api.openai.com", Some(Path::new(ca)))
        )
    };
    for (ca, why) in [
        ("/nonexistent/ca.pem", "cannot read"),
        (
            fixture("localhost.key").to_str().unwrap(),
            "no PEM certificate",
        ),
    ] {
        let err = match switchyard::config::Config::parse(&yaml(ca), &|_| None) {
            Ok(_) => panic!("{ca} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("providers.openai.ca_file"), "{err}");
        assert!(err.contains(why), "{err}");
    }
}

#[test]
fn ssl_cert_file_is_trusted_in_addition_to_the_system_roots() {
    // A separate process: SSL_CERT_FILE is read from the environment at start.
    let up = TlsUpstream::start("127.0.0.1", models);
    let dir = std::env::temp_dir().join(format!("switchyard-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let cfg = dir.join("gw.yaml");
    std::fs::write(
        &cfg,
        format!(
            "server: {{listen: \"127.0.0.1:{port}\", access_log: false}}\nauth: {{keys: [{{user: a, key: {GATEWAY_KEY}}}]}}\nproviders:\n{}",
            openai_provider(&up.url(), None)
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "-c"])
        .arg(&cfg)
        .env("SSL_CERT_FILE", fixture("ca.pem"))
        .env_remove("SSL_CERT_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("the gateway did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let base = format!("http://127.0.0.1:{port}");
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(get_models(&base));
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(result.0, 200, "{}", String::from_utf8_lossy(&result.1));
    assert_eq!(result.1, MODELS);
}
