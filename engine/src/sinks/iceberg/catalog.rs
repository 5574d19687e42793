//! Catalogs: where a table's current metadata file is recorded, and the atomic commit. The SQL
//! catalogs here keep the JDBC-catalog layout (`iceberg_tables`,
//! `iceberg_namespace_properties`), which pyiceberg's `SqlCatalog` and Spark's `JdbcCatalog`
//! open: on SQLite (the embedded default) or on PostgreSQL (shared by several hosts and
//! readers); a commit is a compare-and-swap of the metadata pointer. The REST catalog is in
//! `rest.rs`.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use iceberg::spec::TableMetadata;
use rusqlite::{params, Connection, OptionalExtension};

use super::IcebergError;

/// The catalog name Tributary registers its tables under (pyiceberg:
/// `SqlCatalog("tributary", uri="sqlite:///…/catalog.db", warehouse=…)`).
pub const CATALOG_NAME: &str = "tributary";

/// A table name: `namespace.table` (the namespace may itself contain dots).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableIdent {
    /// The namespace, e.g. `demo`.
    pub namespace: String,
    /// The table, e.g. `orders_realtime_replica`.
    pub name: String,
}

impl TableIdent {
    /// Parses `namespace.table`.
    pub fn parse(text: &str) -> Result<Self, IcebergError> {
        match text.rsplit_once('.') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
                Ok(TableIdent {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(IcebergError::Config(format!(
                "Iceberg table `{text}` needs a namespace: write it as `namespace.table`"
            ))),
        }
    }
}

impl fmt::Display for TableIdent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

/// What a commit needs from a catalog.
pub trait Catalog: Send + fmt::Debug {
    /// The table's current metadata location, if the table exists.
    fn load(&mut self, table: &TableIdent) -> Result<Option<String>, IcebergError>;

    /// Every table of the catalog, sorted.
    fn list(&mut self) -> Result<Vec<TableIdent>, IcebergError>;

    /// Registers a new table (and its namespace); an error if it already exists.
    fn create(&mut self, table: &TableIdent, metadata_location: &str) -> Result<(), IcebergError>;

    /// Makes `new` the table's metadata if the table still has `base` (at `base_location`),
    /// and returns the location of the metadata now current; `None` if another writer
    /// committed first. `write` writes `new` as the table's next metadata file and returns its
    /// location, for catalogs that record a pointer to it; catalogs that write metadata
    /// themselves (REST) send the change instead.
    fn commit(
        &mut self,
        table: &TableIdent,
        base_location: &str,
        base: &TableMetadata,
        new: &TableMetadata,
        write: &mut dyn FnMut() -> Result<String, IcebergError>,
    ) -> Result<Option<String>, IcebergError>;
}

/// A SQL catalog's commit: write the metadata file, then swap the pointer to it.
fn write_then_swap(
    write: &mut dyn FnMut() -> Result<String, IcebergError>,
    swap: impl FnOnce(&str) -> Result<bool, IcebergError>,
) -> Result<Option<String>, IcebergError> {
    let location = write()?;
    Ok(swap(&location)?.then_some(location))
}

/// The JDBC-catalog tables, as pyiceberg and Spark create them.
const CATALOG_TABLES: &str = "CREATE TABLE IF NOT EXISTS iceberg_tables (
        catalog_name VARCHAR(255) NOT NULL,
        table_namespace VARCHAR(255) NOT NULL,
        table_name VARCHAR(255) NOT NULL,
        metadata_location VARCHAR(1000),
        previous_metadata_location VARCHAR(1000),
        iceberg_type VARCHAR(5),
        PRIMARY KEY (catalog_name, table_namespace, table_name));
     CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
        catalog_name VARCHAR(255) NOT NULL,
        namespace VARCHAR(255) NOT NULL,
        property_key VARCHAR(255) NOT NULL,
        property_value VARCHAR(1000) NOT NULL,
        PRIMARY KEY (catalog_name, namespace, property_key));";

/// The SQL catalog on SQLite.
#[derive(Debug)]
pub struct SqliteCatalog {
    connection: Connection,
}

impl SqliteCatalog {
    /// Opens (creating if needed) the catalog database at `path`.
    pub fn open(path: &Path) -> Result<Self, IcebergError> {
        let connection = Connection::open(path).map_err(|e| catalog_error(path, e))?;
        connection
            .busy_timeout(Duration::from_secs(30))
            .map_err(|e| catalog_error(path, e))?;
        connection
            .execute_batch(CATALOG_TABLES)
            .map_err(|e| catalog_error(path, e))?;
        Ok(SqliteCatalog { connection })
    }
}

fn catalog_error(path: &Path, cause: rusqlite::Error) -> IcebergError {
    IcebergError::Catalog(format!("SQLite catalog {}: {cause}", path.display()))
}

