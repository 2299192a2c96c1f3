//! Operations drills against the real binary (issue 7): a zero-downtime upgrade (Pingora's
//! socket hand-over, SIGQUIT) and configuration reloads (SIGHUP), each under continuous client
//! load, counting every request.
//!
//! Everything runs on loopback; the configuration, the upgrade socket, the pid file and the
//! processes' logs live in a temporary directory. The load is a hand-written HTTP/1.1 client
//! (std threads, raw TCP) so that what is counted is exact:
//!
//! - `attempted`: requests a worker tried (a connection refused counts here and as a failure);
//! - `sent`: requests whose bytes were all written to a socket;
//! - `answered`: complete responses (status line, headers and the whole body) of any status;
//! - `ok`: answered with 200 and the expected body (the echo of this very request; for streams
//!   the SSE events through `data: [DONE]`);
//! - `failures`: everything else: refused or failed connects, failed writes, a connection that
//!   ended (or timed out, 10 s) before a complete response, a non-200 status, a wrong body;
//! - `reconnects`: a keep-alive worker found, *before* writing its next request, that the
//!   server had closed the idle connection (EOF on a non-blocking peek), and opened a new one.
//!   Nothing was sent on the closed connection, so this is not a failure. A request that was
//!   written and then lost is never retried: it is a failure.
//!
//! Keep-alive workers reuse one connection for as long as the server keeps it open (the old
//! process closes them when it stops, see Pingora's `handle_new_request`); "fresh" workers open
//! a new connection per request (`Connection: close`), so a refused connection shows at once.
//!
//! `cargo test --test drills -- --nocapture` prints the figures. `SWITCHYARD_DRILL_BIN=/path`
//! drills another binary (e.g. `target/release/switchyard`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary drilled: this build's, or `SWITCHYARD_DRILL_BIN` (e.g. a release build).
fn bin() -> String {
    std::env::var("SWITCHYARD_DRILL_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_switchyard").to_owned())
}
const KEY: &str = "sk-drill-0123456789abcdef";
/// How long a client waits for a response before calling it a hang.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Processes, files, ports

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary directory, removed at the end (kept, with its logs, when the test failed).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let d = std::env::temp_dir().join(format!(
            "switchyard-drill-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("drill files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A gateway process; killed (SIGKILL) if the test ends while it still runs.
struct Gateway {
    child: Arc<Mutex<Child>>,
    pid: u32,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Gateway {
    fn spawn(dir: &TempDir, name: &str, config: &Path, upgrade: bool) -> Gateway {
        let (stdout, stderr) = (
            dir.path(&format!("{name}.stdout")),
            dir.path(&format!("{name}.stderr")),
        );
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "-c"]).arg(config);
        if upgrade {
            cmd.arg("--upgrade");
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Gateway {
            pid: child.id(),
            child: Arc::new(Mutex::new(child)),
            stdout,
            stderr,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {} failed", self.pid);
    }

    fn try_wait(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().unwrap()
    }

    /// Waits up to `limit` for the process to exit.
    fn wait_exit(&self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Access-log lines (one JSON object per request) with status 200.
    fn access_log_200s(&self) -> usize {
        std::fs::read_to_string(&self.stdout)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("{\"ts\"") && l.contains("\"status\":200"))
            .count()
    }

    /// The whole access log (stdout).
    fn access_log(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let mut c = self.child.lock().unwrap();
        if c.try_wait().ok().flatten().is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_listening(port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "gateway did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback OpenAI-style upstream that answers every chat request after `delay`, or after
/// `sleep=MILLIS` when the request body says so (keep-alive), so some requests are still in
/// flight when the old process stops accepting.
fn slow_upstream(delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    let mut first = true;
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return; // the gateway closed the connection
                        }
                        if line == "\r\n" && !first {
                            break;
                        }
                        first = false;
                        if let Some((k, v)) = line.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let text = String::from_utf8_lossy(&body);
                    let asked = text.split("sleep=").nth(1).and_then(|rest| {
                        let digits: String =
                            rest.chars().take_while(char::is_ascii_digit).collect();
                        digits.parse().ok()
                    });
                    std::thread::sleep(asked.map_or(delay, Duration::from_millis));
                    let answer = serde_json::json!({
                        "id": "chatcmpl-slow", "object": "chat.completion", "created": 1717000000,
                        "model": "gpt-slow",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "slow-ok"},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
                    })
                    .to_string();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        answer.len()
                    );
                    if conn.write_all(head.as_bytes()).is_err()
                        || conn.write_all(answer.as_bytes()).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

// ---------------------------------------------------------------------------------------------
// The load: an exact HTTP/1.1 client

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A mock chat completion (JSON).
    Chat,
    /// A mock chat completion streamed as SSE.
    Stream,
    /// A chat completion through the slow loopback upstream.
    Slow,
}

#[derive(Clone, Copy)]
struct Worker {
    name: &'static str,
    kind: Kind,
    keep_alive: bool,
    model: &'static str,
}

#[derive(Default)]
struct Stats {
    attempted: AtomicU64,
    sent: AtomicU64,
    answered: AtomicU64,
    ok: AtomicU64,
    failures: AtomicU64,
    reconnects: AtomicU64,
    /// Every failure, with its time since the load started.
    failure_log: Mutex<Vec<String>>,
    /// (phase before sending, phase after the answer, x-switchyard-model) → count, for the
    /// reload drill.
    models: Mutex<BTreeMap<(u8, u8, String), u64>>,
    phase: AtomicU8,
    /// `x-request-id` of every 200, to find them in the access logs.
    request_ids: Mutex<Vec<String>>,
    /// Per worker: (answered 200, reconnects).
    per_worker: Mutex<BTreeMap<&'static str, (u64, u64)>>,
}

struct Load {
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
}

impl Load {
    fn start(port: u16, workers: &[Worker]) -> Load {
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let threads = workers
            .iter()
            .map(|&w| {
                let (stats, stop) = (stats.clone(), stop.clone());
                std::thread::spawn(move || run_worker(w, addr, &stats, &stop, started))
            })
            .collect();
        Load {
            stats,
            stop,
            threads,
            started,
        }
    }

    fn at(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn finish(self) -> Arc<Stats> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        self.stats
    }
}

struct Conn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Conn { stream, reader })
    }

    /// Whether the server has closed (or reset) this idle connection, checked without sending.
    fn closed_by_server(&self) -> bool {
        if !self.reader.buffer().is_empty() {
            return true; // bytes nobody asked for: do not reuse
        }
        if self.stream.set_nonblocking(true).is_err() {
            return true;
        }
        let r = self.stream.peek(&mut [0u8; 1]);
        let _ = self.stream.set_nonblocking(false);
        !matches!(r, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads one complete response; on error, says how many response bytes had arrived.
fn read_response(r: &mut BufReader<TcpStream>) -> Result<Response, (std::io::Error, usize)> {
    let mut got = 0usize;
    let mut line = Vec::new();
    let read_line = |r: &mut BufReader<TcpStream>,
                     line: &mut Vec<u8>,
                     got: &mut usize|
     -> Result<(), std::io::Error> {
        line.clear();
        let n = r.read_until(b'\n', line)?;
        *got += n;
        if n == 0 || !line.ends_with(b"\n") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        Ok(())
    };
    let wrap = |e: std::io::Error, got: usize| (e, got);
    read_line(r, &mut line, &mut got).map_err(|e| wrap(e, got))?;
    let status_line = String::from_utf8_lossy(&line).into_owned();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            wrap(
                std::io::Error::new(std::io::ErrorKind::InvalidData, status_line.clone()),
                got,
            )
        })?;
    let mut headers = Vec::new();
    loop {
        read_line(r, &mut line, &mut got).map_err(|e| wrap(e, got))?;
        if line == b"\r\n" {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        if let Some((k, v)) = text.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let find = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            read_line(r, &mut line, &mut got).map_err(|e| wrap(e, got))?;
            let size_text = String::from_utf8_lossy(&line);
            let size_text = size_text.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_text, 16).map_err(|_| {
                wrap(
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size"),
                    got,
                )
            })?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    read_line(r, &mut line, &mut got).map_err(|e| wrap(e, got))?;
                    if line == b"\r\n" {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size + 2, 0);
            r.read_exact(&mut body[start..]).map_err(|e| wrap(e, got))?;
            got += size + 2;
            body.truncate(start + size);
        }
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().unwrap_or(0);
        body.resize(len, 0);
        r.read_exact(&mut body).map_err(|e| wrap(e, got))?;
    } else {
        r.read_to_end(&mut body).map_err(|e| wrap(e, got))?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn request_bytes(w: &Worker, n: u64) -> Vec<u8> {
    chat_request(
        w.model,
        w.kind == Kind::Stream,
        &format!("drill {} {n}", w.name),
        w.keep_alive,
    )
}

fn chat_request(model: &str, stream: bool, content: &str, keep_alive: bool) -> Vec<u8> {
    let body = serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": content}],
    })
    .to_string();
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        }
    )
    .into_bytes()
}

