//! What Tributary asks of the PostgreSQL server: the control connection (with TLS), the
//! preflight checks with their fixes, the replication slot's life (create, wait until free,
//! drop, advance), starting replication, the `--until-idle` marker,
//! and one-line errors.

use std::time::Duration;

use pgwire_replication::{Lsn, PgWireError, ReplicationClient, ReplicationConfig};
use tokio_postgres::Client;

use super::encode::ColumnInfo;
use super::tls::{self, SslMode};
use super::PostgresSourceSpec;
use crate::error::SourceError;

/// Prefix of the logical message that marks "caught up" for `--until-idle`.
pub(super) const MARKER_PREFIX: &str = "tributary.caught-up";
/// How long a slot still held by a server process (e.g. of a killed run) is waited for.
const SLOT_RELEASE_WAIT: Duration = Duration::from_secs(15);
/// Session settings that make text values unambiguous (ISO dates, UTC timestamps).
pub(super) const SESSION_OPTIONS: &str =
    "-c DateStyle=ISO,YMD -c TimeZone=UTC -c IntervalStyle=iso_8601 -c extra_float_digits=3";

pub(super) async fn connect_control(spec: &PostgresSourceSpec) -> Result<Client, SourceError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&spec.host)
        .port(spec.port)
        .user(&spec.user)
        .dbname(&spec.database)
        .application_name("tributary")
        .options(SESSION_OPTIONS)
        .connect_timeout(Duration::from_secs(10));
    if let Some(password) = &spec.password {
        config.password(password);
    }
    let failed = |e: tokio_postgres::Error| SourceError::Postgres {
        what: format!("connect to {}:{}", spec.host, spec.port),
        reason: format!("{}; is the server running and the URL right?", describe(&e)),
    };
    if spec.ssl_mode == SslMode::Disable {
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(failed)?;
        spawn_connection(connection);
        return Ok(client);
    }
    let tls = tls::client_config(spec.ssl_mode, spec.ssl_root_cert.as_ref()).map_err(|reason| {
        SourceError::Postgres {
            what: "tls".into(),
            reason,
        }
    })?;
    config.ssl_mode(if spec.ssl_mode == SslMode::Prefer {
        tokio_postgres::config::SslMode::Prefer
    } else {
        tokio_postgres::config::SslMode::Require
    });
    let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
    let (client, connection) = config.connect(connector).await.map_err(failed)?;
    spawn_connection(connection);
    Ok(client)
}

fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "PostgreSQL control connection ended");
        }
    });
}

