//! `response_format` (`json_object` / `json_schema`) as a forced tool, for the APIs that serve
//! Claude (Anthropic Messages on its three hosts, Bedrock Converse).
//!
//! Both APIs now document a native JSON-schema output (Anthropic `output_config.format`, beta
//! `output_format`; Converse `outputConfig.textFormat`), but only for recent models, and only
//! for schemas whose objects all say `additionalProperties: false` — which rules out
//! `json_object` (any object) and many client schemas. The gateway maps every Claude version,
//! so it uses the long-documented forced-tool pattern instead, which works on all of them: one
//! extra tool, [`JSON_TOOL`], whose input schema is the caller's schema (`{"type":"object"}`
//! for `json_object`), forced with `tool_choice`. Its call is turned back into the message
//! `content` (the JSON text of its input) with `finish_reason: stop` by the answer readers.
//!
//! Answers are read without the request, so the tool is recognized by its name alone: a caller
//! tool of that name is refused (400 naming `tools[i].function.name`) whether or not
//! `response_format` is set. A complete answer's content is the tool input alone (any text
//! block beside it is left out: it would not parse as JSON); a stream cannot take back text
//! already sent, but a forced tool choice makes the model start with the tool call.
//!
//! With caller tools ([`Force`]): `tool_choice` `none` → only [`JSON_TOOL`] is forced (the
//! caller's tools stay declared, so history tool calls stay valid); `auto` / `required` /
//! absent → the model must call a tool, either one of the caller's or [`JSON_TOOL`] (Anthropic
//! `any` with `disable_parallel_tool_use`, Converse `any`); a named `tool_choice` cannot be
//! honoured together with a forced JSON answer → 400 naming `response_format`.

use serde_json::{Map, Value};

use crate::chat::{ChatRequest, ResponseFormat, ToolChoice};
use crate::openai::InvalidRequest;

/// The name of the tool that carries a structured answer.
pub(crate) const JSON_TOOL: &str = "switchyard_json_response";

/// How to make the model answer through [`JSON_TOOL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Force {
    /// Force [`JSON_TOOL`] by name.
    Named,
    /// The model must call some tool: one of the caller's or [`JSON_TOOL`].
    Any,
}

/// The extra tool for a structured answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JsonTool {
    pub(crate) description: String,
    pub(crate) schema: Value,
    pub(crate) force: Force,
}

/// Checks the reserved tool name, and returns the forced tool `response_format` asks for
/// (None for `text` or no `response_format`).
pub(crate) fn plan(req: &ChatRequest) -> Result<Option<JsonTool>, InvalidRequest> {
    if let Some(i) = req.tools.iter().position(|t| t.name == JSON_TOOL) {
        let param = format!("tools[{i}].function.name");
        return Err(InvalidRequest::new(
            format!("Invalid '{param}': the tool name '{JSON_TOOL}' is reserved by the gateway (it carries 'response_format' answers); rename the tool."),
            Some(&param),
        ));
    }
    let (schema, description) = match &req.response_format {
        None | Some(ResponseFormat::Text) => return Ok(None),
        Some(ResponseFormat::JsonObject) => (
            serde_json::json!({"type": "object"}),
            "Give your complete answer by calling this tool: its input is your answer, a JSON object.".to_owned(),
        ),
        Some(ResponseFormat::JsonSchema { name, schema, .. }) => (
            root_schema(schema)?,
            format!("Give your complete answer by calling this tool: its input is your answer, a JSON object following the '{name}' schema."),
        ),
    };
    let force = if req.tools.is_empty() {
        Force::Named
    } else {
        match req.tool_choice {
            Some(ToolChoice::Named(_)) => {
                return Err(InvalidRequest::new(
                    "'response_format' json_object/json_schema cannot be combined with a 'tool_choice' that forces a tool on this provider: the JSON answer is itself a forced tool call. Use 'auto' or 'required'.",
                    Some("response_format"),
                ))
            }
            Some(ToolChoice::None) => Force::Named,
            Some(ToolChoice::Auto | ToolChoice::Required) | None => Force::Any,
        }
    };
    Ok(Some(JsonTool {
        description,
        schema,
        force,
    }))
}

