//! The last guard of the result contract's size bound: every tool caps its own lists,
//! but what a result holds also grows with things no cap sees (the length of the path
//! the client gave, repeated in the capture facts, findings and next steps; long host
//! names; many findings at once). A result that still comes out above the budget loses
//! rows from its longest lists, least important last row first, until it fits, and says
//! so in its summary, instead of overflowing the model's context by a few bytes.

use std::collections::BTreeMap;

use serde_json::Value;

/// Bytes of compact JSON a default result may take (TOOLS.md: "about 20 KB").
pub const RESULT_BUDGET: usize = 20_000;

/// Bytes a result may take when the caller asked for a bigger page (`limit`,
/// `max_bytes`, `max_packets` beyond their defaults): the client chose to spend the
/// context, up to the tools' own caps (500 rows, 64 KB of stream).
pub const ASKED_BUDGET: usize = 250_000;

/// The parameters by which a caller asks for more than the default answer.
pub const SIZE_PARAMETERS: &[&str] = &["limit", "max_bytes", "max_packets"];

/// Room kept for the note the summary gains when rows are dropped.
const NOTE_ROOM: usize = 400;

/// Trims `v` (a serialized result) to at most `budget` bytes of compact JSON by
/// dropping the last elements of its largest lists. Returns what was dropped, as a
/// sentence, when anything was.
///
/// Only lists of objects (rows, findings) and lists of more than four scalars (frame
/// numbers, names) shrink: a short list of scalars is a fixed-size tuple in the schema.
/// The top-level findings weigh a quarter of their size, so tables lose rows before
/// the findings lose any, and a list down to five elements an eighth, so every table
/// keeps a sample while another list can give. A table (`rows` beside `shown`) keeps its `shown` and `more`
/// true to what is left.
pub fn fit(v: &mut Value, budget: usize) -> Option<String> {
    if size(v) <= budget {
        return None;
    }
    let target = budget.saturating_sub(NOTE_ROOM);
    let mut dropped: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let over = size(v).saturating_sub(target);
        if over == 0 {
            break;
        }
        let mut best: Option<(usize, Vec<Step>)> = None;
        let mut path = Vec::new();
        largest_list(v, &mut path, &mut best);
        let Some((_, path)) = best else { break };
        let (label, n) = pop_last(v, &path, over);
        if n == 0 {
            break;
        }
        *dropped.entry(label).or_default() += n;
    }
    let parts: Vec<String> = dropped
        .iter()
        .map(|(what, n)| format!("{n} from `{what}`"))
        .collect();
    let note = format!(
        " [This result was trimmed to stay within {} KB: dropped the last {}. Narrow the call (display_filter, a time range, limit/offset) to see them.]",
        budget / 1000,
        parts.join(", ")
    );
    if let Some(Value::String(s)) = v.get_mut("summary") {
        s.push_str(&note);
    }
    Some(note)
}

#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn size(v: &Value) -> usize {
    // serde_json's compact form, the form a client receives
    v.to_string().len()
}

fn trimmable(items: &[Value]) -> bool {
    match items.first() {
        Some(Value::Object(_) | Value::Array(_)) => true,
        Some(_) => items.len() > 4,
        None => false,
    }
}

