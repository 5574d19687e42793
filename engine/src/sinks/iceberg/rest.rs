//! The Iceberg REST catalog (`--catalog http[s]://HOST[:PORT][/PATH]`): a new table is
//! registered with the metadata file Tributary wrote (`POST …/namespaces/{ns}/register`), and
//! each commit is sent as the REST spec's requirements (the table's UUID, `main` still at the
//! base snapshot) and updates (snapshots added and removed, `main` moved); the server checks
//! them atomically and writes the new metadata file. A 409 is a lost race, as with the SQL
//! catalogs' compare-and-swap.

use std::collections::HashSet;
use std::time::Duration;

use iceberg::spec::{SnapshotReference, SnapshotRetention, TableMetadata};
use iceberg::{TableRequirement, TableUpdate};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value as Json};

use super::catalog::{Catalog, TableIdent};
use super::expire::refs_of;
use super::IcebergError;

/// Environment variable with a bearer token for the REST catalog.
pub const TOKEN_ENV: &str = "TRIBUTARY_REST_TOKEN";
/// Environment variable naming the REST catalog's warehouse (sent to `GET /v1/config`).
pub const WAREHOUSE_ENV: &str = "TRIBUTARY_REST_WAREHOUSE";

/// A REST catalog client.
pub struct RestCatalog {
    /// `URI/v1[/PREFIX]`.
    base: String,
    uri: String,
    token: Option<String>,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for RestCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestCatalog")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl RestCatalog {
    /// Connects to the catalog at `uri` and reads its configuration (`GET /v1/config`), which
    /// may set a path prefix for every other request.
    pub fn open(uri: &str) -> Result<Self, IcebergError> {
        let uri = uri.trim_end_matches('/').to_owned();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| IcebergError::Io(format!("REST catalog runtime: {e}")))?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| IcebergError::Catalog(format!("REST catalog {uri}: {e}")))?;
        let mut catalog = RestCatalog {
            base: format!("{uri}/v1"),
            uri,
            token: std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()),
            client,
            runtime,
        };
        let config_path = match std::env::var(WAREHOUSE_ENV) {
            Ok(warehouse) => format!("config?warehouse={}", encode(&warehouse)),
            Err(_) => "config".to_owned(),
        };
        let (status, config) = catalog.request(Method::GET, &config_path, None)?;
        if !status.is_success() {
            return Err(catalog.failure("reading its configuration", status, &config));
        }
        let prefix = ["overrides", "defaults"]
            .iter()
            .find_map(|part| config[part]["prefix"].as_str())
            .filter(|prefix| !prefix.is_empty());
        if let Some(prefix) = prefix {
            catalog.base = format!("{}/v1/{}", catalog.uri, prefix.trim_matches('/'));
        }
        Ok(catalog)
    }

    /// Sends a request to `base/path`; the status and the JSON body (null when empty).
    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Json>,
    ) -> Result<(StatusCode, Json), IcebergError> {
        let url = format!("{}/{path}", self.base);
        let mut request = self.client.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let unreachable = |e: reqwest::Error| {
            IcebergError::Catalog(format!(
                "cannot reach the REST catalog {}: {}",
                self.uri,
                crate::error::with_causes(&e)
            ))
        };
        self.runtime.block_on(async {
            let response = request.send().await.map_err(unreachable)?;
            let status = response.status();
            let text = response.text().await.map_err(unreachable)?;
            let json = if text.trim().is_empty() {
                Json::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Json::String(text))
            };
            Ok((status, json))
        })
    }

    /// An error for an unexpected answer, with the server's message.
    fn failure(&self, what: &str, status: StatusCode, body: &Json) -> IcebergError {
        let message = body["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string());
        let hint = if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            format!(" (set {TOKEN_ENV} to a token the catalog accepts)")
        } else {
            String::new()
        };
        IcebergError::Catalog(format!(
            "REST catalog {} {what}: HTTP {status}: {message}{hint}",
            self.uri
        ))
    }

    fn table_path(table: &TableIdent) -> String {
        format!(
            "namespaces/{}/tables/{}",
            namespace_path(&table.namespace),
            encode(&table.name)
        )
    }
}

