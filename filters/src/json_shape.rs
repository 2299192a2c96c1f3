//! Reading a request body without building it: its top-level fields as slices of the
//! client's bytes, and what kind of JSON value a field holds.
//!
//! A `serde_json::Value` tree costs 15-20 times the JSON text it came from (a map node,
//! a `String` and a 32-byte `Value` per item), and the gateway only needs a few top-level
//! fields to route a request, so [`Fields`] keeps every top-level value as a byte range of the
//! body and the checks here walk values without keeping them (`IgnoredAny`).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// The kind of a JSON value (and a string's text), read without keeping nested values.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number,
    String(Cow<'a, str>),
    Array,
    Object,
}

impl Json<'_> {
    /// The kind as OpenAI's error messages name it ("a string", "an array").
    pub fn type_name(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number => "a number",
            Json::String(_) => "a string",
            Json::Array => "an array",
            Json::Object => "an object",
        }
    }

    /// Reads the kind of the JSON text `raw` (a value already checked to be well-formed).
    pub fn of(raw: &str) -> Json<'_> {
        serde_json::from_str(raw).unwrap_or(Json::Null)
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json<'de>, E> {
                Ok(Json::Null)
            }
            fn visit_none<E>(self) -> Result<Json<'de>, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Json<'de>, E> {
                Ok(Json::Bool(b))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Json<'de>, E> {
                Ok(Json::Number)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Json<'de>, E> {
                Ok(Json::Number)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Json<'de>, E> {
                Ok(Json::Number)
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'de>, E> {
                Ok(Json::String(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Json<'de>, E> {
                Ok(Json::String(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Json<'de>, E> {
                Ok(Json::String(Cow::Owned(s)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Json::Array)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Json::Object)
            }
        }
        d.deserialize_any(V)
    }
}

/// A body's top-level fields: each name with the byte range of its value in the body. A
/// name given twice keeps its last value (as `serde_json::Map` does); names are in sorted
/// order. A name is a range of the body too, unless it has escapes (then it is decoded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(Vec<(Name, Range<usize>)>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    /// The name's text in the body, between its quotes (no escapes).
    At(Range<usize>),
    Decoded(Box<str>),
}

impl Name {
    fn bytes<'a>(&'a self, body: &'a [u8]) -> &'a [u8] {
        match self {
            Name::At(r) => body.get(r.clone()).unwrap_or_default(),
            Name::Decoded(s) => s.as_bytes(),
        }
    }
}

/// What [`Fields::parse`] found at the top of a body that is well-formed JSON.
pub enum Top {
    Object(Fields),
    /// Not an object: the kind of value it is.
    Other(&'static str),
}

impl Fields {
    /// Reads the top level of `body`. The whole body is checked to be JSON that a
    /// `serde_json::Value` would accept (numbers in range, no lone surrogates), so the tree
    /// built later on demand cannot fail and an upstream only ever gets valid JSON.
    ///
    /// One walk ([`scan_object`]) checks and locates at once; what it cannot vouch for (not
    /// an object, very deep, odd escapes or numbers, an error) is read again by `serde_json`,
    /// which decides and words the error.
    pub fn parse(body: &[u8]) -> Result<Top, serde_json::Error> {
        Self::parse_with_roles(body, None::<fn(&str) -> bool>).map(|(top, _)| top)
    }

    /// [`Fields::parse`] for a chat body, whose `messages` it reads in the same walk: true
    /// when it vouches for them as [`all_roles`] does, with `known` (an object that has a
    /// `messages` member; false says nothing).
    pub fn parse_chat(
        body: &[u8],
        known: impl FnMut(&str) -> bool,
    ) -> Result<(Top, bool), serde_json::Error> {
        Self::parse_with_roles(body, Some(known))
    }