fn sql_error(cause: rusqlite::Error) -> IcebergError {
    IcebergError::Catalog(format!("SQLite catalog: {cause}"))
}

impl Catalog for SqliteCatalog {
    fn list(&mut self) -> Result<Vec<TableIdent>, IcebergError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT table_namespace, table_name FROM iceberg_tables
                 WHERE catalog_name = ?1 ORDER BY table_namespace, table_name",
            )
            .map_err(sql_error)?;
        let rows = statement
            .query_map(params![CATALOG_NAME], |row| {
                Ok(TableIdent {
                    namespace: row.get(0)?,
                    name: row.get(1)?,
                })
            })
            .map_err(sql_error)?;
        rows.collect::<Result<_, _>>().map_err(sql_error)
    }

    fn load(&mut self, table: &TableIdent) -> Result<Option<String>, IcebergError> {
        self.connection
            .query_row(
                "SELECT metadata_location FROM iceberg_tables
                 WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3",
                params![CATALOG_NAME, table.namespace, table.name],
                |row| row.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(sql_error)
    }

    fn create(&mut self, table: &TableIdent, metadata_location: &str) -> Result<(), IcebergError> {
        let tx = self.connection.transaction().map_err(sql_error)?;
        tx.execute(
            "INSERT OR IGNORE INTO iceberg_namespace_properties
             (catalog_name, namespace, property_key, property_value)
             VALUES (?1, ?2, 'exists', 'true')",
            params![CATALOG_NAME, table.namespace],
        )
        .map_err(sql_error)?;
        tx.execute(
            "INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name,
             metadata_location, previous_metadata_location, iceberg_type)
             VALUES (?1, ?2, ?3, ?4, NULL, 'TABLE')",
            params![CATALOG_NAME, table.namespace, table.name, metadata_location],
        )
        .map_err(|e| IcebergError::Catalog(format!("cannot create table {table}: {e}")))?;
        tx.commit().map_err(sql_error)
    }

    fn commit(
        &mut self,
        table: &TableIdent,
        base_location: &str,
        _base: &TableMetadata,
        _new: &TableMetadata,
        write: &mut dyn FnMut() -> Result<String, IcebergError>,
    ) -> Result<Option<String>, IcebergError> {
        write_then_swap(write, |new| self.swap(table, base_location, new))
    }
}

impl SqliteCatalog {
    /// Points the table at `new` if it still points at `expected`; false if another writer
    /// committed first.
    pub fn swap(
        &mut self,
        table: &TableIdent,
        expected: &str,
        new: &str,
    ) -> Result<bool, IcebergError> {
        let changed = self
            .connection
            .execute(
                "UPDATE iceberg_tables SET metadata_location = ?1, previous_metadata_location = ?2
                 WHERE catalog_name = ?3 AND table_namespace = ?4 AND table_name = ?5
                 AND metadata_location = ?2",
                params![new, expected, CATALOG_NAME, table.namespace, table.name],
            )
            .map_err(sql_error)?;
        Ok(changed == 1)
    }
}

/// The SQL catalog on PostgreSQL (`--catalog postgres://USER[:PASSWORD]@HOST[:PORT]/DB`; the
/// password may also come from `TRIBUTARY_CATALOG_PASSWORD` or `PGPASSWORD`).
pub struct PostgresCatalog {
    client: postgres::Client,
    /// `postgres://USER@HOST:PORT/DB`, for messages (no password).
    describe: String,
}

impl fmt::Debug for PostgresCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresCatalog")
            .field("database", &self.describe)
            .finish_non_exhaustive()
    }
}

impl PostgresCatalog {
    /// Connects and creates the catalog tables if they are missing.
    pub fn open(url: &str) -> Result<Self, IcebergError> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| IcebergError::Config(format!("--catalog: not a PostgreSQL URL: {e}")))?;
        if config.get_password().is_none() {
            let password = std::env::var("TRIBUTARY_CATALOG_PASSWORD")
                .or_else(|_| std::env::var("PGPASSWORD"));
            if let Ok(password) = password {
                config.password(password);
            }
        }
        config
            .application_name("tributary-catalog")
            .connect_timeout(Duration::from_secs(10));
        let describe = describe_config(&config);
        let mut client = config.connect(postgres::NoTls).map_err(|e| {
            IcebergError::Catalog(format!(
                "cannot connect to the PostgreSQL catalog {describe}: {}",
                postgres_reason(&e)
            ))
        })?;
        client.batch_execute(CATALOG_TABLES).map_err(|e| {
            IcebergError::Catalog(format!(
                "PostgreSQL catalog {describe}: {}",
                postgres_reason(&e)
            ))
        })?;
        Ok(PostgresCatalog { client, describe })
    }

    fn error(&self, cause: &postgres::Error) -> IcebergError {
        IcebergError::Catalog(format!(
            "PostgreSQL catalog {}: {}",
            self.describe,
            postgres_reason(cause)
        ))
    }
}

