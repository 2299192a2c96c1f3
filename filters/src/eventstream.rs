//! AWS event stream framing (`application/vnd.amazon.eventstream`), as used by Bedrock's
//! `invoke-with-response-stream` and `converse-stream`.
//!
//! One message on the wire (all integers big-endian):
//!
//! ```text
//! total_len u32 | headers_len u32 | prelude_crc u32 | headers | payload | message_crc u32
//! ```
//!
//! `prelude_crc` is the CRC-32 (IEEE 802.3, as in zlib/gzip) of the first 8 bytes and
//! `message_crc` the CRC-32 of everything before it. A header is `name_len u8 | name |
//! type u8 | value`. [`Decoder`] is incremental: network chunks may split a message anywhere,
//! and both checksums are verified before a message is handed out. [`encode_message`] writes
//! messages (tests, mock upstreams).
//!
//! The CRC-32 comes from `crc32fast` (SIMD-accelerated where the CPU allows).

use std::borrow::Cow;

use crate::usage::UsageMeter;

/// The response content type of an event stream.
pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";
/// total_len + headers_len + prelude_crc.
pub const PRELUDE_LEN: usize = 12;
/// Prelude plus the trailing message CRC.
pub const OVERHEAD: usize = PRELUDE_LEN + 4;
/// Largest headers section accepted (as botocore).
pub const MAX_HEADERS_LEN: usize = 128 * 1024;
/// Largest payload accepted (as botocore).
pub const MAX_PAYLOAD_LEN: usize = 16 * 1024 * 1024;

/// Continues a CRC-32 (IEEE, reflected, polynomial 0x04C11DB7) over `data`; start with 0.
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    h.update(data);
    h.finalize()
}

/// CRC-32 (IEEE) of `data`, as zlib's `crc32`.
pub fn crc32(data: &[u8]) -> u32 {
    crc32_update(0, data)
}

/// Why a stream could not be decoded. A stream is unusable after any of these: message
/// boundaries can no longer be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The prelude's checksum does not match.
    PreludeChecksum,
    /// The message's checksum does not match.
    MessageChecksum,
    /// The lengths in the prelude are impossible or over the limits.
    Length,
    /// A header is malformed (truncated, unknown type, or a name that is not UTF-8).
    Header,
    /// The stream ended inside a message.
    Truncated,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DecodeError::PreludeChecksum => "event stream prelude checksum mismatch",
            DecodeError::MessageChecksum => "event stream message checksum mismatch",
            DecodeError::Length => "event stream message length out of range",
            DecodeError::Header => "malformed event stream header",
            DecodeError::Truncated => "event stream ended inside a message",
        })
    }
}

impl std::error::Error for DecodeError {}

/// A header value, by wire type (0..=9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue<'a> {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(Cow<'a, [u8]>),
    String(Cow<'a, str>),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    Uuid([u8; 16]),
}

