//! Usage records stored as blocks: one row of `sy_usage_blocks` holds a batch of requests.
//!
//! A row per request costs SQLite ≈ 1.4 µs of CPU (record encoding, two B-tree inserts:
//! table and time index), ≈ 5 % of a request on the core that serves it, and the batch
//! writer's bursts of such work held requests back (load bench p99). A block is one insert
//! per batch: its records are encoded with postcard (serde, varint integers) against a
//! table of the distinct names in the batch (users, key ids, providers, models, routes
//! repeat from request to request), ≈ 0.1 µs and ≈ 30–60 bytes per record. Reports and
//! exports decode the blocks of their time range; budgets read the daily roll-up, not
//! these. Decoding never panics: a damaged block is an error naming it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::UsageRecord;

/// Bumped when the encoding changes; readers refuse versions they do not know.
const VERSION: u8 = 1;

/// At most this many records per block (bounds one row's size to a few hundred KB).
pub const MAX_RECORDS: usize = 8192;

#[derive(Serialize, Deserialize)]
struct Block<'a> {
    version: u8,
    /// The block's earliest time; rows carry their offset from it.
    first_ts_ms: i64,
    #[serde(borrow)]
    names: Vec<&'a str>,
    #[serde(borrow)]
    rows: Vec<Row<'a>>,
}

#[derive(Serialize, Deserialize)]
struct Row<'a> {
    ts_offset_ms: i64,
    request_id: &'a str,
    user: u32,
    key_id: u32,
    provider: u32,
    model: u32,
    route: u32,
    status: i32,
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: f64,
}

/// The block's name table. Consecutive records nearly always repeat the previous record's
/// user, key, provider, model and route, so each field first compares with the name it
/// had last time (a short `memcmp`) before hashing.
#[derive(Default)]
struct Names<'a> {
    list: Vec<&'a str>,
    index: HashMap<&'a str, u32>,
    last: [Option<u32>; 5],
}

impl<'a> Names<'a> {
    fn id(&mut self, field: usize, s: &'a str) -> u32 {
        if let Some(id) = self.last[field] {
            if self.list[id as usize] == s {
                return id;
            }
        }
        let id = *self.index.entry(s).or_insert_with(|| {
            self.list.push(s);
            (self.list.len() - 1) as u32
        });
        self.last[field] = Some(id);
        id
    }
}

/// One encoded block, with what `sy_usage_blocks` stores beside it.
pub struct Encoded {
    pub first_ts_ms: i64,
    pub last_ts_ms: i64,
    pub records: i64,
    pub data: Vec<u8>,
}

/// Encodes up to [`MAX_RECORDS`] records (callers split larger batches with `chunks`).
pub fn encode(records: &[UsageRecord]) -> Result<Encoded, postcard::Error> {
    let first_ts_ms = records.iter().map(|r| r.ts_ms).min().unwrap_or(0);
    let last_ts_ms = records.iter().map(|r| r.ts_ms).max().unwrap_or(0);
    let mut names = Names::default();
    let mut rows = Vec::with_capacity(records.len());
    for r in records {
        rows.push(Row {
            ts_offset_ms: r.ts_ms - first_ts_ms,
            request_id: &r.request_id,
            user: names.id(0, &r.user),
            key_id: names.id(1, &r.key_id),
            provider: names.id(2, &r.provider),
            model: names.id(3, &r.model),
            route: names.id(4, r.route),
            status: r.status,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost_usd: super::stored_cost(r),
        });
    }
    let data = postcard::to_allocvec(&Block {
        version: VERSION,
        first_ts_ms,
        names: names.list,
        rows,
    })?;
    Ok(Encoded {
        first_ts_ms,
        last_ts_ms,
        records: records.len() as i64,
        data,
    })
}

/// A record read back from a block (owned: blocks are decoded for reports and exports).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredUsage {
    pub ts_ms: i64,
    pub request_id: String,
    pub user: String,
    pub key_id: String,
    pub provider: String,
    pub model: String,
    pub route: String,
    pub status: i32,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

