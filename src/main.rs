//! The `switchyard` command line: `serve` runs the gateway, `check` validates a config.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use switchyard::cli;
use switchyard::config::Config;

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match cli.command.unwrap_or(Command::Serve {
        config: PathBuf::from("conf/demo.yaml"),
        upgrade: false,
    }) {
        Command::Check { config } => match load(&config) {
            Ok(c) => {
                println!(
                    "{}: configuration is valid ({} providers, {} keys)",
                    config.display(),
                    c.providers.iter().count(),
                    c.keys.len()
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