    fn parse_with_roles(
        body: &[u8],
        mut known: Option<impl FnMut(&str) -> bool>,
    ) -> Result<(Top, bool), serde_json::Error> {
        let mut out: Vec<(Name, Range<usize>)> = Vec::with_capacity(16);
        let mut decoded = true;
        // Whether the last `messages` member's roles are vouched for.
        let mut roles = false;
        let scanned = scan_members(body, |s, key, escaped, depth| {
            let start = s.i;
            match known.as_mut() {
                Some(known) if !escaped && &s.b[key.clone()] == b"messages" => {
                    roles = s.peek()? == b'[' && s.roles(depth, known)?;
                    if !roles {
                        // Not an array, or no verdict: read it anew, as any value.
                        s.i = start;
                        s.value(depth)?;
                    }
                }
                _ => {
                    // An escaped name could decode to `messages`.
                    roles &= !escaped;
                    s.value(depth)?;
                }
            }
            let value = start..s.i;
            let name = if escaped {
                // The quotes around the key are part of the body.
                match serde_json::from_slice::<String>(&body[key.start - 1..key.end + 1]) {
                    Ok(k) => Name::Decoded(k.into_boxed_str()),
                    Err(_) => {
                        decoded = false;
                        return Some(());
                    }
                }
            } else {
                Name::At(key)
            };
            out.push((name, value));
            Some(())
        });
        if scanned.is_some() && decoded {
            return Ok((Top::Object(Fields::sorted(body, out)), roles));
        }
        Self::parse_slow(body).map(|top| (top, false))
    }

    /// [`Fields::parse`] by `serde_json` alone: a full `Strict` walk, then the fields.
    fn parse_slow(body: &[u8]) -> Result<Top, serde_json::Error> {
        serde_json::from_slice::<Strict>(body)?;
        let base = body.as_ptr() as usize;
        let top: TopLevel<'_> = serde_json::from_slice(body)?;
        Ok(match top {
            TopLevel::Object(fields) => {
                let out = fields
                    .into_iter()
                    .map(|(k, v)| {
                        let start = v.get().as_ptr() as usize - base;
                        let name = match k {
                            Cow::Borrowed(k) => {
                                let at = k.as_ptr() as usize - base;
                                Name::At(at..at + k.len())
                            }
                            Cow::Owned(k) => Name::Decoded(k.into_boxed_str()),
                        };
                        (name, start..start + v.get().len())
                    })
                    .collect();
                Top::Object(Fields::sorted(body, out))
            }
            TopLevel::Other(kind) => Top::Other(kind),
        })
    }

    /// Sorted by name, the last of equal names kept.
    fn sorted(body: &[u8], mut out: Vec<(Name, Range<usize>)>) -> Fields {
        // Stable, so equal names stay in the body's order.
        out.sort_by(|a, b| a.0.bytes(body).cmp(b.0.bytes(body)));
        out.dedup_by(|later, earlier| {
            let same = later.0.bytes(body) == earlier.0.bytes(body);
            if same {
                // `dedup_by` keeps `earlier`: give it the later value.
                std::mem::swap(earlier, later);
            }
            same
        });
        Fields(out)
    }

    /// The JSON text of field `name` in `body`.
    pub fn get<'b>(&self, body: &'b [u8], name: &str) -> Option<&'b str> {
        let i = self
            .0
            .binary_search_by(|(k, _)| k.bytes(body).cmp(name.as_bytes()))
            .ok()?;
        // The ranges are slices of a body that parsed as UTF-8 JSON.
        std::str::from_utf8(body.get(self.0[i].1.clone())?).ok()
    }

    /// Every field: its name and JSON text, in name order.
    pub fn iter<'a>(&'a self, body: &'a [u8]) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        self.0.iter().map(move |(k, r)| {
            (
                std::str::from_utf8(k.bytes(body)).unwrap_or_default(),
                body.get(r.clone()).unwrap_or_default(),
            )
        })
    }
}

