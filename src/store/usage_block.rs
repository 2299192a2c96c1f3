//! Usage records stored as blocks: one row of `sy_usage_blocks` holds a batch of requests.
//!
//! A row per request costs SQLite ≈ 1.4 µs of CPU (record encoding, two B-tree inserts:
//! table and time index), ≈ 5 % of a request on the core that serves it, and the batch
//! writer's bursts of such work held requests back (load bench p99). A block is one insert
//! per batch: its records are encoded with postcard (serde, varint integers) against a
//! table of the distinct names in the batch (users, key ids, providers, models, routes
//! repeat from request to request), ≈ 0.1 µs and ≈ 30–60 bytes per record. The records
//! are encoded where they are made ([`BlockBuilder`], on the request path), not by the
//! writer: a writer thread doing that work in bursts every flush still held requests back
//! on a shared core. Reports and exports decode the blocks of their time range; budgets
//! read the daily roll-up, not these. Decoding never panics: a damaged block is an error
//! naming it.

use std::collections::HashMap;
use std::sync::Arc;

use postcard::ser_flavors::Flavor;
use serde::{Deserialize, Serialize};

use super::UsageRecord;

/// Bumped when the encoding changes; readers refuse versions they do not know. Version 2
/// added `cached` at the end of each row (version 1 blocks still decode, as not cached);
/// version 3 the request's trace id after it (older blocks decode without one).
const VERSION: u8 = 3;

/// At most this many records per block (bounds one row's size to a few hundred KB).
pub const MAX_RECORDS: usize = 8192;

#[derive(Serialize, Deserialize)]
struct Block<'a, R = Row<'a>> {
    version: u8,
    /// The time the rows' offsets count from (the block's first record's).
    first_ts_ms: i64,
    #[serde(borrow)]
    names: Vec<&'a str>,
    rows: Vec<R>,
}

/// The block's version alone (postcard: the first byte of the block).
#[derive(Deserialize)]
struct Version {
    version: u8,
}

/// A version 2 row: [`Row`] without `trace_id`.
#[derive(Deserialize)]
struct RowV2<'a> {
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
    cached: bool,
}

impl<'a> From<RowV2<'a>> for Row<'a> {
    fn from(r: RowV2<'a>) -> Row<'a> {
        Row {
            ts_offset_ms: r.ts_offset_ms,
            request_id: r.request_id,
            user: r.user,
            key_id: r.key_id,
            provider: r.provider,
            model: r.model,
            route: r.route,
            status: r.status,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost_usd: r.cost_usd,
            cached: r.cached,
            trace_id: None,
        }
    }
}

/// A version 1 row: [`Row`] without `cached` and `trace_id`.
#[derive(Deserialize)]
struct RowV1<'a> {
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

impl<'a> From<RowV1<'a>> for Row<'a> {
    fn from(r: RowV1<'a>) -> Row<'a> {
        Row {
            ts_offset_ms: r.ts_offset_ms,
            request_id: r.request_id,
            user: r.user,
            key_id: r.key_id,
            provider: r.provider,
            model: r.model,
            route: r.route,
            status: r.status,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost_usd: r.cost_usd,
            cached: false,
            trace_id: None,
        }
    }
}

/// [`Block`] up to its rows: postcard writes a struct as its fields in order and a sequence
/// as its length (varint) and then its elements, so this, the row count and the rows
/// encoded one by one are byte for byte the whole block.
#[derive(Serialize)]
struct Head<'a> {
    version: u8,
    first_ts_ms: i64,
    names: Vec<&'a str>,
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
    /// Answered by the response cache (version 2 on).
    cached: bool,
    /// The request's W3C trace id, big-endian (version 3 on): 1 byte when absent, 17 when
    /// present (a fixed array: a random id would take 19 bytes as a varint).
    trace_id: Option<[u8; 16]>,
}

/// Appends postcard's output to a vector the caller keeps (no allocation once it has grown).
struct AppendTo<'a>(&'a mut Vec<u8>);

impl Flavor for AppendTo<'_> {
    type Output = ();

    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        self.0.push(b);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