impl Catalog for RestCatalog {
    fn list(&mut self) -> Result<Vec<TableIdent>, IcebergError> {
        let (status, body) = self.request(Method::GET, "namespaces", None)?;
        if !status.is_success() {
            return Err(self.failure("listing namespaces", status, &body));
        }
        let mut tables = Vec::new();
        for namespace in body["namespaces"].as_array().into_iter().flatten() {
            let parts: Vec<&str> = namespace
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|part| part.as_str())
                .collect();
            let namespace = parts.join(".");
            let path = format!("namespaces/{}/tables", namespace_path(&namespace));
            let (status, body) = self.request(Method::GET, &path, None)?;
            if !status.is_success() {
                return Err(self.failure(&format!("listing {namespace}"), status, &body));
            }
            for table in body["identifiers"].as_array().into_iter().flatten() {
                if let Some(name) = table["name"].as_str() {
                    tables.push(TableIdent {
                        namespace: namespace.clone(),
                        name: name.to_owned(),
                    });
                }
            }
        }
        tables.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(tables)
    }

    fn load(&mut self, table: &TableIdent) -> Result<Option<String>, IcebergError> {
        let (status, body) = self.request(Method::GET, &Self::table_path(table), None)?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => match body["metadata-location"].as_str() {
                Some(location) => Ok(Some(location.to_owned())),
                None => Err(self.failure(
                    &format!("loading {table}"),
                    status,
                    &json!({"error": {"message": "the answer has no metadata-location"}}),
                )),
            },
            status => Err(self.failure(&format!("loading {table}"), status, &body)),
        }
    }

    fn create(&mut self, table: &TableIdent, metadata_location: &str) -> Result<(), IcebergError> {
        let namespace: Vec<&str> = table.namespace.split('.').collect();
        let (status, body) = self.request(
            Method::POST,
            "namespaces",
            Some(&json!({"namespace": namespace, "properties": {}})),
        )?;
        if !status.is_success() && status != StatusCode::CONFLICT {
            return Err(self.failure(
                &format!("creating namespace {}", table.namespace),
                status,
                &body,
            ));
        }
        let (status, body) = self.request(
            Method::POST,
            &format!("namespaces/{}/register", namespace_path(&table.namespace)),
            Some(&json!({"name": table.name, "metadata-location": metadata_location})),
        )?;
        if !status.is_success() {
            return Err(self.failure(&format!("registering {table}"), status, &body));
        }
        Ok(())
    }

    fn commit(
        &mut self,
        table: &TableIdent,
        _base_location: &str,
        base: &TableMetadata,
        new: &TableMetadata,
        _write: &mut dyn FnMut() -> Result<String, IcebergError>,
    ) -> Result<Option<String>, IcebergError> {
        let (requirements, updates) = changes(base, new);
        let body = json!({
            "identifier": {
                "namespace": table.namespace.split('.').collect::<Vec<_>>(),
                "name": table.name,
            },
            "requirements": requirements,
            "updates": updates,
        });
        let (status, answer) = self.request(Method::POST, &Self::table_path(table), Some(&body))?;
        match status {
            StatusCode::CONFLICT => Ok(None),
            status if status.is_success() => match answer["metadata-location"].as_str() {
                Some(location) => Ok(Some(location.to_owned())),
                None => self.load(table),
            },
            status => Err(self.failure(&format!("committing {table}"), status, &answer)),
        }
    }
}