/// Walks `body`, which must be a JSON object, checking all of it as a `serde_json::Value`
/// would read it, and calls `member(name, escaped, value)` for each top-level member in
/// order: the byte range of the name between its quotes (`escaped`: it has escapes, still
/// in), and of its value. None says nothing about the body (not an object, or JSON the walk
/// does not vouch for: very deep, odd escapes, an error): read it with `serde_json`.
pub fn scan_object(
    body: &[u8],
    mut member: impl FnMut(Range<usize>, bool, Range<usize>),
) -> Option<()> {
    scan_members(body, |s, key, escaped, depth| {
        let start = s.i;
        s.value(depth)?;
        member(key, escaped, start..s.i);
        Some(())
    })
}

/// [`scan_object`] where `member` reads each value itself (see [`Scan::object`]).
fn scan_members<'a>(
    body: &'a [u8],
    member: impl FnMut(&mut Scan<'a>, Range<usize>, bool, u32) -> Option<()>,
) -> Option<()> {
    std::str::from_utf8(body).ok()?;
    let mut s = Scan::new(body);
    s.ws();
    if s.peek()? != b'{' {
        return None;
    }
    s.object(0, member)?;
    s.end()
}

/// True when `messages` is a non-empty JSON array (all of it as a `serde_json::Value` would
/// read it) of objects that each have one `role`, a string without escapes that `known`
/// accepts, and no member names with escapes. False says nothing: read it the slow way.
pub fn all_roles(messages: &[u8], mut known: impl FnMut(&str) -> bool) -> bool {
    let mut walk = || -> Option<bool> {
        std::str::from_utf8(messages).ok()?;
        let mut s = Scan::new(messages);
        s.ws();
        if s.peek()? != b'[' {
            return None;
        }
        let vouched = s.roles(0, &mut known)?;
        s.end()?;
        Some(vouched)
    };
    walk() == Some(true)
}

/// Walks a JSON value the way `serde_json::Value` reads it (numbers parsed, strings
/// decoded, the same nesting limit) and keeps nothing.
struct Strict;

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strict;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
                Ok(Strict)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
                while seq.next_element::<Strict>()?.is_some() {}
                Ok(Strict)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
                while map.next_entry::<Strict, Strict>()?.is_some() {}
                Ok(Strict)
            }
        }
        d.deserialize_any(V)
    }
}

