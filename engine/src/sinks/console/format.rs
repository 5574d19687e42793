//! Rendering of console batches: Spark-style tables and JSONL lines.

use tributary_operators::dataflow::Time;
use tributary_operators::value::write_json_string;
use tributary_operators::{ColumnType, Row, Schema, Value};

/// One JSON object per changed row; retractions first, rows sorted; `|diff| > 1` repeats.
pub fn render_jsonl(batch: Time, output: &str, schema: &Schema, rows: &[(Row, i64)]) -> String {
    let mut ordered: Vec<&(Row, i64)> = rows.iter().collect();
    ordered.sort_by(|a, b| (a.1 > 0, &a.0).cmp(&(b.1 > 0, &b.0)));
    let mut out = String::new();
    for (row, diff) in ordered {
        let mut line = format!("{{\"batch\":{batch},\"output\":");
        write_json_string(output, &mut line);
        line.push_str(if *diff > 0 {
            ",\"diff\":1,\"row\":{"
        } else {
            ",\"diff\":-1,\"row\":{"
        });
        row.write_json_fields(schema, &mut line);
        line.push_str("}}\n");
        for _ in 0..diff.unsigned_abs() {
            out.push_str(&line);
        }
    }
    out
}

/// A Spark `show()`-style table under a `Batch: N` banner, at most `max_rows` rows.
pub fn render_table(
    batch: Time,
    output: &str,
    schema: &Schema,
    rows: &[&Row],
    max_rows: usize,
) -> String {
    let mut sorted: Vec<&Row> = rows.to_vec();
    sorted.sort();
    let shown = &sorted[..sorted.len().min(max_rows)];
    let cells: Vec<Vec<String>> = shown
        .iter()
        .map(|row| row.iter().map(Value::to_string).collect())
        .collect();
    let numeric: Vec<bool> = schema.columns.iter().map(|c| is_numeric(c.ty)).collect();
    let mut widths: Vec<usize> = schema
        .columns
        .iter()
        .map(|c| c.name.chars().count())
        .collect();
    for row in &cells {
        for (w, text) in widths.iter_mut().zip(row) {
            *w = (*w).max(text.chars().count());
        }
    }
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(*w)))
        .collect::<String>()
        + "+\n";
    let mut out = format!("-------------------------------------------\nBatch: {batch} ({output})\n-------------------------------------------\n");
    out.push_str(&rule);
    for (column, w) in schema.columns.iter().zip(&widths) {
        out.push_str(&format!("|{:<w$}", column.name, w = *w));
    }
    out.push_str("|\n");
    out.push_str(&rule);
    for row in &cells {
        for ((text, numeric), w) in row.iter().zip(&numeric).zip(&widths) {
            if *numeric {
                out.push_str(&format!("|{text:>w$}", w = *w));
            } else {
                out.push_str(&format!("|{text:<w$}", w = *w));
            }
        }
        out.push_str("|\n");
    }
    out.push_str(&rule);
    if sorted.len() > shown.len() {
        out.push_str(&format!(
            "only showing top {} of {} rows\n",
            shown.len(),
            sorted.len()
        ));
    }
    out
}

/// Numeric columns are right-aligned (NULLs included), like Spark's `show()`.
fn is_numeric(ty: ColumnType) -> bool {
    matches!(
        ty,
        ColumnType::Int32 | ColumnType::Int64 | ColumnType::Float64 | ColumnType::Decimal { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_operators::{Column, Decimal};

    fn schema() -> Schema {
        Schema::new(vec![
            Column::new("status", ColumnType::String),
            Column::new(
                "revenue",
                ColumnType::Decimal {
                    precision: 38,
                    scale: 2,
                },
            ),
        ])
    }

    #[test]
    fn table_looks_like_spark() {
        let row = Row::new(vec![
            Value::str("paid"),
            Value::Decimal(Decimal::new(12345, 2).unwrap()),
        ]);
        let text = render_table(3, "status", &schema(), &[&row], 20);
        assert!(text.contains("Batch: 3 (status)"));
        assert!(text.contains("|status|revenue|"));
        assert!(text.contains("|paid  | 123.45|"));
        let null = Row::new(vec![Value::str("new"), Value::Null]);
        let text = render_table(3, "status", &schema(), &[&null], 20);
        assert!(
            text.contains("|new   |   null|"),
            "NULL is aligned like its column:\n{text}"
        );
    }

    #[test]
    fn jsonl_orders_retractions_first() {
        let old = Row::new(vec![
            Value::str("paid"),
            Value::Decimal(Decimal::new(100, 2).unwrap()),
        ]);
        let new = Row::new(vec![
            Value::str("paid"),
            Value::Decimal(Decimal::new(250, 2).unwrap()),
        ]);
        let text = render_jsonl(7, "status", &schema(), &[(new, 1), (old, -1)]);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["diff"], -1);
        assert_eq!(lines[1]["row"]["revenue"], serde_json::json!(2.5));
        assert_eq!(lines[1]["batch"], 7);
    }
}