/// What turns `base` into `new` as REST requirements and updates: a new current schema, the
/// snapshots added and removed, and `main` moved; required: the same table, `main` still where
/// `base` had it (and the schema `base` had, when it changes).
pub fn changes(
    base: &TableMetadata,
    new: &TableMetadata,
) -> (Vec<TableRequirement>, Vec<TableUpdate>) {
    let mut requirements = vec![
        TableRequirement::UuidMatch { uuid: base.uuid() },
        TableRequirement::RefSnapshotIdMatch {
            r#ref: MAIN.to_owned(),
            snapshot_id: base.current_snapshot_id(),
        },
    ];
    let mut updates = Vec::new();
    if new.current_schema_id() != base.current_schema_id() {
        requirements.push(TableRequirement::CurrentSchemaIdMatch {
            current_schema_id: base.current_schema_id(),
        });
        updates.push(TableUpdate::AddSchema {
            schema: (**new.current_schema()).clone(),
        });
        updates.push(TableUpdate::SetCurrentSchema { schema_id: -1 });
    }
    let had: HashSet<i64> = base.snapshots().map(|s| s.snapshot_id()).collect();
    let has: HashSet<i64> = new.snapshots().map(|s| s.snapshot_id()).collect();
    let mut added: Vec<_> = new
        .snapshots()
        .filter(|s| !had.contains(&s.snapshot_id()))
        .collect();
    added.sort_by_key(|s| s.sequence_number());
    updates.extend(added.into_iter().map(|snapshot| TableUpdate::AddSnapshot {
        snapshot: (**snapshot).clone(),
    }));
    if let Some(current) = new.current_snapshot_id() {
        if base.current_snapshot_id() != Some(current) {
            updates.push(TableUpdate::SetSnapshotRef {
                ref_name: MAIN.to_owned(),
                // `main` keeps the retention settings it has.
                reference: SnapshotReference::new(
                    current,
                    refs_of(base)
                        .ok()
                        .and_then(|mut refs| refs.remove(MAIN))
                        .map_or(SnapshotRetention::branch(None, None, None), |r| r.retention),
                ),
            });
        }
    }
    let mut removed: Vec<i64> = had.difference(&has).copied().collect();
    if !removed.is_empty() {
        removed.sort_unstable();
        updates.push(TableUpdate::RemoveSnapshots {
            snapshot_ids: removed,
        });
    }
    (requirements, updates)
}

const MAIN: &str = "main";

/// A namespace in a REST path: levels separated by the unit separator (0x1F), URL-encoded.
fn namespace_path(namespace: &str) -> String {
    namespace
        .split('.')
        .map(encode)
        .collect::<Vec<_>>()
        .join("%1F")
}

/// Percent-encodes everything but unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded() {
        assert_eq!(namespace_path("a.b c"), "a%1Fb%20c");
        assert_eq!(
            RestCatalog::table_path(&TableIdent::parse("demo.orders").unwrap()),
            "namespaces/demo/tables/orders"
        );
    }

    #[test]
    fn moving_main_keeps_its_retention() {
        use iceberg::spec::{
            FormatVersion, NestedField, PrimitiveType, Schema, Snapshot, SortOrder,
            TableMetadataBuilder, Type, UnboundPartitionSpec,
        };
        let schema = Schema::builder()
            .with_fields(vec![NestedField::required(
                1,
                "id",
                Type::Primitive(PrimitiveType::Long),
            )
            .into()])
            .build()
            .unwrap();
        let snapshot = |id: i64, parent: Option<i64>, sequence: i64| {
            Snapshot::builder()
                .with_snapshot_id(id)
                .with_parent_snapshot_id(parent)
                .with_sequence_number(sequence)
                .with_timestamp_ms(1_700_000_000_000 + sequence)
                .with_manifest_list(format!("/m/{id}.avro"))
                .with_summary(iceberg::spec::Summary {
                    operation: iceberg::spec::Operation::Append,
                    additional_properties: Default::default(),
                })
                .with_schema_id(0)
                .build()
        };
        let kept = SnapshotRetention::branch(Some(7), Some(60_000), None);
        let base = TableMetadataBuilder::new(
            schema,
            UnboundPartitionSpec::builder().build(),
            SortOrder::unsorted_order(),
            "/t".to_owned(),
            FormatVersion::V2,
            Default::default(),
        )
        .unwrap()
        .add_snapshot(snapshot(1, None, 1))
        .unwrap()
        .set_ref(MAIN, SnapshotReference::new(1, kept.clone()))
        .unwrap()
        .build()
        .unwrap()
        .metadata;
        let new = base
            .clone()
            .into_builder(None)
            .set_branch_snapshot(snapshot(2, Some(1), 2), MAIN)
            .unwrap()
            .build()
            .unwrap()
            .metadata;
        let (_, updates) = changes(&base, &new);
        let moved = updates.iter().find_map(|u| match u {
            TableUpdate::SetSnapshotRef { reference, .. } => Some(reference.clone()),
            _ => None,
        });
        assert_eq!(moved, Some(SnapshotReference::new(2, kept)));
    }
}
