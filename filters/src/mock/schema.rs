//! A deterministic instance of a JSON schema, for the mock's tool-call arguments and
//! `response_format: json_schema` answers.
//!
//! Objects get their required properties (all of them when `required` is absent), strings
//! `"mock"` (or the first `enum` value, `const`, or a sample for `format` date, date-time,
//! email, uri), numbers their `minimum` (else 0, kept within `maximum`), booleans `true`,
//! arrays `max(1, minItems)` items, `anyOf`/`oneOf` their first non-null branch, nullable types
//! their non-null type; `$ref`s to `#/$defs/...`, `#/definitions/...` (any local JSON
//! pointer) are resolved. Hostile schemas stay cheap: at most [`MAX_DEPTH`] levels of nesting
//! (deeper values are `null`), at most [`MAX_ITEMS`] items per array, at most [`MAX_NODES`]
//! values in all, strings at most [`MAX_STRING`] characters.

use serde_json::{Map, Value};

/// The deepest nesting generated; below it values are `null`.
pub const MAX_DEPTH: usize = 8;
/// The most items one array gets, whatever `minItems` asks.
pub const MAX_ITEMS: u64 = 16;
/// The most values one instance holds.
pub const MAX_NODES: usize = 1024;
/// The longest string generated (for `minLength`).
pub const MAX_STRING: u64 = 256;
/// The most bytes of strings (values and keys) one instance holds; later values are `null`.
pub const MAX_BYTES: usize = 16 * 1024;
/// `$ref`s followed in a row without producing a value (a chain of refs to refs).
const MAX_REF_HOPS: usize = 16;

/// A deterministic value valid against `schema` (within the bounds above).
pub fn instance(schema: &Value) -> Value {
    let mut g = Gen {
        root: schema,
        nodes: 0,
        bytes: 0,
    };
    g.value(schema, 0)
}

struct Gen<'a> {
    root: &'a Value,
    nodes: usize,
    bytes: usize,
}