/// The caller's schema as a tool input schema. Both APIs want an object at the root (as OpenAI
/// structured outputs do): a root without `type` but with `properties` gets `"type":"object"`;
/// any other root → 400. Nested keywords are passed as they are (both APIs read standard JSON
/// Schema in tool input schemas, `$ref`/`$defs` included).
fn root_schema(schema: &Value) -> Result<Value, InvalidRequest> {
    let param = "response_format.json_schema.schema";
    let Value::Object(map) = schema else {
        return Err(InvalidRequest::new(
            "Invalid 'response_format.json_schema.schema': expected a JSON Schema object.",
            Some(param),
        ));
    };
    match map.get("type") {
        Some(Value::String(t)) if t == "object" => Ok(schema.clone()),
        None if map.contains_key("properties") || map.is_empty() => {
            let mut out = Map::with_capacity(map.len() + 1);
            out.insert("type".into(), Value::String("object".into()));
            out.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
            Ok(Value::Object(out))
        }
        _ => Err(InvalidRequest::new(
            "Invalid 'response_format.json_schema.schema': on this provider the schema's root must be \"type\": \"object\" (wrap other values in an object property).",
            Some(param),
        )),
    }
}

/// The answer text for a [`JSON_TOOL`] call's input.
pub(crate) fn answer_text(input: &Value) -> String {
    match input {
        Value::Null => "{}".to_owned(),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{parse_request, Endpoint};
    use serde_json::json;

    fn req(body: Value) -> ChatRequest {
        let raw = serde_json::to_vec(&body).unwrap();
        ChatRequest::from_parsed(&parse_request(Endpoint::ChatCompletions, &raw).unwrap()).unwrap()
    }

    const USER: &str = "hi";

    #[test]
    fn plans() {
        let base = |extra: Value| {
            let mut b = json!({"model":"m","messages":[{"role":"user","content":USER}]});
            b.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            plan(&req(b))
        };
        assert_eq!(base(json!({})).unwrap(), None);
        assert_eq!(
            base(json!({"response_format":{"type":"text"}})).unwrap(),
            None
        );
        let p = base(json!({"response_format":{"type":"json_object"}}))
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.schema, p.force),
            (json!({"type":"object"}), Force::Named)
        );
        let schema = json!({"type":"object","properties":{"a":{"type":"integer"}},"required":["a"],"$defs":{}});
        let p = base(json!({"response_format":{"type":"json_schema","json_schema":{"name":"A","schema":schema}}}))
            .unwrap()
            .unwrap();
        assert_eq!(p.schema, schema);
        assert!(p.description.contains("'A'"));
        // Root without a type.
        let p = base(json!({"response_format":{"type":"json_schema","json_schema":{"name":"A","schema":{"properties":{}}}}}))
            .unwrap()
            .unwrap();
        assert_eq!(p.schema, json!({"type":"object","properties":{}}));
        // Caller tools.
        let tool =
            json!([{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]);
        for (choice, want) in [
            (json!("auto"), Some(Force::Any)),
            (json!("required"), Some(Force::Any)),
            (json!("none"), Some(Force::Named)),
            (Value::Null, Some(Force::Any)),
            (json!({"type":"function","function":{"name":"f"}}), None),
        ] {
            let mut extra = json!({"tools": tool, "response_format":{"type":"json_object"}});
            if !choice.is_null() {
                extra["tool_choice"] = choice;
            }
            match (base(extra), want) {
                (Ok(Some(p)), Some(f)) => assert_eq!(p.force, f),
                (Err(e), None) => assert_eq!(e.param.as_deref(), Some("response_format")),
                (got, _) => panic!("{got:?}"),
            }
        }
    }

    #[test]
    fn refusals_name_their_parameter() {
        let clash = req(
            json!({"model":"m","messages":[{"role":"user","content":USER}],
            "tools":[{"type":"function","function":{"name":"g"}},{"type":"function","function":{"name":JSON_TOOL}}]}),
        );
        assert_eq!(
            plan(&clash).unwrap_err().param.as_deref(),
            Some("tools[1].function.name")
        );
        for schema in [
            json!({"type":"array","items":{}}),
            json!({"anyOf":[{"type":"object"}]}),
        ] {
            let r = req(
                json!({"model":"m","messages":[{"role":"user","content":USER}],
                "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":schema}}}),
            );
            match plan(&r) {
                Err(e) => assert_eq!(
                    e.param.as_deref(),
                    Some("response_format.json_schema.schema")
                ),
                Ok(p) => panic!("{schema}: {p:?}"),
            }
        }
    }
}
