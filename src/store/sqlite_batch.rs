//! The usage batch on SQLite, written through the connection's raw handle.
//!
//! The batch is the store's one hot write (a flush every 50 ms under load). Through sqlx
//! every bound value becomes an argument object, copied again for its worker thread, and
//! each statement is a round trip to that thread (docs/BENCHMARKS.md). Here the usage
//! blocks ([`usage_block`]), the daily roll-up and the audit events are bound and stepped
//! in one `BEGIN IMMEDIATE` transaction on the caller's thread (the governance thread,
//! never a Pingora worker) while sqlx's handle lock keeps the connection's own worker
//! away. Same tables, same SQL meaning as the portable path used for PostgreSQL. Values
//! are bound `SQLITE_STATIC`: the batch outlives every statement here.

use std::ffi::{c_int, CStr};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use libsqlite3_sys as ffi;

use super::{usage_block::Encoded, AuditEvent};

type Result<T> = std::result::Result<T, sqlx::Error>;

fn error(db: *mut ffi::sqlite3, what: &str) -> sqlx::Error {
    // SAFETY: `db` is an open connection; sqlite3_errmsg returns a NUL-terminated string
    // owned by it, valid until the next call on it, and copied here at once.
    let msg = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) }.to_string_lossy();
    sqlx::Error::Protocol(format!("sqlite {what}: {msg}"))
}

/// A prepared statement whose text bindings borrow from data living for `'a`.
struct Stmt<'a> {
    db: *mut ffi::sqlite3,
    raw: *mut ffi::sqlite3_stmt,
    _borrows: PhantomData<&'a str>,
}

impl<'a> Stmt<'a> {
    fn prepare(db: *mut ffi::sqlite3, sql: &CStr) -> Result<Stmt<'a>> {
        let mut raw = ptr::null_mut();
        // SAFETY: `db` is open and exclusively ours (the handle lock is held); `sql` is
        // NUL-terminated; `raw` receives the statement, finalized in Drop.
        let rc =
            unsafe { ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut raw, ptr::null_mut()) };
        if rc != ffi::SQLITE_OK || raw.is_null() {
            return Err(error(db, "prepare"));
        }
        Ok(Stmt {
            db,
            raw,
            _borrows: PhantomData,
        })
    }

    fn check(&self, rc: c_int) -> Result<()> {
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(error(self.db, "bind"))
        }
    }

    fn int(&self, i: c_int, v: i64) -> Result<()> {
        // SAFETY: a live statement; out-of-range indexes are reported, not undefined.
        self.check(unsafe { ffi::sqlite3_bind_int64(self.raw, i, v) })
    }

    fn real(&self, i: c_int, v: f64) -> Result<()> {
        // SAFETY: as above.
        self.check(unsafe { ffi::sqlite3_bind_double(self.raw, i, v) })
    }

    fn text(&self, i: c_int, v: &'a str) -> Result<()> {
        // SAFETY: `v` lives for 'a, longer than this statement (finalized in Drop), so
        // SQLITE_STATIC (no copy) is sound; the length is explicit, so no NUL is needed.
        self.check(unsafe {
            ffi::sqlite3_bind_text64(
                self.raw,
                i,
                v.as_ptr().cast(),
                v.len() as u64,
                ffi::SQLITE_STATIC(),
                ffi::SQLITE_UTF8 as u8,
            )
        })
    }

    fn blob(&self, i: c_int, v: &'a [u8]) -> Result<()> {
        // SAFETY: as for `text`: `v` outlives the statement, so no copy is needed.
        self.check(unsafe {
            ffi::sqlite3_bind_blob64(
                self.raw,
                i,
                v.as_ptr().cast(),
                v.len() as u64,
                ffi::SQLITE_STATIC(),
            )
        })
    }

    /// Runs the statement (an INSERT: no rows) and makes it ready for the next bindings.
    fn run(&self) -> Result<()> {
        // SAFETY: a live statement with every parameter bound.
        let rc = unsafe { ffi::sqlite3_step(self.raw) };
        // SAFETY: as above; reset keeps the bindings, which the next row replaces.
        unsafe { ffi::sqlite3_reset(self.raw) };
        if rc == ffi::SQLITE_DONE {
            Ok(())
        } else {
            Err(error(self.db, "insert"))
        }
    }
}

impl Drop for Stmt<'_> {
    fn drop(&mut self) {
        // SAFETY: prepared by us, finalized once.
        unsafe { ffi::sqlite3_finalize(self.raw) };
    }
}

fn exec(db: *mut ffi::sqlite3, sql: &CStr) -> Result<()> {
    // SAFETY: an open connection held exclusively; no callback.
    let rc = unsafe { ffi::sqlite3_exec(db, sql.as_ptr(), None, ptr::null_mut(), ptr::null_mut()) };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(error(db, "exec"))
    }
}

/// Writes the batch in one transaction: all of it, or (on any error) none of it.
pub fn write_batch(
    db: NonNull<ffi::sqlite3>,
    blocks: &[Encoded],
    audit: &[AuditEvent],
) -> Result<()> {
    let db = db.as_ptr();
    exec(db, c"BEGIN IMMEDIATE")?;
    let written = write_rows(db, blocks, audit).and_then(|()| exec(db, c"COMMIT"));
    if written.is_err() {
        let _ = exec(db, c"ROLLBACK");
    }
    written
}

fn write_rows(db: *mut ffi::sqlite3, blocks: &[Encoded], audit: &[AuditEvent]) -> Result<()> {
    if !blocks.is_empty() {
        let insert = Stmt::prepare(
            db,
            c"INSERT INTO sy_usage_blocks (first_ts, last_ts, records, data) VALUES (?,?,?,?)",
        )?;
        let upsert = Stmt::prepare(
            db,
            c"INSERT INTO sy_spend_daily (day, key_id, user_name, cost_usd, tokens, requests) VALUES (?,?,?,?,?,?) \
              ON CONFLICT (day, key_id) DO UPDATE SET cost_usd = sy_spend_daily.cost_usd + excluded.cost_usd, \
              tokens = sy_spend_daily.tokens + excluded.tokens, requests = sy_spend_daily.requests + excluded.requests",
        )?;
        for b in blocks {
            insert.int(1, b.first_ts_ms)?;
            insert.int(2, b.last_ts_ms)?;
            insert.int(3, b.records)?;
            insert.blob(4, &b.data)?;
            insert.run()?;
            for d in &b.daily {
                upsert.int(1, d.day)?;
                upsert.text(2, &d.key_id)?;
                upsert.text(3, &d.user)?;
                upsert.real(4, d.cost_usd)?;
                upsert.int(5, d.tokens)?;
                upsert.int(6, d.requests)?;
                upsert.run()?;
            }
        }
    }
    if !audit.is_empty() {
        let insert = Stmt::prepare(
            db,
            c"INSERT INTO sy_audit (ts, event, actor, subject, detail) VALUES (?,?,?,?,?)",
        )?;
        for a in audit {
            insert.int(1, a.ts_ms)?;
            insert.text(2, &a.event)?;
            insert.text(3, &a.actor)?;
            insert.text(4, &a.subject)?;
            insert.text(5, &a.detail)?;
            insert.run()?;
        }
    }
    Ok(())
}
