//! Assembling and running the Pingora server: the gateway service on `server.listen`, the
//! metrics service on `server.metrics_listen`, DNS refresh in the background, and graceful
//! shutdown that exits as soon as in-flight requests finish (bounded by the grace period).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::metrics::{Metrics, MetricsApp};
use crate::proxy::Gateway;

/// How often provider host names are re-resolved.
const DNS_REFRESH: Duration = Duration::from_secs(60);

/// Installs the process-wide rustls crypto provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A built server and the metrics it reports to.
pub struct Built {
    pub server: Server,
    pub metrics: Arc<Metrics>,
    pub access_log: Arc<AccessLog>,
}

/// Builds the Pingora server for `config` without running it.
pub fn build(config: Arc<Config>) -> Built {
    install_crypto_provider();
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
    let s = &config.server;
    let conf = ServerConf {
        threads: s.threads,
        // Pingora sleeps the whole grace period; we exit earlier once requests drain (below).
        grace_period_seconds: Some(s.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: 256,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let metrics = Metrics::new();
    let access_log = AccessLog::start(s.access_log);
    let gateway = Gateway::new(config.clone(), metrics.clone(), access_log.clone());
    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, gateway, "switchyard");
    proxy.add_tcp(&s.listen);
    server.add_service(proxy);

    if let Some(addr) = &s.metrics_listen {
        let mut svc = Service::new("metrics".into(), MetricsApp(metrics.clone()));
        svc.add_tcp(addr);
        server.add_service(svc);
    }
    server.add_service(background_service(
        "provider-maintenance",
        ProviderMaintenance(config.clone()),
    ));
    Built {
        server,
        metrics,
        access_log,
    }
}

/// Keeps providers usable without the request path ever waiting: re-resolves their hosts
/// periodically and keeps their credentials (tokens) fresh.
struct ProviderMaintenance(Arc<Config>);

#[async_trait]
impl BackgroundService for ProviderMaintenance {
    async fn start(&self, shutdown: ShutdownWatch) {
        let credentials = self
            .0
            .providers
            .iter()
            .filter_map(|p| p.upstream.as_ref())
            .map(|u| u.credential.maintain(shutdown.clone()));
        let mut dns_shutdown = shutdown.clone();
        let dns = async {
            loop {
                tokio::select! {
                    _ = dns_shutdown.changed() => return,
                    _ = tokio::time::sleep(DNS_REFRESH) => {}
                }
                for p in self.0.providers.iter() {
                    if let Some(u) = &p.upstream {
                        u.endpoint.refresh().await;
                    }
                }
            }
        };
        tokio::join!(dns, futures_util::future::join_all(credentials));
    }
}

/// Runs the gateway in the foreground until SIGTERM or SIGINT (graceful) or SIGQUIT
/// (graceful upgrade hand-over). Never returns.
pub fn run_forever(config: Arc<Config>) -> ! {
    let grace = config.server.grace_period;
    let built = build(config);
    let watch = UnixSignals {
        metrics: built.metrics.clone(),
        grace,
    };
    built.server.run(RunArgs {
        shutdown_signal: Box::new(watch),
    });
    std::process::exit(0)
}

/// Signal handling for the binary: on a graceful stop, a watcher thread ends the process as
/// soon as no request is in flight (Pingora alone would always wait the full grace period).
struct UnixSignals {
    metrics: Arc<Metrics>,
    grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for UnixSignals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
        let mut quit = signal(SignalKind::quit()).expect("installing a SIGQUIT handler");
        let kind = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
        };
        log::info!(
            "{kind} received: finishing in-flight requests (at most {:?})",
            self.grace
        );
        let metrics = self.metrics.clone();
        let deadline = Instant::now() + self.grace;
        std::thread::spawn(move || {
            // Let the listeners close first so no new request slips in.
            std::thread::sleep(Duration::from_millis(100));
            while metrics.in_flight.get() > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(25));
            }
            log::info!("in-flight requests finished; exiting");
            // Give the access-log thread a moment to flush its last lines.
            std::thread::sleep(Duration::from_millis(50));
            std::process::exit(0);
        });
        ShutdownSignal::GracefulTerminate
    }
}

/// A gateway running in this process on a background thread (for tests and benches).
pub struct GatewayHandle {
    pub metrics: Arc<Metrics>,
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
        let built = build(config);
        let metrics = built.metrics.clone();
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
    }
}
