//! Assembling and running the Pingora server: the gateway service on `server.listen`, the
//! metrics service on `server.metrics_listen`, DNS refresh in the background, and graceful
//! shutdown that exits as soon as in-flight requests finish (bounded by the grace period).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::access_log::AccessLog;
use crate::config::{Config, ConfigErrors};
use crate::governance::Governance;
use crate::metrics::{Metrics, MetricsApp};
use crate::pipeline::Gateway;
use crate::route::health::HealthRegistry;
use crate::tls::ReloadableCert;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};

/// How often provider host names are re-resolved.
const DNS_REFRESH: Duration = Duration::from_secs(60);
/// How often `ai_proxy_provider_up` is recomputed.
const PROVIDER_UP_INTERVAL: Duration = Duration::from_secs(1);

/// Installs the process-wide rustls crypto provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A built server and the shared state it runs on.
pub struct Built {
    pub server: Server,
    pub metrics: Arc<Metrics>,
    pub access_log: Arc<AccessLog>,
    pub live: Arc<LiveConfig>,
    /// The HTTPS listener's certificate, when `server.tls` is set.
    pub certificate: Option<Arc<ReloadableCert>>,
    pub governance: Arc<Governance>,
}

/// The configuration in force, swappable at run time (SIGHUP), and its generation counter.
pub struct LiveConfig {
    pub current: Arc<ArcSwap<Config>>,
    generation: tokio::sync::watch::Sender<u64>,
    /// Tracing follows the `telemetry:` section of each reload.
    tracing: Arc<crate::telemetry::Tracing>,
}

impl LiveConfig {
    /// Puts `next` in force: new requests use it, in-flight ones finish on the old one.
    /// Listener addresses and thread counts only change with a restart.
    pub fn replace(&self, next: Config) {
        let old = self.current.load();
        if old.server.listen != next.server.listen
            || old.server.metrics_listen != next.server.metrics_listen
        {
            log::warn!("reload: listener addresses changed; they take effect after a restart");
        }
        if old.governance != next.governance
            || old
                .admin
                .as_ref()
                .map(|a| (&a.listen, a.key_sha256, a.totp))
                != next
                    .admin
                    .as_ref()
                    .map(|a| (&a.listen, a.key_sha256, a.totp))
        {
            log::warn!("reload: auth.store, refresh_seconds, limits, admin and audit settings take effect after a restart");
        }
        resolve_endpoints(&next);
        self.tracing.configure(next.telemetry.as_ref());
        self.current.store(Arc::new(next));
        self.generation.send_modify(|g| *g += 1);
        log::info!("configuration reloaded");
    }

    /// Re-reads and validates `path`; an invalid file is refused and the old config kept.
    pub fn reload_from(&self, path: &Path) -> Result<(), ConfigErrors> {
        let next = Config::load(path)?;
        self.replace(next);
        Ok(())
    }
}

fn resolve_endpoints(config: &Config) {
    for p in config.providers.iter() {
        if let Some(u) = &p.upstream {
            if let Err(e) = u.endpoint.resolve_blocking() {
                log::warn!(
                    "provider {}: {e}; it stays unusable until DNS answers",
                    p.name
                );
            }
        }
    }
}