const NO_NAME: u32 = u32::MAX;

/// What a block adds to `sy_spend_daily` for one (UTC day, key).
#[derive(Debug, Clone, PartialEq)]
pub struct DailySpend {
    pub day: i64,
    pub key_id: Arc<str>,
    pub user: Arc<str>,
    pub cost_usd: f64,
    pub tokens: i64,
    pub requests: i64,
}

/// [`DailySpend`] while the block is open, names as indexes.
struct DailyRun {
    day: i64,
    key_id: u32,
    user: u32,
    cost_usd: f64,
    tokens: i64,
    requests: i64,
}

/// A block being filled, a record at a time, where the records are made (the request
/// path): each record is encoded at once against the block's name table, and the day's
/// spend per key summed, so that the batch writer only has to store finished bytes.
/// Consecutive records nearly always repeat the previous record's user, key, provider,
/// model and route, so each name is first compared with the one its field had last time
/// (a short `memcmp`) before it is hashed. Once warm, a record allocates nothing.
pub struct BlockBuilder {
    records: usize,
    first_ts_ms: i64,
    min_ts_ms: i64,
    max_ts_ms: i64,
    names: Vec<Arc<str>>,
    index: HashMap<Arc<str>, u32>,
    last: [u32; 5],
    rows: Vec<u8>,
    daily: Vec<DailyRun>,
    daily_index: HashMap<(i64, u32), usize>,
}

impl Default for BlockBuilder {
    fn default() -> Self {
        BlockBuilder {
            records: 0,
            first_ts_ms: 0,
            min_ts_ms: i64::MAX,
            max_ts_ms: i64::MIN,
            names: Vec::new(),
            index: HashMap::new(),
            last: [NO_NAME; 5],
            rows: Vec::new(),
            daily: Vec::new(),
            daily_index: HashMap::new(),
        }
    }
}

