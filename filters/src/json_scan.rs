//! An allocation-free, validating JSON scanner: walks a document's bytes, checks them against
//! JSON's grammar exactly as `serde_json` does, and hands out the raw text of an object's
//! members without building any value.
//!
//! What it accepts is a subset of what `serde_json` accepts (the same grammar: its
//! whitespace set, its number forms, `\uXXXX` escapes with any four hex digits, no control
//! characters in strings, nothing but whitespace after the document), with one limit of its
//! own: nesting deeper than [`MAX_DEPTH`] is [`Error::TooDeep`]. It does not check UTF-8
//! (`serde_json` checks it only for strings it returns): a caller that must refuse what
//! `serde_json` refuses runs `std::str::from_utf8` on the document first.

/// Deepest nesting a [`Scanner`] follows (`serde_json` stops at 128).
pub const MAX_DEPTH: usize = 64;

/// Why a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Not JSON: `serde_json` refuses it too.
    Syntax,
    /// Nested deeper than [`MAX_DEPTH`] (`serde_json` may still accept it).
    TooDeep,
}

/// A JSON string as it appears in the document, without its quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawStr<'a> {
    /// The bytes between the quotes, escapes not decoded.
    pub raw: &'a [u8],
    /// Whether `raw` holds a `\` escape (then it is not the string's text).
    pub escaped: bool,
}

impl<'a> RawStr<'a> {
    /// The string's bytes when it has no escapes.
    pub fn plain(&self) -> Option<&'a [u8]> {
        (!self.escaped).then_some(self.raw)
    }
}

/// JSON whitespace (`serde_json`'s set).
#[inline]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\t' | b'\r')
}

/// A cursor over one document.
#[derive(Debug, Clone)]
pub struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

const ONES: u64 = u64::MAX / 255;
const HIGHS: u64 = ONES << 7;

impl<'a> Scanner<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Scanner { bytes, pos: 0 }
    }

    /// Offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Skips whitespace; the next byte, if any.
    #[inline(always)]
    pub fn skip_ws(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes.get(self.pos) {
            if !is_ws(b) {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    /// Consumes `b` (after whitespace) or fails.
    #[inline(always)]
    fn expect(&mut self, b: u8) -> Result<(), Error> {
        if self.skip_ws() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Error::Syntax)
        }
    }

    /// Only whitespace is left.
    #[inline]
    pub fn end(&mut self) -> Result<(), Error> {
        match self.skip_ws() {
            None => Ok(()),
            Some(_) => Err(Error::Syntax),
        }
    }

    /// A string whose opening quote is the next byte.
    #[inline(always)]
    pub fn string(&mut self) -> Result<RawStr<'a>, Error> {
        let bytes = self.bytes;
        let mut i = self.pos;
        if bytes.get(i) != Some(&b'"') {
            return Err(Error::Syntax);
        }
        i += 1;
        let start = i;
        let mut escaped = false;
        loop {
            // Eight bytes at a time up to the first quote, backslash or control character
            // (the lowest flagged byte is exact; later flags may be false, so only it is used).
            while let Some(chunk) = bytes.get(i..i + 8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                let w = u64::from_le_bytes(word);
                let ctrl = w.wrapping_sub(ONES * 0x20) & !w;
                let q = w ^ (ONES * u64::from(b'"'));
                let quote = q.wrapping_sub(ONES) & !q;
                let s = w ^ (ONES * u64::from(b'\\'));
                let slash = s.wrapping_sub(ONES) & !s;
                let hit = (ctrl | quote | slash) & HIGHS;
                if hit != 0 {
                    i += (hit.trailing_zeros() / 8) as usize;
                    break;
                }
                i += 8;
            }
            let Some(&b) = bytes.get(i) else {
                return Err(Error::Syntax);
            };
            i += 1;
            match b {
                b'"' => {
                    self.pos = i;
                    return Ok(RawStr {
                        raw: &bytes[start..i - 1],
                        escaped,
                    });
                }
                b'\\' => {
                    escaped = true;
                    self.pos = i;
                    self.escape()?;
                    i = self.pos;
                }
                0..=0x1F => return Err(Error::Syntax),
                _ => {}
            }
        }
    }

    /// The rest of an escape after its backslash.
    #[cold]
    fn escape(&mut self) -> Result<(), Error> {
        let Some(&b) = self.bytes.get(self.pos) else {
            return Err(Error::Syntax);
        };
        self.pos += 1;
        match b {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(()),
            // Any four hex digits (lone surrogates too, as `serde_json` skips them).
            b'u' => match self.bytes.get(self.pos..self.pos + 4) {
                Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => {
                    self.pos += 4;
                    Ok(())
                }
                _ => Err(Error::Syntax),
            },
            _ => Err(Error::Syntax),
        }
    }

    #[inline(always)]
    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A number whose first byte (`-` or a digit) is the next byte.
    #[inline(always)]
    fn number(&mut self) -> Result<(), Error> {
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.bytes.get(self.pos) {
            Some(b'0') => {
                self.pos += 1;
                if self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
                    return Err(Error::Syntax);
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Error::Syntax),
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Error::Syntax);
            }
        }
        if matches!(self.bytes.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.bytes.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(Error::Syntax);
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn literal(&mut self, word: &[u8]) -> Result<(), Error> {
        if self.bytes.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Error::Syntax)
        }
    }

    /// An object member's key and colon (after whitespace).
    #[inline(always)]
    fn key(&mut self) -> Result<RawStr<'a>, Error> {
        if self.skip_ws() != Some(b'"') {
            return Err(Error::Syntax);
        }
        let key = self.string()?;
        self.expect(b':')?;
        Ok(key)
    }

    /// Skips one value (after whitespace) and returns its text, without the whitespace
    /// around it. Iterative: the open containers are one bit each of a `u64`.
    pub fn value(&mut self) -> Result<&'a [u8], Error> {
        let Some(_) = self.skip_ws() else {
            return Err(Error::Syntax);
        };
        let start = self.pos;
        // Bit `d` is set when the container at depth `d + 1` is an object.
        let mut objects: u64 = 0;
        let mut depth = 0usize;
        loop {
            let Some(b) = self.skip_ws() else {
                return Err(Error::Syntax);
            };
            let mut complete = true;
            match b {
                b'{' | b'[' => {
                    if depth == MAX_DEPTH {
                        return Err(Error::TooDeep);
                    }
                    self.pos += 1;
                    let object = b == b'{';
                    if object {
                        objects |= 1 << depth;
                    } else {
                        objects &= !(1 << depth);
                    }
                    depth += 1;
                    let close = if object { b'}' } else { b']' };
                    if self.skip_ws() == Some(close) {
                        self.pos += 1;
                        depth -= 1;
                    } else {
                        if object {
                            self.key()?;
                        }
                        complete = false;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b'-' | b'0'..=b'9' => self.number()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => return Err(Error::Syntax),
            }
            if !complete {
                continue;
            }
            // A value ended: close containers until one goes on.
            loop {
                if depth == 0 {
                    return Ok(&self.bytes[start..self.pos]);
                }
                let object = objects & (1 << (depth - 1)) != 0;
                match self.skip_ws() {
                    Some(b',') => {
                        self.pos += 1;
                        if object {
                            self.key()?;
                        }
                        break;
                    }
                    Some(b'}') if object => {
                        self.pos += 1;
                        depth -= 1;
                    }
                    Some(b']') if !object => {
                        self.pos += 1;
                        depth -= 1;
                    }
                    _ => return Err(Error::Syntax),
                }
            }
        }
    }
}