/// Builds the Pingora server for `config` without running it. With `source`, SIGHUP
/// reloads the configuration from that file. Fails when the governance store cannot be
/// opened.
pub fn build(config: Arc<Config>, source: Option<PathBuf>, upgrade: bool) -> Result<Built, String> {
    install_crypto_provider();
    let governance = Governance::start(&config.governance)?;
    resolve_endpoints(&config);
    let s = &config.server;
    let conf = ServerConf {
        threads: s.threads,
        // Pingora sleeps the whole grace period; we exit earlier once requests drain (below).
        grace_period_seconds: Some(s.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: 256,
        upgrade_sock: s.upgrade_sock.clone(),
        pid_file: s.pid_file.clone(),
        ..ServerConf::default()
    };
    // With `upgrade`, bootstrap takes the listening sockets from the running old process
    // (which hands them over on SIGQUIT) instead of binding them.
    let mut opt = pingora::server::configuration::Opt::parse_from_args(["switchyard"]);
    opt.upgrade = upgrade;
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let metrics = Metrics::new();
    metrics.register(Box::new(governance.dropped.clone()));
    metrics.register(Box::new(governance.totp_throttle.failures.clone()));
    metrics.register(Box::new(governance.totp_throttle.lockouts.clone()));
    let access_log = AccessLog::start(s.access_log);
    let tracing = crate::telemetry::Tracing::new();
    metrics.register(Box::new(tracing.dropped.clone()));
    tracing.configure(config.telemetry.as_ref());
    let live = Arc::new(LiveConfig {
        current: Arc::new(ArcSwap::new(config.clone())),
        generation: tokio::sync::watch::channel(0).0,
        tracing: tracing.clone(),
    });
    let health = Arc::new(HealthRegistry::default());
    let mut gateway = Gateway::new(
        live.current.clone(),
        metrics.clone(),
        access_log.clone(),
        health.clone(),
        governance.clone(),
    );
    gateway.tracing = tracing;
    // The connection gate in front of the proxy enforces `server.max_connections` and the
    // client timeouts (see `crate::limits`).
    let mut http = pingora::proxy::http_proxy(&server.configuration, gateway);
    let mut options = pingora::apps::HttpServerOptions::default();
    // HTTP/2 (TLS listener): an idle connection closes like an idle HTTP/1 keep-alive one.
    options.h2_idle_timeout = Some(s.limits.keepalive_timeout);
    http.server_options = Some(options);
    let gate = crate::limits::ConnectionGate::new(http, live.current.clone(), metrics.clone());
    let mut proxy = Service::new("switchyard".into(), gate);
    // No L4 read buffer on the plain listener (issue 17, docs/BENCHMARKS.md "Memory per
    // connection"): Pingora's default is a 64 KiB `BufReader` per accepted connection, held for
    // the connection's life, idle keep-alive included. Pingora reads the header into its own
    // 4 KiB buffer and the body into a body buffer that lives only while a body is read, so
    // the L4 buffer saved no read syscall here, only added a copy. The TLS listener keeps the
    // default (rustls reads in small pieces, where the buffer does save syscalls).
    proxy.add_listener(
        ListenerConfig::tcp(s.listen.as_str()).l4_buffer(L4BufferSettings::default().read(0)),
    );
    let mut certificate = None;
    if let Some(tls) = &s.tls {
        match https_settings(tls) {
            Ok((settings, cert)) => {
                proxy.add_tls_with_settings(&tls.listen, None, settings);
                certificate = Some(cert);
            }
            // `check` validated the files; this is a race with someone replacing them.
            Err(e) => log::error!("TLS listener {} disabled: {e}", tls.listen),
        }
    }
    server.add_service(proxy);

    if let Some(addr) = &s.metrics_listen {
        let mut svc = Service::new("metrics".into(), MetricsApp(metrics.clone()));
        // A scrape now and then: one thread, not `server.threads` (each thread is a runtime
        // worker with its own stack and allocator pages; issue 17, idle RSS).
        svc.threads = Some(1);
        svc.add_tcp(addr);
        server.add_service(svc);
    }
    if let Some(admin) = &config.admin {
        if admin.totp
            && governance
                .store
                .as_ref()
                .is_some_and(|s| !s.seals_secrets())
        {
            log::warn!(
                "the admin TOTP secret is kept in PLAIN TEXT in the store: set {} or the systemd credential {} to encrypt it (README, \"Admin API\")",
                crate::store::secret_key::ENV,
                crate::store::secret_key::CREDENTIAL
            );
        }
        let mut svc = Service::new(
            "admin".into(),
            crate::admin::AdminApp::new(admin.clone(), governance.clone()),
        );
        svc.threads = Some(1); // operator calls, rarely concurrent
        svc.add_tcp(&admin.listen);
        server.add_service(svc);
    }
    server.add_service(background_service(
        "provider-maintenance",
        ProviderMaintenance {
            live: live.clone(),
            metrics: metrics.clone(),
            health,
        },
    ));
    if let Some(path) = source {
        server.add_service(background_service(
            "config-reload",
            ReloadOnSighup {
                live: live.clone(),
                path,
                certificate: certificate.clone(),
            },
        ));
    }
    Ok(Built {
        server,
        metrics,
        access_log,
        live,
        certificate,
        governance,
    })
}

/// TLS settings for the HTTPS listener: a reloadable certificate, HTTP/2, optional mTLS.
fn https_settings(
    tls: &crate::config::TlsListener,
) -> Result<(TlsSettings, Arc<ReloadableCert>), String> {
    let cert = Arc::new(ReloadableCert::load(&tls.cert_file, &tls.key_file)?);
    let mut settings =
        TlsSettings::with_callbacks(Box::new(NoCallbacks)).map_err(|e| e.to_string())?;
    settings.set_cert_resolver(cert.clone());
    settings.enable_h2();
    if let Some(ca) = &tls.client_ca_file {
        settings.set_client_cert_verifier(crate::tls::client_verifier(ca)?);
    }
    Ok((settings, cert))
}

/// `TlsSettings::with_callbacks` is the constructor that takes a certificate resolver.
struct NoCallbacks;

#[async_trait]
impl pingora::listeners::TlsAccept for NoCallbacks {}

/// Reloads the configuration file (and the HTTPS certificate) on SIGHUP (`systemctl reload`).
struct ReloadOnSighup {
    live: Arc<LiveConfig>,
    path: PathBuf,
    certificate: Option<Arc<ReloadableCert>>,
}

#[async_trait]
impl BackgroundService for ReloadOnSighup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            log::error!("cannot install a SIGHUP handler; config reload is disabled");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hup.recv() => {}
            }
            log::info!("SIGHUP: reloading {}", self.path.display());
            let (live, path) = (self.live.clone(), self.path.clone());
            match tokio::task::spawn_blocking(move || live.reload_from(&path)).await {
                Ok(Ok(())) => {}
                Ok(Err(errors)) => {
                    log::error!("reload refused, keeping the running configuration:\n{errors}")
                }
                Err(e) => log::error!("reload failed: {e}"),
            }
            if let Some(cert) = &self.certificate {
                match cert.reload() {
                    Ok(()) => log::info!("TLS certificate reloaded"),
                    Err(e) => {
                        log::error!("TLS certificate not reloaded, keeping the running one: {e}")
                    }
                }
            }
        }
    }
}

