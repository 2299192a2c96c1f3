//! The response cache's pure side: a request body's canonical form (the bytes its cache key
//! is the digest of), and the identity of a cached answer (its `id` and `created`) found and
//! replaced so that a replayed answer carries a fresh id and timestamp.
//!
//! Canonical form: the body's JSON with object keys sorted (at every depth), no whitespace,
//! strings escaped as `serde_json` writes them, and the top-level fields in
//! [`IGNORED_FIELDS`] left out (they do not change the answer). Two bodies that differ only
//! in key order, whitespace or those fields have the same canonical form.

use serde_json::{Map, Value};

/// Top-level request fields that do not change the answer, left out of the cache key:
/// who asks (`user`, `safety_identifier`, `metadata`), whether and how the answer is kept or
/// cached upstream (`store`, `prompt_cache_key`, `prompt_cache_retention`), and stream
/// delivery options (`stream_options`; whether the stream carries a usage chunk is part of
/// the key separately, it changes the replayed bytes).
pub const IGNORED_FIELDS: &[&str] = &[
    "user",
    "safety_identifier",
    "metadata",
    "store",
    "prompt_cache_key",
    "prompt_cache_retention",
    "stream_options",
];

/// Deeper than this, the canonical form stops descending and writes the value as
/// `serde_json` does (key order as parsed): bounds the recursion on hostile input.
const MAX_DEPTH: usize = 64;

/// Appends the canonical form of `body` (a request's top-level object) to `out`.
pub fn canonical(body: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut keys: Vec<&String> = body
        .keys()
        .filter(|k| !IGNORED_FIELDS.contains(&k.as_str()))
        .collect();
    keys.sort_unstable();
    out.push(b'{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(k, out);
        out.push(b':');
        write_value(&body[k.as_str()], out, 1);
    }
    out.push(b'}');
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_value(v: &Value, out: &mut Vec<u8>, depth: usize) {
    match v {
        Value::Object(m) if depth < MAX_DEPTH => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                write_value(&m[k.as_str()], out, depth + 1);
            }
            out.push(b'}');
        }
        Value::Array(a) if depth < MAX_DEPTH => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(x, out, depth + 1);
            }
            out.push(b']');
        }
        _ => {
            let _ = serde_json::to_writer(&mut *out, v);
        }
    }
}

/// A cached answer's identity: the first `"id"` string value and the first `"created"` /
/// `"created_at"` number in its bytes (the answer's own: every answer shape names its id
/// before any nested one, and a stream repeats the same id and time in its chunks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub id: Option<String>,
    pub created: Option<u64>,
}

impl Identity {
    /// Finds the identity of an answer (JSON body or SSE stream bytes); `None` fields where
    /// the bytes name none.
    pub fn find(bytes: &[u8]) -> Identity {
        Identity {
            id: find_string_value(bytes, b"\"id\""),
            created: find_number_value(bytes, b"\"created\"")
                .or_else(|| find_number_value(bytes, b"\"created_at\"")),
        }
    }

    /// Whether there is anything to replace.
    pub fn is_empty(&self) -> bool {
        self.id.is_none() && self.created.is_none()
    }
}

/// The fresh id for a replayed answer: the original's prefix up to its last `-` or `_`
/// (`chatcmpl-`, `msg_`, `resp_`, …) followed by `unique`.
pub fn fresh_id(original: &str, unique: &str) -> String {
    let cut = original.rfind(['-', '_']).map_or(0, |i| i + 1);
    let mut s = String::with_capacity(cut + unique.len());
    s.push_str(&original[..cut]);
    s.push_str(unique);
    s
}