/// Why a block could not be read.
#[derive(Debug)]
pub enum DecodeError {
    Malformed(postcard::Error),
    Version(u8),
    NameIndex(u32),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Malformed(e) => write!(f, "malformed usage block: {e}"),
            DecodeError::Version(v) => write!(f, "usage block of unknown version {v}"),
            DecodeError::NameIndex(i) => write!(f, "usage block refers to missing name {i}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Calls `each` for every record of the block.
pub fn decode(data: &[u8], mut each: impl FnMut(StoredUsage)) -> Result<(), DecodeError> {
    let block: Block = postcard::from_bytes(data).map_err(DecodeError::Malformed)?;
    if block.version != VERSION {
        return Err(DecodeError::Version(block.version));
    }
    let name = |i: u32| {
        block
            .names
            .get(i as usize)
            .map(|s| (*s).to_owned())
            .ok_or(DecodeError::NameIndex(i))
    };
    for r in &block.rows {
        each(StoredUsage {
            ts_ms: block.first_ts_ms.saturating_add(r.ts_offset_ms),
            request_id: r.request_id.to_owned(),
            user: name(r.user)?,
            key_id: name(r.key_id)?,
            provider: name(r.provider)?,
            model: name(r.model)?,
            route: name(r.route)?,
            status: r.status,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost_usd: r.cost_usd,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn record(i: i64, user: &str, model: &str) -> UsageRecord {
        UsageRecord {
            ts_ms: 1_780_000_000_000 + i * 7 - (i % 3) * 20,
            request_id: format!("req-{i:04}"),
            user: Arc::from(user),
            key_id: Arc::from(format!("key_{user}").as_str()),
            provider: Arc::from("openai"),
            model: model.to_owned(),
            route: "chat_completions",
            status: if i % 10 == 0 { 429 } else { 200 },
            input_tokens: 100 + i,
            output_tokens: 20 + i,
            cost_usd: 0.000_123 * i as f64,
        }
    }

    #[test]
    fn every_field_of_every_record_comes_back() {
        let records: Vec<_> = (0..500)
            .map(|i| {
                record(
                    i,
                    ["alice", "bob"][i as usize % 2],
                    ["gpt-4", "m"][i as usize % 2],
                )
            })
            .collect();
        let e = encode(&records).unwrap();
        assert_eq!(e.records, 500);
        assert_eq!(
            e.first_ts_ms,
            records.iter().map(|r| r.ts_ms).min().unwrap()
        );
        assert_eq!(e.last_ts_ms, records.iter().map(|r| r.ts_ms).max().unwrap());
        // The point of blocks: names once per block, not per record.
        assert!(e.data.len() < 500 * 40, "{} bytes", e.data.len());
        let mut back = Vec::new();
        decode(&e.data, |r| back.push(r)).unwrap();
        assert_eq!(back.len(), 500);
        for (r, b) in records.iter().zip(&back) {
            assert_eq!(b.ts_ms, r.ts_ms);
            assert_eq!(b.request_id, r.request_id);
            assert_eq!(b.user, &*r.user);
            assert_eq!(b.key_id, &*r.key_id);
            assert_eq!(b.provider, &*r.provider);
            assert_eq!(b.model, r.model);
            assert_eq!(b.route, r.route);
            assert_eq!(b.status, r.status);
            assert_eq!(
                (b.input_tokens, b.output_tokens),
                (r.input_tokens, r.output_tokens)
            );
            assert_eq!(b.cost_usd, r.cost_usd);
        }
    }

    #[test]
    fn a_cost_that_is_not_a_number_is_stored_as_zero() {
        let mut r = record(1, "alice", "gpt-4");
        r.cost_usd = f64::NAN;
        let mut back = Vec::new();
        decode(&encode(&[r]).unwrap().data, |r| back.push(r)).unwrap();
        assert_eq!(back[0].cost_usd, 0.0);
    }

    #[test]
    fn damaged_blocks_are_errors_not_panics() {
        let e = encode(&[record(1, "alice", "gpt-4"), record(2, "bob", "m")]).unwrap();
        for cut in 0..e.data.len() {
            assert!(decode(&e.data[..cut], |_| {}).is_err(), "cut at {cut}");
        }
        let mut other_version = e.data.clone();
        other_version[0] = 9;
        assert!(matches!(
            decode(&other_version, |_| {}),
            Err(DecodeError::Version(9))
        ));
        // Flipping bytes may still decode (to other values) but must never panic.
        for i in 0..e.data.len() {
            let mut d = e.data.clone();
            d[i] ^= 0xff;
            let _ = decode(&d, |_| {});
        }
    }
}
