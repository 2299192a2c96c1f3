//! Governance subcommands: `keys`, `users`, `usage`, `admin totp-setup`. They work on the
//! store directly (the same one the gateway uses, given by `--store` or by `auth.store` in
//! the config file), so they need no running gateway; running gateways pick changes up
//! within `auth.refresh_seconds`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::governance::audit::event;
use crate::governance::budgets::{format_time, parse_duration, Period};
use crate::governance::keys::{self, split_patterns, KeySpec};
use crate::governance::{totp, usage};
use crate::store::{AuditEvent, GroupBy, Store, StoreUrl};

/// Where the store is.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// The store URL (`sqlite:PATH` or `postgres://...`); overrides the config's auth.store.
    #[arg(long, env = "SWITCHYARD_STORE")]
    pub store: Option<String>,
    /// Read auth.store from this configuration file.
    #[arg(short, long, default_value = "conf/gateway.yaml")]
    pub config: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Create a key for a user; the key is printed once (only its SHA-256 is stored).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// Who the key is for: budgets (`users budget`), usage reports and the access log
        /// are per user; one user may hold several keys.
        #[arg(long)]
        user: String,
        /// Allowed models, comma-separated globs (`gpt-*,claude-*`); default all.
        #[arg(long)]
        models: Option<String>,
        /// Allowed providers, comma-separated; default all.
        #[arg(long)]
        providers: Option<String>,
        /// Budget in USD per period.
        #[arg(long)]
        budget_usd: Option<f64>,
        /// day, week, month (default) or total.
        #[arg(long)]
        period: Option<String>,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u64>,
        /// Tokens per minute.
        #[arg(long)]
        tpm: Option<u64>,
        /// Most streams open at once (default: server.max_streams_per_key).
        #[arg(long)]
        max_streams: Option<u64>,
        /// Most requests in flight at once (default: server.max_requests_in_flight_per_key).
        #[arg(long)]
        max_requests_in_flight: Option<u64>,
        /// Expiry date, YYYY-MM-DD (UTC).
        #[arg(long)]
        expires: Option<String>,
        /// Print the new key as JSON (with its settings) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never the keys themselves).
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Include revoked keys.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show one key's settings.
    Show {
        #[command(flatten)]
        store: StoreArgs,
        id: String,
    },
    /// Revoke a key: refused by every gateway within auth.refresh_seconds.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        id: String,
    },
    /// Give a key a new secret (same id and settings); the old one stops working.
    Rotate {
        #[command(flatten)]
        store: StoreArgs,
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum UsersCmd {
    /// Set (or with no --budget-usd, remove) a user's budget over all their keys.
    Budget {
        #[command(flatten)]
        store: StoreArgs,
        user: String,
        #[arg(long)]
        budget_usd: Option<f64>,
        #[arg(long, default_value = "month")]
        period: String,
    },
    /// List users with a budget.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Args, Debug)]
pub struct UsageArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// user, key, model or provider.
    #[arg(long, default_value = "user")]
    pub by: String,
    /// How far back: 7d, 24h, 30m, 2w.
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// table, csv or json.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Print every request's record since then (one JSON object per line: time, request
    /// id, user, key id, provider, model, route, status, tokens, cost) instead of a report.
    #[arg(long)]
    pub records: bool,
}

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Create the admin API's TOTP secret (replacing any previous one) and print the
    /// otpauth:// URI to add to an authenticator app.
    TotpSetup {
        #[command(flatten)]
        store: StoreArgs,
        /// The account name shown in the authenticator app.
        #[arg(long, default_value = "admin")]
        account: String,
    },
    /// Print the current TOTP code (for scripts and tests on a trusted host).
    TotpCode {
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(1)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// `n thing` / `n things`, for messages.
pub fn count(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

async fn open(args: &StoreArgs) -> Result<Store, String> {
    let url = match &args.store {
        Some(s) => StoreUrl::parse(s).map_err(|e| format!("--store: {e}"))?,
        None => crate::config::store_url_from_file(&args.config)?,
    };
    Store::open(&url)
        .await
        .map_err(|e| format!("store {}: {e}", url.redacted()))
}

/// Audit events from the CLI go to the store and, as JSON, to stderr.
async fn audit(store: &Store, e: AuditEvent) {
    eprintln!(
        "{}",
        serde_json::json!({"ts": crate::access_log::now_rfc3339_at(e.ts_ms), "audit": e.event, "actor": e.actor, "subject": e.subject})
    );
    if let Err(err) = store.write_batch(&[], &[e]).await {
        eprintln!("warning: audit event not stored: {err}");
    }
}

fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

fn print_key_table(keys: &[crate::store::KeyRecord]) {
    println!(
        "{:<16}  {:<16}  {:<12}  {:<8}  {:<20}  {:<10}  {:<12}  created",
        "id", "user", "prefix", "status", "models", "budget", "rpm/tpm"
    );
    let now = keys::now_secs();
    for k in keys {
        let budget = k
            .budget_usd
            .map(|b| format!("{b}/{}", k.period.as_deref().unwrap_or("month")))
            .unwrap_or_else(|| "-".into());
        let limits = format!(
            "{}/{}",
            k.rpm.map_or("-".into(), |v| v.to_string()),
            k.tpm.map_or("-".into(), |v| v.to_string())
        );
        let models = if k.models.is_empty() {
            "*".into()
        } else {
            k.models.join(",")
        };
        println!(
            "{:<16}  {:<16}  {:<12}  {:<8}  {:<20}  {:<10}  {:<12}  {}",
            k.id,
            k.user,
            format!("{}…", k.prefix),
            keys::status(k, now),
            models,
            budget,
            limits,
            format_time(k.created_at)
        );
    }
}

pub fn keys(cmd: KeysCmd) -> ExitCode {
    runtime().block_on(async move {
        match cmd {
            KeysCmd::Create {
                store, user, models, providers, budget_usd, period, rpm, tpm, max_streams,
                max_requests_in_flight, expires, json,
            } => {
                let store = match open(&store).await {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                };
                let spec = KeySpec {
                    user,
                    models: models.as_deref().map(split_patterns).unwrap_or_default(),
                    providers: providers.as_deref().map(split_patterns).unwrap_or_default(),
                    budget_usd,
                    period,
                    rpm,
                    tpm,
                    max_streams,
                    max_requests_in_flight,
                    expires,
                };
                match keys::create(&store, &spec).await {
                    Ok(c) => {
                        audit(&store, event("key_created", &actor(), &c.record.id, serde_json::json!({"user": c.record.user}))).await;
                        if json {
                            let mut v = keys::describe(&c.record);
                            v["key"] = serde_json::json!(c.secret);
                            println!("{v}");
                        } else {
                            println!("{}", c.secret);
                            eprintln!(
                                "created {} for {} — the key above is shown only this once; store it now",
                                c.record.id, c.record.user
                            );
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                }
            }
            KeysCmd::List { store, all, json } => {
                let store = match open(&store).await {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                };
                match store.list_keys(all).await {
                    Ok(keys) if json => {
                        println!("{}", serde_json::json!(keys.iter().map(keys::describe).collect::<Vec<_>>()));
                        ExitCode::SUCCESS
                    }
                    Ok(keys) => {
                        print_key_table(&keys);
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                }
            }
            KeysCmd::Show { store, id } => {
                let store = match open(&store).await {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                };
                match store.get_key(&id).await {
                    Ok(Some(k)) => {
                        println!("{}", serde_json::to_string_pretty(&keys::describe(&k)).unwrap_or_default());
                        ExitCode::SUCCESS
                    }
                    Ok(None) => fail(format!("no key {id}")),
                    Err(e) => fail(e),
                }
            }
            KeysCmd::Revoke { store, id } => {
                let store = match open(&store).await {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                };
                match store.revoke_key(&id, keys::now_secs()).await {
                    Ok(true) => {
                        audit(&store, event("key_revoked", &actor(), &id, serde_json::json!({}))).await;
                        eprintln!("revoked {id}");
                        ExitCode::SUCCESS
                    }
                    Ok(false) => fail(format!("no live key {id}")),
                    Err(e) => fail(e),
                }
            }
            KeysCmd::Rotate { store, id, json } => {
                let store = match open(&store).await {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                };
                match keys::rotate(&store, &id).await {
                    Ok(Some(c)) => {
                        audit(&store, event("key_rotated", &actor(), &id, serde_json::json!({}))).await;
                        if json {
                            let mut v = keys::describe(&c.record);
                            v["key"] = serde_json::json!(c.secret);
                            println!("{v}");
                        } else {
                            println!("{}", c.secret);
                            eprintln!("rotated {id} — the new key is shown only this once; the old one stops working");
                        }
                        ExitCode::SUCCESS
                    }
                    Ok(None) => fail(format!("no live key {id}")),
                    Err(e) => fail(e),
                }
            }
        }
    })
}

pub fn users(cmd: UsersCmd) -> ExitCode {
    runtime().block_on(async move {
        match cmd {
            UsersCmd::Budget {
                store,
                user,
                budget_usd,
                period,
            } => {
                let store = match open(&store).await {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                };
                let Some(p) = Period::parse(&period) else {
                    return fail("--period must be day, week, month or total");
                };
                if budget_usd.is_some_and(|b| !(b.is_finite() && b >= 0.0)) {
                    return fail("--budget-usd must be a non-negative number");
                }
                match store
                    .set_user_budget(
                        &user,
                        budget_usd,
                        budget_usd.map(|_| p.as_str()),
                        keys::now_secs(),
                    )
                    .await
                {
                    Ok(()) => {
                        audit(
                            &store,
                            event(
                                "user_budget_set",
                                &actor(),
                                &user,
                                serde_json::json!({"budget_usd": budget_usd, "period": p.as_str()}),
                            ),
                        )
                        .await;
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                }
            }
            UsersCmd::List { store } => {
                let store = match open(&store).await {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                };
                match store.list_users().await {
                    Ok(users) => {
                        println!("{:<24}  {:>12}  period", "user", "budget_usd");
                        for u in users {
                            println!(
                                "{:<24}  {:>12}  {}",
                                u.name,
                                u.budget_usd.map_or("-".into(), |b| format!("{b:.2}")),
                                u.period.as_deref().unwrap_or("-")
                            );
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                }
            }
        }
    })
}

pub fn usage(args: UsageArgs) -> ExitCode {
    let Some(by) = GroupBy::parse(&args.by) else {
        return fail("--by must be user, key, model or provider");
    };
    let Some(format) = usage::Format::parse(&args.format) else {
        return fail("--format must be table, csv or json");
    };
    let Some(secs) = parse_duration(&args.since) else {
        return fail("--since must look like 7d, 24h, 30m or 2w");
    };
    runtime().block_on(async move {
        let store = match open(&args.store).await {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        let since_ms = crate::governance::audit::now_ms() - secs * 1000;
        if args.records {
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut io_error = None;
            let read = store
                .each_usage_since(since_ms, |u| {
                    if io_error.is_none() {
                        if let Err(e) = serde_json::to_writer(&mut out, &u)
                            .map_err(std::io::Error::from)
                            .and_then(|()| out.write_all(b"\n"))
                        {
                            io_error = Some(e);
                        }
                    }
                })
                .await;
            return match (read, io_error.map_or_else(|| out.flush(), Err)) {
                (Err(e), _) => fail(e),
                (_, Err(e)) => fail(e),
                _ => ExitCode::SUCCESS,
            };
        }
        match store.usage_report(by, since_ms).await {
            Ok(rows) => {
                print!("{}", usage::render(format, by, &args.since, &rows));
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        }
    })
}

pub fn admin(cmd: AdminCmd) -> ExitCode {
    runtime().block_on(async move {
        match cmd {
            AdminCmd::TotpSetup { store, account } => {
                let store = match open(&store).await {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                };
                let (secret, uri) = match totp::new_secret(&account) {
                    Ok(v) => v,
                    Err(e) => return fail(e),
                };
                if let Err(e) = store.set_totp_secret(&secret).await {
                    return fail(e);
                }
                audit(&store, event("admin_totp_setup", &actor(), &account, serde_json::json!({}))).await;
                println!("{uri}");
                eprintln!("add this URI to an authenticator app (it replaces any earlier secret); admin calls need its codes in x-switchyard-totp");
                if !store.seals_secrets() {
                    eprintln!(
                        "WARNING: the TOTP secret is stored in PLAIN TEXT: set {} (openssl rand -hex 32) or the systemd credential {} to encrypt it, for this command and the gateway",
                        crate::store::secret_key::ENV,
                        crate::store::secret_key::CREDENTIAL
                    );
                }
                ExitCode::SUCCESS
            }
            AdminCmd::TotpCode { store } => {
                let store = match open(&store).await {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                };
                match store.totp_secret().await {
                    Ok(Some(secret)) => match totp::code_at(&secret, keys::now_secs() as u64) {
                        Ok(code) => {
                            println!("{code}");
                            ExitCode::SUCCESS
                        }
                        Err(e) => fail(e),
                    },
                    Ok(None) => fail("no TOTP secret: run `switchyard admin totp-setup`"),
                    Err(e) => fail(e),
                }
            }
        }
    })
}