/// The members of one object, in document order (duplicates included), each checked as it
/// is reached: call [`Members::next_member`] until it returns `Ok(None)`, then
/// [`Members::end`] to check that only whitespace follows the object.
#[derive(Debug, Clone)]
pub struct Members<'a> {
    s: Scanner<'a>,
    first: bool,
    done: bool,
}

impl<'a> Members<'a> {
    /// The members of the object `bytes` holds (whitespace around it allowed); `None` when
    /// the first byte that is not whitespace is not `{`.
    pub fn of(bytes: &'a [u8]) -> Option<Self> {
        let mut s = Scanner::new(bytes);
        if s.skip_ws() != Some(b'{') {
            return None;
        }
        s.pos += 1;
        Some(Members {
            s,
            first: true,
            done: false,
        })
    }

    /// The next member's key and value text (the value with nesting up to
    /// [`MAX_DEPTH`]` - 1` below the object), `Ok(None)` after the last.
    #[allow(clippy::type_complexity)]
    #[inline]
    pub fn next_member(&mut self) -> Result<Option<(RawStr<'a>, &'a [u8])>, Error> {
        if self.done {
            return Ok(None);
        }
        match self.s.skip_ws() {
            Some(b'}') => {
                self.s.pos += 1;
                self.done = true;
                return Ok(None);
            }
            Some(b',') if !self.first => self.s.pos += 1,
            Some(_) if self.first => {}
            _ => return Err(Error::Syntax),
        }
        self.first = false;
        let key = self.s.key()?;
        let value = self.s.value()?;
        Ok(Some((key, value)))
    }

    /// After the last member: nothing but whitespace follows the object.
    pub fn end(mut self) -> Result<(), Error> {
        if !self.done {
            return Err(Error::Syntax);
        }
        self.s.end()
    }
}