/// Writes `bytes` to `out` with the identity replaced: every JSON string equal to the
/// original id becomes `new_id`, and every `"created"` / `"created_at"` number equal to the
/// original time becomes `new_created`. Everything else is copied byte for byte.
pub fn refresh(bytes: &[u8], ident: &Identity, new_id: &str, new_created: u64, out: &mut Vec<u8>) {
    out.reserve(bytes.len() + 16);
    let quoted_id = ident.id.as_ref().map(|id| {
        let mut q = Vec::with_capacity(id.len() + 2);
        write_str(id, &mut q);
        q
    });
    let mut quoted_new = Vec::with_capacity(new_id.len() + 2);
    write_str(new_id, &mut quoted_new);
    let created = ident.created.map(|c| c.to_string());
    let new_created = new_created.to_string();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        if let Some(q) = quoted_id.as_deref().filter(|q| rest.starts_with(q)) {
            out.extend_from_slice(&quoted_new);
            i += q.len();
            continue;
        }
        if let Some(c) = created.as_deref() {
            if let Some(at) = created_number_at(rest, c.as_bytes()) {
                out.extend_from_slice(&rest[..at]);
                out.extend_from_slice(new_created.as_bytes());
                i += at + c.len();
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
}

/// When `rest` starts with `"created"` or `"created_at"`, a colon and the number `value`
/// (and the number ends there): the offset of that number.
fn created_number_at(rest: &[u8], value: &[u8]) -> Option<usize> {
    let key_len = if rest.starts_with(b"\"created\"") {
        9
    } else if rest.starts_with(b"\"created_at\"") {
        12
    } else {
        return None;
    };
    let at = after_colon(rest, key_len)?;
    let tail = rest.get(at..)?;
    let ends = tail.get(value.len()).is_none_or(|b| !b.is_ascii_digit());
    (tail.starts_with(value) && ends).then_some(at)
}

/// The offset after `key` (of `key_len` bytes at the start of `s`), whitespace, `:` and
/// whitespace.
fn after_colon(s: &[u8], key_len: usize) -> Option<usize> {
    let mut i = key_len;
    while s.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    if s.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    while s.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    Some(i)
}

fn find_string_value(bytes: &[u8], key: &[u8]) -> Option<String> {
    let mut from = 0;
    while let Some(pos) = memchr::memmem::find(&bytes[from..], key) {
        let start = from + pos;
        from = start + key.len();
        let Some(at) = after_colon(&bytes[start..], key.len()) else {
            continue;
        };
        let tail = &bytes[start + at..];
        if tail.first() != Some(&b'"') {
            continue;
        }
        // Ids are plain tokens: no escapes; anything else is not an id worth replacing.
        let end = memchr::memchr(b'"', &tail[1..])?;
        let raw = &tail[1..1 + end];
        if raw.is_empty() || raw.len() > 256 || raw.contains(&b'\\') {
            continue;
        }
        return std::str::from_utf8(raw).ok().map(str::to_owned);
    }
    None
}

fn find_number_value(bytes: &[u8], key: &[u8]) -> Option<u64> {
    let mut from = 0;
    while let Some(pos) = memchr::memmem::find(&bytes[from..], key) {
        let start = from + pos;
        from = start + key.len();
        let Some(at) = after_colon(&bytes[start..], key.len()) else {
            continue;
        };
        let tail = &bytes[start + at..];
        let n = tail.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 || n > 19 {
            continue;
        }
        return std::str::from_utf8(&tail[..n]).ok()?.parse().ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        let v: Value = serde_json::from_str(s).unwrap();
        let mut out = Vec::new();
        canonical(v.as_object().unwrap(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn key_order_whitespace_and_ignored_fields_do_not_matter() {
        let a = canon(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"user":"a"}"#);
        let b = canon(
            r#"{ "messages" : [ {"content":"hi", "role":"user"} ],
                "metadata":{"x":1}, "model":"m", "stream_options":{"include_usage":true},
                "store": true }"#,
        );
        assert_eq!(a, b);
        assert_eq!(
            a,
            r#"{"messages":[{"content":"hi","role":"user"}],"model":"m"}"#
        );
        assert_ne!(
            a,
            canon(r#"{"model":"m","messages":[{"role":"user","content":"ho"}]}"#)
        );
        // Nested fields named like ignored ones still count.
        assert_ne!(
            canon(r#"{"model":"m","tools":[{"user":1}]}"#),
            canon(r#"{"model":"m","tools":[{"user":2}]}"#)
        );
    }

    #[test]
    fn deep_input_does_not_overflow() {
        let deep = "[".repeat(100) + &"]".repeat(100);
        let s = format!(r#"{{"model":"m","x":{deep}}}"#);
        let v: Value = serde_json::from_str(&s).unwrap();
        let mut out = Vec::new();
        canonical(v.as_object().unwrap(), &mut out);
        assert!(out.len() > 200);
    }

    #[test]
    fn identity_found_and_refreshed_in_a_body_and_a_stream() {
        let body = br#"{"id": "chatcmpl-abc","object":"chat.completion","created": 1700000000,"choices":[{"message":{"tool_calls":[{"id":"call_1"}]}}]}"#;
        let ident = Identity::find(body);
        assert_eq!(ident.id.as_deref(), Some("chatcmpl-abc"));
        assert_eq!(ident.created, Some(1_700_000_000));
        let mut out = Vec::new();
        refresh(body, &ident, &fresh_id("chatcmpl-abc", "XYZ"), 42, &mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"id": "chatcmpl-XYZ","object":"chat.completion","created": 42,"choices":[{"message":{"tool_calls":[{"id":"call_1"}]}}]}"#
        );
        let stream = b"data: {\"id\":\"c-1\",\"created\":5,\"x\":\"c-1x\"}\n\ndata: {\"id\":\"c-1\",\"created\":5}\n\ndata: [DONE]\n\n";
        let ident = Identity::find(stream);
        out.clear();
        refresh(stream, &ident, "c-2", 6, &mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "data: {\"id\":\"c-2\",\"created\":6,\"x\":\"c-1x\"}\n\ndata: {\"id\":\"c-2\",\"created\":6}\n\ndata: [DONE]\n\n"
        );
        let messages = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\"}}\n\n";
        assert_eq!(Identity::find(messages).id.as_deref(), Some("msg_01"));
        assert_eq!(fresh_id("msg_01", "z"), "msg_z");
        assert_eq!(fresh_id("plain", "z"), "z");
        let responses = br#"{"id":"resp_1","created_at":77,"output":[]}"#;
        assert_eq!(Identity::find(responses).created, Some(77));
    }

    #[test]
    fn the_fuzz_harness_holds_on_its_seeds() {
        for seed in [
            &br#"{"model":"m","user":"u","messages":[{"role":"user","content":"hi"}],"n":1.5,"z":{"b":1,"a":[1e3,-0.25,"\u00e9"]}}"#[..],
            br#"{"id": "chatcmpl-1", "created": 1700000000, "x": "chatcmpl-1"}"#,
            b"data: {\"id\":\"c-1\",\"created\":5}\n\ndata: [DONE]\n\n",
            b"\xff\"id\":\"\xfe\"",
        ] {
            crate::fuzzing::cache_key(seed);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        for s in [
            &b"\"id\""[..],
            b"\"id\":",
            b"\"id\":\"",
            b"\"created\":99999999999999999999999",
            b"\"created_at\" :",
            b"",
        ] {
            let ident = Identity::find(s);
            let mut out = Vec::new();
            refresh(s, &ident, "n", 1, &mut out);
        }
    }
}
