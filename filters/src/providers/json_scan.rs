//! Byte-level recognisers for the common text-only stream events (Gemini and OCI): they
//! read an event without building anything and hand the text's string literal to
//! [`ChunkWriter::content_json`](crate::chat::ChunkWriter::content_json) unchanged. They accept a strict subset of JSON and answer
//! None for anything else (other fields, escapes `serde_json` would not write, odd bytes), so
//! the caller falls back to `parse_event` and the full typed parse, and behaviour is unchanged.
//!
//! None of them accepts a CR or LF byte anywhere (whitespace here is space and tab only): a
//! match on [`sse_line`]'s bytes proves that the raw event was a single `data:` line.

/// Skips spaces and tabs (JSON whitespace without CR and LF, see the module doc).
#[inline(always)]
pub fn ws(s: &[u8]) -> &[u8] {
    match s.iter().position(|&b| b != b' ' && b != b'\t') {
        Some(i) => &s[i..],
        None => &[],
    }
}

fn structural(c: u8) -> bool {
    matches!(c, b'{' | b'}' | b'[' | b']' | b':' | b',')
}

/// Strips `pat` — compact JSON such as `{"a":[{` or `"TEXT"` whose quoted parts hold
/// none of `{}[]:,` — from the front of `s`, allowing whitespace around its structural
/// characters (also after the last one). The compact form is a single comparison.
#[inline(always)]
pub fn token<'a>(s: &'a [u8], pat: &[u8]) -> Option<&'a [u8]> {
    if let Some(rest) = s.strip_prefix(pat) {
        return Some(match pat.last() {
            Some(&c) if structural(c) => ws(rest),
            _ => rest,
        });
    }
    let mut s = s;
    for &c in pat {
        if structural(c) {
            s = ws(ws(s).strip_prefix(&[c])?);
        } else {
            s = s.strip_prefix(&[c])?;
        }
    }
    Some(s)
}

/// How many bytes at the front of `s` need no attention inside a JSON string: printable
/// ASCII other than `"` and `\`. Eight bytes at a time.
#[inline]
pub fn clean(s: &[u8]) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut n = 0;
    for w in s.chunks_exact(8) {
        let x = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        // High bit of each byte set where: byte < 0x20, `"`, `\`, or non-ASCII.
        let low = x.wrapping_sub(LO * 0x20);
        let quote = (x ^ (LO * b'"' as u64)).wrapping_sub(LO);
        let backslash = (x ^ (LO * b'\\' as u64)).wrapping_sub(LO);
        // No false alarms: with no such byte in the word, no subtraction borrows.
        if (low | quote | backslash | x) & HI != 0 {
            break;
        }
        n += 8;
    }
    n + s[n..]
        .iter()
        .position(|&b| !is_clean(b))
        .unwrap_or(s.len() - n)
}

#[inline]
fn is_clean(b: u8) -> bool {
    (0x20..0x80).contains(&b) && b != b'"' && b != b'\\'
}

/// A string of printable ASCII without escapes at the front of `s` (ids, enum values):
/// its content (no quotes) and the bytes after it.
#[inline(always)]
pub fn plain(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let body = s.strip_prefix(b"\"")?;
    let end = clean(body);
    if body.get(end) != Some(&b'"') {
        return None;
    }
    Some((&body[..end], &body[end + 1..]))
}

/// A JSON string literal at the front of `s` in exactly the form `serde_json` writes it
/// — valid UTF-8; escaped are only `"` `\` (as `\"` `\\`), the control characters with
/// a short escape (`\b` `\f` `\n` `\r` `\t`) and the other control characters as
/// lowercase `\u00XX`; nothing else — so that copying it verbatim gives the same bytes as
/// decoding and re-encoding it. Returns the literal with its quotes and the bytes after
/// it; None for anything else (invalid or merely differently escaped, e.g. `\/` or
/// `\u00e9`).
#[inline]
pub fn literal(s: &[u8]) -> Option<(&str, &[u8])> {
    if s.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    loop {
        i += clean(&s[i..]);
        match *s.get(i)? {
            b'"' => break,
            b'\\' => match *s.get(i + 1)? {
                b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' => {
                    let &[b'0', b'0', hi @ (b'0' | b'1'), lo] = s.get(i + 2..i + 6)? else {
                        return None;
                    };
                    let lo = match lo {
                        b'0'..=b'9' => lo - b'0',
                        b'a'..=b'f' => lo - b'a' + 10,
                        _ => return None,
                    };
                    if matches!(((hi - b'0') << 4) | lo, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                        return None; // serde_json writes these as \b \t \n \f \r
                    }
                    i += 6;
                }
                _ => return None,
            },
            // UTF-8 (checked below): skip the run of non-ASCII bytes.
            0x80.. => i += 1 + s[i + 1..].iter().take_while(|&&b| b >= 0x80).count(),
            _ => return None, // a control byte
        }
    }
    let lit = std::str::from_utf8(&s[..=i]).ok()?;
    Some((lit, &s[i + 1..]))
}

/// Walks an object's members from just after its `{` to its `}`: each key must be one of
/// `keys` (given with their quotes, e.g. `"text"`); `member(k, value)` reads the value of
/// `keys[k]` and returns the bytes after it. None when a member callback does, a key is
/// not in `keys` or repeats (serde rejects duplicate fields). Returns the bytes after the
/// `}`.
#[inline(always)]
pub fn members<'a>(
    s: &'a [u8],
    keys: &[&[u8]],
    mut member: impl FnMut(usize, &'a [u8]) -> Option<&'a [u8]>,
) -> Option<&'a [u8]> {
    debug_assert!(keys.len() <= 32);
    let mut seen = 0u32;
    let mut s = ws(s);
    if let Some(rest) = s.strip_prefix(b"}") {
        return Some(rest);
    }
    loop {
        // The byte after the quote tells most keys apart without a comparison.
        let k = keys
            .iter()
            .position(|k| s.get(1) == k.get(1) && s.starts_with(k))?;
        if seen & (1 << k) != 0 {
            return None;
        }
        seen |= 1 << k;
        s = ws(member(k, token(&s[keys[k].len()..], b":")?)?);
        match s.split_first()? {
            (b',', rest) => s = ws(rest),
            (b'}', rest) => return Some(rest),
            _ => return None,
        }
    }
}

/// The rest of a raw SSE event (as [`crate::sse::SseFramer`] yields it, its blank line
/// included) after `data:` and an optional space, without the final line ends: the
/// event's data if it was one `data:` line. Nothing is scanned; a match of the functions
/// here on these bytes (which take no CR or LF) proves that it was.
#[inline]
pub fn sse_line(raw: &[u8]) -> Option<&[u8]> {
    let rest = raw.strip_prefix(b"data:")?;
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    let end = rest.iter().rposition(|&b| b != b'\n' && b != b'\r')?;
    Some(&rest[..=end])
}
