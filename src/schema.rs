//! What tools/list sends. The schemas schemars derives carry every doc comment, number
//! format and `required` list: about 10 KB per tool, 400 KB for the whole list, more
//! than many assistants' context can spare before the first question. The list sends
//! a compact form that still validates every result (it only drops constraints and
//! prose); the full schemas, with each field's meaning, stay one request away:
//! `pcap-analyzer-mcp-server tools --json`, and the resource `pcap-schema://<tool>`.

use serde_json::{Map, Value};

/// Keywords a client needs neither to call a tool nor to read its result.
const DROPPED: [&str; 4] = ["$schema", "title", "format", "examples"];

/// The input schema as sent: parameter descriptions stay (they say how to call the
/// tool), the noise goes (`"default": null`, integer formats, `minimum: 0`).
pub fn compact_input(full: &Map<String, Value>) -> Map<String, Value> {
    strip(full)
}

/// The output schema as sent: the result's fields with their types, and one level
/// further the fields' own fields; deeper (a table's row columns, a finding's
/// evidence), only the names. A paged table shows its rows only. The report envelope every tool shares (findings, scope,
/// the capture's facts) is reduced to its outer type. It still validates every result:
/// it only leaves constraints out.
pub fn compact_output(full: &Map<String, Value>) -> Map<String, Value> {
    let defs = full
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut props = Map::new();
    if let Some(Value::Object(p)) = full.get("properties") {
        for (name, v) in p {
            let mut field = render(v, &defs, OUTPUT_DEPTH);
            if crate::report::ENVELOPE.contains(&name.as_str())
                && let Value::Object(m) = &mut field
            {
                // what a reader acts on keeps its type; the rest of the envelope (the
                // capture's facts, the scope, the command lines) only its name
                if LEAN_ENVELOPE.contains(&name.as_str()) {
                    m.clear();
                } else {
                    m.remove("properties");
                    m.remove("items");
                }
            }
            props.insert(name.clone(), field);
        }
    }
    let mut out = Map::new();
    out.insert("type".into(), Value::from("object"));
    out.insert("properties".into(), Value::Object(props));
    out
}

/// Envelope fields sent by name only.
const LEAN_ENVELOPE: [&str; 4] = ["capture", "scope", "percent_done", "tshark_commands"];

/// Object levels of an output schema given with their types; below that, names only.
const OUTPUT_DEPTH: usize = 2;

/// A schema reduced to `depth` object levels: `{}` (anything) at depth 0.
fn render(v: &Value, defs: &Map<String, Value>, depth: usize) -> Value {
    if depth == 0 {
        return Value::Object(Map::new());
    }
    let (v, nullable) = resolve(v, defs);
    let mut m = render_resolved(v, defs, depth, Map::new());
    if nullable {
        // an optional field may be null: the compact form must still accept it
        match m.get_mut("type") {
            Some(Value::String(t)) => {
                let t = std::mem::take(t);
                m.insert("type".into(), Value::from(vec![t, "null".to_string()]));
            }
            Some(Value::Array(ts)) if !ts.iter().any(|t| t == "null") => ts.push("null".into()),
            _ => {}
        }
        if let Some(Value::Array(e)) = m.get_mut("enum") {
            e.push(Value::Null);
        }
    }
    Value::Object(m)
}

fn render_resolved(
    v: &Value,
    defs: &Map<String, Value>,
    depth: usize,
    mut m: Map<String, Value>,
) -> Map<String, Value> {
    let Some(t) = v.get("type") else {
        // an enum of constants (a status, a verdict) says its values
        if let Some(values) = constants(v) {
            m.insert("enum".into(), Value::Array(values));
        }
        return m;
    };
    m.insert("type".into(), t.clone());
    if let Some(e) = v.get("enum") {
        m.insert("enum".into(), e.clone());
    }
    if let Some(Value::Object(p)) = v.get("properties") {
        // a paged table (`report::Table`): its rows say what it holds; the paging
        // fields (total, shown, offset, more) are the same everywhere and the server's
        // instructions name them
        let table = ["rows", "total", "shown", "offset"]
            .iter()
            .all(|k| p.contains_key(*k));
        let fields = p
            .iter()
            .filter(|(k, _)| !table || k.as_str() == "rows")
            .map(|(k, c)| (k.clone(), render(c, defs, depth - 1)))
            .collect();
        m.insert("properties".into(), Value::Object(fields));
    }
    if let Some(items) = v.get("items") {
        // an array is not a level: its rows are what it holds
        let inner = render(items, defs, depth);
        if inner.as_object().is_some_and(|o| !o.is_empty()) {
            m.insert("items".into(), inner);
        }
    }
    m
}

