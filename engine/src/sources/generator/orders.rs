//! The deterministic orders workload: inserts, updates and deletes (with tombstones) over K
//! keys, in multi-row transactions, encoded as Debezium PostgreSQL-connector JSON lines.

use std::collections::HashMap;
use std::fmt::Write;

use base64::Engine;

/// How decimals are encoded, as Debezium's `decimal.handling.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecimalMode {
    /// Base64 big-endian unscaled bytes (Debezium's default).
    #[default]
    Precise,
    /// A JSON string such as `"19.99"`.
    String,
    /// A JSON number.
    Double,
}

impl DecimalMode {
    /// Parses `precise`, `string` or `double`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "precise" => DecimalMode::Precise,
            "string" => DecimalMode::String,
            "double" => DecimalMode::Double,
            _ => return None,
        })
    }
}

/// Generator settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// Change events to produce (`None`: unbounded). Tombstones come on top.
    pub events: Option<u64>,
    /// Distinct order ids.
    pub keys: u64,
    /// Random seed; the same seed gives the same output.
    pub seed: u64,
    /// Wrap each value in `{"schema":…,"payload":…}`.
    pub schema: bool,
    /// Decimal encoding.
    pub decimal_mode: DecimalMode,
    /// Emit a tombstone line after each delete, as Debezium does by default.
    pub tombstones: bool,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            events: None,
            keys: 10_000,
            seed: 42,
            schema: false,
            decimal_mode: DecimalMode::Precise,
            tombstones: true,
        }
    }
}

/// The Debezium topic / table name the generator writes.
pub const ORDERS_TOPIC: &str = "dbserver1.public.orders";
/// Order statuses, in lifecycle order.
pub const STATUSES: [&str; 5] = ["pending", "paid", "shipped", "delivered", "cancelled"];
const START_MS: i64 = 1_704_067_200_000; // 2024-01-01T00:00:00Z

#[derive(Debug, Clone)]
struct Order {
    customer_id: u64,
    status: usize,
    quantity: u64,
    price_cents: i64,
    created_at_us: i64,
}

/// Produces the workload one line at a time.
#[derive(Debug)]
pub struct OrdersWorkload {
    config: GeneratorConfig,
    rng: SplitMix,
    live: HashMap<u64, Order>,
    produced: u64,
    tx_id: u64,
    tx_left: u32,
    lsn: u64,
    now_ms: i64,
    pending_tombstone: Option<u64>,
    last_key: u64,
    last_was_tombstone: bool,
}

impl OrdersWorkload {
    /// Starts the workload.
    pub fn new(config: GeneratorConfig) -> Self {
        OrdersWorkload {
            rng: SplitMix(config.seed ^ 0x5EED_0F0D_E125),
            config,
            live: HashMap::new(),
            produced: 0,
            tx_id: 1000,
            tx_left: 0,
            lsn: 33_000_000,
            now_ms: START_MS,
            pending_tombstone: None,
            last_key: 0,
            last_was_tombstone: false,
        }
    }

    /// Keys live (inserted and not deleted) so far.
    pub fn live_keys(&self) -> u64 {
        self.live.len() as u64
    }

    /// Change events produced so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// The order id of the last line written (an event's or a tombstone's): what Debezium
    /// keys the Kafka message by.
    pub fn last_key(&self) -> u64 {
        self.last_key
    }

    /// Whether the last line written was a tombstone (a Kafka message with a null value).
    pub fn last_was_tombstone(&self) -> bool {
        self.last_was_tombstone
    }

