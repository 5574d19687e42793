//! `shop-replica`: the shop's three tables, `orders`, `customers` and `products`, each kept
//! in an Iceberg table of its own (`public.orders`, `public.customers`, `public.products`) with
//! `cdc_operation` and `cdc_timestamp`. Tables that see few changes commit rarely; a restart
//! replays the source from the earliest position any table still needs, and each table skips
//! what it already holds.

use tributary_engine::{BuildError, Pipeline, PipelineBuilder};

use crate::tables::{
    customers_schema, orders_schema, products_schema, CUSTOMERS, ORDERS, PRODUCTS,
};

/// The pipeline.
pub fn pipeline() -> Pipeline {
    Pipeline::new(
        "shop-replica",
        "orders, customers and products replicated to Iceberg public.orders, public.customers, \
         public.products",
        build,
    )
}

fn build(p: &mut PipelineBuilder<'_>) -> Result<(), BuildError> {
    let orders = p.table(ORDERS, orders_schema(), &["order_id"])?;
    let customers = p.table(CUSTOMERS, customers_schema(), &["id"])?;
    let products = p.table(PRODUCTS, products_schema(), &["product_id"])?;
    p.iceberg_replica("public.orders", &orders)?;
    p.iceberg_replica("public.customers", &customers)?;
    p.iceberg_replica("public.products", &products)?;
    Ok(())
}
