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
/// order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(Vec<(String, Range<usize>)>);

/// What [`Fields::parse`] found at the top of a body that is well-formed JSON.
pub enum Top {
    Object(Fields),
    /// Not an object: the kind of value it is.
    Other(&'static str),
}

impl Fields {
    /// Reads the top level of `body`. The whole body is checked first to be JSON that a
    /// `serde_json::Value` would accept (numbers in range, no lone surrogates), so the tree
    /// built later on demand cannot fail and an upstream only ever gets valid JSON.
    pub fn parse(body: &[u8]) -> Result<Top, serde_json::Error> {
        serde_json::from_slice::<Strict>(body)?;
        let base = body.as_ptr() as usize;
        let top: TopLevel<'_> = serde_json::from_slice(body)?;
        Ok(match top {
            TopLevel::Object(fields) => {
                let mut out: Vec<(String, Range<usize>)> = fields
                    .into_iter()
                    .map(|(k, v)| {
                        let start = v.get().as_ptr() as usize - base;
                        (k.into_owned(), start..start + v.get().len())
                    })
                    .collect();
                // Stable sort, then keep the last of equal names.
                out.sort_by(|a, b| a.0.cmp(&b.0));
                let mut deduped: Vec<(String, Range<usize>)> = Vec::with_capacity(out.len());
                for (k, r) in out {
                    match deduped.last_mut() {
                        Some(last) if last.0 == k => last.1 = r,
                        _ => deduped.push((k, r)),
                    }
                }
                Top::Object(Fields(deduped))
            }
            TopLevel::Other(kind) => Top::Other(kind),
        })
    }

    /// The JSON text of field `name` in `body`.
    pub fn get<'b>(&self, body: &'b [u8], name: &str) -> Option<&'b str> {
        let i = self
            .0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()?;
        // The ranges are slices of a body that parsed as UTF-8 JSON.
        std::str::from_utf8(&body[self.0[i].1.clone()]).ok()
    }

    /// Every field: its name and JSON text, in name order.
    pub fn iter<'s, 'b>(&'s self, body: &'b [u8]) -> impl Iterator<Item = (&'s str, &'b [u8])> {
        self.0
            .iter()
            .map(move |(k, r)| (k.as_str(), &body[r.clone()]))
    }
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
}