impl<'a> Gen<'a> {
    /// Follows `$ref`s (and single-branch `allOf`) to the schema that describes the value.
    fn resolve(&self, mut s: &'a Value) -> &'a Value {
        for _ in 0..MAX_REF_HOPS {
            if let Some(r) = s.get("$ref").and_then(Value::as_str) {
                match r.strip_prefix('#').and_then(|p| self.root.pointer(p)) {
                    Some(t) => s = t,
                    None => return &Value::Null,
                }
                continue;
            }
            match s.get("allOf").and_then(Value::as_array) {
                Some(all) if all.len() == 1 && s.get("properties").is_none() => s = &all[0],
                _ => return s,
            }
        }
        &Value::Null
    }

    fn value(&mut self, schema: &'a Value, depth: usize) -> Value {
        self.nodes += 1;
        if depth > MAX_DEPTH || self.nodes > MAX_NODES || self.bytes >= MAX_BYTES {
            return Value::Null;
        }
        let s = self.resolve(schema);
        let Some(obj) = s.as_object() else {
            // `true`, `{}`-like or unresolvable: anything goes.
            return Value::String("mock".into());
        };
        if let Some(c) = obj.get("const") {
            return c.clone();
        }
        if let Some(e) = obj.get("enum").and_then(Value::as_array) {
            if let Some(first) = e.first() {
                return first.clone();
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(branches) = obj.get(key).and_then(Value::as_array) {
                let pick = branches
                    .iter()
                    .find(|b| !self.is_null_type(b))
                    .or(branches.first());
                if let Some(b) = pick {
                    return self.value(b, depth + 1);
                }
            }
        }
        if let Some(all) = obj.get("allOf").and_then(Value::as_array) {
            if obj.get("properties").is_none() {
                if let Some(b) = all.first() {
                    return self.value(b, depth + 1);
                }
            }
        }
        match self.type_of(obj) {
            "object" => self.object(obj, depth),
            "array" => self.array(obj, depth),
            "integer" => integer(obj),
            "number" => number(obj),
            "boolean" => Value::Bool(true),
            "null" => Value::Null,
            _ => {
                let s = string(obj);
                self.bytes += s.as_str().map_or(0, str::len);
                s
            }
        }
    }

    fn is_null_type(&self, b: &'a Value) -> bool {
        let b = self.resolve(b);
        b.get("type").and_then(Value::as_str) == Some("null")
    }

    /// The schema's type: its `type` (the first non-null one of a list), else guessed from
    /// its keywords.
    fn type_of(&self, obj: &'a Map<String, Value>) -> &'a str {
        match obj.get("type") {
            Some(Value::String(t)) => return t,
            Some(Value::Array(ts)) => {
                let mut strs = ts.iter().filter_map(Value::as_str);
                if let Some(t) = strs.clone().find(|t| *t != "null").or(strs.next()) {
                    return t;
                }
            }
            _ => {}
        }
        if obj.contains_key("properties") || obj.contains_key("additionalProperties") {
            "object"
        } else if obj.contains_key("items") || obj.contains_key("prefixItems") {
            "array"
        } else {
            "string"
        }
    }

    fn object(&mut self, obj: &'a Map<String, Value>, depth: usize) -> Value {
        let mut out = Map::new();
        let Some(props) = obj.get("properties").and_then(Value::as_object) else {
            return Value::Object(out);
        };
        match obj.get("required").and_then(Value::as_array) {
            Some(req) => {
                for name in req.iter().filter_map(Value::as_str) {
                    if out.contains_key(name) {
                        continue;
                    }
                    self.bytes += name.len();
                    let v = match props.get(name) {
                        Some(p) => self.value(p, depth + 1),
                        None => Value::String("mock".into()),
                    };
                    out.insert(name.to_owned(), v);
                }
            }
            None => {
                for (name, p) in props {
                    self.bytes += name.len();
                    let v = self.value(p, depth + 1);
                    out.insert(name.clone(), v);
                }
            }
        }
        Value::Object(out)
    }

    fn array(&mut self, obj: &'a Map<String, Value>, depth: usize) -> Value {
        let min = obj.get("minItems").and_then(Value::as_u64).unwrap_or(1);
        let max = obj
            .get("maxItems")
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX);
        let n = min.max(1).min(max).min(MAX_ITEMS);
        let prefix = obj.get("prefixItems").and_then(Value::as_array);
        let items = obj.get("items");
        let mut out = Vec::new();
        for i in 0..n as usize {
            if self.nodes >= MAX_NODES || self.bytes >= MAX_BYTES {
                break;
            }
            let s = match (prefix.and_then(|p| p.get(i)), items) {
                (Some(p), _) => p,
                (None, Some(Value::Array(tuple))) => match tuple.get(i) {
                    Some(t) => t,
                    None => break,
                },
                (None, Some(it)) => it,
                (None, None) => &Value::Bool(true),
            };
            out.push(self.value(s, depth + 1));
        }
        Value::Array(out)
    }
}

fn bound(obj: &Map<String, Value>, key: &str) -> Option<f64> {
    obj.get(key)
        .and_then(Value::as_f64)
        .filter(|f| f.is_finite())
}

fn integer(obj: &Map<String, Value>) -> Value {
    let mut v: f64 = 0.0;
    if let Some(m) = bound(obj, "minimum") {
        v = v.max(m.ceil());
    }
    if let Some(m) = bound(obj, "exclusiveMinimum") {
        if v <= m {
            v = m.floor() + 1.0;
        }
    }
    if let Some(m) = bound(obj, "maximum") {
        if v > m {
            v = m.floor();
        }
    }
    if let Some(m) = bound(obj, "exclusiveMaximum") {
        if v >= m {
            v = m.ceil() - 1.0;
        }
    }
    let clamped = v.clamp(-9.0e15, 9.0e15) as i64;
    Value::from(clamped)
}

fn number(obj: &Map<String, Value>) -> Value {
    let mut v: f64 = 0.0;
    if let Some(m) = bound(obj, "minimum") {
        v = v.max(m);
    }
    if let Some(m) = bound(obj, "exclusiveMinimum") {
        if v <= m {
            v = m + 1.0;
        }
    }
    if let Some(m) = bound(obj, "maximum") {
        if v > m {
            v = m;
        }
    }
    if let Some(m) = bound(obj, "exclusiveMaximum") {
        if v >= m {
            v = m - 1.0;
        }
    }
    serde_json::Number::from_f64(v).map_or(Value::from(0), Value::Number)
}

fn string(obj: &Map<String, Value>) -> Value {
    let base = match obj.get("format").and_then(Value::as_str) {
        Some("date") => "2024-01-01",
        Some("date-time") => "2024-01-01T00:00:00Z",
        Some("time") => "00:00:00Z",
        Some("email") => "mock@example.com",
        Some("uri" | "url") => "https://example.com/mock",
        Some("uuid") => "00000000-0000-4000-8000-000000000000",
        _ => "mock",
    };
    let min = obj
        .get("minLength")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(MAX_STRING) as usize;
    let max = obj.get("maxLength").and_then(Value::as_u64);
    let mut s = base.to_owned();
    while s.chars().count() < min {
        s.push('x');
    }
    if let Some(max) = max {
        s = s.chars().take(max.min(MAX_STRING) as usize).collect();
    }
    Value::String(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_get_their_required_properties() {
        let s = json!({"type":"object","properties":{
            "city":{"type":"string"},"unit":{"type":"string","enum":["c","f"]},
            "days":{"type":"integer","minimum":1,"maximum":10},"x":{"type":"number"}},
            "required":["city","unit","days"]});
        assert_eq!(instance(&s), json!({"city":"mock","unit":"c","days":1}));
        let all =
            json!({"type":"object","properties":{"a":{"type":"boolean"},"b":{"type":"null"}}});
        assert_eq!(instance(&all), json!({"a":true,"b":null}));
    }

    #[test]
    fn formats_consts_bounds_and_nullables() {
        let s = json!({"type":"object","properties":{
            "d":{"type":"string","format":"date"},"t":{"type":"string","format":"date-time"},
            "e":{"type":"string","format":"email"},"u":{"type":"string","format":"uri"},
            "k":{"const":"fixed"},"n":{"type":["null","integer"],"exclusiveMinimum":5},
            "f":{"type":"number","minimum":-3,"maximum":-1},"l":{"type":"string","minLength":6},
            "o":{"anyOf":[{"type":"null"},{"type":"string","maxLength":2}]}}});
        assert_eq!(
            instance(&s),
            json!({"d":"2024-01-01","t":"2024-01-01T00:00:00Z","e":"mock@example.com",
                   "u":"https://example.com/mock","k":"fixed","n":6,"f":-1.0,"l":"mockxx","o":"mo"})
        );
    }

    #[test]
    fn pydantic_refs_and_arrays() {
        // What pydantic emits for `class Team(BaseModel): members: list[Person]; lead: Person | None`.
        let s = json!({"$defs":{"Person":{"type":"object","properties":{
                "name":{"type":"string","title":"Name"},"age":{"type":"integer","title":"Age"}},
                "required":["name","age"],"title":"Person"}},
            "type":"object","properties":{
                "members":{"type":"array","items":{"$ref":"#/$defs/Person"},"minItems":2},
                "lead":{"anyOf":[{"$ref":"#/$defs/Person"},{"type":"null"}],"default":null},
                "tags":{"items":{"type":"string"}}},
            "required":["members","lead","tags"]});
        let p = json!({"name":"mock","age":0});
        assert_eq!(
            instance(&s),
            json!({"members":[p.clone(),p.clone()],"lead":p,"tags":["mock"]})
        );
        let old = json!({"definitions":{"A":{"type":"string","enum":["z"]}},"allOf":[{"$ref":"#/definitions/A"}]});
        assert_eq!(instance(&old), json!("z"));
    }

    #[test]
    fn hostile_schemas_are_bounded() {
        for s in [
            json!(null),
            json!(true),
            json!(false),
            json!([]),
            json!("string"),
            json!({}),
            json!({"type": 7}),
            json!({"type": []}),
            json!({"enum": []}),
            json!({"anyOf": []}),
            json!({"$ref": "#/nowhere"}),
            json!({"$ref": "http://example.com/x"}),
            json!({"$ref": "#"}),
            json!({"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"}),
            json!({"$defs":{"n":{"type":"object","properties":{"next":{"$ref":"#/$defs/n"}}}},"$ref":"#/$defs/n"}),
            json!({"type":"array","minItems":1_000_000_000u64,"items":{"type":"array","minItems":1_000_000,"items":{"type":"array","minItems":99999}}}),
            json!({"type":"string","minLength":u64::MAX}),
            json!({"type":"integer","minimum":1e308,"maximum":-1e308}),
            json!({"type":"number","minimum":"x"}),
            json!({"type":"object","properties":7,"required":"x"}),
            json!({"type":"object","required":["a","a"]}),
            json!({"type":"array","items":[{"type":"integer"}],"minItems":5}),
        ] {
            let v = instance(&s);
            assert!(v.to_string().len() < 200_000, "{s}");
        }
        // Self-nesting stops at the depth bound.
        let s = json!({"$defs":{"n":{"type":"object","properties":{"next":{"$ref":"#/$defs/n"}}}},"$ref":"#/$defs/n"});
        let mut v = &instance(&s);
        let mut depth = 0;
        while let Some(n) = v.get("next") {
            v = n;
            depth += 1;
        }
        assert!(depth <= MAX_DEPTH + 1, "{depth}");
        // Wide and deep arrays stop at the node bound.
        let s = json!({"type":"array","minItems":1000,"items":{"type":"array","minItems":1000,"items":{"type":"array","minItems":1000,"items":{"type":"string"}}}});
        let v = instance(&s);
        assert!(v.to_string().len() < 64 * 1024);
    }
}