    /// Writes the next line (without newline) into `out`; `false` when the workload is done.
    pub fn next_line(&mut self, out: &mut String) -> bool {
        out.clear();
        self.last_was_tombstone = self.pending_tombstone.is_some();
        if let Some(key) = self.pending_tombstone.take() {
            self.last_key = key;
            let _ = write!(
                out,
                r#"{{"key":{{"order_id":{key}}},"value":null,"topic":"{ORDERS_TOPIC}"}}"#
            );
            return true;
        }
        if self.config.events.is_some_and(|n| self.produced >= n) {
            return false;
        }
        if self.tx_left == 0 {
            self.tx_id += 1;
            self.tx_left = 1 + (self.rng.next() % 4) as u32;
            self.now_ms += (self.rng.next() % 20) as i64;
        }
        self.tx_left -= 1;
        self.lsn += 64 + self.rng.next() % 512;
        self.produced += 1;

        let key = 1 + self.rng.next() % self.config.keys.max(1);
        self.last_key = key;
        let (op, before, after) = match self.live.get(&key).cloned() {
            None => {
                let order = Order {
                    customer_id: 1 + self.rng.next() % 5000,
                    status: 0,
                    quantity: 1 + self.rng.next() % 10,
                    price_cents: 100 + (self.rng.next() % 49_900) as i64,
                    created_at_us: self.now_ms * 1000,
                };
                self.live.insert(key, order.clone());
                ("c", None, Some(order))
            }
            Some(old) if self.rng.next() % 100 < 15 => {
                self.live.remove(&key);
                if self.config.tombstones {
                    self.pending_tombstone = Some(key);
                }
                ("d", Some(old), None)
            }
            Some(old) => {
                let mut new = old.clone();
                if new.status < 3 && self.rng.next() % 10 < 8 {
                    new.status += 1;
                } else if self.rng.next().is_multiple_of(2) {
                    new.status = 4;
                } else {
                    new.quantity = 1 + self.rng.next() % 10;
                }
                self.live.insert(key, new.clone());
                ("u", Some(old), Some(new))
            }
        };
        if self.config.schema {
            out.push_str(r#"{"schema":"#);
            out.push_str(&envelope_schema());
            out.push_str(r#","payload":"#);
        }
        out.push_str(r#"{"before":"#);
        self.write_row(out, key, before.as_ref());
        out.push_str(r#","after":"#);
        self.write_row(out, key, after.as_ref());
        let _ = write!(
            out,
            r#","source":{{"version":"2.7.0.Final","connector":"postgresql","name":"dbserver1","ts_ms":{},"snapshot":"false","db":"inventory","sequence":"[null,\"{}\"]","schema":"public","table":"orders","txId":{},"lsn":{},"xmin":null}},"op":"{op}","ts_ms":{},"transaction":null}}"#,
            self.now_ms,
            self.lsn,
            self.tx_id,
            self.lsn,
            self.now_ms + 7
        );
        if self.config.schema {
            out.push('}');
        }
        true
    }

    fn write_row(&self, out: &mut String, key: u64, order: Option<&Order>) {
        let Some(o) = order else {
            out.push_str("null");
            return;
        };
        let _ = write!(
            out,
            r#"{{"order_id":{key},"customer_id":{},"status":"{}","quantity":{},"price":"#,
            o.customer_id, STATUSES[o.status], o.quantity
        );
        match self.config.decimal_mode {
            DecimalMode::Precise => {
                out.push('"');
                out.push_str(&base64_unscaled(o.price_cents));
                out.push('"');
            }
            DecimalMode::String => {
                let _ = write!(
                    out,
                    r#""{}.{:02}""#,
                    o.price_cents / 100,
                    o.price_cents % 100
                );
            }
            DecimalMode::Double => {
                let _ = write!(out, "{}.{:02}", o.price_cents / 100, o.price_cents % 100);
            }
        }
        let _ = write!(out, r#","created_at":{}}}"#, o.created_at_us);
    }
}

/// Minimal big-endian two's-complement bytes of `unscaled`, base64-encoded (Connect Decimal).
pub fn base64_unscaled(unscaled: i64) -> String {
    let bytes = unscaled.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        let redundant = (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    base64::engine::general_purpose::STANDARD.encode(&bytes[start..])
}

/// The Connect schema of the orders envelope (JsonConverter `schemas.enable=true`).
pub fn envelope_schema() -> String {
    let row = |field: &str| {
        format!(
            r#"{{"type":"struct","fields":[{{"type":"int64","optional":false,"field":"order_id"}},{{"type":"int64","optional":true,"field":"customer_id"}},{{"type":"string","optional":true,"field":"status"}},{{"type":"int32","optional":true,"field":"quantity"}},{{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{{"scale":"2","connect.decimal.precision":"10"}},"field":"price"}},{{"type":"int64","optional":true,"name":"io.debezium.time.MicroTimestamp","version":1,"field":"created_at"}}],"optional":true,"name":"dbserver1.public.orders.Value","field":"{field}"}}"#
        )
    };
    format!(
        r#"{{"type":"struct","fields":[{},{},{{"type":"struct","fields":[{{"type":"string","optional":false,"field":"version"}},{{"type":"string","optional":false,"field":"connector"}},{{"type":"string","optional":false,"field":"name"}},{{"type":"int64","optional":false,"field":"ts_ms"}},{{"type":"string","optional":false,"field":"db"}},{{"type":"string","optional":false,"field":"schema"}},{{"type":"string","optional":false,"field":"table"}},{{"type":"int64","optional":true,"field":"txId"}},{{"type":"int64","optional":true,"field":"lsn"}}],"optional":false,"name":"io.debezium.connector.postgresql.Source","field":"source"}},{{"type":"string","optional":false,"field":"op"}},{{"type":"int64","optional":true,"field":"ts_ms"}}],"optional":false,"name":"dbserver1.public.orders.Envelope","version":1}}"#,
        row("before"),
        row("after")
    )
}

/// The Kafka message key Debezium gives an order's events and tombstone: `{"order_id":N}`, or
/// with the JSON converter's schemas enabled, wrapped with its Connect schema.
pub fn kafka_key(order_id: u64, schema: bool) -> String {
    if schema {
        format!(
            r#"{{"schema":{{"type":"struct","fields":[{{"type":"int64","optional":false,"field":"order_id"}}],"optional":false,"name":"dbserver1.public.orders.Key"}},"payload":{{"order_id":{order_id}}}}}"#
        )
    } else {
        format!(r#"{{"order_id":{order_id}}}"#)
    }
}

/// SplitMix64: tiny, fast, deterministic.
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_valid_json() {
        let config = GeneratorConfig {
            events: Some(500),
            schema: true,
            ..Default::default()
        };
        let mut a = OrdersWorkload::new(config.clone());
        let mut b = OrdersWorkload::new(config);
        let (mut la, mut lb) = (String::new(), String::new());
        let mut lines = 0;
        while a.next_line(&mut la) {
            assert!(b.next_line(&mut lb));
            assert_eq!(la, lb);
            serde_json::from_str::<serde_json::Value>(&la).unwrap();
            lines += 1;
        }
        assert!(lines > 500, "tombstones come on top of events");
        assert_eq!(a.produced(), 500);
    }

    #[test]
    fn base64_decimals_are_minimal_twos_complement() {
        assert_eq!(base64_unscaled(0), "AA==");
        assert_eq!(base64_unscaled(1999), "B88=");
        assert_eq!(base64_unscaled(-1), "/w==");
        assert_eq!(base64_unscaled(128), "AIA=");
    }
}
