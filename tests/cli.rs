//! The `switchyard` binary: `check` lists every problem with a non-zero exit, `serve`
//! drains in-flight requests on SIGTERM and exits well before the grace period ends.

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn write_config(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("switchyard-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn check_accepts_the_shipped_configs() {
    for file in ["conf/demo.yaml", "conf/gateway.yaml"] {
        let out = Command::new(BIN)
            .args(["check", "-c", file])
            .env("ALICE_KEY", "sk-alice-check-123")
            .env("OPENAI_API_KEY", "sk-test")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
    }
}

#[test]
fn check_lists_every_problem_and_never_a_secret() {
    let dir = temp_dir("check");
    let bad = write_config(
        &dir,
        "bad.yaml",
        "server: {listen: nowhere}\nauth: {keys: [{user: a, key: short}]}\nproviders:\n  openai: {auth: {method: api_key, config: {api_key: \"${NOT_SET_ANYWHERE}\"}}}\n",
    );
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NOT_SET_ANYWHERE"), "{err}");
    let bad2 = write_config(
        &dir,
        "bad2.yaml",
        "server: {listen: nowhere, threads: 0}\nauth: {keys: [{user: a, key: tiny}]}\nproviders: {}\n",
    );
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&bad2)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for path in ["server.listen", "server.threads", "auth.keys[0].key"] {
        assert!(err.contains(path), "{path} missing from:\n{err}");
    }
    assert!(!err.contains("tiny"), "the key value was printed");
    let out = Command::new(BIN)
        .args(["check", "-c", "/nonexistent.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// A value substituted from the environment is never echoed, even in a field that is not a
/// secret: the problem names the variable instead (a key pasted into the wrong variable).
#[test]
fn check_names_the_variable_not_its_value() {
    let dir = temp_dir("check-env");
    let secret = "sk-proj-Zq8xEnvSecret0123456789";
    let bad = write_config(
        &dir,
        "env.yaml",
        "server: {listen: \"127.0.0.1:0\"}\nauth: {keys: [{user: a, key: sk-a-check-0123456789}]}\nproviders:\n  openai:\n    endpoint: \"${OPENAI_ENDPOINT}\"\n    auth: {method: api_key, config: {api_key: sk-test}}\n",
    );
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&bad)
        .env("OPENAI_ENDPOINT", secret)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("providers.openai.endpoint"), "{all}");
    assert!(all.contains("${OPENAI_ENDPOINT}"), "{all}");
    assert!(
        !all.contains("Zq8xEnvSecret"),
        "the value was printed:\n{all}"
    );
}

/// `admin totp-setup` with SWITCHYARD_SECRET_KEY stores the secret encrypted (the database
/// file does not contain it) and `admin totp-code` needs the key to read it; without a key
/// the secret is stored plain, with a loud warning.
#[test]
fn the_totp_secret_is_encrypted_with_the_secret_key() {
    let dir = temp_dir("totp-seal");
    let _ = std::fs::remove_file(dir.join("sealed.db"));
    let _ = std::fs::remove_file(dir.join("plain.db"));
    let key = "5f".repeat(32);
    let admin = |db: &str, args: &[&str], key: Option<&str>| {
        let mut c = Command::new(BIN);
        c.arg("admin")
            .args(args)
            .arg("--store")
            .arg(format!("sqlite:{}", dir.join(db).display()))
            .env_remove("SWITCHYARD_SECRET_KEY")
            .env_remove("CREDENTIALS_DIRECTORY");
        if let Some(k) = key {
            c.env("SWITCHYARD_SECRET_KEY", k);
        }
        c.output().unwrap()
    };
    let secret_of = |uri: &str| {
        uri.split("secret=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_owned()
    };
    // With a key: no warning, the secret is not in the files, codes need the key.
    let out = admin("sealed.db", &["totp-setup"], Some(&key));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("PLAIN TEXT"));
    let secret = secret_of(&String::from_utf8_lossy(&out.stdout));
    let on_disk = |db: &str| {
        ["", "-wal"]
            .iter()
            .map(|ext| std::fs::read(dir.join(format!("{db}{ext}"))).unwrap_or_default())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect::<String>()
    };
    assert!(
        !on_disk("sealed.db").contains(&secret),
        "the secret is stored in plain text"
    );
    let out = admin("sealed.db", &["totp-code"], Some(&key));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = admin("sealed.db", &["totp-code"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SWITCHYARD_SECRET_KEY"));
    // A malformed key is refused, naming the variable and not the value.
    let out = admin("sealed.db", &["totp-code"], Some("not-a-key-value"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SWITCHYARD_SECRET_KEY") && !err.contains("not-a-key-value"),
        "{err}"
    );
    // Without a key: stored plain, with a warning.
    let out = admin("plain.db", &["totp-setup"], None);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PLAIN TEXT"));
    let secret = secret_of(&String::from_utf8_lossy(&out.stdout));
    assert!(on_disk("plain.db").contains(&secret));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_explains_the_commands() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for word in ["serve", "check"] {
        assert!(text.contains(word), "{text}");
    }
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_early() {
    let up = MockUpstream::start(|_| {
        Reply::Delay(
            Duration::from_millis(1500),
            Box::new(Reply::Full(
                200,
                vec![],
                chat_completion("gpt-4-0125-preview", "late", 1, 1),
            )),
        )
    });
    let dir = temp_dir("serve");
    let port = free_port();
    let cfg = write_config(
        &dir,
        "gw.yaml",
        &format!(
            "server: {{listen: \"127.0.0.1:{port}\", grace_period_seconds: 20}}\nauth: {{keys: [{{user: a, key: {GATEWAY_KEY}}}]}}\nproviders:\n  openai: {{endpoint: \"{}\", auth: {{method: api_key, config: {{api_key: {UPSTREAM_KEY}}}}}}}\nrouting: {{patterns: [{{pattern: \"^gpt-\", default_provider: openai}}]}}\n",
            up.url()
        ),
    );
    let mut child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "gateway did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let body = r#"{"model":"gpt-4","messages":[{"role":"user","content":"x"}]}"#;
    let request = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {GATEWAY_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    });
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let response = request.join().unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "in-flight request was dropped: {response}"
    );
    assert!(response.contains("late"));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    // The access log line of the drained request was flushed before exit.
    let mut log = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("\"status\":200"), "{log}");
}

#[test]
fn sighup_reloads_a_valid_file_and_keeps_running_on_an_invalid_one() {
    let dir = temp_dir("hup");
    let port = free_port();
    let base = format!("server: {{listen: \"127.0.0.1:{port}\"}}\nauth: {{keys: [{{user: a, key: {GATEWAY_KEY}}}]}}\nproviders: {{mock: {{}}}}\n");
    let cfg = write_config(
        &dir,
        "gw.yaml",
        &format!("{base}model_mappings: {{before: {{providers: {{mock: {{}}}}}}}}\n"),
    );
    let mut child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "gateway did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status_of = |model: &str| -> String {
        let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"x"}}]}}"#);
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {GATEWAY_KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split(' ').nth(1).unwrap_or_default().to_owned()
    };
    let hup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap()
            .success())
    };
    assert_eq!(status_of("before"), "200");
    assert_eq!(status_of("after"), "404");
    std::fs::write(
        &cfg,
        format!("{base}model_mappings: {{after: {{providers: {{mock: {{}}}}}}}}\n"),
    )
    .unwrap();
    hup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_of("after") != "200" {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not load the new mapping"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(&cfg, "server: {listen: nowhere}\n").unwrap();
    hup();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        status_of("after"),
        "200",
        "an invalid file must not replace the running config"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the gateway exited on a bad reload"
    );
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn a_taken_port_stops_the_gateway_with_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = temp_dir("taken");
    let cfg = write_config(&dir, "gw.yaml", &format!("server: {{listen: \"127.0.0.1:{port}\"}}\nauth: {{keys: [{{user: a, key: {GATEWAY_KEY}}}]}}\nproviders: {{mock: {{}}}}\n"));
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen on"));
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(taken);
}