/// Whether `resp` is the right answer to request `n` of worker `w`.
fn valid(w: &Worker, n: u64, resp: &Response) -> bool {
    if resp.status != 200 {
        return false;
    }
    let body = String::from_utf8_lossy(&resp.body);
    match w.kind {
        Kind::Chat => body.contains(&format!("You said: drill {} {n}\"", w.name)),
        Kind::Stream => {
            body.ends_with("data: [DONE]\n\n")
                && body.contains(&format!("\"content\":\" {n}\""))
                && !body.contains("\"error\"")
        }
        Kind::Slow => body.contains("slow-ok"),
    }
}

fn run_worker(w: Worker, addr: SocketAddr, stats: &Stats, stop: &AtomicBool, t0: Instant) {
    let fail = |what: String| {
        stats.failures.fetch_add(1, Ordering::SeqCst);
        stats.failure_log.lock().unwrap().push(format!(
            "t={:.3}s {}: {what}",
            t0.elapsed().as_secs_f64(),
            w.name
        ));
    };
    let (mut oks, mut reconnects) = (0u64, 0u64);
    let mut conn: Option<Conn> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        if conn.as_ref().is_some_and(Conn::closed_by_server) {
            conn = None;
            reconnects += 1;
            stats.reconnects.fetch_add(1, Ordering::SeqCst);
        }
        stats.attempted.fetch_add(1, Ordering::SeqCst);
        let phase = stats.phase.load(Ordering::SeqCst);
        if conn.is_none() {
            match Conn::open(addr) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    fail(format!("request #{n}: connect: {e}"));
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            }
        }
        let c = conn.as_mut().unwrap();
        if let Err(e) = c.stream.write_all(&request_bytes(&w, n)) {
            fail(format!("request #{n}: write: {e}"));
            conn = None;
            continue;
        }
        stats.sent.fetch_add(1, Ordering::SeqCst);
        match read_response(&mut c.reader) {
            Ok(resp) => {
                stats.answered.fetch_add(1, Ordering::SeqCst);
                if valid(&w, n, &resp) {
                    oks += 1;
                    stats.ok.fetch_add(1, Ordering::SeqCst);
                    if let Some(id) = resp.header("x-request-id") {
                        stats.request_ids.lock().unwrap().push(id.to_owned());
                    }
                } else {
                    fail(format!(
                        "request #{n}: status {}: {}",
                        resp.status,
                        String::from_utf8_lossy(&resp.body)
                            .chars()
                            .take(300)
                            .collect::<String>()
                    ));
                }
                if let Some(m) = resp.header("x-switchyard-model") {
                    let end_phase = stats.phase.load(Ordering::SeqCst);
                    *stats
                        .models
                        .lock()
                        .unwrap()
                        .entry((phase, end_phase, m.to_owned()))
                        .or_default() += 1;
                }
                if !w.keep_alive || resp.closes() {
                    conn = None;
                }
            }
            Err((e, got)) => {
                fail(format!(
                    "request #{n} sent{}, then {e} after {got} response bytes",
                    if w.keep_alive {
                        " on a reused connection"
                    } else {
                        ""
                    }
                ));
                conn = None;
            }
        }
    }
    stats
        .per_worker
        .lock()
        .unwrap()
        .insert(w.name, (oks, reconnects));
}

