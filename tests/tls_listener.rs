//! The HTTPS listener (`server.tls`): HTTP/1.1 and HTTP/2 with the test CA, refused for a
//! client that does not trust the certificate.

mod support;

use serde_json::{json, Value};
use support::*;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn tls_gateway() -> (Gateway, u16) {
    let port = free_port();
    let extra = format!(
        "  tls: {{listen: \"127.0.0.1:{port}\", cert_file: \"{}\", key_file: \"{}\"}}",
        fixture("localhost.pem"),
        fixture("localhost.key")
    );
    let gw = gateway_with(
        &extra,
        "",
        "routing:\n  patterns: [{pattern: \"^mock-\", default_provider: mock}]\n",
    );
    // The TLS listener starts with the plain one; wait for it too.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "TLS listener did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (gw, port)
}

fn trusting_client(http2: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(fixture("ca.pem")).unwrap()).unwrap();
    let b = reqwest::Client::builder()
        .add_root_certificate(ca)
        .tls_built_in_root_certs(false);
    let b = if http2 {
        b.http2_prior_knowledge()
    } else {
        b.http1_only()
    };
    b.build().unwrap()
}

#[tokio::test]
async fn serves_http1_and_http2_over_tls() {
    let (_gw, port) = tls_gateway();
    for http2 in [false, true] {
        let r = trusting_client(http2)
            .post(format!("https://localhost:{port}/v1/chat/completions"))
            .bearer_auth(GATEWAY_KEY)
            .json(
                &json!({"model": "mock-tls", "messages": [{"role": "user", "content": "secure"}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.version(),
            if http2 {
                reqwest::Version::HTTP_2
            } else {
                reqwest::Version::HTTP_11
            }
        );
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert!(v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .ends_with("secure"));
    }
    // Streams work over HTTP/2 too.
    let text = trusting_client(true)
        .post(format!("https://localhost:{port}/v1/chat/completions"))
        .bearer_auth(GATEWAY_KEY)
        .json(&json!({"model": "mock-tls", "stream": true, "messages": [{"role": "user", "content": "s"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}

#[tokio::test]
async fn clients_that_do_not_trust_the_certificate_are_refused() {
    let (_gw, port) = tls_gateway();
    let untrusting = reqwest::Client::builder()
        .tls_built_in_root_certs(true)
        .build()
        .unwrap();
    let err = untrusting
        .get(format!("https://localhost:{port}/health"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    // The right CA but a name the certificate does not cover.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(fixture("ca.pem")).unwrap()).unwrap();
    let wrong_name = reqwest::Client::builder()
        .add_root_certificate(ca)
        .resolve("wrong.example", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let err = wrong_name
        .get(format!("https://wrong.example:{port}/health"))
        .send()
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").to_lowercase().contains("certificate"),
        "{err:?}"
    );
    // The same client with the covered name works, so the failure above is the name.
    assert_eq!(
        trusting_client(false)
            .get(format!("https://localhost:{port}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn missing_certificate_files_are_config_problems() {
    let yaml = "server: {tls: {listen: \"127.0.0.1:1\", cert_file: /nonexistent.pem, key_file: /nonexistent.key}}\n";
    let e = switchyard::config::Config::parse(yaml, &|_| None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("server.tls.cert_file") && e.contains("server.tls.key_file"),
        "{e}"
    );
}

/// A fresh CA and a `localhost` leaf it signed, made with the openssl CLI (tests/run.sh
/// installs it): returns (ca.pem, leaf.pem, leaf.key). `usage` is serverAuth or clientAuth.
fn new_chain(dir: &std::path::Path, name: &str, usage: &str) -> (String, String, String) {
    let p = |f: &str| dir.join(format!("{name}-{f}")).display().to_string();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl CLI");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-days",
            "2",
            "-subj",
            "/CN=Test CA",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-subj",
            "/CN=localhost",
            "-keyout",
            &p("leaf.key"),
            "-out",
            &p("leaf.csr"),
        ],
    ]
    .concat());
    std::fs::write(
        p("ext"),
        format!(
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"
        ),
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &p("leaf.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("ext"),
        "-out",
        &p("leaf.pem"),
    ]);
    (p("ca.pem"), p("leaf.pem"), p("leaf.key"))
}

#[tokio::test]
async fn a_renewed_certificate_is_served_after_reload_and_a_broken_one_is_refused() {
    let dir = std::env::temp_dir().join(format!("switchyard-tls-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("tls.pem"), dir.join("tls.key"));
    std::fs::copy(fixture("localhost.pem"), &cert).unwrap();
    std::fs::copy(fixture("localhost.key"), &key).unwrap();
    let port = free_port();
    let extra = format!(
        "  tls: {{listen: \"127.0.0.1:{port}\", cert_file: \"{}\", key_file: \"{}\"}}",
        cert.display(),
        key.display()
    );
    let gw = gateway_with(&extra, "", "");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let health = |trust: &str| {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(trust).unwrap()).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .tls_built_in_root_certs(false)
            .build()
            .unwrap();
        async move {
            client
                .get(format!("https://localhost:{port}/health"))
                .send()
                .await
        }
    };
    assert!(health(&fixture("ca.pem")).await.is_ok());

    let (new_ca, new_cert, new_key) = new_chain(&dir, "renewed", "serverAuth");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    let certificate = gw.handle.certificate.as_ref().unwrap();
    certificate.reload().unwrap();
    assert!(
        health(&new_ca).await.is_ok(),
        "the renewed certificate is not served"
    );
    assert!(
        health(&fixture("ca.pem")).await.is_err(),
        "the old certificate is still served"
    );

    std::fs::write(&cert, "not a certificate").unwrap();
    assert!(certificate.reload().is_err());
    assert!(
        health(&new_ca).await.is_ok(),
        "a broken file replaced the running certificate"
    );
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_configured_ca() {
    let dir = std::env::temp_dir().join(format!("switchyard-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (client_ca, client_cert, client_key) = new_chain(&dir, "client", "clientAuth");
    let port = free_port();
    let extra = format!(
        "  tls: {{listen: \"127.0.0.1:{port}\", cert_file: \"{}\", key_file: \"{}\", client_ca_file: \"{client_ca}\"}}",
        fixture("localhost.pem"),
        fixture("localhost.key")
    );
    let _gw = gateway_with(&extra, "", "");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let ca = reqwest::Certificate::from_pem(&std::fs::read(fixture("ca.pem")).unwrap()).unwrap();
    let anonymous = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .build()
        .unwrap();
    assert!(
        anonymous
            .get(format!("https://localhost:{port}/health"))
            .send()
            .await
            .is_err(),
        "a client without a certificate got in"
    );
    let mut pem = std::fs::read(&client_cert).unwrap();
    pem.extend(std::fs::read(&client_key).unwrap());
    let identity = reqwest::Identity::from_pem(&pem).unwrap();
    let authenticated = reqwest::Client::builder()
        .add_root_certificate(ca)
        .identity(identity)
        .build()
        .unwrap();
    let r = authenticated
        .get(format!("https://localhost:{port}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
