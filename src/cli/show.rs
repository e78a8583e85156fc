//! Output a person can read, and `--json` for scripts: times in RFC 3339, protobuf enum names
//! made readable, a referral's categories as indented text, and messages in the protobuf JSON
//! mapping, one JSON document per line.

use anyhow::Context;
use serde_json::Value;

/// Milliseconds since the Unix epoch as RFC 3339 UTC to the second, or "-" for 0 (unset).
pub fn time(ms: i64) -> String {
    if ms == 0 {
        return "-".into();
    }
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// A protobuf enum value's name without its type prefix, lower case with '-', e.g.
/// `REFERRAL_STATE_IN_PROGRESS` with prefix `REFERRAL_STATE_` as `in-progress`.
pub fn enum_word(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// Prints `message` as one line of JSON in the protobuf JSON mapping.
pub fn json_line<T: serde::Serialize>(message: &T) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string(message).context("cannot write JSON")?
    );
    Ok(())
}

/// `lowerCamelCase` as words: `requestedServices` as `requested services`.
fn words(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push(' ');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `lowerCamelCase` as the `UPPER_SNAKE_` prefix of an enum named after it: `migratoryStatus`
/// as `MIGRATORY_STATUS_`.
fn enum_prefix(key: &str) -> String {
    let mut out = String::new();
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out.push('_');
    out
}

/// A JSON value with its object members in the order written: the protobuf JSON mapping
/// writes a message's fields in their `.proto` order, which reads better than sorted.
pub enum Node {
    /// A string, number, boolean or null.
    Scalar(serde_json::Value),
    /// An array.
    List(Vec<Node>),
    /// An object, members in order.
    Object(Vec<(String, Node)>),
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Scalar(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Scalar(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Scalar(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Scalar(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Scalar(v.into()))
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar(Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Node::List(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = a.next_entry()? {
                    members.push(member);
                }
                Ok(Node::Object(members))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `message` in the protobuf JSON mapping as a [`Node`], fields in `.proto` order.
pub fn node<T: serde::Serialize>(message: &T) -> anyhow::Result<Node> {
    let text = serde_json::to_string(message).context("cannot write JSON")?;
    serde_json::from_str(&text).context("cannot read JSON back")
}

/// A scalar as text; an enum value named after its field loses its prefix.
fn scalar(key: &str, value: &Node) -> String {
    match value {
        Node::Scalar(Value::String(s)) => {
            let prefix = enum_prefix(key);
            if s.starts_with(&prefix) {
                enum_word(s, &prefix)
            } else {
                s.clone()
            }
        }
        Node::Scalar(other) => other.to_string(),
        Node::List(_) | Node::Object(_) => String::new(),
    }
}

/// Appends a message (in the protobuf JSON mapping, which leaves out empty fields) as
/// indented `key: value` lines: nested messages as sections, lists of scalars joined, lists
/// of messages as items.
pub fn render(out: &mut String, value: &Node, indent: usize) {
    let Node::Object(members) = value else {
        return;
    };
    let pad = " ".repeat(indent);
    for (key, v) in members {
        let name = words(key);
        match v {
            Node::Object(_) => {
                out.push_str(&format!("{pad}{name}:\n"));
                render(out, v, indent + 2);
            }
            Node::List(items) if items.iter().all(|i| matches!(i, Node::Scalar(_))) => {
                let items: Vec<String> = items.iter().map(|i| scalar(key, i)).collect();
                out.push_str(&format!("{pad}{name}: {}\n", items.join(", ")));
            }
            Node::List(items) => {
                out.push_str(&format!("{pad}{name}:\n"));
                for item in items {
                    out.push_str(&format!("{pad}  -\n"));
                    render(out, item, indent + 4);
                }
            }
            Node::Scalar(_) => out.push_str(&format!("{pad}{name}: {}\n", scalar(key, v))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_payload_readably() {
        let payload = kinbridge_proto::v1::ReferralPayload {
            case_reference: "ZM-1".into(),
            requested_services: vec!["interim-care".into(), "family-tracing".into()],
            identity: Some(kinbridge_proto::v1::IdentityData {
                given_names: vec!["Test".into()],
                sex: kinbridge_proto::v1::Sex::Female as i32,
                birth_date: "2014-03-02".into(),
                ..Default::default()
            }),
            family: Some(kinbridge_proto::v1::FamilyData {
                members: vec![kinbridge_proto::v1::FamilyMember {
                    relationship: "aunt".into(),
                    whereabouts_known: true,
                    ..Default::default()
                }],
            }),
            ..Default::default()
        };
        let mut out = String::new();
        render(&mut out, &node(&payload).expect("json"), 2);
        assert!(
            out.starts_with("  case reference: ZM-1\n  requested services:"),
            "{out}"
        );
        assert!(
            out.contains("  requested services: interim-care, family-tracing\n"),
            "{out}"
        );
        assert!(
            out.contains("  identity:\n    given names: Test\n"),
            "{out}"
        );
        assert!(out.contains("    sex: female\n"), "{out}");
        assert!(out.contains("    birth date: 2014-03-02\n"), "{out}");
        assert!(
            out.contains("  family:\n    members:\n      -\n        relationship: aunt\n"),
            "{out}"
        );
        assert!(out.contains("whereabouts known: true"), "{out}");
    }

    #[test]
    fn times_and_enum_words() {
        assert_eq!(time(0), "-");
        assert_eq!(time(1_500), "1970-01-01T00:00:01Z");
        assert_eq!(
            enum_word("REFERRAL_STATE_IN_PROGRESS", "REFERRAL_STATE_"),
            "in-progress"
        );
    }
}