impl BlockBuilder {
    pub fn len(&self) -> usize {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    fn name(&mut self, field: usize, s: &str, owned: impl FnOnce() -> Arc<str>) -> u32 {
        let last = self.last[field];
        if last != NO_NAME && *self.names[last as usize] == *s {
            return last;
        }
        let id = match self.index.get(s) {
            Some(&id) => id,
            None => {
                let name = owned();
                let id = self.names.len() as u32;
                self.names.push(name.clone());
                self.index.insert(name, id);
                id
            }
        };
        self.last[field] = id;
        id
    }

    /// Adds a record (callers start a new block at [`MAX_RECORDS`]).
    pub fn push(&mut self, r: &UsageRecord) -> Result<(), postcard::Error> {
        if self.records == 0 {
            self.first_ts_ms = r.ts_ms;
        }
        let user = self.name(0, &r.user, || r.user.clone());
        let key_id = self.name(1, &r.key_id, || r.key_id.clone());
        let provider = self.name(2, &r.provider, || r.provider.clone());
        let model = self.name(3, &r.model, || Arc::from(r.model.as_str()));
        let route = self.name(4, r.route, || Arc::from(r.route));
        let cost_usd = super::stored_cost(r);
        let row = Row {
            ts_offset_ms: r.ts_ms.saturating_sub(self.first_ts_ms),
            request_id: &r.request_id,
            user,
            key_id,
            provider,
            model,
            route,
            status: r.status,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost_usd,
            cached: r.cached,
            trace_id: r.trace_id.map(u128::to_be_bytes),
        };
        let before = self.rows.len();
        if let Err(e) = postcard::serialize_with_flavor(&row, AppendTo(&mut self.rows)) {
            self.rows.truncate(before);
            return Err(e);
        }
        self.records += 1;
        self.min_ts_ms = self.min_ts_ms.min(r.ts_ms);
        self.max_ts_ms = self.max_ts_ms.max(r.ts_ms);
        let day = r.ts_ms.div_euclid(86_400_000);
        let tokens = r.input_tokens.saturating_add(r.output_tokens);
        let run = match self.daily.last() {
            Some(d) if d.day == day && d.key_id == key_id => self.daily.len() - 1,
            _ => *self.daily_index.entry((day, key_id)).or_insert_with(|| {
                self.daily.push(DailyRun {
                    day,
                    key_id,
                    user,
                    cost_usd: 0.0,
                    tokens: 0,
                    requests: 0,
                });
                self.daily.len() - 1
            }),
        };
        let d = &mut self.daily[run];
        d.cost_usd += cost_usd;
        d.tokens = d.tokens.saturating_add(tokens);
        d.requests += 1;
        Ok(())
    }

    /// The block's bytes (written into `data`, whose allocation is reused) and roll-up. The
    /// builder is empty again afterwards, also after an error (its records are then lost:
    /// the caller counts them), and keeps its allocations for the next block.
    pub fn finish(&mut self, data: Vec<u8>) -> Result<Encoded, postcard::Error> {
        let encoded = self.encode(data);
        self.records = 0;
        self.min_ts_ms = i64::MAX;
        self.max_ts_ms = i64::MIN;
        self.names.clear();
        self.index.clear();
        self.last = [NO_NAME; 5];
        self.rows.clear();
        self.daily.clear();
        self.daily_index.clear();
        encoded
    }

    fn encode(&mut self, mut data: Vec<u8>) -> Result<Encoded, postcard::Error> {
        data.clear();
        data.reserve(self.rows.len() + 16 * self.names.len() + 16);
        let head = Head {
            version: VERSION,
            first_ts_ms: self.first_ts_ms,
            names: self.names.iter().map(|n| &**n).collect(),
        };
        postcard::serialize_with_flavor(&head, AppendTo(&mut data))?;
        postcard::serialize_with_flavor(&self.records, AppendTo(&mut data))?;
        data.extend_from_slice(&self.rows);
        let names = &self.names;
        let daily = self
            .daily
            .drain(..)
            .map(|d| DailySpend {
                day: d.day,
                key_id: names[d.key_id as usize].clone(),
                user: names[d.user as usize].clone(),
                cost_usd: d.cost_usd,
                tokens: d.tokens,
                requests: d.requests,
            })
            .collect();
        Ok(Encoded {
            first_ts_ms: if self.records == 0 { 0 } else { self.min_ts_ms },
            last_ts_ms: if self.records == 0 { 0 } else { self.max_ts_ms },
            records: self.records as i64,
            data,
            daily,
        })
    }
}

/// One encoded block, with what `sy_usage_blocks` stores beside it and the block's share
/// of the daily spend roll-up.
pub struct Encoded {
    pub first_ts_ms: i64,
    pub last_ts_ms: i64,
    pub records: i64,
    pub data: Vec<u8>,
    pub daily: Vec<DailySpend>,
}

/// Encodes up to [`MAX_RECORDS`] records (callers split larger batches with `chunks`).
pub fn encode(records: &[UsageRecord]) -> Result<Encoded, postcard::Error> {
    let mut b = BlockBuilder::default();
    for r in records {
        b.push(r)?;
    }
    b.finish(Vec::new())
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
    /// Answered by the response cache.
    pub cached: bool,
    /// The request's W3C trace id (32 lowercase hex digits), when it had a trace context
    /// (tracing on; sampled or not). None for records written before version 3.
    pub trace_id: Option<String>,
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
    let (version, _) =
        postcard::take_from_bytes::<Version>(data).map_err(DecodeError::Malformed)?;
    let block: Block = match version.version {
        1 => {
            let v1: Block<RowV1> = postcard::from_bytes(data).map_err(DecodeError::Malformed)?;
            Block {
                version: v1.version,
                first_ts_ms: v1.first_ts_ms,
                names: v1.names,
                rows: v1.rows.into_iter().map(Row::from).collect(),
            }
        }
        2 => {
            let v2: Block<RowV2> = postcard::from_bytes(data).map_err(DecodeError::Malformed)?;
            Block {
                version: v2.version,
                first_ts_ms: v2.first_ts_ms,
                names: v2.names,
                rows: v2.rows.into_iter().map(Row::from).collect(),
            }
        }
        VERSION => postcard::from_bytes(data).map_err(DecodeError::Malformed)?,
        v => return Err(DecodeError::Version(v)),
    };
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
            cached: r.cached,
            trace_id: r
                .trace_id
                .map(|t| crate::telemetry::context::trace_id_hex(u128::from_be_bytes(t))),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            cached: i % 7 == 0,
            trace_id: (i % 4 != 0).then_some(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736 ^ i as u128),
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
        // The point of blocks: names once per block, not per record (a trace id adds its
        // 16 bytes).
        let traced = records.iter().filter(|r| r.trace_id.is_some()).count();
        assert!(
            e.data.len() < 500 * 40 + traced * 16,
            "{} bytes",
            e.data.len()
        );
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
            assert_eq!(b.cached, r.cached);
            assert_eq!(
                b.trace_id,
                r.trace_id.map(|t| format!("{t:032x}")),
                "{}",
                r.request_id
            );
        }
        assert_eq!(
            back[1].trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4737")
        );
        assert_eq!(back[0].trace_id, None);
    }

    /// A trace id costs 17 bytes, its absence one; ids with leading zero bytes and the
    /// largest id survive the round trip; the JSON of a record names it `trace_id`.
    #[test]
    fn version_3_rows_carry_the_trace_id() {
        let mut with = record(1, "alice", "gpt-4");
        let mut without = with.clone();
        without.trace_id = None;
        let base = encode(std::slice::from_ref(&without)).unwrap().data.len();
        for id in [1u128, 0xff, u128::MAX, 1 << 120] {
            with.trace_id = Some(id);
            let e = encode(std::slice::from_ref(&with)).unwrap();
            assert_eq!(e.data[0], 3);
            assert_eq!(e.data.len(), base + 16);
            let mut back = Vec::new();
            decode(&e.data, |r| back.push(r)).unwrap();
            let hex = back[0].trace_id.clone().unwrap();
            assert_eq!(hex.len(), 32);
            assert_eq!(u128::from_str_radix(&hex, 16).unwrap(), id);
            assert!(hex
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
            let json = serde_json::to_value(&back[0]).unwrap();
            assert_eq!(json["trace_id"], hex.as_str());
        }
        let mut back = Vec::new();
        decode(&encode(&[without]).unwrap().data, |r| back.push(r)).unwrap();
        assert_eq!(
            serde_json::to_value(&back[0]).unwrap()["trace_id"],
            serde_json::Value::Null
        );
    }

    /// Blocks written before trace ids existed (version 2) still decode, without one.
    #[test]
    fn version_2_blocks_decode_without_a_trace_id() {
        #[derive(Serialize)]
        struct V2Row<'a> {
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
            cached: bool,
        }
        let row = |i: i64, cached: bool| V2Row {
            ts_offset_ms: i,
            request_id: "r2",
            user: 1,
            key_id: 0,
            provider: 1,
            model: 0,
            route: 1,
            status: 429,
            input_tokens: 70,
            output_tokens: 80,
            cost_usd: 0.25,
            cached,
        };
        let bytes = postcard::to_allocvec(&Block {
            version: 2,
            first_ts_ms: 2000,
            names: vec!["a", "b"],
            rows: vec![row(5, true), row(6, false)],
        })
        .unwrap();
        let mut back = Vec::new();
        decode(&bytes, |r| back.push(r)).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(
            (
                back[0].ts_ms,
                back[0].user.as_str(),
                back[0].key_id.as_str()
            ),
            (2005, "b", "a")
        );
        assert_eq!((back[0].status, back[0].output_tokens), (429, 80));
        assert!(back[0].cached && !back[1].cached);
        assert!(back.iter().all(|r| r.trace_id.is_none()));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], |_| {}).is_err(), "cut at {cut}");
        }
    }

    /// Blocks written before `cached` existed (version 1) still decode, as not cached.
    #[test]
    fn version_1_blocks_decode_as_not_cached() {
        #[derive(Serialize)]
        struct V1Row<'a> {
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
        let row = V1Row {
            ts_offset_ms: 3,
            request_id: "r1",
            user: 0,
            key_id: 1,
            provider: 0,
            model: 1,
            route: 0,
            status: 200,
            input_tokens: 7,
            output_tokens: 8,
            cost_usd: 0.5,
        };
        let bytes = postcard::to_allocvec(&Block {
            version: 1,
            first_ts_ms: 1000,
            names: vec!["a", "b"],
            rows: vec![row],
        })
        .unwrap();
        let mut back = Vec::new();
        decode(&bytes, |r| back.push(r)).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].ts_ms, back[0].input_tokens), (1003, 7));
        assert!(!back[0].cached);
        assert_eq!(back[0].trace_id, None);
        let mut wrong = bytes.clone();
        wrong[0] = 9;
        assert!(matches!(
            decode(&wrong, |_| {}),
            Err(DecodeError::Version(9))
        ));
    }

    /// The builder's incremental output is exactly postcard's encoding of the whole block
    /// (which `decode` reads), also for a reused builder and out-of-order times.
    #[test]
    fn built_blocks_are_postcard_blocks() {
        // Leaked: the oracle below borrows names for the whole test.
        let records: &'static [UsageRecord] = Vec::leak(
            (0..300)
                .map(|i| record(i, ["alice", "bob", "carol"][i as usize % 3], "gpt-4"))
                .collect(),
        );
        let mut b = BlockBuilder::default();
        for round in 0..2 {
            for r in records {
                b.push(r).unwrap();
            }
            let built = b.finish(vec![1, 2, 3]).unwrap();
            let first = records[0].ts_ms;
            let mut names: Vec<&str> = Vec::new();
            let mut id = |s: &'static str| match names.iter().position(|n| *n == s) {
                Some(i) => i as u32,
                None => {
                    names.push(s);
                    names.len() as u32 - 1
                }
            };
            let rows: Vec<Row> = records
                .iter()
                .map(|r| Row {
                    ts_offset_ms: r.ts_ms - first,
                    request_id: &r.request_id,
                    user: id(&r.user),
                    key_id: id(&r.key_id),
                    provider: id(&r.provider),
                    model: id(&r.model),
                    route: id(r.route),
                    status: r.status,
                    input_tokens: r.input_tokens,
                    output_tokens: r.output_tokens,
                    cost_usd: r.cost_usd,
                    cached: r.cached,
                    trace_id: r.trace_id.map(u128::to_be_bytes),
                })
                .collect();
            let whole = postcard::to_allocvec(&Block {
                version: VERSION,
                first_ts_ms: first,
                names,
                rows,
            })
            .unwrap();
            assert_eq!(built.data, whole, "round {round}");
            assert!(b.is_empty());
        }
    }

    #[test]
    fn the_daily_roll_up_sums_interleaved_runs_of_keys_and_days() {
        let rec = |day: i64, key: &str, cost: f64| UsageRecord {
            ts_ms: day * 86_400_000 + 5,
            request_id: String::new(),
            user: Arc::from(format!("u-{key}").as_str()),
            key_id: Arc::from(key),
            provider: Arc::from("p"),
            model: String::new(),
            route: "chat_completions",
            status: 200,
            input_tokens: 1,
            output_tokens: 2,
            cost_usd: cost,
            cached: false,
            trace_id: None,
        };
        let usage = [
            rec(1, "a", 1.0),
            rec(1, "a", 2.0),
            rec(1, "b", 4.0),
            rec(1, "a", 8.0),
            rec(2, "a", 16.0),
            rec(2, "a", f64::NAN),
        ];
        let daily = encode(&usage).unwrap().daily;
        let got: Vec<_> = daily
            .iter()
            .map(|d| {
                (
                    d.day, &*d.key_id, &*d.user, d.cost_usd, d.tokens, d.requests,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, "a", "u-a", 11.0, 9, 3),
                (1, "b", "u-b", 4.0, 3, 1),
                (2, "a", "u-a", 16.0, 6, 2)
            ]
        );
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
