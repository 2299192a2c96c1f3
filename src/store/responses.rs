//! The `sy_responses` table: stored Responses-API answers (see [`crate::response_store`]),
//! the same portable SQL on SQLite and PostgreSQL.

use sqlx::Row;

use super::{Result, Store};

/// One stored response: the input items it answered (the whole conversation so far) and
/// the `response` object, both as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseRow {
    pub id: String,
    pub owner: String,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: i64,
    pub input_items: String,
    pub response: String,
}

impl Store {
    /// Inserts (or replaces, for the same id and owner) a stored response.
    pub async fn put_response(&self, r: &ResponseRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO sy_responses (id, owner, created_at, expires_at, input_items, response) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET created_at = excluded.created_at, \
             expires_at = excluded.expires_at, input_items = excluded.input_items, \
             response = excluded.response WHERE sy_responses.owner = excluded.owner",
        )
        .bind(&r.id)
        .bind(&r.owner)
        .bind(r.created_at)
        .bind(r.expires_at)
        .bind(&r.input_items)
        .bind(&r.response)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The response `id` if `owner` stored it and it has not expired at `now`.
    pub async fn get_response(
        &self,
        id: &str,
        owner: &str,
        now: i64,
    ) -> Result<Option<ResponseRow>> {
        let row = sqlx::query(
            "SELECT id, owner, created_at, expires_at, input_items, response FROM sy_responses \
             WHERE id = $1 AND owner = $2 AND expires_at > $3",
        )
        .bind(id)
        .bind(owner)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(ResponseRow {
                id: r.try_get(0)?,
                owner: r.try_get(1)?,
                created_at: r.try_get(2)?,
                expires_at: r.try_get(3)?,
                input_items: r.try_get(4)?,
                response: r.try_get(5)?,
            })
        })
        .transpose()
    }

    /// Deletes the response `id` of `owner`; false when there was none.
    pub async fn delete_response(&self, id: &str, owner: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM sy_responses WHERE id = $1 AND owner = $2")
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Deletes the responses that expired before `now`; returns how many.
    pub async fn delete_expired_responses(&self, now: i64) -> Result<u64> {
        let r = sqlx::query("DELETE FROM sy_responses WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}
