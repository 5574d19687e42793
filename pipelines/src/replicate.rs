//! `replicate`: every table the source describes (PostgreSQL: every published table, or those
//! `--tables` selects) kept in an Iceberg table of its own, `<schema>.<table>` (or
//! `<--namespace>.<table>`), with no code: its current state upserted by its primary key plus
//! `cdc_operation` and `cdc_timestamp`, as `orders-replica` keeps orders. A table without a
//! primary key becomes an append-only change log instead (`op`, `event_time`, `source_lsn`,
//! then its columns). Schemas follow the source: new columns and widened types evolve the
//! Iceberg tables; see [`PipelineBuilder::replicate`].

use tributary_engine::{BuildError, Pipeline, PipelineBuilder};

/// The pipeline.
pub fn pipeline() -> Pipeline {
    Pipeline::new(
        "replicate",
        "every source table (PostgreSQL's published tables; --tables REGEX) replicated to an \
         Iceberg table of its own, schemas from the source",
        build,
    )
}

fn build(p: &mut PipelineBuilder<'_>) -> Result<(), BuildError> {
    let tables = p.source_tables()?.to_vec();
    if tables.is_empty() && !p.learns_tables() {
        return Err(BuildError::SourceTables(
            "the source has no table that --tables selects".into(),
        ));
    }
    for source in tables {
        let namespace = p.namespace().unwrap_or(&source.namespace).to_owned();
        p.replicate(&source, &format!("{namespace}.{}", source.table))?;
    }
    Ok(())
}
