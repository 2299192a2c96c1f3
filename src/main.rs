//! The `switchyard` command line: `serve` runs the gateway, `check` validates a config.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use switchyard::cli;
use switchyard::config::Config;

/// mimalloc instead of glibc malloc: per request the gateway allocates and frees many small
/// objects, often on different threads (records freed by the governance writer), where
/// glibc's arenas cost about a fifth of a request's instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Switchyard: one OpenAI-compatible gateway in front of every AI provider.
///
/// With no command, serves conf/demo.yaml (a built-in mock provider and the demo key
/// `sk-switchyard-demo`) on 127.0.0.1:8080, metrics on 127.0.0.1:9091.
#[derive(Parser)]
#[command(name = "switchyard", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway in the foreground. SIGTERM/SIGINT finish in-flight requests and exit
    /// (within server.grace_period_seconds).
    Serve {
        /// The YAML configuration file.
        #[arg(short, long, default_value = "conf/demo.yaml")]
        config: PathBuf,
        /// Take over the listening sockets of a running instance (zero-downtime upgrade): start
        /// the new binary with --upgrade, then send SIGQUIT to the old process.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a configuration: prints every problem (key path and why) and exits non-zero
    /// if there is any, like `nginx -t`.
    Check {
        /// The YAML configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Manage gateway keys in the store: create, list, show, revoke, rotate.
    #[command(subcommand)]
    Keys(cli::KeysCmd),
    /// Per-user budgets.
    #[command(subcommand)]
    Users(cli::UsersCmd),
    /// Spend and tokens from the store, grouped by user, key, model or provider.
    Usage(cli::UsageArgs),
    /// The admin API's second factor.
    #[command(subcommand)]
    Admin(cli::AdminCmd),
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        eprintln!("{}: configuration is invalid:", path.display());
        for p in &errors.0 {
            eprintln!("  {p}");
        }
        ExitCode::from(1)
    })
}

/// env_logger from `RUST_LOG` (default `info`), with two caps so that keys never reach a log
/// whatever the level: `pingora_proxy` logs the raw bytes of a malformed request header
/// (`Authorization` included) and the upstream request header (with the injected credential)
/// at `debug`, so it stays at `info`; `pingora_core` writes upstream request headers at `trace`,
/// so it stays at `debug`.
fn init_logging() {
    let env = || env_logger::Env::default().default_filter_or("info");
    let probe = env_logger::Builder::from_env(env()).build();
    let mut builder = env_logger::Builder::from_env(env());
    for (target, leaks_at, cap) in [
        ("pingora_proxy", log::Level::Debug, log::LevelFilter::Info),
        ("pingora_core", log::Level::Trace, log::LevelFilter::Debug),
    ] {
        let meta = log::Metadata::builder()
            .level(leaks_at)
            .target(target)
            .build();
        if log::Log::enabled(&probe, &meta) {
            builder.filter_module(target, cap);
        }
    }
    builder.init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command.unwrap_or(Command::Serve {
        config: PathBuf::from("conf/demo.yaml"),
        upgrade: false,
    }) {
        Command::Check { config } => match load(&config) {
            Ok(c) => {
                println!(
                    "{}: configuration is valid ({}, {})",
                    config.display(),
                    switchyard::cli::count(c.providers.iter().count(), "provider"),
                    switchyard::cli::count(c.keys.len(), "key")
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Keys(cmd) => cli::keys(cmd),
        Command::Users(cmd) => cli::users(cmd),
        Command::Usage(args) => cli::usage(args),
        Command::Admin(cmd) => cli::admin(cmd),
        Command::Serve { config, upgrade } => match load(&config) {
            Ok(c) => {
                log::info!("serving {} on {}", config.display(), c.server.listen);
                switchyard::server::run_forever(Arc::new(c), config, upgrade)
            }
            Err(code) => code,
        },
    }
}
