//! The framework's floor for benches/load.sh (issue 17): a bare Pingora reverse proxy, one
//! `ProxyHttp` whose `upstream_peer` returns the origin, with the same Pingora version,
//! features, allocator and release profile as the gateway, and the same server settings that
//! matter to the bench (worker threads, upstream keep-alive pool). Everything Switchyard does
//! beyond this is its own cost.
//!
//! `cargo run --release --example bare_proxy -- LISTEN ORIGIN [THREADS]`
//! e.g. `bare_proxy 127.0.0.1:8090 127.0.0.1:9000 1`.
//!
//! `BARE_L4_READ_BUFFER=BYTES` sets the listener's L4 read buffer (Pingora's default, 64 KiB,
//! when unset; the gateway uses 0 on its plain listener, see docs/BENCHMARKS.md "Memory per
//! connection"), so both settings can be measured on the bare framework.
//! `BARE_WORK_STEALING=0` runs Pingora's no-steal runtime (one single-threaded tokio runtime per
//! thread) instead of tokio's multi-threaded scheduler (benches/floor.sh, issue 17 item 4).
//! `BARE_TIMEOUTS=1` gives the upstream peer the timeouts the gateway sets on its own
//! (connect 10 s, read and write 300 s, idle 60 s: its defaults), so what Pingora's
//! timers cost can be measured on the bare framework.

use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    origin: String,
    timeouts: bool,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.origin.as_str(), false, String::new());
        if self.timeouts {
            let o = &mut peer.options;
            o.connection_timeout = Some(Duration::from_secs(10));
            o.total_connection_timeout = Some(Duration::from_secs(10));
            o.read_timeout = Some(Duration::from_secs(300));
            o.write_timeout = Some(Duration::from_secs(300));
            o.idle_timeout = Some(Duration::from_secs(60));
        }
        Ok(Box::new(peer))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(origin)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_proxy LISTEN ORIGIN [THREADS]");
        std::process::exit(2);
    };
    let threads = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = ServerConf {
        threads,
        upstream_keepalive_pool_size: 256,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        work_stealing: std::env::var("BARE_WORK_STEALING").map_or(true, |v| v != "0"),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::parse_from_args(["bare_proxy"]), conf);
    server.bootstrap();
    let timeouts = std::env::var("BARE_TIMEOUTS").is_ok_and(|v| v == "1");
    let mut proxy = http_proxy_service(&server.configuration, Bare { origin, timeouts });
    let mut buffers = L4BufferSettings::default();
    if let Some(read) = std::env::var("BARE_L4_READ_BUFFER")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        buffers = buffers.read(read);
    }
    proxy.add_listener(ListenerConfig::tcp(listen).l4_buffer(buffers));
    server.add_service(proxy);
    server.run_forever();
}
