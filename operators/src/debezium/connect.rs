//! Kafka Connect schemas embedded in envelopes: which logical type each field has.

use std::collections::BTreeMap;

use serde_json::Value as Json;

/// A field's Connect type: the physical `type`, the logical `name`, and `parameters`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSchema {
    /// Physical type: `int32`, `int64`, `string`, `bytes`, `struct`, …
    pub physical: String,
    /// Logical type name, e.g. `org.apache.kafka.connect.data.Decimal`.
    pub logical: Option<String>,
    /// The `scale` parameter of decimals.
    pub scale: Option<u8>,
}

/// Field schemas of one struct (`before`, `after` or a key), by field name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StructSchema {
    fields: BTreeMap<String, FieldSchema>,
}

impl StructSchema {
    /// Reads `{"type":"struct","fields":[…]}`.
    pub fn from_schema(schema: &Json) -> Self {
        let mut fields = BTreeMap::new();
        for field in schema
            .get("fields")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let Some(name) = field.get("field").and_then(Json::as_str) else {
                continue;
            };
            let scale = field
                .get("parameters")
                .and_then(|p| p.get("scale"))
                .and_then(|s| {
                    s.as_str()
                        .and_then(|s| s.parse().ok())
                        .or(s.as_u64().map(|n| n as u8))
                });
            fields.insert(
                name.to_owned(),
                FieldSchema {
                    physical: field
                        .get("type")
                        .and_then(Json::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    logical: field.get("name").and_then(Json::as_str).map(str::to_owned),
                    scale,
                },
            );
        }
        StructSchema { fields }
    }

    /// The schema of field `name`.
    pub fn field(&self, name: &str) -> Option<&FieldSchema> {
        self.fields.get(name)
    }
}

/// The `before` and `after` struct schemas of an envelope schema.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSchemas {
    before: Option<StructSchema>,
    after: Option<StructSchema>,
}

impl FieldSchemas {
    /// Reads the envelope's top-level schema.
    pub fn from_envelope_schema(schema: &Json) -> Self {
        let mut out = FieldSchemas::default();
        for field in schema
            .get("fields")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            match field.get("field").and_then(Json::as_str) {
                Some("before") => out.before = Some(StructSchema::from_schema(field)),
                Some("after") => out.after = Some(StructSchema::from_schema(field)),
                _ => {}
            }
        }
        out
    }

    /// Schema of `before`.
    pub fn before(&self) -> Option<&StructSchema> {
        self.before.as_ref().or(self.after.as_ref())
    }

    /// Schema of `after`.
    pub fn after(&self) -> Option<&StructSchema> {
        self.after.as_ref().or(self.before.as_ref())
    }
}
