//! The OpenAPI 3.1 document of the JSON face, made from the code: the operations of
//! [`crate::operations::OPERATIONS`] and the protobuf descriptors compiled into
//! `kinbridge-proto` (so a field added to a message is in the document at once). The node
//! serves it at `/v1/openapi.json`; `docs/openapi.json` is the same document, checked by a
//! test. Also how a path or query parameter sets a field of a request message.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::operations::{OPERATIONS, Verb};
use kinbridge_service::ServiceError;

/// The descriptors of every kinbridge message.
fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(kinbridge_proto::FILE_DESCRIPTOR_SET).unwrap_or_else(|e| {
            // The descriptors are compiled into the binary from the same files as the types.
            unreachable!("the compiled descriptors do not decode: {e}")
        })
    })
}

fn message(name: &str) -> Option<MessageDescriptor> {
    pool().get_message_by_name(name)
}

/// The fields of `message` named by path and query parameters.
fn field(message: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    message
        .fields()
        .find(|f| f.json_name() == name || f.name() == name)
}

/// Sets the field `name` of the request message `message_name` in `fields` from the text of a
/// path or query parameter, as the protobuf JSON mapping writes that field's type.
pub fn set_field(
    message_name: &str,
    fields: &mut Map<String, Value>,
    name: &str,
    text: &str,
) -> Result<(), ServiceError> {
    // The name is the caller's text: it is not echoed, so nothing a caller types reaches a
    // log or an error.
    let unknown = || {
        ServiceError::invalid(
            "unknown-parameter",
            "the request names a parameter this operation does not take; /v1/openapi.json lists its parameters",
        )
    };
    let message = message(message_name).ok_or_else(unknown)?;
    let field = field(&message, name).ok_or_else(unknown)?;
    let bad = |what: &str| {
        ServiceError::invalid(
            "malformed",
            format!("parameter '{}' is {what}", field.json_name()),
        )
    };
    let value = match field.kind() {
        Kind::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(bad("true or false")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => text
            .parse::<i32>()
            .map(Value::from)
            .map_err(|_| bad("a 32-bit integer"))?,
        Kind::Uint32 | Kind::Fixed32 => text
            .parse::<u32>()
            .map(Value::from)
            .map_err(|_| bad("an unsigned 32-bit integer"))?,
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => text
            .parse::<i64>()
            .map(|n| Value::String(n.to_string()))
            .map_err(|_| bad("a 64-bit integer"))?,
        Kind::Uint64 | Kind::Fixed64 => text
            .parse::<u64>()
            .map(|n| Value::String(n.to_string()))
            .map_err(|_| bad("an unsigned 64-bit integer"))?,
        Kind::Float | Kind::Double => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| bad("a number"))?,
        Kind::String | Kind::Bytes | Kind::Enum(_) => Value::String(text.to_owned()),
        Kind::Message(_) => return Err(unknown()),
    };
    let key = field.json_name().to_owned();
    if field.is_list() {
        match fields
            .entry(key)
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(items) => items.push(value),
            other => *other = Value::Array(vec![value]),
        }
    } else {
        fields.insert(key, value);
    }
    Ok(())
}

/// The JSON schema of a field's values (one value of a repeated field).
fn value_schema(kind: &Kind, refs: &mut Vec<String>) -> Value {
    match kind {
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX})
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({"type": "string", "pattern": "^-?[0-9]{1,19}$", "description": "a 64-bit integer, as a string"})
        }
        Kind::Uint64 | Kind::Fixed64 => {
            json!({"type": "string", "pattern": "^[0-9]{1,20}$", "description": "an unsigned 64-bit integer, as a string"})
        }
        Kind::Float | Kind::Double => json!({"type": "number"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Kind::Enum(e) => {
            refs.push(e.full_name().to_owned());
            json!({"$ref": format!("#/components/schemas/{}", e.full_name())})
        }
        Kind::Message(m) => {
            refs.push(m.full_name().to_owned());
            json!({"$ref": format!("#/components/schemas/{}", m.full_name())})
        }
    }
}

fn field_schema(field: &FieldDescriptor, refs: &mut Vec<String>) -> Value {
    let kind = field.kind();
    if field.is_map() {
        let value = match &kind {
            Kind::Message(entry) => entry.map_entry_value_field().kind(),
            other => other.clone(),
        };
        return json!({"type": "object", "additionalProperties": value_schema(&value, refs)});
    }
    let schema = value_schema(&kind, refs);
    if field.is_list() {
        json!({"type": "array", "items": schema})
    } else {
        schema
    }
}

/// The schemas of `roots` and of every message and enum they reach.
fn schemas(roots: &[&str]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut todo: Vec<String> = roots.iter().map(|s| (*s).to_owned()).collect();
    while let Some(name) = todo.pop() {
        if out.contains_key(&name) {
            continue;
        }
        if let Some(m) = message(&name) {
            let mut properties = Map::new();
            for field in m.fields() {
                properties.insert(
                    field.json_name().to_owned(),
                    field_schema(&field, &mut todo),
                );
            }
            out.insert(
                name,
                json!({"type": "object", "properties": properties, "additionalProperties": false}),
            );
        } else if let Some(e) = pool().get_enum_by_name(&name) {
            let mut values: Vec<Value> = e
                .values()
                .map(|v| Value::String(v.name().to_owned()))
                .collect();
            values.extend(e.values().map(|v| Value::from(v.number())));
            out.insert(name, json!({"enum": values}));
        }
    }
    out
}