enum TopLevel<'a> {
    Object(Vec<(Cow<'a, str>, &'a RawValue)>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<Key<'de>>()? {
                    out.push((k.0, map.next_value::<&'de RawValue>()?));
                }
                Ok(TopLevel::Object(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TopLevel::Other("an array"))
            }
            fn visit_unit<E>(self) -> Result<TopLevel<'de>, E> {
                Ok(TopLevel::Other("null"))
            }
            fn visit_bool<E>(self, _: bool) -> Result<TopLevel<'de>, E> {
                Ok(TopLevel::Other("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<TopLevel<'de>, E> {
                Ok(TopLevel::Other("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<TopLevel<'de>, E> {
                Ok(TopLevel::Other("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<TopLevel<'de>, E> {
                Ok(TopLevel::Other("a number"))
            }
            fn visit_str<E>(self, _: &str) -> Result<TopLevel<'de>, E> {
                Ok(TopLevel::Other("a string"))
            }
        }
        d.deserialize_any(V)
    }
}

/// An object key, borrowed from the body unless it has escapes.
pub struct Key<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The first problem with a chat request's `messages` array, found in one pass that keeps
/// nothing: each message must be an object with a string `role`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessagesCheck {
    Ok,
    NotArray(&'static str),
    Empty,
    /// Message `i` is not an object (its kind).
    NotObject(usize, &'static str),
    /// Message `i` has no string `role`.
    NoRole(usize),
}

impl MessagesCheck {
    /// Checks the JSON text of a `messages` value.
    pub fn of(raw: &str) -> MessagesCheck {
        if all_roles(raw.as_bytes(), |_| true) {
            return MessagesCheck::Ok;
        }
        serde_json::from_str(raw).unwrap_or(MessagesCheck::NotArray("null"))
    }
}

impl<'de> Deserialize<'de> for MessagesCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MessagesCheck;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MessagesCheck, A::Error> {
                let mut result = MessagesCheck::Ok;
                let mut i = 0;
                while let Some(m) = seq.next_element::<MessageCheck>()? {
                    if result == MessagesCheck::Ok {
                        match m {
                            MessageCheck::Ok => {}
                            MessageCheck::NotObject(kind) => {
                                result = MessagesCheck::NotObject(i, kind)
                            }
                            MessageCheck::NoRole => result = MessagesCheck::NoRole(i),
                        }
                    }
                    i += 1;
                }
                Ok(if i == 0 { MessagesCheck::Empty } else { result })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MessagesCheck, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MessagesCheck::NotArray("an object"))
            }
            fn visit_unit<E>(self) -> Result<MessagesCheck, E> {
                Ok(MessagesCheck::NotArray("null"))
            }
            fn visit_bool<E>(self, _: bool) -> Result<MessagesCheck, E> {
                Ok(MessagesCheck::NotArray("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<MessagesCheck, E> {
                Ok(MessagesCheck::NotArray("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<MessagesCheck, E> {
                Ok(MessagesCheck::NotArray("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<MessagesCheck, E> {
                Ok(MessagesCheck::NotArray("a number"))
            }
            fn visit_str<E>(self, _: &str) -> Result<MessagesCheck, E> {
                Ok(MessagesCheck::NotArray("a string"))
            }
        }
        d.deserialize_any(V)
    }
}

enum MessageCheck {
    Ok,
    NotObject(&'static str),
    NoRole,
}

impl<'de> Deserialize<'de> for MessageCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MessageCheck;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MessageCheck, A::Error> {
                // The last `role` counts, as in a `serde_json::Map`.
                let mut role_is_string = false;
                while let Some(k) = map.next_key::<Key<'de>>()? {
                    if k.0 == "role" {
                        role_is_string = matches!(map.next_value::<Json<'de>>()?, Json::String(_));
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(if role_is_string {
                    MessageCheck::Ok
                } else {
                    MessageCheck::NoRole
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MessageCheck, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MessageCheck::NotObject("an array"))
            }
            fn visit_unit<E>(self) -> Result<MessageCheck, E> {
                Ok(MessageCheck::NotObject("null"))
            }
            fn visit_bool<E>(self, _: bool) -> Result<MessageCheck, E> {
                Ok(MessageCheck::NotObject("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<MessageCheck, E> {
                Ok(MessageCheck::NotObject("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<MessageCheck, E> {
                Ok(MessageCheck::NotObject("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<MessageCheck, E> {
                Ok(MessageCheck::NotObject("a number"))
            }
            fn visit_str<E>(self, _: &str) -> Result<MessageCheck, E> {
                Ok(MessageCheck::NotObject("a string"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A validating JSON walk over bytes that builds nothing: the fast path of [`Fields::parse`],
/// [`MessagesCheck::of`], [`all_roles`] and [`scan_object`].
///
/// It accepts a subset of what `serde_json` reads into a `Value`: the same grammar, strings
/// with no raw control characters and no lone surrogates, numbers that `serde_json` reads as
/// an `f64` when they are not short integers, nesting at most [`MAX_DEPTH`] deep, UTF-8
/// checked by the caller. Whatever it refuses goes to the `serde_json` path, which decides
/// (and words the error), so callers answer exactly as `serde_json` alone would.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

/// What [`Scan::value`] read: only strings matter to its callers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Other,
}

/// Deeper than this goes to `serde_json` (whose own limit is 127 levels).
const MAX_DEPTH: u32 = 100;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Bits set at (at least) the first byte of `w` that is `"`, `\` or below 0x20, and only at
/// or above it: the lowest set bit is exact.
#[inline(always)]
fn special(w: u64) -> u64 {
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    zero(w ^ (ONES * b'"' as u64))
        | zero(w ^ (ONES * b'\\' as u64))
        | (w.wrapping_sub(ONES * 0x20) & !w & HIGHS)
}

impl<'a> Scan<'a> {
    fn new(b: &'a [u8]) -> Self {
        Scan { b, i: 0 }
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    /// Only whitespace left.
    fn end(&mut self) -> Option<()> {
        self.ws();
        (self.i == self.b.len()).then_some(())
    }

    /// One value at `self.i` (no leading whitespace); `depth` containers enclose it.
    fn value(&mut self, depth: u32) -> Option<Kind> {
        Some(match self.peek()? {
            b'"' => {
                self.string()?;
                Kind::String
            }
            b'{' => {
                self.object(depth, |s, _, _, depth| s.value(depth).map(drop))?;
                Kind::Other
            }
            b'[' => {
                self.array(depth, |s, depth| s.value(depth).map(drop))?;
                Kind::Other
            }
            b't' => {
                self.literal(b"true")?;
                Kind::Other
            }
            b'f' => {
                self.literal(b"false")?;
                Kind::Other
            }
            b'n' => {
                self.literal(b"null")?;
                Kind::Other
            }
            b'-' | b'0'..=b'9' => {
                self.number()?;
                Kind::Other
            }
            _ => return None,
        })
    }

    /// A `messages` array at its `[`, checked as any value; Some(true) when it is
    /// non-empty and each element an object with one `role`, a string without escapes that
    /// `known` accepts, and no member names with escapes (see [`all_roles`]).
    fn roles(&mut self, depth: u32, known: &mut impl FnMut(&str) -> bool) -> Option<bool> {
        let mut vouched = true;
        let mut n = 0usize;
        self.array(depth, |s, depth| {
            n += 1;
            if s.peek()? != b'{' {
                vouched = false;
                return s.value(depth).map(drop);
            }
            let mut role = None;
            let mut plain = true;
            s.object(depth, |s, key, escaped, depth| {
                let start = s.i;
                let kind = s.value(depth)?;
                if escaped {
                    plain = false;
                } else if &s.b[key] == b"role" {
                    plain &= role.is_none() && kind == Kind::String;
                    role = Some(start + 1..s.i - 1);
                }
                Some(())
            })?;
            vouched &= plain
                && role.is_some_and(|r| {
                    let role = &s.b[r];
                    !role.contains(&b'\\') && std::str::from_utf8(role).is_ok_and(&mut *known)
                });
            Some(())
        })?;
        Some(vouched && n > 0)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + word.len())? != word {
            return None;
        }
        self.i += word.len();
        Some(())
    }

    /// A number; anything but a short integer is also read by `serde_json` as an `f64`,
    /// which refuses what overflows, as its `Value` does.
    fn number(&mut self) -> Option<()> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut plain = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
            plain = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.some_digits()?;
            plain = false;
        }
        if !plain || self.i - start > 18 {
            serde_json::from_slice::<f64>(&self.b[start..self.i]).ok()?;
        }
        Some(())
    }

    #[inline(always)]
    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }

    /// A string at its opening quote; leaves `self.i` after the closing one. Some(true)
    /// when it has escapes.
    fn string(&mut self) -> Option<bool> {
        self.i += 1;
        let mut escaped = false;
        loop {
            while let Some(w) = self.b.get(self.i..self.i + 8) {
                let w = u64::from_le_bytes(w.try_into().ok()?);
                let s = special(w);
                if s != 0 {
                    self.i += (s.trailing_zeros() / 8) as usize;
                    break;
                }
                self.i += 8;
            }
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(escaped);
                }
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
    }

    /// An escape at its backslash.
    fn escape(&mut self) -> Option<()> {
        match *self.b.get(self.i + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
            b'u' => {
                let hi = self.hex(self.i + 2)?;
                match hi {
                    0xD800..=0xDBFF => {
                        if self.b.get(self.i + 6..self.i + 8)? != b"\\u" {
                            return None;
                        }
                        if !(0xDC00..=0xDFFF).contains(&self.hex(self.i + 8)?) {
                            return None;
                        }
                        self.i += 12;
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => self.i += 6,
                }
            }
            _ => return None,
        }
        Some(())
    }

    fn hex(&self, at: usize) -> Option<u32> {
        let mut n = 0;
        for &c in self.b.get(at..at + 4)? {
            n = n * 16 + (c as char).to_digit(16)?;
        }
        Some(n)
    }

    /// An object at its `{`: `member(scan, key, escaped, value)` reads each member's value
    /// (the key is the text between its quotes, `escaped` when it has escapes; `value`
    /// starts at the value) and leaves `self.i` after it.
    fn object(
        &mut self,
        depth: u32,
        mut member: impl FnMut(&mut Self, Range<usize>, bool, u32) -> Option<()>,
    ) -> Option<()> {
        let depth = depth + 1;
        if depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let start = self.i + 1;
            let escaped = self.string()?;
            let key = start..self.i - 1;
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.i += 1;
            self.ws();
            member(self, key, escaped, depth)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An array at its `[`: `element(scan, depth)` reads each element.
    fn array(
        &mut self,
        depth: u32,
        mut element: impl FnMut(&mut Self, u32) -> Option<()>,
    ) -> Option<()> {
        let depth = depth + 1;
        if depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            element(self, depth)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_slices_of_the_body_last_duplicate_wins() {
        let body = br#"{"b": [1, {"x":2}], "a":"s\"q", "b":true}"#;
        let Top::Object(f) = Fields::parse(body).unwrap() else {
            panic!("an object")
        };
        assert_eq!(f.get(body, "a"), Some(r#""s\"q""#));
        assert_eq!(f.get(body, "b"), Some("true"));
        assert_eq!(f.get(body, "c"), None);
        let names: Vec<&str> = f.iter(body).map(|(k, _)| k).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(matches!(
            Fields::parse(b"[1]").unwrap(),
            Top::Other("an array")
        ));
        assert!(Fields::parse(b"{\"a\":1} x").is_err());
        assert!(Fields::parse(b"{\"a\":NaN}").is_err());
        // What a serde_json::Value refuses is refused here too.
        for t in [
            r#"{"a":1e400}"#,
            r#"{"a":[-1e400]}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"\udc00":1}"#,
        ] {
            assert!(Fields::parse(t.as_bytes()).is_err(), "{t}");
            assert!(serde_json::from_str::<serde_json::Value>(t).is_err(), "{t}");
        }
        assert!(Fields::parse(br#"{"a":1e-400,"b":"\ud83d\ude00"}"#).is_ok());
    }

    #[test]
    fn messages_are_checked_without_keeping_them() {
        assert_eq!(MessagesCheck::of(r#"[{"role":"user"}]"#), MessagesCheck::Ok);
        assert_eq!(MessagesCheck::of("[]"), MessagesCheck::Empty);
        assert_eq!(
            MessagesCheck::of(r#""hi""#),
            MessagesCheck::NotArray("a string")
        );
        assert_eq!(
            MessagesCheck::of(r#"[{"role":"user"},5,{}]"#),
            MessagesCheck::NotObject(1, "a number")
        );
        assert_eq!(
            MessagesCheck::of(r#"[{"role":"user"},{"role":1}]"#),
            MessagesCheck::NoRole(1)
        );
        assert_eq!(
            MessagesCheck::of(r#"[{"role":1,"role":"user"}]"#),
            MessagesCheck::Ok
        );
        assert_eq!(Json::of(r#""a\nb""#), Json::String("a\nb".into()));
        assert_eq!(Json::of("[1,[2]]"), Json::Array);
    }

    /// The one-walk parse answers as `serde_json` alone does (accepted or not, the same
    /// fields), on tricky bodies and on every byte-level mutation of a typical one.
    #[test]
    fn one_walk_answers_as_serde_json() {
        fn same(body: &[u8]) {
            let fast = Fields::parse(body);
            let slow = Fields::parse_slow(body);
            let value = serde_json::from_slice::<serde_json::Value>(body);
            assert_eq!(
                fast.is_ok(),
                value.is_ok(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
            match (fast, slow) {
                (Ok(Top::Object(a)), Ok(Top::Object(b))) => {
                    let a: Vec<_> = a.iter(body).collect();
                    let b: Vec<_> = b.iter(body).collect();
                    assert_eq!(a, b, "{:?}", String::from_utf8_lossy(body));
                    let map = value.unwrap();
                    let map = map.as_object().unwrap();
                    assert_eq!(a.len(), map.len());
                    for (k, v) in a {
                        let v: serde_json::Value = serde_json::from_slice(v).unwrap();
                        assert_eq!(map.get(k), Some(&v), "{k}");
                    }
                }
                (Ok(Top::Other(a)), Ok(Top::Other(b))) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                _ => panic!(
                    "fast and slow differ on {:?}",
                    String::from_utf8_lossy(body)
                ),
            }
            // The fuzz harnesses' invariants hold on every one of these bodies too.
            crate::fuzzing::request(&[&[0u8][..], body].concat());
            crate::fuzzing::answers(&[&[0u8, 0, 0, 0][..], body].concat());
            // The roles read in the same walk: vouched only where `all_roles` vouches.
            let known = |r: &str| ["user", "system", "tool"].contains(&r);
            if let Ok((Top::Object(f), roles)) = Fields::parse_chat(body, known) {
                let alone = f
                    .get(body, "messages")
                    .is_some_and(|m| all_roles(m.as_bytes(), known));
                if roles || (!body.contains(&b'\\') && scan_object(body, |_, _, _| {}).is_some()) {
                    assert_eq!(roles, alone, "{:?}", String::from_utf8_lossy(body));
                }
            }
            let bytes = body;
            if let Ok(text) = std::str::from_utf8(bytes) {
                let check = MessagesCheck::of(text);
                let slow = serde_json::from_str(text).unwrap_or(MessagesCheck::NotArray("null"));
                assert_eq!(check, slow, "{text}");
            }
        }
        let deep = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        let tricky = [
            r#"{}"#,
            r#" { "a" : 1 , "b":[ ] ,"c":{ } } "#,
            "{\"a\":1}\n\r\t",
            r#"{"a":1,}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            r#"{"a":01}"#,
            r#"{"a":-}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":1e+}"#,
            r#"{"a":-0.0e-0}"#,
            r#"{"a":1E5,"b":2e-5,"c":-3.25}"#,
            r#"{"a":1e308,"b":1.7976931348623157e308,"c":1.7976931348623159e308}"#,
            r#"{"a":1e309}"#,
            r#"{"a":0e99999999999999999999}"#,
            r#"{"a":1e99999999999999999999}"#,
            r#"{"a":1e-99999999999999999999}"#,
            r#"{"a":123456789012345678901234567890}"#,
            r#"{"a":-9223372036854775809,"b":18446744073709551616}"#,
            r#"{"a":tru}"#,
            r#"{"a":truex}"#,
            r#"{"a":nul}"#,
            r#"{"a":"\u00e9\n\"\\\/\b\f\r\t"}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\u12G4"}"#,
            r#"{"a":"\ud83d\ude00"}"#,
            r#"{"a":"\ud83d\u0041"}"#,
            r#"{"a":"\ud83dx"}"#,
            r#"{"a":"\ude00"}"#,
            r#"{"a\u0062":1,"ab":2}"#,
            r#"{"ab":1,"a\u0062":2}"#,
            r#"{"\ud800":1}"#,
            "{\"a\":\"tab\there\"}",
            "{\"a\":\"\u{7f}\u{e9}\u{1F600}\"}",
            r#"{"a":1} x"#,
            r#"{"a":1"#,
            r#"{"a":"#,
            r#"{"#,
            r#""#,
            r#"   "#,
            r#"[1,2]"#,
            r#""s""#,
            r#"null"#,
            r#"{"b":1,"a":2,"b":3,"a":4}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
            r#"{"messages":[{"role":"user","role":"system"}]}"#,
            r#"{"messages":[{"role":"user"}],"messages":[{"role":"robot"}]}"#,
            r#"{"messages":[{"role":"robot"}],"messages":[{"role":"user"}]}"#,
            r#"{"messages":[{"role":"user"}],"m\u0065ssages":[{"role":"robot"}]}"#,
            r#"{"messages":"user"}"#,
            r#"{"messages":[]}"#,
            r#"{"messages":[{"role":"user"},[1]]}"#,
            r#"{"x":"0123456789abcdef\"0123456789abcdef"}"#,
        ];
        for t in tricky {
            same(t.as_bytes());
        }
        for n in [90, 98, 99, 100, 101, 126, 127, 128] {
            same(deep(n).as_bytes());
        }
        for bad in [
            &b"{\"a\":\"\xff\"}"[..],
            b"{\"a\":\"\xc3\"}",
            b"{\"a\":\"\x01\"}",
            b"{\"a\xff\":1}",
        ] {
            same(bad);
        }
        for messages in [
            r#"[]"#,
            r#"[{"role":"user"}]"#,
            r#"[{"role":"user"},5]"#,
            r#"[{"role":5}]"#,
            r#"[{"r\u006fle":"user"}]"#,
            r#"[{"role":"us\u0065r"}]"#,
            r#"[{"role":1,"role":"user"}]"#,
            r#"[{"role":"user"}"#,
            r#"{"role":"user"}"#,
            r#""user""#,
        ] {
            same(messages.as_bytes());
        }
        // Every one-byte change of a typical body: replaced by each interesting byte, or cut.
        let body = br#"{"model":"gpt-4","messages":[{"role":"system","content":"Be \"brief\"\u00e9."},{"role":"user","content":[{"type":"text","text":"hi"}]}],"temperature":0.2,"max_tokens":256,"stream":false,"n":null,"user":"u-1","tools":[],"x":{"y":[1,-2.5e3,true]}}"#;
        assert!(
            scan_object(body, |_, _, _| {}).is_some(),
            "the fast path reads it"
        );
        let known = |r: &str| ["user", "system"].contains(&r);
        assert!(matches!(
            Fields::parse_chat(body, known),
            Ok((Top::Object(_), true))
        ));
        let swaps = b"{}[]:,\"\\ 0-.eE+tnfu\x01\x7f\xc3a";
        for i in 0..body.len() {
            same(&body[..i]);
            for &c in swaps {
                let mut m = body.to_vec();
                m[i] = c;
                same(&m);
            }
            let mut m = body.to_vec();
            m.remove(i);
            same(&m);
        }
        let messages = br#"[{"role":"system","content":"a"},{"content":[1,{"a":"b"}],"role":"user"},{"role":"tool","tool_call_id":"c"}]"#;
        for i in 0..messages.len() {
            for &c in swaps {
                let mut m = messages.to_vec();
                m[i] = c;
                same(&m);
            }
        }
    }

    #[test]
    fn all_roles_vouches_only_for_plain_known_roles() {
        let known = |r: &str| ["user", "system"].contains(&r);
        assert!(all_roles(
            br#"[{"role":"user"},{"content":"x","role":"system"}]"#,
            known
        ));
        for no in [
            &br#"[]"#[..],
            br#"[{"role":"robot"}]"#,
            br#"[{"role":"user","role":"user"}]"#,
            br#"[{"role":"us\u0065r"}]"#,
            br#"[{"r\u006fle":"user"}]"#,
            br#"[{"content":"x"}]"#,
            br#"[["user"]]"#,
            br#"[{"role":"user"},7]"#,
            br#"[{"role":"user","n":1e999}]"#,
            br#"[{"role":"user"}] x"#,
        ] {
            assert!(!all_roles(no, known), "{}", String::from_utf8_lossy(no));
        }
    }
}
