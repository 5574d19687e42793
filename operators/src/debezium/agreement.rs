//! The scanner's agreement with `serde_json`, checked by the proptests and the fuzz target.

use serde::de::DeserializeSeed;

use super::envelope::Record;
use super::{row, scan};
use crate::schema::{TableCatalog, TableId};

/// For tests and fuzzers: whatever the scanner reads from `text` — as a record, and as a row
/// of each declared table — `serde_json` reads the same, and a record read with a guessed
/// table reads the same as without, its `after` as that table's row. Each record is read twice
/// with the same field orders, so that the second reading recognises the fields the first one
/// learnt. `Err` shows both readings.
pub(crate) fn scanner_agrees_with_serde(
    text: &str,
    catalog: &TableCatalog,
) -> std::result::Result<(), String> {
    let mut orders = scan::FieldOrders::default();
    let unguessed = scan::record(text, &mut orders, scan::Level::Outer, None);
    let again = scan::record(text, &mut orders, scan::Level::Outer, None);
    if format!("{again:?}") != format!("{unguessed:?}") {
        return Err(format!(
            "record {text}: read {unguessed:?}, then with its field order {again:?}"
        ));
    }
    if let Some(scanned) = &unguessed {
        let parsed = serde_json::from_str::<Record<'_>>(text);
        if parsed.as_ref().map(|p| format!("{p:?}")).ok() != Some(format!("{scanned:?}")) {
            return Err(format!(
                "record {text}: scanner {scanned:?}, serde_json {parsed:?}"
            ));
        }
    }
    for table in 0..catalog.len() as TableId {
        let Some(spec) = catalog.get(table) else {
            continue;
        };
        let seed = row::RowSeed {
            schema: &spec.schema,
            only: None,
            logical: None,
        };
        // (With a guess, `after`'s fields are walked from depth 0: deeper documents pass.)
        let guess = Some(scan::AfterGuess { table, spec, seed });
        let guessed = scan::record(text, &mut orders, scan::Level::Outer, guess);
        let again = scan::record(text, &mut orders, scan::Level::Outer, guess);
        if format!("{again:?}") != format!("{guessed:?}") {
            return Err(format!(
                "record {text} with a guess: read {guessed:?}, then with its field order {again:?}"
            ));
        }
        if let (Some(mut guessed), Some(unguessed)) = (guessed, &unguessed) {
            let row = guessed.after_read.take();
            let alone = guessed.after.map(|after| seed.scan(after));
            if format!("{guessed:?}") != format!("{unguessed:?}")
                || row
                    .as_ref()
                    .is_some_and(|(_, row)| alone != Some(Some(row.clone())))
            {
                return Err(format!(
                    "record {text} with a guess: {guessed:?} {row:?}, without: {unguessed:?} {alone:?}"
                ));
            }
        }
        if let Some(scanned) = seed.scan(text) {
            let mut deserializer = serde_json::Deserializer::from_str(text);
            let parsed = seed
                .deserialize(&mut deserializer)
                .and_then(|row| deserializer.end().map(|()| row));
            if parsed.as_ref().ok() != Some(&scanned) {
                return Err(format!(
                    "row {text}: scanner {scanned:?}, serde_json {parsed:?}"
                ));
            }
        }
    }
    Ok(())
}