impl HeaderValue<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            HeaderValue::Bool(true) => out.push(0),
            HeaderValue::Bool(false) => out.push(1),
            HeaderValue::Byte(v) => {
                out.push(2);
                out.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Short(v) => {
                out.push(3);
                out.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Int(v) => {
                out.push(4);
                out.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Long(v) => {
                out.push(5);
                out.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Bytes(b) => {
                out.push(6);
                out.extend_from_slice(&(b.len() as u16).to_be_bytes());
                out.extend_from_slice(b);
            }
            HeaderValue::String(s) => {
                out.push(7);
                out.extend_from_slice(&(s.len() as u16).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            HeaderValue::Timestamp(v) => {
                out.push(8);
                out.extend_from_slice(&v.to_be_bytes());
            }
            HeaderValue::Uuid(u) => {
                out.push(9);
                out.extend_from_slice(u);
            }
        }
    }
}

/// One decoded message, borrowing from the stream's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub headers: Vec<(Cow<'a, str>, HeaderValue<'a>)>,
    pub payload: &'a [u8],
}

impl Message<'_> {
    pub fn header(&self, name: &str) -> Option<&HeaderValue<'_>> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// A string header's value.
    pub fn str_header(&self, name: &str) -> Option<&str> {
        match self.header(name) {
            Some(HeaderValue::String(s)) => Some(s),
            _ => None,
        }
    }

    /// `:message-type` (`event`, `exception` or `error`).
    pub fn message_type(&self) -> Option<&str> {
        self.str_header(":message-type")
    }

    /// `:event-type` of an event (e.g. `chunk`, `contentBlockDelta`, `metadata`).
    pub fn event_type(&self) -> Option<&str> {
        self.str_header(":event-type")
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Checks a 12-byte prelude and returns the message's total length.
fn check_prelude(prelude: &[u8]) -> Result<usize, DecodeError> {
    let total = be32(&prelude[0..4]) as usize;
    let headers_len = be32(&prelude[4..8]) as usize;
    if crc32(&prelude[0..8]) != be32(&prelude[8..12]) {
        return Err(DecodeError::PreludeChecksum);
    }
    if total < OVERHEAD
        || headers_len > MAX_HEADERS_LEN
        || headers_len > total - OVERHEAD
        || total - OVERHEAD - headers_len > MAX_PAYLOAD_LEN
    {
        return Err(DecodeError::Length);
    }
    Ok(total)
}

/// Decodes one complete message (`frame` is exactly one message), verifying both checksums.
pub fn decode_message(frame: &[u8]) -> Result<Message<'_>, DecodeError> {
    if frame.len() < PRELUDE_LEN {
        return Err(DecodeError::Truncated);
    }
    let total = check_prelude(&frame[..PRELUDE_LEN])?;
    if frame.len() != total {
        return Err(if frame.len() < total {
            DecodeError::Truncated
        } else {
            DecodeError::Length
        });
    }
    if crc32(&frame[..total - 4]) != be32(&frame[total - 4..]) {
        return Err(DecodeError::MessageChecksum);
    }
    let headers_len = be32(&frame[4..8]) as usize;
    let headers = parse_headers(&frame[PRELUDE_LEN..PRELUDE_LEN + headers_len])?;
    Ok(Message {
        headers,
        payload: &frame[PRELUDE_LEN + headers_len..total - 4],
    })
}

fn parse_headers(mut b: &[u8]) -> Result<Vec<(Cow<'_, str>, HeaderValue<'_>)>, DecodeError> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
        if b.len() < n {
            return Err(DecodeError::Header);
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    fn fixed<const N: usize>(b: &mut &[u8]) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(take(b, N)?);
        Ok(out)
    }
    // Bedrock messages carry three headers (message, event and content type).
    let mut out = Vec::with_capacity(3);
    while !b.is_empty() {
        let name_len = take(&mut b, 1)?[0] as usize;
        let name = std::str::from_utf8(take(&mut b, name_len)?).map_err(|_| DecodeError::Header)?;
        let value = match take(&mut b, 1)?[0] {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes(fixed(&mut b)?)),
            3 => HeaderValue::Short(i16::from_be_bytes(fixed(&mut b)?)),
            4 => HeaderValue::Int(i32::from_be_bytes(fixed(&mut b)?)),
            5 => HeaderValue::Long(i64::from_be_bytes(fixed(&mut b)?)),
            6 => {
                let len = u16::from_be_bytes(fixed(&mut b)?) as usize;
                HeaderValue::Bytes(Cow::Borrowed(take(&mut b, len)?))
            }
            7 => {
                let len = u16::from_be_bytes(fixed(&mut b)?) as usize;
                let s = std::str::from_utf8(take(&mut b, len)?).map_err(|_| DecodeError::Header)?;
                HeaderValue::String(Cow::Borrowed(s))
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(fixed(&mut b)?)),
            9 => HeaderValue::Uuid(fixed(&mut b)?),
            _ => return Err(DecodeError::Header),
        };
        out.push((Cow::Borrowed(name), value));
    }
    Ok(out)
}