fn describe_config(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    format!(
        "postgres://{}@{host}:{}/{}",
        config.get_user().unwrap_or("?"),
        config.get_ports().first().copied().unwrap_or(5432),
        config.get_dbname().unwrap_or("?")
    )
}

/// The server's message when there is one, else the client's chain of causes.
fn postgres_reason(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => crate::error::with_causes(error),
    }
}

impl Catalog for PostgresCatalog {
    fn list(&mut self) -> Result<Vec<TableIdent>, IcebergError> {
        let rows = self
            .client
            .query(
                "SELECT table_namespace, table_name FROM iceberg_tables
                 WHERE catalog_name = $1 ORDER BY table_namespace, table_name",
                &[&CATALOG_NAME],
            )
            .map_err(|e| self.error(&e))?;
        Ok(rows
            .iter()
            .map(|row| TableIdent {
                namespace: row.get(0),
                name: row.get(1),
            })
            .collect())
    }

    fn load(&mut self, table: &TableIdent) -> Result<Option<String>, IcebergError> {
        let row = self
            .client
            .query_opt(
                "SELECT metadata_location FROM iceberg_tables
                 WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3",
                &[&CATALOG_NAME, &table.namespace, &table.name],
            )
            .map_err(|e| self.error(&e))?;
        Ok(row.and_then(|row| row.get::<_, Option<String>>(0)))
    }

    fn create(&mut self, table: &TableIdent, metadata_location: &str) -> Result<(), IcebergError> {
        let mut tx = self.client.transaction().map_err(|e| {
            IcebergError::Catalog(format!("PostgreSQL catalog: {}", postgres_reason(&e)))
        })?;
        let created = tx
            .execute(
                "INSERT INTO iceberg_namespace_properties
                 (catalog_name, namespace, property_key, property_value)
                 VALUES ($1, $2, 'exists', 'true') ON CONFLICT DO NOTHING",
                &[&CATALOG_NAME, &table.namespace],
            )
            .and_then(|_| {
                tx.execute(
                    "INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name,
                     metadata_location, previous_metadata_location, iceberg_type)
                     VALUES ($1, $2, $3, $4, NULL, 'TABLE')",
                    &[
                        &CATALOG_NAME,
                        &table.namespace,
                        &table.name,
                        &metadata_location,
                    ],
                )
            })
            .and_then(|_| tx.commit());
        created.map_err(|e| {
            IcebergError::Catalog(format!(
                "cannot create table {table} in {}: {}",
                self.describe,
                postgres_reason(&e)
            ))
        })
    }

    fn commit(
        &mut self,
        table: &TableIdent,
        base_location: &str,
        _base: &TableMetadata,
        _new: &TableMetadata,
        write: &mut dyn FnMut() -> Result<String, IcebergError>,
    ) -> Result<Option<String>, IcebergError> {
        write_then_swap(write, |new| self.swap(table, base_location, new))
    }
}

impl PostgresCatalog {
    /// Points the table at `new` if it still points at `expected`; false if another writer
    /// committed first.
    pub fn swap(
        &mut self,
        table: &TableIdent,
        expected: &str,
        new: &str,
    ) -> Result<bool, IcebergError> {
        let changed = self
            .client
            .execute(
                "UPDATE iceberg_tables SET metadata_location = $1, previous_metadata_location = $2
                 WHERE catalog_name = $3 AND table_namespace = $4 AND table_name = $5
                 AND metadata_location = $2",
                &[
                    &new,
                    &expected,
                    &CATALOG_NAME,
                    &table.namespace,
                    &table.name,
                ],
            )
            .map_err(|e| self.error(&e))?;
        Ok(changed == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_is_a_compare_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let mut catalog = SqliteCatalog::open(&dir.path().join("catalog.db")).unwrap();
        let table = TableIdent::parse("demo.orders").unwrap();
        assert_eq!(catalog.load(&table).unwrap(), None);
        catalog.create(&table, "m0").unwrap();
        assert!(catalog.create(&table, "m0").is_err());
        assert!(catalog.swap(&table, "m0", "m1").unwrap());
        assert!(
            !catalog.swap(&table, "m0", "m2").unwrap(),
            "stale expectation"
        );
        assert_eq!(catalog.load(&table).unwrap().as_deref(), Some("m1"));
    }

    #[test]
    fn table_names_need_a_namespace() {
        assert!(TableIdent::parse("orders").is_err());
        let t = TableIdent::parse("a.b.orders").unwrap();
        assert_eq!((t.namespace.as_str(), t.name.as_str()), ("a.b", "orders"));
    }
}