/// The parameters named in a path template.
fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "An RFC 9457 problem: reason is the same reason code as gRPC's kinbridge-refusal",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "reason": {"type": "string"}
        },
        "required": ["type", "title", "status", "detail", "reason"]
    })
}

/// The OpenAPI 3.1 document of the JSON face.
pub fn document() -> Value {
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    let mut roots = Vec::new();
    for op in OPERATIONS {
        roots.push(op.request);
        roots.push(op.response);
        let request = message(op.request);
        let mut parameters = Vec::new();
        let in_path = path_params(op.path);
        for name in &in_path {
            let schema = request
                .as_ref()
                .and_then(|m| field(m, name))
                .map_or(json!({"type": "string"}), |f| {
                    field_schema(&f, &mut Vec::new())
                });
            parameters
                .push(json!({"name": name, "in": "path", "required": true, "schema": schema}));
        }
        if op.verb == Verb::Get
            && let Some(m) = &request
        {
            for f in m.fields() {
                if in_path.contains(&f.json_name()) || matches!(f.kind(), Kind::Message(_)) {
                    continue;
                }
                let schema = field_schema(&f, &mut roots_sink());
                parameters.push(json!({"name": f.json_name(), "in": "query", "required": false, "schema": schema}));
            }
        }
        if op.idempotent {
            parameters.push(json!({
                "name": "Idempotency-Key", "in": "header", "required": false,
                "description": "A retry under the same key answers the first submission again; another request under it is refused",
                "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"}
            }));
        }
        let media = if op.lines {
            "application/x-ndjson"
        } else {
            "application/json"
        };
        let ok = if op.created { "201" } else { "200" };
        let mut operation = json!({
            "operationId": op.id,
            "summary": op.summary,
            "parameters": parameters,
            "responses": {
                ok: {
                    "description": "done",
                    "content": {media: {"schema": {"$ref": format!("#/components/schemas/{}", op.response)}}}
                },
                "default": {
                    "description": "refused or failed: what was wrong and what to do",
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
                }
            }
        });
        if op.verb == Verb::Post {
            operation["requestBody"] = json!({
                "required": false,
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", op.request)}}}
            });
        }
        let method = match op.verb {
            Verb::Get => "get",
            Verb::Post => "post",
        };
        paths
            .entry(op.path)
            .or_default()
            .insert(method.to_owned(), operation);
    }
    let mut components = schemas(&roots);
    components.insert("Problem".to_owned(), problem_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "kinbridge local JSON API",
            "version": "1",
            "description": "The local use cases of a kinbridge node for case-management systems: HTTPS with a client certificate from the authority's local CA; JSON in the protobuf JSON mapping of kinbridge protocol v1; errors as application/problem+json. See docs/ARCHITECTURE.md and docs/protocol.md."
        },
        "paths": paths,
        "components": {"schemas": components}
    })
}

fn roots_sink() -> Vec<String> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_in_the_document_with_its_messages() {
        let doc = document();
        for op in OPERATIONS {
            let method = if op.verb == Verb::Get { "get" } else { "post" };
            assert_eq!(doc["paths"][op.path][method]["operationId"], op.id);
            assert!(message(op.request).is_some(), "{}", op.request);
            assert!(message(op.response).is_some(), "{}", op.response);
            assert!(doc["components"]["schemas"][op.request].is_object());
            assert!(doc["components"]["schemas"][op.response].is_object());
            for name in path_params(op.path) {
                let m = message(op.request).expect("request");
                assert!(
                    field(&m, name).is_some(),
                    "{} names no field {name}",
                    op.path
                );
            }
        }
    }

    #[test]
    fn parameters_set_fields_as_the_json_mapping_writes_them() {
        let mut fields = Map::new();
        set_field(
            "kinbridge.v1.ListInboxRequest",
            &mut fields,
            "afterSequence",
            "7",
        )
        .expect("set");
        set_field(
            "kinbridge.v1.ListInboxRequest",
            &mut fields,
            "include_acknowledged",
            "true",
        )
        .expect("set");
        set_field("kinbridge.v1.ListInboxRequest", &mut fields, "limit", "5").expect("set");
        assert_eq!(
            Value::Object(fields.clone()),
            json!({"afterSequence": "7", "includeAcknowledged": true, "limit": 5})
        );
        let e = set_field(
            "kinbridge.v1.ListInboxRequest",
            &mut fields,
            "limit",
            "many",
        )
        .expect_err("refused");
        assert_eq!(e.reason(), Some("malformed"));
        let e = set_field(
            "kinbridge.v1.ListInboxRequest",
            &mut fields,
            "childName",
            "x",
        )
        .expect_err("refused");
        assert_eq!(e.reason(), Some("unknown-parameter"));
        let mut stats = Map::new();
        set_field(
            "kinbridge.v1.GetStatisticsRequest",
            &mut stats,
            "groupBy",
            "sex",
        )
        .expect("set");
        set_field(
            "kinbridge.v1.GetStatisticsRequest",
            &mut stats,
            "groupBy",
            "purpose",
        )
        .expect("set");
        assert_eq!(stats["groupBy"], json!(["sex", "purpose"]));
    }
}