/// Checks what logical replication needs and returns the published tables.
pub(super) async fn preflight(
    control: &Client,
    spec: &PostgresSourceSpec,
) -> Result<Vec<(String, String)>, SourceError> {
    let fail = |reason: String| SourceError::Postgres {
        what: "setup".into(),
        reason,
    };
    let query = |e: tokio_postgres::Error| db_error("setup", e);
    let wal_level: String = control
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(query)?
        .get(0);
    if wal_level != "logical" {
        return Err(fail(format!(
            "wal_level is `{wal_level}`, logical decoding needs `logical`: run `ALTER SYSTEM SET \
             wal_level = logical` and restart PostgreSQL"
        )));
    }
    let may_replicate: bool = control
        .query_one(
            "SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(query)?
        .get(0);
    if !may_replicate {
        return Err(fail(format!(
            "permission denied: role `{}` may not replicate; run `ALTER ROLE {} WITH \
             REPLICATION` (and GRANT SELECT on the published tables for the snapshot)",
            spec.user,
            quote_ident(&spec.user)
        )));
    }
    let publication = control
        .query_opt(
            "SELECT pubupdate OR pubdelete FROM pg_publication WHERE pubname = $1",
            &[&spec.publication],
        )
        .await
        .map_err(query)?;
    let needs_identity: bool = match publication {
        Some(row) => row.get(0),
        None if spec.create_publication => {
            control
                .batch_execute(&format!(
                    "CREATE PUBLICATION {} FOR ALL TABLES",
                    quote_ident(&spec.publication)
                ))
                .await
                .map_err(query)?;
            tracing::info!(publication = %spec.publication, "created publication FOR ALL TABLES");
            true
        }
        None => {
            return Err(fail(format!(
                "publication `{p}` does not exist: create it with `CREATE PUBLICATION {q} FOR \
                 TABLE public.orders, …` (or FOR ALL TABLES), or add `create_publication=true` \
                 to the source URL to have Tributary create it FOR ALL TABLES",
                p = spec.publication,
                q = quote_ident(&spec.publication)
            )))
        }
    };
    let rows = control
        .query(
            "SELECT p.schemaname::text, p.tablename::text, c.relreplident::text, \
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
             FROM pg_publication_tables p \
             JOIN pg_namespace n ON n.nspname = p.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename \
             WHERE p.pubname = $1 ORDER BY 1, 2",
            &[&spec.publication],
        )
        .await
        .map_err(query)?;
    let mut tables = Vec::with_capacity(rows.len());
    let mut without_identity = Vec::new();
    for row in rows {
        let (schema, table, identity, has_key): (String, String, String, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if needs_identity && (identity == "n" || (identity == "d" && !has_key)) {
            without_identity.push(format!("{}.{}", quote_ident(&schema), quote_ident(&table)));
        }
        tables.push((schema, table));
    }
    if !without_identity.is_empty() {
        // Their inserts replicate; PostgreSQL itself rejects their updates and deletes.
        tracing::warn!(
            tables = %without_identity.join(", "),
            "no primary key and no REPLICA IDENTITY: PostgreSQL rejects updates and deletes of \
             these tables while they are published; add a primary key or run `ALTER TABLE … \
             REPLICA IDENTITY FULL`"
        );
    }
    if tables.is_empty() {
        return Err(fail(format!(
            "publication `{}` publishes no tables; `ALTER PUBLICATION {} ADD TABLE …`",
            spec.publication,
            quote_ident(&spec.publication)
        )));
    }
    Ok(tables)
}

/// The slot a resumed run needs must exist, be free, and not be ahead of the sinks.
pub(super) async fn check_slot_for_resume(
    control: &Client,
    spec: &PostgresSourceSpec,
    committed: u64,
) -> Result<(), SourceError> {
    let resume = |reason: String| SourceError::Resume {
        source_name: spec.describe(),
        reason,
    };
    let slot = free_slot(control, spec).await?;
    let Some(slot) = slot else {
        return Err(resume(format!(
            "the sinks committed up to LSN {} but replication slot `{}` is gone, so changes \
             after it may be lost; to start over from a new snapshot, write to new (or dropped) \
             sink tables",
            Lsn(committed).to_pg_string(),
            spec.slot
        )));
    };
    let confirmed = slot
        .get::<_, Option<String>>(0)
        .and_then(|text| Lsn::parse(&text).ok())
        .map_or(0, Lsn::as_u64);
    if confirmed > committed {
        // Tributary confirms only positions every durable sink has handled: what lies between
        // changed nothing in them (their tables record the last position that did).
        tracing::info!(slot = %spec.slot, committed = %Lsn(committed).to_pg_string(), confirmed = %Lsn(confirmed).to_pg_string(), "the slot is past the sinks' last commit; the WAL between changed none of their tables");
    }
    Ok(())
}

/// Moves the slot's confirmed flush LSN forward to `committed` once the replication session
/// has let go of it; best effort (the next run checks the slot anyway).
pub(super) async fn advance_slot(control: &Client, spec: &PostgresSourceSpec, committed: u64) {
    let target = Lsn(committed).to_pg_string();
    for _ in 0..50 {
        let result = control
            .execute(
                "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn) FROM pg_replication_slots \
                 WHERE slot_name = $1 AND active_pid IS NULL AND confirmed_flush_lsn < $2::text::pg_lsn",
                &[&spec.slot, &target],
            )
            .await;
        match result {
            Ok(_) if slot_is_free(control, spec).await => return,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(slot = %spec.slot, error = %describe(&error), "could not advance the replication slot");
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn slot_is_free(control: &Client, spec: &PostgresSourceSpec) -> bool {
    control
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NULL",
            &[&spec.slot],
        )
        .await
        .is_ok_and(|row| row.is_some())
}

/// The slot's row (`confirmed_flush_lsn` as text), once no session holds it; `None` if there
/// is no such slot. A killed run's server process lets go within moments, so wait a while
/// before blaming another consumer.
pub(super) async fn free_slot(
    control: &Client,
    spec: &PostgresSourceSpec,
) -> Result<Option<tokio_postgres::Row>, SourceError> {
    let deadline = tokio::time::Instant::now() + SLOT_RELEASE_WAIT;
    loop {
        let slot = control
            .query_opt(
                "SELECT confirmed_flush_lsn::text, active_pid FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&spec.slot],
            )
            .await
            .map_err(|e| db_error("setup", e))?;
        let Some(pid) = slot.as_ref().and_then(|s| s.get::<_, Option<i32>>(1)) else {
            return Ok(slot);
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(SourceError::Postgres {
                what: "setup".into(),
                reason: format!(
                    "replication slot `{}` is in use by server process {pid} (another \
                     Tributary?); stop that consumer or `SELECT pg_terminate_backend({pid})`",
                    spec.slot
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A slot is of no use to a run that takes a new snapshot (its sinks committed nothing, or it
/// reloads): drop it.
pub(super) async fn drop_stale_slot(
    control: &Client,
    spec: &PostgresSourceSpec,
) -> Result<(), SourceError> {
    if free_slot(control, spec).await?.is_none() {
        return Ok(());
    }
    tracing::info!(slot = %spec.slot, "dropping the replication slot to take a new snapshot");
    control
        .execute("SELECT pg_drop_replication_slot($1)", &[&spec.slot])
        .await
        .map_err(|e| db_error("setup", e))?;
    Ok(())
}

/// Sends START_REPLICATION on a gated session and waits until the server accepted it.
pub(super) async fn start(
    client: &mut ReplicationClient,
    spec: &PostgresSourceSpec,
) -> Result<(), SourceError> {
    client
        .start()
        .await
        .map_err(|e| replication_error(spec, e))?;
    client
        .wait_started()
        .await
        .map_err(|e| replication_error(spec, e))
}

pub(super) async fn connect_replication(
    spec: &PostgresSourceSpec,
    config: ReplicationConfig,
) -> Result<ReplicationClient, SourceError> {
    tls::install_crypto_provider();
    ReplicationClient::connect_gated(config)
        .await
        .map_err(|e| replication_error(spec, e))
}

/// Creates the slot on the replication session; returns its consistent point (the backfill
/// reads tables between watermarks, so no snapshot is exported).
pub(super) async fn create_slot(
    client: &mut ReplicationClient,
    spec: &PostgresSourceSpec,
) -> Result<u64, SourceError> {
    let rows = client
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput NOEXPORT_SNAPSHOT",
            quote_ident(&spec.slot)
        ))
        .await
        .map_err(|e| replication_error(spec, e))?;
    rows.first()
        .and_then(|row| row.get(1))
        .and_then(|v| v.as_ref())
        .and_then(|v| Lsn::parse(&String::from_utf8_lossy(v)).ok())
        .map(Lsn::as_u64)
        .ok_or_else(|| SourceError::Postgres {
            what: "create slot".into(),
            reason: "CREATE_REPLICATION_SLOT returned no consistent point".into(),
        })
}

/// Writes the non-transactional logical message `nonce`; streaming reaches it once everything
/// committed before now has been received.
pub(super) async fn emit_marker(control: &Client, nonce: &str) -> Result<(), SourceError> {
    control
        .execute(
            "SELECT pg_logical_emit_message(false, $1, $2)",
            &[&MARKER_PREFIX, &nonce],
        )
        .await
        .map_err(|e| db_error("mark the WAL end for --until-idle", e))?;
    Ok(())
}

/// Columns of a table that `pgoutput` sends (generated columns excluded), in table order.
pub(super) async fn table_columns(
    control: &Client,
    schema: &str,
    table: &str,
) -> Result<Vec<ColumnInfo>, SourceError> {
    let rows = control
        .query(
            "SELECT a.attname::text, a.atttypid::oid FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
               AND a.attgenerated = '' ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .map_err(|e| db_error("snapshot", e))?;
    Ok(rows
        .iter()
        .map(|row| ColumnInfo {
            name: row.get(0),
            type_oid: row.get(1),
        })
        .collect())
}

pub(super) fn db_error(what: &str, error: tokio_postgres::Error) -> SourceError {
    SourceError::Postgres {
        what: what.into(),
        reason: describe(&error),
    }
}

/// The server's message (with its hint) when there is one, else the client's.
pub(super) fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match (db.hint(), db.message()) {
            (Some(hint), message) => format!("{message} ({hint})"),
            (None, message) => message.to_owned(),
        },
        None => crate::error::with_causes(error),
    }
}

pub(super) fn replication_error(spec: &PostgresSourceSpec, error: PgWireError) -> SourceError {
    let text = error.to_string();
    let hint = if text.contains("replication") && text.contains("permission")
        || text.contains("must be superuser or replication role")
    {
        format!(
            "; run `ALTER ROLE {} WITH REPLICATION`",
            quote_ident(&spec.user)
        )
    } else if text.contains("pg_hba.conf") {
        "; allow replication connections for this user in pg_hba.conf".to_owned()
    } else {
        String::new()
    };
    SourceError::Postgres {
        what: "replication".into(),
        reason: format!("{text}{hint}"),
    }
}

/// `"name"` with inner quotes doubled.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub(super) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