/// Encodes one message with correct lengths and checksums.
pub fn encode_message(headers: &[(&str, HeaderValue<'_>)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        value.write(&mut h);
    }
    let total = OVERHEAD + h.len() + payload.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// An `event` message as Bedrock sends it: `:event-type`, `:content-type`, `:message-type`.
pub fn encode_event(event_type: &str, payload: &[u8]) -> Vec<u8> {
    encode_message(
        &[
            (":event-type", HeaderValue::String(event_type.into())),
            (
                ":content-type",
                HeaderValue::String("application/json".into()),
            ),
            (":message-type", HeaderValue::String("event".into())),
        ],
        payload,
    )
}

/// An incremental decoder: feed it network chunks as they arrive.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes of a message not yet complete.
    buf: Vec<u8>,
    failed: Option<DecodeError>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes every message completed by `chunk`, calling `on_message` for each in order.
    /// After an error the decoder stays failed and decodes nothing more.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut on_message: impl FnMut(&Message<'_>),
    ) -> Result<(), DecodeError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let result = self.feed_inner(chunk, &mut on_message);
        if let Err(e) = result {
            self.failed = Some(e);
            self.buf = Vec::new();
        }
        result
    }

    fn feed_inner(
        &mut self,
        mut chunk: &[u8],
        on_message: &mut impl FnMut(&Message<'_>),
    ) -> Result<(), DecodeError> {
        // First complete the message begun in earlier chunks, if any.
        if !self.buf.is_empty() {
            if self.buf.len() < PRELUDE_LEN {
                let take = (PRELUDE_LEN - self.buf.len()).min(chunk.len());
                self.buf.extend_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
                if self.buf.len() < PRELUDE_LEN {
                    return Ok(());
                }
            }
            let total = check_prelude(&self.buf[..PRELUDE_LEN])?;
            let take = (total - self.buf.len()).min(chunk.len());
            self.buf.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.buf.len() < total {
                return Ok(());
            }
            let frame = std::mem::take(&mut self.buf);
            on_message(&decode_message(&frame)?);
            self.buf = frame;
            self.buf.clear();
        }
        // Then every whole message straight from the chunk, keeping a partial tail.
        loop {
            if chunk.len() < PRELUDE_LEN {
                self.buf.extend_from_slice(chunk);
                return Ok(());
            }
            let total = check_prelude(&chunk[..PRELUDE_LEN])?;
            if chunk.len() < total {
                self.buf.extend_from_slice(chunk);
                return Ok(());
            }
            on_message(&decode_message(&chunk[..total])?);
            chunk = &chunk[total..];
        }
    }

    /// Whether the bytes fed so far end on a message boundary (`Err` if the stream failed or
    /// stops inside a message).
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.failed {
            Some(e) => Err(e),
            None if !self.buf.is_empty() => Err(DecodeError::Truncated),
            None => Ok(()),
        }
    }
}

/// Feeds the usage a Bedrock stream event carries to `meter`: the event's JSON payload
/// (ConverseStream's `metadata` has `usage`), and for InvokeModelWithResponseStream's `chunk`
/// events the model's own JSON event inside `{"bytes":"<base64>"}` (Anthropic `usage`,
/// `amazon-bedrock-invocationMetrics`). Exceptions and errors carry no usage.
pub fn meter_bedrock_event(meter: &mut UsageMeter, message: &Message<'_>) {
    if message.message_type() != Some("event") || message.payload.first() != Some(&b'{') {
        return;
    }
    meter.observe_json(message.payload);
    if message.event_type() == Some("chunk") {
        if let Some(inner) = chunk_bytes(message.payload) {
            meter.observe_json(&inner);
        }
    }
}