/// Keeps providers usable without the request path ever waiting: re-resolves their hosts
/// periodically, keeps their credentials (tokens) fresh and publishes
/// `ai_proxy_provider_up`. Restarts its work for the new providers after a reload.
struct ProviderMaintenance {
    live: Arc<LiveConfig>,
    metrics: Arc<Metrics>,
    health: Arc<HealthRegistry>,
}

impl ProviderMaintenance {
    async fn maintain(&self, config: &Config, shutdown: &ShutdownWatch) {
        let credentials = config
            .providers
            .iter()
            .filter_map(|p| p.upstream.as_ref())
            .map(|u| u.credential.maintain(shutdown.clone()));
        let dns = async {
            loop {
                tokio::time::sleep(DNS_REFRESH).await;
                for p in config.providers.iter() {
                    if let Some(u) = &p.upstream {
                        u.endpoint.refresh().await;
                    }
                }
            }
        };
        let up = async {
            loop {
                for p in config.providers.iter() {
                    let usable = matches!(p.readiness(), crate::providers::Readiness::Ready)
                        && !self.health.get(&p.name).is_open();
                    self.metrics
                        .provider_up
                        .with_label_values(&[&p.name])
                        .set(i64::from(usable));
                }
                tokio::time::sleep(PROVIDER_UP_INTERVAL).await;
            }
        };
        let checks = config
            .providers
            .iter()
            .map(|p| self.active_check(config, p));
        tokio::join!(
            dns,
            up,
            futures_util::future::join_all(credentials),
            futures_util::future::join_all(checks)
        );
    }

