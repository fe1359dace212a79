//! Rows of JSON objects (a flow log's records as serialized) written as one Parquet
//! file, for the engines that read Parquet natively (DuckDB, Spark, pandas/pyarrow).
//!
//! The schema comes from the rows: a column per key in order of first appearance, its
//! type from every value the key takes (integers INT64, any fraction DOUBLE, booleans,
//! text UTF8, arrays a LIST of their elements' type; a key whose values disagree is
//! written as JSON text). Every column is optional: Zeek leaves unset fields out, and
//! a missing key is a null. One row group; no compression (readers need no codec).

use std::io::Write;
use std::sync::Arc;

use parquet::basic::{ConvertedType, LogicalType, Repetition, Type as Physical};
use parquet::column::writer::ColumnWriter;
use parquet::data_type::ByteArray;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Int,
    Float,
    Bool,
    Text,
    /// Values of several kinds: written as their JSON text.
    Json,
}

impl Kind {
    fn of(v: &Value) -> Option<Kind> {
        Some(match v {
            Value::Null => return None,
            Value::Bool(_) => Kind::Bool,
            Value::Number(n) if n.is_f64() => Kind::Float,
            Value::Number(_) => Kind::Int,
            Value::String(_) => Kind::Text,
            _ => Kind::Json,
        })
    }

    /// The kind that holds both: an integer column with a fraction becomes DOUBLE.
    fn join(a: Option<Kind>, b: Option<Kind>) -> Option<Kind> {
        match (a, b) {
            (None, k) | (k, None) => k,
            (Some(x), Some(y)) if x == y => Some(x),
            (Some(Kind::Int), Some(Kind::Float)) | (Some(Kind::Float), Some(Kind::Int)) => {
                Some(Kind::Float)
            }
            _ => Some(Kind::Json),
        }
    }
}

struct Column {
    name: String,
    kind: Kind,
    list: bool,
}

/// Adds one row's keys to the columns (in order of first appearance) and widens
/// their kinds by its values.
fn add_columns(out: &mut Vec<Column>, row: &Value) {
    for (k, v) in row.as_object().into_iter().flatten() {
        let (list, kind) = match v {
            Value::Array(a) => (true, a.iter().map(Kind::of).fold(None, Kind::join)),
            v => (false, Kind::of(v)),
        };
        match out.iter_mut().find(|c| c.name == *k) {
            Some(c) if c.list == list => c.kind = Kind::join(Some(c.kind), kind).unwrap_or(c.kind),
            Some(c) => c.kind = Kind::Json,
            None => out.push(Column {
                name: k.clone(),
                kind: kind.unwrap_or(Kind::Text),
                list,
            }),
        }
    }
}

/// A list column whose elements disagree is JSON text as a whole.
fn finish_columns(cols: &mut [Column]) {
    for c in cols {
        if c.list && c.kind == Kind::Json {
            c.list = false;
        }
    }
}

#[cfg(test)]
fn columns(rows: &[Value]) -> Vec<Column> {
    let mut out = Vec::new();
    for r in rows {
        add_columns(&mut out, r);
    }
    finish_columns(&mut out);
    out
}

fn physical(kind: Kind) -> Physical {
    match kind {
        Kind::Int => Physical::INT64,
        Kind::Float => Physical::DOUBLE,
        Kind::Bool => Physical::BOOLEAN,
        Kind::Text | Kind::Json => Physical::BYTE_ARRAY,
    }
}

fn leaf(name: &str, kind: Kind, repetition: Repetition) -> parquet::errors::Result<Type> {
    let b = Type::primitive_type_builder(name, physical(kind)).with_repetition(repetition);
    match kind {
        Kind::Text => b.with_logical_type(Some(LogicalType::String)).build(),
        Kind::Json => b.with_converted_type(ConvertedType::JSON).build(),
        _ => b.build(),
    }
}

fn schema(cols: &[Column]) -> parquet::errors::Result<Type> {
    let fields = cols
        .iter()
        .map(|c| {
            if !c.list {
                return leaf(&c.name, c.kind, Repetition::OPTIONAL).map(Arc::new);
            }
            // the standard three-level list: optional group <name> (LIST) { repeated
            // group list { optional <element> } }
            let element = leaf("element", c.kind, Repetition::OPTIONAL)?;
            let list = Type::group_type_builder("list")
                .with_repetition(Repetition::REPEATED)
                .with_fields(vec![Arc::new(element)])
                .build()?;
            Type::group_type_builder(&c.name)
                .with_repetition(Repetition::OPTIONAL)
                .with_logical_type(Some(LogicalType::List))
                .with_fields(vec![Arc::new(list)])
                .build()
                .map(Arc::new)
        })
        .collect::<parquet::errors::Result<Vec<_>>>()?;
    Type::group_type_builder("schema")
        .with_fields(fields)
        .build()
}

/// One column's values with their definition and repetition levels, Dremel style:
/// a plain column is defined (1) or null (0); a list is null (0), empty (1), or one
/// entry per element (2 for a null element, 3 for a value), the first of a row at
/// repetition 0 and the rest at 1.
struct Levels<T> {
    values: Vec<T>,
    def: Vec<i16>,
    rep: Vec<i16>,
}

