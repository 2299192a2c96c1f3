//! The audit trail: authentication failures, key lifecycle events and admin actions, each
//! written to the store (table `sy_audit`, through the batch writer) and as one JSON line to
//! the audit stream (stderr, or `audit.file`). Events carry names, ids and reasons, never a
//! key, a digest, a TOTP code or request content.
//!
//! Per-request records (time, user, key id, model, provider, status, tokens, cost) go to
//! the store, in blocks of a batch each (`sy_usage_blocks`, read back with `switchyard
//! usage --records`), and to the JSON access log on stdout, which carries the key id too.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
// tokio's bounded channel from plain threads: slots allocated in blocks as events queue, where
// `std::sync::mpsc::sync_channel` allocated and touched all 8 Ki slots (0.9 MiB) at start.
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::mpsc::{channel, Receiver, Sender};

use serde::Serialize;

use crate::store::AuditEvent;

/// Builds an event stamped now.
pub fn event(kind: &str, actor: &str, subject: &str, detail: serde_json::Value) -> AuditEvent {
    AuditEvent {
        ts_ms: now_ms(),
        event: kind.to_owned(),
        actor: actor.chars().take(200).collect(),
        subject: subject.chars().take(200).collect(),
        detail: detail.to_string(),
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    audit: &'a str,
    actor: &'a str,
    subject: &'a str,
    detail: serde_json::Value,
}

/// The JSON audit stream, written by its own thread (never by a request handler).
pub struct AuditStream {
    tx: Sender<AuditEvent>,
    pub dropped: AtomicU64,
}

impl AuditStream {
    /// `file`: append to this file; None: stderr.
    pub fn start(file: Option<&str>) -> std::io::Result<Arc<AuditStream>> {
        let out: Box<dyn Write + Send> = match file {
            Some(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            None => Box::new(std::io::stderr()),
        };
        let (tx, rx) = channel(8192);
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || write_loop(rx, out))?;
        Ok(Arc::new(AuditStream {
            tx,
            dropped: AtomicU64::new(0),
        }))
    }

    pub fn log(&self, e: AuditEvent) {
        if let Err(TrySendError::Full(_) | TrySendError::Closed(_)) = self.tx.try_send(e) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn write_loop(mut rx: Receiver<AuditEvent>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::new(out);
    loop {
        let mut wrote = false;
        loop {
            match rx.try_recv() {
                Ok(e) => {
                    let line = Line {
                        ts: crate::access_log::now_rfc3339_at(e.ts_ms),
                        audit: &e.event,
                        actor: &e.actor,
                        subject: &e.subject,
                        detail: serde_json::from_str(&e.detail).unwrap_or_default(),
                    };
                    if serde_json::to_writer(&mut out, &line).is_ok() {
                        let _ = out.write_all(b"\n");
                    }
                    wrote = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        if wrote {
            let _ = out.flush();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
