//! `products-lake` ("Lakehouse CDC Processor"): the current state of `products` — duplicates
//! collapse, updates upsert, deletes delete — in the Iceberg table `lake.products`, partitioned
//! by year and month of `created_at`: Iceberg's `month` transform (months since 1970-01) is that
//! partitioning; declaring `year` too is rejected by the spec as redundant.

use tributary_engine::{BuildError, Partition, Pipeline, PipelineBuilder};

use crate::tables::{products_schema, PRODUCTS};

/// The pipeline.
pub fn pipeline() -> Pipeline {
    Pipeline::new(
        "products-lake",
        "products upserted into Iceberg lake.products, partitioned by year and month",
        build,
    )
}

fn build(p: &mut PipelineBuilder<'_>) -> Result<(), BuildError> {
    let products = p.table(PRODUCTS, products_schema(), &["product_id"])?;
    p.iceberg_replica_partitioned(
        "lake.products",
        &products,
        &[Partition::month("created_at")],
    )?;
    Ok(())
}