fn levels<T>(rows: &[Value], c: &Column, conv: impl Fn(&Value) -> Option<T>) -> Levels<T> {
    let mut l = Levels {
        values: Vec::new(),
        def: Vec::new(),
        rep: Vec::new(),
    };
    for r in rows {
        let v = r.get(&c.name).filter(|v| !v.is_null());
        if !c.list {
            match v.and_then(&conv) {
                Some(x) => {
                    l.values.push(x);
                    l.def.push(1);
                }
                None => l.def.push(0),
            }
            continue;
        }
        match v.and_then(Value::as_array) {
            None => {
                l.def.push(0);
                l.rep.push(0);
            }
            Some(a) if a.is_empty() => {
                l.def.push(1);
                l.rep.push(0);
            }
            Some(a) => {
                for (i, e) in a.iter().enumerate() {
                    l.rep.push(i16::from(i > 0));
                    match conv(e) {
                        Some(x) => {
                            l.values.push(x);
                            l.def.push(3);
                        }
                        None => l.def.push(2),
                    }
                }
            }
        }
    }
    l
}

fn text(kind: Kind) -> impl Fn(&Value) -> Option<ByteArray> {
    move |v: &Value| match (kind, v) {
        (_, Value::Null) => None,
        (Kind::Text, Value::String(s)) => Some(ByteArray::from(s.as_str())),
        (_, v) => Some(ByteArray::from(v.to_string().as_str())),
    }
}

/// Rows per row group: a reader can skip or parallelise by group, and the writer holds
/// one group's values at a time, not the whole log's.
const GROUP_ROWS: usize = 65_536;

/// Writes `records` (anything that serializes as a JSON object) as a Parquet file into
/// `out`; returns the row count. Two walks over the records: the schema from all of
/// them, then the values a row group at a time.
pub fn write_records<T: Serialize, W: Write + Send>(
    records: &[T],
    out: W,
) -> Result<usize, String> {
    let value = |r: &T| serde_json::to_value(r).map_err(|e| format!("internal error: {e}"));
    let mut cols: Vec<Column> = Vec::new();
    for r in records {
        add_columns(&mut cols, &value(r)?);
    }
    finish_columns(&mut cols);
    if cols.is_empty() {
        // a schema needs a column: an empty log is one null column and no rows
        cols.push(Column {
            name: "ts".into(),
            kind: Kind::Float,
            list: false,
        });
    }
    let fail = |e: parquet::errors::ParquetError| e.to_string();
    let props = Arc::new(WriterProperties::builder().build());
    let mut w = SerializedFileWriter::new(out, Arc::new(schema(&cols).map_err(fail)?), props)
        .map_err(fail)?;
    for chunk in records.chunks(GROUP_ROWS) {
        let rows = chunk.iter().map(value).collect::<Result<Vec<_>, _>>()?;
        let mut group = w.next_row_group().map_err(fail)?;
        for c in &cols {
            let mut col = group
                .next_column()
                .map_err(fail)?
                .ok_or("internal error: Parquet schema and columns disagree")?;
            let rep = |l: &Vec<i16>| c.list.then(|| l.clone());
            match col.untyped() {
                ColumnWriter::Int64ColumnWriter(cw) => {
                    let l = levels(&rows, c, Value::as_i64);
                    cw.write_batch(&l.values, Some(&l.def), rep(&l.rep).as_deref())
                }
                ColumnWriter::DoubleColumnWriter(cw) => {
                    let l = levels(&rows, c, Value::as_f64);
                    cw.write_batch(&l.values, Some(&l.def), rep(&l.rep).as_deref())
                }
                ColumnWriter::BoolColumnWriter(cw) => {
                    let l = levels(&rows, c, Value::as_bool);
                    cw.write_batch(&l.values, Some(&l.def), rep(&l.rep).as_deref())
                }
                ColumnWriter::ByteArrayColumnWriter(cw) => {
                    let l = levels(&rows, c, text(c.kind));
                    cw.write_batch(&l.values, Some(&l.def), rep(&l.rep).as_deref())
                }
                _ => return Err("internal error: a Parquet column of an unexpected type".into()),
            }
            .map_err(fail)?;
            col.close().map_err(fail)?;
        }
        group.close().map_err(fail)?;
    }
    w.close().map_err(fail)?;
    Ok(records.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_widen_and_lists_keep_their_elements() {
        let rows = vec![
            json!({"ts": 1.5, "port": 53, "ok": true, "names": ["a", "b"]}),
            json!({"ts": 2, "port": 80, "names": [], "extra": "x"}),
        ];
        let cols = columns(&rows);
        let kinds: Vec<(&str, Kind, bool)> = cols
            .iter()
            .map(|c| (c.name.as_str(), c.kind, c.list))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("names", Kind::Text, true),
                ("ok", Kind::Bool, false),
                ("port", Kind::Int, false),
                ("ts", Kind::Float, false),
                ("extra", Kind::Text, false),
            ]
        );
        let l = levels(&rows, &cols[0], text(Kind::Text));
        assert_eq!(
            (l.def, l.rep, l.values.len()),
            (vec![3, 3, 1], vec![0, 1, 0], 2)
        );
        let mut buf = Vec::new();
        assert_eq!(write_records(&rows, &mut buf).unwrap(), 2);
        assert!(buf.starts_with(b"PAR1") && buf.ends_with(b"PAR1"));
    }
}
