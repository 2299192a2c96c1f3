//! Reading the mock's prompt straight from the request body, one message (or prompt item,
//! or embeddings input) at a time: word counts and a bounded echo, never a JSON tree of the
//! whole body. Text is borrowed from the body unless it has escapes.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{words, Echo};
use crate::json_shape::{Json, Key};

/// Word counts and the echo of a chat's `messages`: the words of every message, the echo of
/// the last user message.
pub(super) fn chat(messages: &str, out: &mut Tally) {
    let _ = serde_json::Deserializer::from_str(messages).deserialize_seq(ChatSeed(out));
}

/// Word counts and the echo of a completion's `prompt` (a string, or the strings of an
/// array).
pub(super) fn completion(prompt: &str, out: &mut Tally) {
    let _ = serde_json::Deserializer::from_str(prompt).deserialize_any(PromptSeed(out));
}

/// The running totals while a prompt is read.
pub(super) struct Tally {
    pub words: u64,
    pub echo: Echo,
    /// Whether the last chat message is a tool result (role `tool` or `function`).
    pub last_is_tool: bool,
    /// Whether the last chat message is the user's.
    pub last_is_user: bool,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            words: 0,
            echo: Echo::new(),
            last_is_tool: false,
            last_is_user: false,
        }
    }

    fn add(&mut self, piece: &str, echo: bool) {
        self.words += words(piece);
        if echo && !self.echo.cut {
            self.echo.push(piece);
        }
    }
}

struct ChatSeed<'t>(&'t mut Tally);

impl<'de> Visitor<'de> for ChatSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of messages")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(m) = seq.next_element::<Message<'de>>()? {
            self.0.last_is_tool = m.tool;
            self.0.last_is_user = m.user;
            if m.user {
                // A later user message replaces the echo.
                self.0.echo = Echo::new();
            }
            for piece in &m.pieces {
                self.0.add(piece, m.user);
            }
        }
        Ok(())
    }
}

/// One message: whether it is the user's, and the text pieces of its `content`.
struct Message<'a> {
    user: bool,
    tool: bool,
    pieces: Vec<Cow<'a, str>>,
}

impl<'de> Deserialize<'de> for Message<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Message<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a message")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message<'de>, A::Error> {
                // The last of a repeated field counts, as in a `serde_json::Map`.
                let mut m = Message {
                    user: false,
                    tool: false,
                    pieces: Vec::new(),
                };
                while let Some(k) = map.next_key::<Key<'de>>()? {
                    match &*k.0 {
                        "role" => {
                            let role = map.next_value::<Json<'de>>()?;
                            m.user = matches!(&role, Json::String(r) if r == "user");
                            m.tool =
                                matches!(&role, Json::String(r) if r == "tool" || r == "function");
                        }
                        "content" => m.pieces = map.next_value::<Content<'de>>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(m)
            }
        }
        d.deserialize_map(V)
    }
}

/// The text pieces of a `content`: the string, or the `text` of each part.
struct Content<'a>(Vec<Cow<'a, str>>);

impl<'de> Deserialize<'de> for Content<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Content<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("message content")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Content<'de>, E> {
                Ok(Content(vec![Cow::Borrowed(s)]))
            }
            fn visit_str<E>(self, s: &str) -> Result<Content<'de>, E> {
                Ok(Content(vec![Cow::Owned(s.to_owned())]))
            }
            fn visit_string<E>(self, s: String) -> Result<Content<'de>, E> {
                Ok(Content(vec![Cow::Owned(s)]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(part) = seq.next_element::<PartText<'de>>()? {
                    out.extend(part.0);
                }
                Ok(Content(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Content<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Content(Vec::new()))
            }
            fn visit_unit<E>(self) -> Result<Content<'de>, E> {
                Ok(Content(Vec::new()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Content<'de>, E> {
                Ok(Content(Vec::new()))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Content<'de>, E> {
                Ok(Content(Vec::new()))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Content<'de>, E> {
                Ok(Content(Vec::new()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Content<'de>, E> {
                Ok(Content(Vec::new()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A content part's `text`, when it has a string one.
struct PartText<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for PartText<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PartText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a content part")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PartText<'de>, A::Error> {
                let mut text = None;
                while let Some(k) = map.next_key::<Key<'de>>()? {
                    if k.0 == "text" {
                        text = match map.next_value::<Json<'de>>()? {
                            Json::String(s) => Some(s),
                            _ => None,
                        };
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(PartText(text))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PartText<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(PartText(None))
            }
            fn visit_unit<E>(self) -> Result<PartText<'de>, E> {
                Ok(PartText(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<PartText<'de>, E> {
                Ok(PartText(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<PartText<'de>, E> {
                Ok(PartText(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<PartText<'de>, E> {
                Ok(PartText(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<PartText<'de>, E> {
                Ok(PartText(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<PartText<'de>, E> {
                Ok(PartText(None))
            }
        }
        d.deserialize_any(V)
    }
}

struct PromptSeed<'t>(&'t mut Tally);

impl<'de> Visitor<'de> for PromptSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a prompt")
    }
    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        self.0.add(s, true);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<Json<'de>>()? {
            if let Json::String(s) = item {
                self.0.add(&s, true);
            }
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// An embeddings `input`: its items' text (a string's, or any other item's JSON text), at
/// most `max` of them; None when there are more.
pub(super) fn inputs(input: &str, max: usize) -> Option<Vec<Cow<'_, str>>> {
    struct V(usize);
    impl<'de> Visitor<'de> for V {
        type Value = Option<Vec<Cow<'de, str>>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("inputs")
        }
        fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
            Ok(Some(vec![Cow::Borrowed(s)]))
        }
        fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
            Ok(Some(vec![Cow::Owned(s.to_owned())]))
        }
        fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
            Ok(Some(vec![Cow::Owned(s)]))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<&'de serde_json::value::RawValue>()? {
                if out.len() == self.0 {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    return Ok(None);
                }
                out.push(match Json::of(item.get()) {
                    Json::String(s) => s,
                    _ => Cow::Borrowed(item.get()),
                });
            }
            Ok(Some(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Some(Vec::new()))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Some(Vec::new()))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Some(Vec::new()))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Some(Vec::new()))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Some(Vec::new()))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Some(Vec::new()))
        }
    }
    serde_json::Deserializer::from_str(input)
        .deserialize_any(V(max))
        .unwrap_or_default()
}