/// The value `serde_json::Value::as_u64` gives for the number whose text is `raw` (a plain
/// non-negative integer that fits; `None` for a fraction, an exponent, a sign, or anything
/// that is not a number).
pub fn as_u64(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || (raw.len() > 1 && raw[0] == b'0') {
        return None;
    }
    raw.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Whether the scanner accepts `doc` as one value followed by whitespace.
    fn accepts(doc: &[u8]) -> Result<(), Error> {
        let mut s = Scanner::new(doc);
        s.value()?;
        s.end()
    }

    #[test]
    fn agrees_with_serde_on_the_grammar() {
        let cases: &[&str] = &[
            "0",
            "-0",
            "01",
            "-",
            "-a",
            "1.",
            "1.5",
            ".5",
            "1e",
            "1e+",
            "1E-7",
            "1e400",
            "-12.5e+3",
            "00",
            "true",
            "tru",
            "truex",
            "null",
            "nul",
            "false ",
            " \t\r\n{}\n",
            "{",
            "}",
            "[]",
            "[,]",
            "[1,]",
            "[1 2]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{\"a\":}",
            "{a:1}",
            "{\"a\":1 \"b\":2}",
            "{\"a\":[1,{\"b\":[]}],\"c\":{}}",
            "\"\\u12G4\"",
            "\"\\u12aF\"",
            "\"\\ud800\"",
            "\"\\x\"",
            "\"a\\",
            "\"tab\there\"",
            "\"\u{7f}\"",
            "\"é\"",
            "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
            "\"unterminated",
            "[1] x",
            "{} {}",
            "",
            "  ",
            "[\"abcdefghijklmnopqrstuvwxyz\\\"0123456789\"]",
            "{\"k\":\"0123456789abcdef\\u0000xyz\"}",
        ];
        for case in cases {
            let serde = serde_json::from_slice::<serde::de::IgnoredAny>(case.as_bytes()).is_ok();
            assert_eq!(accepts(case.as_bytes()).is_ok(), serde, "{case:?}");
        }
    }

    #[test]
    fn control_characters_in_strings_are_refused_at_every_offset() {
        for len in 0..20 {
            for at in 0..len {
                for bad in [0u8, 0x1f, b'\n'] {
                    let mut s = vec![b'"'];
                    s.extend(std::iter::repeat_n(b'a', len));
                    s[1 + at] = bad;
                    s.push(b'"');
                    assert_eq!(accepts(&s), Err(Error::Syntax), "{s:?}");
                }
            }
        }
    }

    /// A small deterministic generator (xorshift) for the property loops.
    pub(crate) struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn agrees_with_serde_on_random_token_soup() {
        const PIECES: [&str; 28] = [
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\n",
            "\"a\"",
            "\"\\u00e9\"",
            "\"\\ud800\"",
            "\"",
            "\\",
            "1",
            "0",
            "-",
            ".",
            "e",
            "+",
            "-0.5e3",
            "true",
            "nul",
            "null",
            "x",
            "\"k\":",
            "01",
            "\u{7f}",
            "é",
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut doc = Vec::new();
        let mut accepted = 0;
        for _ in 0..200_000 {
            doc.clear();
            for _ in 0..rng.below(12) {
                doc.extend_from_slice(PIECES[rng.below(PIECES.len())].as_bytes());
            }
            if rng.below(8) == 0 {
                doc.push(rng.next() as u8);
            }
            let serde = serde_json::from_slice::<serde::de::IgnoredAny>(&doc).is_ok();
            accepted += usize::from(serde);
            assert_eq!(
                accepts(&doc).is_ok(),
                serde,
                "{:?}",
                String::from_utf8_lossy(&doc)
            );
        }
        assert!(accepted > 5_000, "the soup is mostly refused: {accepted}");
    }

    #[test]
    fn members_are_handed_out_raw() {
        let doc = br#" {"a" : 1 , "b\"":{"x":[1,2]},"a":"s" } "#;
        let mut m = Members::of(doc).unwrap();
        let (k, v) = m.next_member().unwrap().unwrap();
        assert_eq!((k.plain(), v), (Some(&b"a"[..]), &b"1"[..]));
        let (k, v) = m.next_member().unwrap().unwrap();
        assert_eq!(
            (k.raw, k.escaped, v),
            (&br#"b\""#[..], true, &br#"{"x":[1,2]}"#[..])
        );
        let (k, v) = m.next_member().unwrap().unwrap();
        assert_eq!((k.plain(), v), (Some(&b"a"[..]), &br#""s""#[..]));
        assert_eq!(m.next_member(), Ok(None));
        assert_eq!(m.end(), Ok(()));
        assert!(Members::of(b"[1]").is_none());
        let mut m = Members::of(b"{} x").unwrap();
        assert_eq!(m.next_member(), Ok(None));
        assert_eq!(m.end(), Err(Error::Syntax));
        let mut m = Members::of(b"{,\"a\":1}").unwrap();
        assert_eq!(m.next_member(), Err(Error::Syntax));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(accepts(deep(MAX_DEPTH).as_bytes()), Ok(()));
        assert_eq!(accepts(deep(MAX_DEPTH + 1).as_bytes()), Err(Error::TooDeep));
        assert_eq!(accepts(deep(100_000).as_bytes()), Err(Error::TooDeep));
    }

    #[test]
    fn reads_u64_like_serde() {
        for raw in [
            "0",
            "7",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
            "-1",
            "-0",
            "1.0",
            "1e2",
            "\"5\"",
            "null",
        ] {
            let serde = serde_json::from_str::<serde_json::Value>(raw)
                .ok()
                .and_then(|v| v.as_u64());
            assert_eq!(as_u64(raw.as_bytes()), serde, "{raw}");
        }
    }
}