    /// Active health check: a GET of the configured path with the provider's credential at
    /// its interval. An answer below 500 counts as a success (it closes an open circuit), a
    /// failure or 5xx counts against the circuit like a failed request.
    async fn active_check(&self, config: &Config, provider: &Arc<crate::providers::Provider>) {
        let (Some((path, interval)), Some(upstream)) = (&provider.health_check, &provider.upstream)
        else {
            return;
        };
        let connector = pingora::connectors::http::Connector::new(None);
        let health = self.health.get(&provider.name);
        let breaker = config.router.policy.breaker;
        loop {
            tokio::time::sleep(*interval).await;
            let Ok(mut request) = pingora::http::RequestHeader::build(
                "GET",
                upstream.endpoint.path(path).as_bytes(),
                None,
            ) else {
                return;
            };
            if request
                .insert_header("host", upstream.endpoint.authority.clone())
                .is_err()
            {
                return;
            }
            let call = crate::pipeline::forward::UpstreamCall {
                provider,
                upstream,
                request,
                body: bytes::Bytes::new(),
                mode: crate::pipeline::forward::Mode::Raw,
            };
            let fw = crate::pipeline::forward::Forwarder {
                connector: &connector,
                timeouts: crate::providers::endpoint::PeerTimeouts {
                    connect: config.server.connect_timeout,
                    read: (*interval).min(config.server.read_timeout),
                    idle: (*interval).min(config.server.read_timeout),
                },
                max_response_bytes: 1 << 20,
                deadline: None,
            };
            match fw.open(&call).await {
                Ok(opened) if opened.status() < 500 => {
                    health.record_success(opened.time_to_headers);
                    fw.discard(opened).await;
                }
                Ok(opened) => {
                    log::warn!(
                        "health check of {} answered HTTP {}",
                        provider.name,
                        opened.status()
                    );
                    health.record_failure(&breaker);
                    fw.discard(opened).await;
                }
                Err(e) => {
                    log::warn!("health check of {} failed: {e}", provider.name);
                    health.record_failure(&breaker);
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for ProviderMaintenance {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut generation = self.live.generation.subscribe();
        let for_tasks = shutdown.clone();
        loop {
            let config = self.live.current.load_full();
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = generation.changed() => continue,
                // Under the gateway's tracing: credential refreshes are spans of their own.
                _ = crate::telemetry::BACKGROUND.scope(
                    self.live.tracing.clone(),
                    self.maintain(&config, &for_tasks),
                ) => return,
            }
        }
    }
}

/// Runs the gateway in the foreground until SIGTERM or SIGINT (graceful) or SIGQUIT
/// (graceful upgrade hand-over). Never returns.
pub fn run_forever(config: Arc<Config>, source: PathBuf, upgrade: bool) -> ! {
    // Pingora retries a failed bind, then panics in the listener's thread while the process
    // lives on; refuse to start instead, so a supervisor sees the failure. (An upgrade
    // inherits its sockets, so there is nothing to bind.)
    if !upgrade {
        if let Err(e) = check_listeners(&config) {
            log::error!("{e}");
            std::process::exit(1);
        }
    }
    let grace = config.server.grace_period;
    let mut built = match build(config, Some(source), upgrade) {
        Ok(b) => b,
        Err(e) => {
            log::error!("{e}");
            std::process::exit(1);
        }
    };
    built.server.add_service(background_service(
        "exit-when-drained",
        ExitWhenDrained {
            metrics: built.metrics.clone(),
            governance: built.governance.clone(),
            grace,
        },
    ));
    let watch = UnixSignals { grace };
    built.server.run(RunArgs {
        shutdown_signal: Box::new(watch),
    });
    std::process::exit(0)
}

/// Binds and releases every configured listener address, to fail fast when one is taken.
fn check_listeners(config: &Config) -> Result<(), String> {
    let s = &config.server;
    let addrs = std::iter::once(&s.listen)
        .chain(&s.metrics_listen)
        .chain(s.tls.as_ref().map(|t| &t.listen))
        .chain(config.admin.as_ref().map(|a| &a.listen));
    for addr in addrs {
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    }
    Ok(())
}

/// Set once a stop or upgrade signal arrived: responses then say `Connection: close`, so
/// keep-alive clients reconnect (to the new process, after an upgrade) instead of sending their
/// next request on a connection that is about to be closed.
pub static DRAINING: AtomicBool = AtomicBool::new(false);

/// Signal handling for the binary: SIGTERM/SIGINT stop, SIGQUIT hands the listeners over.
struct UnixSignals {
    grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for UnixSignals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
        let mut quit = signal(SignalKind::quit()).expect("installing a SIGQUIT handler");
        let (kind, shutdown_kind) = tokio::select! {
            _ = term.recv() => ("SIGTERM", ShutdownSignal::GracefulTerminate),
            _ = int.recv() => ("SIGINT", ShutdownSignal::GracefulTerminate),
            _ = quit.recv() => ("SIGQUIT (upgrade)", ShutdownSignal::GracefulUpgrade),
        };
        DRAINING.store(true, Ordering::Relaxed);
        log::info!(
            "{kind} received: finishing in-flight requests (at most {:?} once listening stops)",
            self.grace
        );
        shutdown_kind
    }
}

/// Ends the process as soon as no request is in flight once Pingora has stopped accepting
/// (its shutdown broadcast: at once on SIGTERM, after the socket hand-over and its 5 s on an
/// upgrade). Pingora alone would always sleep the whole grace period.
struct ExitWhenDrained {
    metrics: Arc<Metrics>,
    governance: Arc<Governance>,
    grace: Duration,
}

#[async_trait]
impl BackgroundService for ExitWhenDrained {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.changed().await.is_err() {
            return;
        }
        let metrics = self.metrics.clone();
        let governance = self.governance.clone();
        let deadline = Instant::now() + self.grace;
        std::thread::spawn(move || {
            // Let the listeners close first so no new request slips in.
            std::thread::sleep(Duration::from_millis(100));
            // A connection accepted just before listening stopped is waited on too: its
            // request has not arrived yet, but no other process can answer it.
            let busy = |m: &Metrics| {
                m.in_flight.get() > 0 || m.awaiting_first_request.load(Ordering::Acquire) > 0
            };
            while busy(&metrics) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(25));
            }
            log::info!("in-flight requests finished; exiting");
            // Every finished request has queued its usage record: write them all out.
            if !governance.flush(Duration::from_secs(10)) {
                log::error!("usage records could not all be written before exit");
            }
            // Give the access-log writer (it drains every 10 ms) time to flush its last lines.
            std::thread::sleep(Duration::from_millis(60));
            std::process::exit(0);
        });
    }
}