#[test]
fn check_counts_in_the_singular_too() {
    let dir = temp_dir("singular");
    let cfg = write_config(
        &dir,
        "one.yaml",
        &format!("auth: {{keys: [{{user: a, key: {GATEWAY_KEY}}}]}}\nproviders: {{mock: {{}}}}\n"),
    );
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("(1 provider, 1 key)"), "{stdout}");
}

#[test]
fn keys_without_a_store_say_how_to_give_one() {
    let dir = temp_dir("nostore");
    let cfg = write_config(
        &dir,
        "nostore.yaml",
        &format!("auth: {{keys: [{{user: a, key: {GATEWAY_KEY}}}]}}\n"),
    );
    for args in [
        vec!["keys", "list", "-c", cfg.to_str().unwrap()],
        vec!["keys", "list", "-c", "/nonexistent/gateway.yaml"],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .env_remove("SWITCHYARD_STORE")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains("--store sqlite:PATH") && err.contains("auth.store"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn keys_create_help_describes_every_option() {
    let out = Command::new(BIN)
        .args(["keys", "create", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let at = help
        .find("--user <USER>")
        .unwrap_or_else(|| panic!("no --user in:\n{help}"));
    let after = &help[at + "--user <USER>".len()..];
    // The description: on the same line or the next, before the next option.
    let description = &after[..after.find("\n  -").unwrap_or(after.len())];
    assert!(
        description.trim().len() > 10,
        "--user has no description:\n{help}"
    );
}