/// A `$ref` (or an optional one: `anyOf [ref, null]`) followed to its definition,
/// and whether null is allowed on the way.
fn resolve<'a>(v: &'a Value, defs: &'a Map<String, Value>) -> (&'a Value, bool) {
    if let Some(target) = v
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|n| defs.get(n))
    {
        return resolve(target, defs);
    }
    if let Some(Value::Array(alts)) = v.get("anyOf").or_else(|| v.get("oneOf")) {
        let is_null = |a: &&Value| a.get("type").and_then(Value::as_str) == Some("null");
        let not_null: Vec<&Value> = alts.iter().filter(|a| !is_null(a)).collect();
        if let [one] = not_null[..]
            && not_null.len() < alts.len()
        {
            return (resolve(one, defs).0, true);
        }
    }
    (v, false)
}

/// The values of `enum`, or of a `oneOf` whose branches are all `const`.
fn constants(v: &Value) -> Option<Vec<Value>> {
    if let Some(Value::Array(e)) = v.get("enum") {
        return Some(e.clone());
    }
    let branches = v.get("oneOf")?.as_array()?;
    branches.iter().map(|b| b.get("const").cloned()).collect()
}

fn strip(m: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in m {
        let noise = DROPPED.contains(&k.as_str())
            || (k == "minimum" && v.as_f64() == Some(0.0))
            || (k == "default" && v.is_null());
        // (a property called "description" is safe: "properties" and "$defs" map
        // names to schemas and are walked name by name below)
        if noise {
            continue;
        }
        let v = if k == "properties" || k == "$defs" {
            match v {
                Value::Object(props) => Value::Object(
                    props
                        .iter()
                        .map(|(name, s)| (name.clone(), strip_value(s)))
                        .collect(),
                ),
                other => other.clone(),
            }
        } else {
            strip_value(v)
        };
        out.insert(k.clone(), v);
    }
    out
}

fn strip_value(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip(m)),
        Value::Array(a) => Value::Array(a.iter().map(strip_value).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn output_keeps_types_two_levels_deep_and_names_below() {
        let full = obj(json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "description": {"type": "string", "description": "a field named like a keyword"},
                "count": {"type": "integer", "format": "uint", "minimum": 0},
                "summary": {"type": "string"},
                "findings": {"type": "array", "items": {"$ref": "#/$defs/Finding"}},
                "rows": {"$ref": "#/$defs/Table"},
                "best": {"anyOf": [{"$ref": "#/$defs/Row"}, {"type": "null"}]},
                "verdict": {"oneOf": [{"const": "client"}, {"const": "server"}]}
            },
            "required": ["description", "count"],
            "$defs": {
                "Finding": {"type": "object", "properties": {"title": {"type": "string"}}},
                "Table": {"type": "object", "properties": {
                    "total": {"type": "integer"},
                    "rows": {"type": "array", "items": {"$ref": "#/$defs/Row"}}
                }},
                "Row": {"type": "object", "description": "a row", "properties": {"n": {"type": "integer"}}}
            }
        }));
        let out = Value::Object(compact_output(&full));
        assert_eq!(
            out,
            json!({
                "type": "object",
                "properties": {
                    "description": {"type": "string"},
                    "count": {"type": "integer"},
                    "summary": {"type": "string"},
                    "findings": {"type": "array"},
                    "rows": {"type": "object", "properties": {
                        "total": {"type": "integer"},
                        "rows": {"type": "array", "items": {"type": "object", "properties": {"n": {}}}}
                    }},
                    "best": {"type": ["object", "null"], "properties": {"n": {"type": "integer"}}},
                    "verdict": {"enum": ["client", "server"]}
                }
            })
        );
    }

    #[test]
    fn input_keeps_descriptions_and_drops_noise() {
        let input = Value::Object(compact_input(&obj(json!({
            "type": "object",
            "properties": {"limit": {"type": ["integer", "null"], "format": "int64", "default": null, "minimum": 0, "description": "rows"}},
            "required": ["limit"]
        }))));
        assert_eq!(
            input,
            json!({"type": "object", "properties": {"limit": {"type": ["integer", "null"], "description": "rows"}}, "required": ["limit"]})
        );
    }
}