/// A gateway running in this process on a background thread (for tests and benches).
pub struct GatewayHandle {
    pub metrics: Arc<Metrics>,
    pub live: Arc<LiveConfig>,
    pub certificate: Option<Arc<ReloadableCert>>,
    pub governance: Arc<Governance>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Stops the in-process gateway when the test says so.
struct ChannelSignal(std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>);

#[async_trait]
impl ShutdownSignalWatch for ChannelSignal {
    async fn recv(&self) -> ShutdownSignal {
        let rx = self.0.lock().expect("not poisoned").take();
        if let Some(rx) = rx {
            let _ = rx.await;
        }
        ShutdownSignal::FastShutdown
    }
}

impl GatewayHandle {
    /// Starts the gateway for `config` and waits until its listener accepts connections.
    pub fn start(config: Arc<Config>) -> GatewayHandle {
        let listen = config.server.listen.clone();
        let built = build(config, None, false).unwrap_or_else(|e| panic!("{e}"));
        let metrics = built.metrics.clone();
        let governance = built.governance.clone();
        let live = built.live.clone();
        let certificate = built.certificate.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = built.server;
        let thread = std::thread::spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(ChannelSignal(std::sync::Mutex::new(Some(rx)))),
            });
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&listen).is_err() {
            assert!(
                Instant::now() < deadline,
                "gateway did not start listening on {listen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        GatewayHandle {
            metrics,
            live,
            certificate,
            governance,
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.governance.flush(Duration::from_secs(5));
    }
}