fn counts(s: &Stats) -> String {
    format!(
        "attempted={} sent={} answered={} ok_200={} failures={} keepalive_reconnects={}",
        s.attempted.load(Ordering::SeqCst),
        s.sent.load(Ordering::SeqCst),
        s.answered.load(Ordering::SeqCst),
        s.ok.load(Ordering::SeqCst),
        s.failures.load(Ordering::SeqCst),
        s.reconnects.load(Ordering::SeqCst),
    )
}

/// One request on a fresh connection: (status, x-switchyard-model).
fn one_request(port: u16, model: &str) -> (u16, String) {
    let mut c = Conn::open(([127, 0, 0, 1], port).into()).expect("connect");
    c.stream
        .write_all(&chat_request(model, false, "probe", false))
        .unwrap();
    let resp = read_response(&mut c.reader).expect("a response");
    (
        resp.status,
        resp.header("x-switchyard-model").unwrap_or("").to_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Drill 1: zero-downtime upgrade

/// How long the load runs before the upgrade starts.
const WARM_UP: Duration = Duration::from_secs(2);
/// How long the load keeps running after SIGQUIT: Pingora keeps accepting in the old process
/// for 5 s after handing the sockets over, then the old process drains (slow requests: 0.8 s).
const AFTER_QUIT: Duration = Duration::from_millis(7000);

/// Connection-per-request clients: each request on a new connection (`Connection: close`).
const FRESH: [Worker; 4] = [
    Worker {
        name: "fresh-chat-1",
        kind: Kind::Chat,
        keep_alive: false,
        model: "gpt-4o-mini",
    },
    Worker {
        name: "fresh-chat-2",
        kind: Kind::Chat,
        keep_alive: false,
        model: "gpt-4o-mini",
    },
    Worker {
        name: "fresh-stream",
        kind: Kind::Stream,
        keep_alive: false,
        model: "mock-fast",
    },
    Worker {
        name: "fresh-slow",
        kind: Kind::Slow,
        keep_alive: false,
        model: "slow-chat",
    },
];

/// The socket hand-over itself must refuse or drop nothing (README order: new process first).
#[test]
fn upgrade_under_load_refuses_no_connection() {
    upgrade_drill("upgrade-fresh", Order::NewFirst, &FRESH);
}

/// The same with Pingora's systemd order: SIGQUIT first, the new process 2 s later.
#[test]
fn upgrade_quit_first_under_load_refuses_no_connection() {
    upgrade_drill(
        "upgrade-quit-first",
        Order::QuitFirst(Duration::from_secs(2)),
        &FRESH,
    );
}

/// Keep-alive clients (how SDKs really connect) mixed with connection-per-request ones.
#[test]
fn upgrade_under_load_with_keep_alive_clients_drops_no_request() {
    upgrade_drill(
        "upgrade-keepalive",
        Order::NewFirst,
        &[
            Worker {
                name: "ka-chat-1",
                kind: Kind::Chat,
                keep_alive: true,
                model: "gpt-4o-mini",
            },
            Worker {
                name: "ka-chat-2",
                kind: Kind::Chat,
                keep_alive: true,
                model: "gpt-4o-mini",
            },
            Worker {
                name: "ka-stream",
                kind: Kind::Stream,
                keep_alive: true,
                model: "mock-fast",
            },
            Worker {
                name: "ka-slow",
                kind: Kind::Slow,
                keep_alive: true,
                model: "slow-chat",
            },
            Worker {
                name: "fresh-chat",
                kind: Kind::Chat,
                keep_alive: false,
                model: "gpt-4o-mini",
            },
            Worker {
                name: "fresh-stream",
                kind: Kind::Stream,
                keep_alive: false,
                model: "mock-fast",
            },
        ],
    );
}

/// A client that connected to the old process before the hand-over but sends its request only
/// after the old process has stopped accepting (under load, the bytes can trail the connect):
/// the old process still answers it, and does not exit while it waits for it. Only that
/// process can answer: the connection is in no other's accept queue.
#[test]
fn upgrade_answers_a_connection_whose_request_arrives_after_listening_stopped() {
    let dir = TempDir::new("upgrade-late-request");
    let port = free_port();
    let upgrade_sock = dir.path("upgrade.sock");
    let config = dir.path("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            r#"server:
  listen: "127.0.0.1:{port}"
  threads: 1
  grace_period_seconds: 10
  upgrade_sock: "{}"
  pid_file: "{}"
auth:
  keys: [{{user: drill, key: "{KEY}"}}]
providers:
  mock: {{}}
routing:
  patterns: [{{pattern: "^mock-", default_provider: mock}}]
"#,
            upgrade_sock.display(),
            dir.path("switchyard.pid").display()
        ),
    )
    .unwrap();
    let a = Gateway::spawn(&dir, "a", &config, false);
    wait_listening(port, Duration::from_secs(15));
    let mut late = Conn::open(([127, 0, 0, 1], port).into()).expect("connect to A");
    std::thread::sleep(Duration::from_millis(200)); // A has accepted it

    let b = Gateway::spawn(&dir, "b", &config, true);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !upgrade_sock.exists() {
        assert!(
            Instant::now() < deadline,
            "B never created the upgrade socket"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    a.signal("QUIT");
    // Pingora keeps accepting in A for 5 s after the hand-over, then stops: send after that.
    std::thread::sleep(Duration::from_millis(6000));
    assert!(
        a.try_wait().is_none(),
        "A exited while a connection it accepted had not sent its request yet"
    );
    late.stream
        .write_all(&chat_request("mock-fast", false, "late", false))
        .unwrap();
    let resp = read_response(&mut late.reader)
        .unwrap_or_else(|(e, got)| panic!("no answer from A: {e} after {got} bytes"));
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert!(
        resp.closes(),
        "a draining process answers with Connection: close"
    );
    let exit = a.wait_exit(Duration::from_secs(5));
    assert!(
        exit.is_some(),
        "A did not exit once the late request was answered"
    );
    assert_eq!(one_request(port, "mock-fast").0, 200, "B serves afterwards");
    drop(b);
}

/// In which order the new process is started and the old one signalled.
#[derive(Clone, Copy)]
enum Order {
    /// `serve --upgrade` first, SIGQUIT once it waits on the upgrade socket (README's order).
    NewFirst,
    /// SIGQUIT first, `serve --upgrade` this much later (the order of Pingora's systemd
    /// recipe: `ExecReload=kill -QUIT $MAINPID` then `ExecReload=pingora -u -d`); the old
    /// process retries handing the sockets over for 5 s.
    QuitFirst(Duration),
}

/// Starts A, runs `workers` against it, starts B with `--upgrade` and sends A SIGQUIT (in
/// `order`), keeps the load running 7 s more, then checks every count.
fn upgrade_drill(tag: &str, order: Order, workers: &[Worker]) {
    let dir = TempDir::new(tag);
    let port = free_port();
    let slow = slow_upstream(Duration::from_millis(800));
    let upgrade_sock = dir.path("upgrade.sock");
    let config = dir.path("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            r#"server:
  listen: "127.0.0.1:{port}"
  threads: 2
  grace_period_seconds: 10
  upgrade_sock: "{}"
  pid_file: "{}"
auth:
  keys: [{{user: drill, key: "{KEY}"}}]
providers:
  mock: {{}}
  openai:
    endpoint: "http://127.0.0.1:{slow}"
    auth: {{method: api_key, config: {{api_key: sk-upstream-drill-0123}}}}
model_mappings:
  gpt-4o-mini: {{default_provider: mock, providers: {{mock: {{model: mock-gpt-4o-mini}}}}}}
  slow-chat: {{default_provider: openai, providers: {{openai: {{model: gpt-slow}}}}}}
routing:
  patterns: [{{pattern: "^mock-", default_provider: mock}}]
"#,
            upgrade_sock.display(),
            dir.path("switchyard.pid").display()
        ),
    )
    .unwrap();

    let a = Gateway::spawn(&dir, "a", &config, false);
    wait_listening(port, Duration::from_secs(15));

    let load = Load::start(port, workers);
    std::thread::sleep(WARM_UP);

    let spawn_b = |load: &Load| {
        // B binds the upgrade socket, then waits (5 tries, 1 s apart) for A to connect and
        // send the listening sockets. A, on SIGQUIT, connects at once, or retries 5 times,
        // 1 s apart, while the socket is not there yet.
        let b_started = load.at();
        let b = Gateway::spawn(&dir, "b", &config, true);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !upgrade_sock.exists() {
            assert!(
                Instant::now() < deadline,
                "B never created the upgrade socket"
            );
            assert!(b.try_wait().is_none(), "B exited: {}", b.stderr_text());
            std::thread::sleep(Duration::from_millis(10));
        }
        // bind() creates the file; chmod and listen() follow: let them happen.
        std::thread::sleep(Duration::from_millis(200));
        (b, b_started)
    };
    let early_b = match order {
        Order::NewFirst => Some(spawn_b(&load)),
        Order::QuitFirst(_) => None,
    };
    let quit_at = load.at();
    // The drain probe: a request A accepts before SIGQUIT and answers only 5.5 s later, after
    // its listeners have closed: A must finish it before exiting.
    let probe = {
        let mut c = Conn::open(([127, 0, 0, 1], port).into()).expect("probe connect");
        c.stream
            .write_all(&chat_request(
                "slow-chat",
                false,
                "drain probe sleep=5500",
                false,
            ))
            .unwrap();
        std::thread::spawn(move || {
            let r = read_response(&mut c.reader);
            (
                Instant::now(),
                r.map(|r| {
                    (
                        r.status,
                        String::from_utf8_lossy(&r.body).contains("slow-ok"),
                    )
                })
                .map_err(|(e, got)| format!("{e} after {got} bytes")),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let quit = Instant::now();
    a.signal("QUIT");
    let (b, b_started) = match (early_b, order) {
        (Some(b), _) => b,
        (None, Order::QuitFirst(delay)) => {
            std::thread::sleep(delay);
            spawn_b(&load)
        }
        (None, Order::NewFirst) => unreachable!(),
    };

    // Note when A exits while the load runs.
    let a_exit: Arc<Mutex<Option<(f64, ExitStatus, u64)>>> = Arc::default();
    let watcher = {
        let (child, a_exit, stats, stop) = (
            a.child.clone(),
            a_exit.clone(),
            load.stats.clone(),
            load.stop.clone(),
        );
        std::thread::spawn(move || loop {
            if let Some(s) = child.lock().unwrap().try_wait().unwrap() {
                let ok_so_far = stats.ok.load(Ordering::SeqCst);
                *a_exit.lock().unwrap() = Some((quit.elapsed().as_secs_f64(), s, ok_so_far));
                return;
            }
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        })
    };
    std::thread::sleep(
        AFTER_QUIT
            + match order {
                Order::QuitFirst(delay) => delay + Duration::from_secs(1),
                Order::NewFirst => Duration::ZERO,
            },
    );
    let load_secs = load.at();
    let stats = load.finish();
    watcher.join().unwrap();

    // A must leave by itself (in-flight requests drained; at most 5 s + grace period).
    if a_exit.lock().unwrap().is_none() {
        let status = a.wait_exit(Duration::from_secs(12));
        *a_exit.lock().unwrap() = status.map(|s| (quit.elapsed().as_secs_f64(), s, u64::MAX));
    }
    let a_exit = *a_exit.lock().unwrap();
    let b_alive = b.try_wait().is_none();
    let (b_status, _) = if b_alive {
        one_request(port, "gpt-4o-mini")
    } else {
        (0, String::new())
    };
    let total_ok = stats.ok.load(Ordering::SeqCst);
    let (probe_done, probe_result) = probe.join().unwrap();
    let probe_secs = probe_done.duration_since(quit).as_secs_f64();
    let b_bootstrapped = b.stderr_text().contains("Bootstrap done");
    // Stop B now so its access log is complete (its writer flushes on exit).
    let b_stop = b_alive.then(|| {
        b.signal("TERM");
        b.wait_exit(Duration::from_secs(10))
    });

    println!("{tag}: load {load_secs:.1} s, B started at t={b_started:.3}s, SIGQUIT to A at t={quit_at:.3}s");
    println!("{tag}: {}", counts(&stats));
    for (name, (oks, rc)) in stats.per_worker.lock().unwrap().iter() {
        println!("{tag}:   {name}: ok={oks} reconnects={rc}");
    }
    match a_exit {
        Some((secs, status, ok_then)) => {
            println!(
            "{tag}: A exited {secs:.2} s after SIGQUIT ({status}); ok answers after A's exit: {}",
            if ok_then == u64::MAX { "n/a".into() } else { (total_ok - ok_then).to_string() }
        )
        }
        None => println!("{tag}: A had not exited 12 s after the load stopped"),
    }
    // Informational (not asserted): A's and B's access logs together should hold one line per
    // request answered (the load, the drain probe and the final check request).
    let (log_a, log_b) = (a.access_log_200s(), b.access_log_200s());
    let logged: std::collections::HashSet<String> = (a.access_log() + &b.access_log())
        .lines()
        .filter_map(|l| l.split("\"request_id\":\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect();
    let missing: Vec<String> = stats
        .request_ids
        .lock()
        .unwrap()
        .iter()
        .filter(|id| !logged.contains(*id))
        .cloned()
        .collect();
    println!(
        "{tag}: 200 lines in the access logs: A {log_a} + B {log_b} = {} (200s answered: {}); \
         load 200s missing from both logs: {} {:?}; B answered a request afterwards: {b_status}",
        log_a + log_b,
        total_ok + u64::from(probe_result == Ok((200, true))) + u64::from(b_status == 200),
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    println!("{tag}: drain probe (accepted by A before SIGQUIT, 5.5 s upstream): {probe_result:?}, answered {probe_secs:.2} s after SIGQUIT");
    for f in stats.failure_log.lock().unwrap().iter().take(40) {
        println!("{tag}: FAILURE {f}");
    }

    let failures = stats.failures.load(Ordering::SeqCst);
    let sent = stats.sent.load(Ordering::SeqCst);
    let answered = stats.answered.load(Ordering::SeqCst);
    assert!(
        total_ok > 100,
        "too little load to prove anything: {}",
        counts(&stats)
    );
    assert_eq!(
        failures,
        0,
        "requests failed during the upgrade: {}",
        counts(&stats)
    );
    assert_eq!(answered, sent, "{}", counts(&stats));
    assert_eq!(total_ok, sent, "{}", counts(&stats));
    let (secs, status, ok_then) = a_exit.unwrap_or_else(|| {
        panic!(
            "A did not exit by itself after SIGQUIT:\n{}",
            a.stderr_text()
        )
    });
    assert!(status.success(), "A exited with {status}");
    assert_eq!(
        probe_result,
        Ok((200, true)),
        "A did not finish the request in flight across the hand-over"
    );
    assert!(
        secs >= probe_secs,
        "A exited ({secs:.2} s) before its in-flight request finished ({probe_secs:.2} s)"
    );
    assert!(secs < 5.0 + 10.0 + 2.0, "A took {secs:.1} s to exit");
    assert!(
        ok_then != u64::MAX && total_ok > ok_then,
        "no request was answered after A exited: B never served the load"
    );
    assert!(b_alive, "B exited:\n{}", b.stderr_text());
    assert_eq!(b_status, 200, "B does not answer after the upgrade");
    assert!(
        b_bootstrapped,
        "B did not take the sockets over:\n{}",
        b.stderr_text()
    );
    let status = b_stop.flatten().expect("B did not stop on SIGTERM");
    assert!(status.success());
}

// ---------------------------------------------------------------------------------------------
// Drill 2: configuration reload (SIGHUP)

fn reload_config(port: u16, version: &str, extra_mapping: &str) -> String {
    format!(
        r#"server:
  listen: "127.0.0.1:{port}"
  threads: 2
  grace_period_seconds: 10
auth:
  keys: [{{user: drill, key: "{KEY}"}}]
providers:
  mock: {{}}
model_mappings:
  gpt-4o-mini: {{default_provider: mock, providers: {{mock: {{model: mock-{version}}}}}}}
  {extra_mapping}: {{default_provider: mock, providers: {{mock: {{}}}}}}
routing:
  patterns: [{{pattern: "^mock-", default_provider: mock}}]
"#
    )
}

/// Phases of the reload drill, as the workers see them when they send a request.
const V1: u8 = 0; // only v1 in force
const RELOADING: u8 = 1; // SIGHUP sent, not yet observed
const V2: u8 = 2; // v2 observed in force
const AFTER_INVALID: u8 = 3; // an invalid file was sent with SIGHUP

#[test]
fn reload_under_load_drops_no_request() {
    let dir = TempDir::new("reload");
    let port = free_port();
    let config = dir.path("gateway.yaml");
    std::fs::write(&config, reload_config(port, "v1", "before")).unwrap();
    let gw = Gateway::spawn(&dir, "gw", &config, false);
    wait_listening(port, Duration::from_secs(15));
    assert_eq!(one_request(port, "after").0, 404);

    let workers = [
        Worker {
            name: "ka-chat-1",
            kind: Kind::Chat,
            keep_alive: true,
            model: "gpt-4o-mini",
        },
        Worker {
            name: "ka-chat-2",
            kind: Kind::Chat,
            keep_alive: true,
            model: "gpt-4o-mini",
        },
        Worker {
            name: "ka-stream",
            kind: Kind::Stream,
            keep_alive: true,
            model: "gpt-4o-mini",
        },
        Worker {
            name: "fresh-chat",
            kind: Kind::Chat,
            keep_alive: false,
            model: "gpt-4o-mini",
        },
        Worker {
            name: "fresh-stream",
            kind: Kind::Stream,
            keep_alive: false,
            model: "gpt-4o-mini",
        },
    ];
    let load = Load::start(port, &workers);
    std::thread::sleep(Duration::from_millis(1500));

    // A valid new file: gpt-4o-mini now maps to mock-v2, and `after` exists.
    std::fs::write(&config, reload_config(port, "v2", "after")).unwrap();
    load.stats.phase.store(RELOADING, Ordering::SeqCst);
    let hup_at = load.at();
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while one_request(port, "after").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not load the new mapping"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let applied_after = load.at() - hup_at;
    load.stats.phase.store(V2, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1500));

    // An invalid file: refused, the running configuration keeps serving.
    std::fs::write(
        &config,
        "server: {listen: nowhere}\nproviders: {mock: {unknown_key: 1}}\n",
    )
    .unwrap();
    load.stats.phase.store(AFTER_INVALID, Ordering::SeqCst);
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.stderr_text().contains("reload refused") {
        assert!(
            Instant::now() < deadline,
            "the invalid reload was not refused:\n{}",
            gw.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let load_secs = load.at();
    let stats = load.finish();

    let after_status = one_request(port, "after");
    let mapped = one_request(port, "gpt-4o-mini");
    let alive = gw.try_wait().is_none();
    let models = stats.models.lock().unwrap().clone();
    println!("reload drill: load {load_secs:.1} s; valid reload in force {applied_after:.3} s after SIGHUP");
    println!("reload drill: {}", counts(&stats));
    println!(
        "reload drill: upstream model by (phase before sending, phase after the answer) \
         (0 v1, 1 reloading, 2 v2, 3 after invalid): {models:?}"
    );
    for f in stats.failure_log.lock().unwrap().iter().take(40) {
        println!("reload drill: FAILURE {f}");
    }

    let sent = stats.sent.load(Ordering::SeqCst);
    assert_eq!(
        stats.failures.load(Ordering::SeqCst),
        0,
        "{}",
        counts(&stats)
    );
    assert_eq!(
        stats.answered.load(Ordering::SeqCst),
        sent,
        "{}",
        counts(&stats)
    );
    assert_eq!(stats.ok.load(Ordering::SeqCst), sent, "{}", counts(&stats));
    assert!(sent > 100, "too little load: {}", counts(&stats));
    // Requests sent and answered while only v1 existed (before the new file was even written)
    // got v1; requests sent once v2 was seen in force got v2, also after the invalid file.
    // Requests in between may get either.
    let count = |keep: &dyn Fn(u8, u8) -> bool, model: Option<&str>| -> u64 {
        models
            .iter()
            .filter(|((start, end, m), _)| keep(*start, *end) && model.is_none_or(|x| x == m))
            .map(|(_, c)| c)
            .sum()
    };
    let only_v1 = |start: u8, end: u8| start == V1 && end == V1;
    let after_v2 = |start: u8, _: u8| start >= V2;
    let after_invalid = |start: u8, _: u8| start == AFTER_INVALID;
    assert!(
        count(&only_v1, Some("mock-v1")) > 0
            && count(&only_v1, Some("mock-v1")) == count(&only_v1, None),
        "{models:?}"
    );
    assert!(
        count(&after_v2, Some("mock-v2")) > 0
            && count(&after_v2, Some("mock-v2")) == count(&after_v2, None),
        "the valid reload did not apply to every later request, or the invalid file changed \
         what answers: {models:?}"
    );
    assert!(count(&after_invalid, Some("mock-v2")) > 0, "{models:?}");
    assert!(
        alive,
        "the gateway exited on a reload:\n{}",
        gw.stderr_text()
    );
    assert_eq!(
        after_status.0, 200,
        "the reloaded mapping stopped answering"
    );
    assert_eq!(mapped, (200, "mock-v2".to_owned()));

    gw.signal("TERM");
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("no exit on SIGTERM");
    assert!(status.success());
}