/// The decoded `bytes` of a `chunk` payload into `scratch` (reused from event to event) when
/// it has the plain `{"bytes":"<base64>"}` layout, else through [`chunk_bytes`]; None when it
/// cannot be read.
pub fn decode_chunk<'a>(payload: &[u8], scratch: &'a mut Vec<u8>) -> Option<Cow<'a, [u8]>> {
    use base64::Engine as _;
    scratch.clear();
    let b64 = payload
        .strip_prefix(br#"{"bytes":""#)
        .and_then(|p| p.strip_suffix(br#""}"#));
    if b64.is_some_and(|b| {
        base64::engine::general_purpose::STANDARD
            .decode_vec(b, scratch)
            .is_ok()
    }) {
        return Some(Cow::Borrowed(&scratch[..]));
    }
    chunk_bytes(payload).map(Cow::Owned)
}

/// The decoded `bytes` of an InvokeModelWithResponseStream `chunk` payload.
pub fn chunk_bytes(payload: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct Chunk<'a> {
        #[serde(borrow)]
        bytes: Cow<'a, str>,
    }
    let chunk: Chunk<'_> = serde_json::from_slice(payload).ok()?;
    base64::engine::general_purpose::STANDARD
        .decode(chunk.bytes.as_bytes())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::Usage;

    #[test]
    fn crc32_matches_known_vectors() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"a"), 0xE8B7_BE43);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
        assert_eq!(crc32(&[0u8; 32]), 0x190A_55AD);
        assert_eq!(crc32(&[0xFFu8; 32]), 0xFF6C_AB0B);
        // Incremental use gives the same result.
        assert_eq!(crc32_update(crc32(b"12345"), b"6789"), 0xCBF4_3926);
    }

    /// A message encoded by Python (struct + zlib.crc32, the encoding botocore's
    /// EventStreamBuffer accepts): headers `:event-type`=chunk, `:content-type`=application/json,
    /// `:message-type`=event, payload `{"bytes":"eyJhIjoxfQ=="}`.
    const PYTHON_FRAME: &str = concat!(
        "000000730000004b3a5edd6e0b3a6576656e742d747970650700056368756e6b0d3a636f6e74656e742d7479",
        "70650700106170706c69636174696f6e2f6a736f6e0d3a6d6573736167652d747970650700056576656e747b",
        "226279746573223a2265794a68496a6f7866513d3d227dd3f547ed",
    );

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn decodes_a_frame_written_by_another_implementation() {
        let frame = unhex(PYTHON_FRAME);
        let m = decode_message(&frame).unwrap();
        assert_eq!(m.event_type(), Some("chunk"));
        assert_eq!(m.message_type(), Some("event"));
        assert_eq!(m.str_header(":content-type"), Some("application/json"));
        assert_eq!(m.payload, br#"{"bytes":"eyJhIjoxfQ=="}"#);
        assert_eq!(chunk_bytes(m.payload), Some(br#"{"a":1}"#.to_vec()));
        assert_eq!(encode_event("chunk", m.payload), frame, "encoder differs");
    }

    fn all_types_message() -> Vec<u8> {
        encode_message(
            &[
                ("t", HeaderValue::Bool(true)),
                ("f", HeaderValue::Bool(false)),
                ("b", HeaderValue::Byte(-2)),
                ("s", HeaderValue::Short(-300)),
                ("i", HeaderValue::Int(70_000)),
                ("l", HeaderValue::Long(-5_000_000_000)),
                ("by", HeaderValue::Bytes(Cow::Borrowed(&[0, 1, 255]))),
                ("st", HeaderValue::String("héllo".into())),
                ("ts", HeaderValue::Timestamp(1_700_000_000_000)),
                ("u", HeaderValue::Uuid([7; 16])),
            ],
            b"payload",
        )
    }

    #[test]
    fn every_header_type_round_trips() {
        let frame = all_types_message();
        let m = decode_message(&frame).unwrap();
        assert_eq!(m.payload, b"payload");
        assert_eq!(m.headers.len(), 10);
        assert_eq!(m.header("t"), Some(&HeaderValue::Bool(true)));
        assert_eq!(m.header("f"), Some(&HeaderValue::Bool(false)));
        assert_eq!(m.header("b"), Some(&HeaderValue::Byte(-2)));
        assert_eq!(m.header("s"), Some(&HeaderValue::Short(-300)));
        assert_eq!(m.header("i"), Some(&HeaderValue::Int(70_000)));
        assert_eq!(m.header("l"), Some(&HeaderValue::Long(-5_000_000_000)));
        assert_eq!(
            m.header("by"),
            Some(&HeaderValue::Bytes(Cow::Borrowed(&[0, 1, 255])))
        );
        assert_eq!(m.str_header("st"), Some("héllo"));
        assert_eq!(
            m.header("ts"),
            Some(&HeaderValue::Timestamp(1_700_000_000_000))
        );
        assert_eq!(m.header("u"), Some(&HeaderValue::Uuid([7; 16])));
        // An empty message (no headers, no payload) is 16 bytes.
        let empty = encode_message(&[], b"");
        assert_eq!(empty.len(), OVERHEAD);
        assert_eq!(decode_message(&empty).unwrap().payload, b"");
    }

    fn stream() -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
        let events: Vec<(String, Vec<u8>)> = vec![
            ("messageStart".into(), br#"{"role":"assistant"}"#.to_vec()),
            (
                "contentBlockDelta".into(),
                br#"{"contentBlockIndex":0,"delta":{"text":"Hello"},"p":"abcdefgh"}"#.to_vec(),
            ),
            ("empty".into(), Vec::new()),
            (
                "metadata".into(),
                br#"{"usage":{"inputTokens":12,"outputTokens":7,"totalTokens":19},"metrics":{"latencyMs":5}}"#
                    .to_vec(),
            ),
        ];
        let mut bytes = Vec::new();
        for (t, p) in &events {
            bytes.extend(encode_event(t, p));
        }
        bytes.extend(all_types_message());
        (bytes, events)
    }

    fn decode_split(bytes: &[u8], cuts: &[usize]) -> Result<Vec<(String, Vec<u8>)>, DecodeError> {
        let mut d = Decoder::new();
        let mut seen = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
            d.feed(&bytes[start..cut], |m| {
                seen.push((m.event_type().unwrap_or("-").to_owned(), m.payload.to_vec()))
            })?;
            start = cut;
        }
        d.finish()?;
        Ok(seen)
    }

    #[test]
    fn decodes_when_split_at_every_offset() {
        let (bytes, events) = stream();
        let mut expected = events.clone();
        expected.push(("-".into(), b"payload".to_vec()));
        assert_eq!(decode_split(&bytes, &[]).unwrap(), expected);
        for cut in 0..=bytes.len() {
            assert_eq!(
                decode_split(&bytes, &[cut]).unwrap(),
                expected,
                "cut at {cut}"
            );
        }
        for a in (0..bytes.len()).step_by(7) {
            for b in (a..bytes.len()).step_by(5) {
                assert_eq!(
                    decode_split(&bytes, &[a, b]).unwrap(),
                    expected,
                    "cuts {a},{b}"
                );
            }
        }
        let every: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(
            decode_split(&bytes, &every).unwrap(),
            expected,
            "byte by byte"
        );
    }

    #[test]
    fn corruption_anywhere_is_detected() {
        let (bytes, _) = stream();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                assert!(
                    decode_split(&bad, &[i / 2, i]).is_err(),
                    "flipping bit {bit:#x} of byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn errors_are_specific_and_sticky() {
        let frame = encode_event("chunk", b"{}");
        let mut bad = frame.clone();
        bad[9] ^= 1; // prelude CRC
        assert_eq!(decode_message(&bad), Err(DecodeError::PreludeChecksum));
        let mut bad = frame.clone();
        let n = bad.len();
        bad[n - 6] ^= 1; // payload
        assert_eq!(decode_message(&bad), Err(DecodeError::MessageChecksum));
        assert_eq!(
            decode_message(&frame[..frame.len() - 1]),
            Err(DecodeError::Truncated)
        );

        // Lengths over the limits are refused from the prelude alone (nothing is buffered).
        let mut huge = Vec::new();
        huge.extend_from_slice(&((MAX_PAYLOAD_LEN + 1000) as u32).to_be_bytes());
        huge.extend_from_slice(&0u32.to_be_bytes());
        let crc = crc32(&huge);
        huge.extend_from_slice(&crc.to_be_bytes());
        let mut d = Decoder::new();
        assert_eq!(d.feed(&huge, |_| {}), Err(DecodeError::Length));
        assert_eq!(
            d.feed(&frame, |_| panic!("decoded after failure")),
            Err(DecodeError::Length)
        );

        let mut d = Decoder::new();
        d.feed(&frame[..5], |_| {}).unwrap();
        assert_eq!(d.finish(), Err(DecodeError::Truncated));

        // An unknown header type.
        let mut h = vec![1, b'x', 42];
        h.extend_from_slice(b"zz");
        let total = OVERHEAD + h.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(total as u32).to_be_bytes());
        m.extend_from_slice(&(h.len() as u32).to_be_bytes());
        let crc = crc32(&m);
        m.extend_from_slice(&crc.to_be_bytes());
        m.extend_from_slice(&h);
        let crc = crc32(&m);
        m.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(decode_message(&m), Err(DecodeError::Header));
    }

    #[test]
    fn meters_converse_stream_and_invoke_stream_usage() {
        let (bytes, _) = stream();
        let mut meter = UsageMeter::new();
        Decoder::new()
            .feed(&bytes, |m| meter_bedrock_event(&mut meter, m))
            .unwrap();
        assert_eq!(meter.usage(), Some(Usage::new(12, 7)));

        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let inner = [
            r#"{"type":"message_start","message":{"id":"msg_1","model":"claude-3-5-sonnet-20241022","usage":{"input_tokens":21,"output_tokens":1}}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}"#,
            r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":21,"outputTokenCount":9,"invocationLatency":300,"firstByteLatency":100}}"#,
        ];
        let mut bytes = Vec::new();
        for e in inner {
            bytes.extend(encode_event(
                "chunk",
                format!(r#"{{"bytes":"{}"}}"#, b64(e)).as_bytes(),
            ));
        }
        // A modeled exception frame carries no usage and must not break metering.
        bytes.extend(encode_message(
            &[
                (
                    ":exception-type",
                    HeaderValue::String("throttlingException".into()),
                ),
                (
                    ":content-type",
                    HeaderValue::String("application/json".into()),
                ),
                (":message-type", HeaderValue::String("exception".into())),
            ],
            br#"{"message":"slow down","usage":{"inputTokens":999}}"#,
        ));
        for cut in 0..bytes.len() {
            let mut meter = UsageMeter::new();
            let mut d = Decoder::new();
            d.feed(&bytes[..cut], |m| meter_bedrock_event(&mut meter, m))
                .unwrap();
            d.feed(&bytes[cut..], |m| meter_bedrock_event(&mut meter, m))
                .unwrap();
            assert_eq!(meter.usage(), Some(Usage::new(21, 9)), "cut at {cut}");
            assert_eq!(meter.model(), Some("claude-3-5-sonnet-20241022"));
        }
        assert_eq!(
            chunk_bytes(br#"{"bytes":"eyJhIjoxfQ=="}"#),
            Some(br#"{"a":1}"#.to_vec())
        );
        assert_eq!(chunk_bytes(br#"{"bytes":"%%%"}"#), None);
        assert_eq!(chunk_bytes(b"{}"), None);
    }
}
