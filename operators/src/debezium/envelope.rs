//! The borrowed shapes of a Debezium record: the JSONL/Kafka wrapper, the envelope, the `source`
//! block. Fields stay raw JSON text until a declared column asks for them.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::row::FieldResult;
use crate::schema::TableId;

/// Any top-level record: a JSONL `{"key","value","topic"}` wrapper, a `{"schema","payload"}`
/// wrapper, or a bare envelope. Unknown fields are skipped without being parsed.
#[derive(Deserialize, Default, Debug)]
pub(super) struct Record<'a> {
    #[serde(borrow, default, deserialize_with = "raw")]
    pub key: Option<&'a str>,
    /// Present (even when `null`) only in a `{"key","value"}` message wrapper.
    #[serde(borrow, default, deserialize_with = "present")]
    pub value: Option<&'a str>,
    #[serde(borrow, default)]
    pub topic: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "raw")]
    pub schema: Option<&'a str>,
    #[serde(borrow, default, deserialize_with = "raw")]
    pub payload: Option<&'a str>,
    #[serde(borrow, default, deserialize_with = "raw")]
    pub before: Option<&'a str>,
    #[serde(borrow, default, deserialize_with = "raw")]
    pub after: Option<&'a str>,
    #[serde(borrow, default)]
    pub source: Option<Source<'a>>,
    #[serde(borrow, default, deserialize_with = "raw")]
    pub op: Option<&'a str>,
    #[serde(default)]
    pub ts_ms: Option<i64>,
    #[serde(borrow, default)]
    pub transaction: Option<Transaction<'a>>,
    /// `after` already read as a row of a guessed table, when the scanner was given a guess.
    #[serde(skip)]
    pub after_read: Option<(TableId, FieldResult)>,
}

impl Record<'_> {
    /// True for `{"key":…,"value":…[,"topic":…]}` (a JSONL line carrying a Kafka message).
    pub fn is_message_wrapper(&self) -> bool {
        self.value.is_some() && self.op.is_none() && self.payload.is_none() && self.after.is_none()
    }

    /// True for the Connect JSON wrapper `{"schema":…,"payload":…}`.
    pub fn is_schema_wrapper(&self) -> bool {
        self.payload.is_some() && self.op.is_none()
    }
}

/// Keeps a field that is present but `null` (as the raw text `null`).
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de str>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(|raw| Some(raw.get()))
}

/// A field's raw JSON text; `None` when it is `null`.
fn raw<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<&'de str>, D::Error> {
    Option::<&'de RawValue>::deserialize(deserializer).map(|raw| raw.map(RawValue::get))
}

/// The `source` block, as far as Tributary reads it.
#[derive(Deserialize, Default, Debug)]
pub(super) struct Source<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub schema: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub db: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub table: Option<Cow<'a, str>>,
    #[serde(default)]
    pub ts_ms: Option<i64>,
    #[serde(borrow, default, rename = "txId", deserialize_with = "raw")]
    pub tx_id: Option<&'a str>,
    /// Raw, so that a connector sending something else than a number is not an error.
    #[serde(borrow, default, deserialize_with = "raw")]
    pub lsn: Option<&'a str>,
}

impl Source<'_> {
    /// `lsn` when it is a whole number (the PostgreSQL connector's log position).
    pub fn lsn(&self) -> Option<u64> {
        self.lsn?.parse().ok()
    }
}

/// The `transaction` block of Debezium's transaction metadata.
#[derive(Deserialize, Default, Debug)]
pub(super) struct Transaction<'a> {
    #[serde(borrow, default, deserialize_with = "raw")]
    pub id: Option<&'a str>,
}

/// A transaction id as a number: numeric ids as they are, string ids hashed (FNV-1a), so
/// only equality is meaningful.
pub(super) fn transaction_id(
    source: Option<&Source<'_>>,
    block: Option<&Transaction<'_>>,
) -> Option<u64> {
    let raw = source
        .and_then(|s| s.tx_id)
        .or_else(|| block.and_then(|t| t.id))?;
    let text = raw;
    if let Ok(n) = text.parse::<u64>() {
        return Some(n);
    }
    if text == "null" {
        return None;
    }
    Some(text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }))
}

/// Debezium's placeholder for a TOASTed value that an update did not change and the server
/// did not send (PostgreSQL without `REPLICA IDENTITY FULL`).
pub const UNAVAILABLE_VALUE: &str = "__debezium_unavailable_value";

/// What a record is to the transactions of its stream, as the epoch clock sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxRole {
    /// A change event of the transaction with this id (`source.txId` or `transaction.id`;
    /// string ids hashed, so only equality is meaningful).
    In(u64),
    /// A change event without a transaction id: a transaction of its own, unless its stream
    /// carries transaction ids (then it is taken as part of the transaction around it).
    Alone,
    /// Not a change event (a tombstone, a malformed record, a heartbeat or schema-change
    /// message): it belongs to the transaction around it and never starts one.
    Attached,
}

/// Only what the epoch clock needs: the transaction of a record, found without decoding rows.
#[derive(Deserialize)]
struct TxPeek<'a> {
    #[serde(borrow, default, deserialize_with = "raw")]
    value: Option<&'a str>,
    #[serde(borrow, default, deserialize_with = "raw")]
    payload: Option<&'a str>,
    #[serde(borrow, default)]
    source: Option<TxSource<'a>>,
    #[serde(borrow, default)]
    transaction: Option<Transaction<'a>>,
    #[serde(borrow, default, deserialize_with = "raw")]
    op: Option<&'a str>,
}

#[derive(Deserialize)]
struct TxSource<'a> {
    #[serde(borrow, default, rename = "txId", deserialize_with = "raw")]
    tx_id: Option<&'a str>,
}

/// The [`TxRole`] of a JSON record, looking through the message and Connect wrappers.
pub fn transaction_role(text: &str) -> TxRole {
    let Ok(peek) = serde_json::from_str::<TxPeek<'_>>(text) else {
        return TxRole::Attached;
    };
    if peek.op.is_none() {
        return match peek.payload.or(peek.value) {
            Some(inner) if peek.source.is_none() && peek.transaction.is_none() => {
                transaction_role(inner)
            }
            _ => TxRole::Attached,
        };
    }
    let source = peek.source.map(|s| Source {
        tx_id: s.tx_id,
        ..Source::default()
    });
    match transaction_id(source.as_ref(), peek.transaction.as_ref()) {
        Some(id) => TxRole::In(id),
        None => TxRole::Alone,
    }
}