fn largest_list(v: &Value, path: &mut Vec<Step>, best: &mut Option<(usize, Vec<Step>)>) {
    match v {
        Value::Array(items) => {
            if trimmable(items) {
                let mut weight = size(v);
                if matches!(path.as_slice(), [Step::Key(k)] if k == "findings") {
                    weight /= 4;
                }
                // a list down to its last few rows goes last: a table keeps a sample
                if items.len() <= 5 {
                    weight /= 8;
                }
                if best.as_ref().is_none_or(|(w, _)| weight > *w) {
                    *best = Some((weight, path.clone()));
                }
            }
            for (i, item) in items.iter().enumerate() {
                path.push(Step::Index(i));
                largest_list(item, path, best);
                path.pop();
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                path.push(Step::Key(k.clone()));
                largest_list(item, path, best);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Drops the last elements of the list at `path`, about as many as make up `over`
/// bytes (one at least), so a big overflow takes a few rounds, not one per row.
/// Returns the list's name (its key path without indexes) and how many went.
fn pop_last(root: &mut Value, path: &[Step], over: usize) -> (String, usize) {
    let label: Vec<&str> = path
        .iter()
        .filter_map(|s| match s {
            Step::Key(k) => Some(k.as_str()),
            Step::Index(_) => None,
        })
        .collect();
    let label = label.join(".");
    let Some((last, to_parent)) = path.split_last() else {
        let n = match root {
            Value::Array(items) => pop_some(items, over),
            _ => 0,
        };
        return (label, n);
    };
    let mut parent = root;
    for step in to_parent {
        let next = match step {
            Step::Key(k) => parent.get_mut(k.as_str()),
            Step::Index(i) => parent.get_mut(*i),
        };
        let Some(next) = next else { return (label, 0) };
        parent = next;
    }
    let list = match last {
        Step::Key(k) => parent.get_mut(k.as_str()),
        Step::Index(i) => parent.get_mut(*i),
    };
    let Some(Value::Array(items)) = list else {
        return (label, 0);
    };
    let n = pop_some(items, over);
    let left = items.len();
    // a Table's bookkeeping follows its rows
    if matches!(last, Step::Key(k) if k == "rows")
        && let Some(obj) = parent.as_object_mut()
        && obj.contains_key("shown")
    {
        let offset = obj.get("offset").and_then(Value::as_u64).unwrap_or(0) as usize;
        let total = obj.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
        obj.insert("shown".into(), Value::from(left));
        if let Some(more) = crate::report::more_rows(total, offset, left) {
            obj.insert("more".into(), Value::from(more));
        }
    }
    (label, n)
}

fn pop_some(items: &mut Vec<Value>, over: usize) -> usize {
    let total: usize = items.iter().map(|e| size(e) + 1).sum();
    let each = (total / items.len().max(1)).max(1);
    // a short list of scalars keeps its minimum length
    let keep = match items.first() {
        Some(Value::Object(_) | Value::Array(_)) | None => 0,
        Some(_) => 4,
    };
    let n = over
        .div_ceil(each)
        .max(1)
        .min(items.len().saturating_sub(keep));
    items.truncate(items.len() - n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_result_within_budget_is_untouched() {
        let mut v = json!({"summary": "s", "findings": [{"title": "a"}], "rows": [1, 2, 3]});
        let before = v.clone();
        assert_eq!(fit(&mut v, 1000), None);
        assert_eq!(v, before);
    }

    #[test]
    fn tables_lose_rows_before_findings_and_keep_their_counts_true() {
        let rows: Vec<Value> = (0..200)
            .map(|i| json!({"host": format!("10.0.0.{i}"), "bytes": i}))
            .collect();
        let findings: Vec<Value> = (0..5)
            .map(|i| json!({"title": format!("finding {i}"), "frames": [1, 2, 3, 4, 5, 6]}))
            .collect();
        let mut v = json!({
            "summary": "Two hundred hosts.",
            "findings": findings,
            "hosts": {"total": 200, "shown": 200, "offset": 0, "rows": rows},
            "pair": [1, 2],
        });
        let note = fit(&mut v, 3000).expect("trimmed");
        assert!(v.to_string().len() <= 3000, "{}", v.to_string().len());
        assert_eq!(v["findings"].as_array().unwrap().len(), 5);
        let shown = v["hosts"]["rows"].as_array().unwrap().len();
        assert!(shown < 200);
        assert_eq!(v["hosts"]["shown"], json!(shown));
        assert!(
            v["hosts"]["more"]
                .as_str()
                .unwrap()
                .contains(&format!("offset={shown}"))
        );
        assert_eq!(v["pair"], json!([1, 2]));
        assert!(note.contains("`hosts.rows`"), "{note}");
        assert!(v["summary"].as_str().unwrap().ends_with(note.as_str()));
    }
}
