//! Tributary's pipelines, one module each, the registry the CLI looks them up in, and the
//! command line as a library ([`cli::main`]) for crates that bring pipelines of their own.

#![warn(missing_docs)]

pub mod bench;
pub mod cli;
pub mod customers_analytics;
pub mod customers_changelog;
pub mod huge_pages;
pub mod op_counts;
pub mod orders_replica;
pub mod products_lake;
pub mod replicate;
pub mod shop_replica;
pub mod tables;

use tributary_engine::Pipeline;

/// Every built-in pipeline, in the order `tributary pipelines` lists them.
pub fn pipelines() -> Vec<Pipeline> {
    vec![
        op_counts::pipeline(),
        orders_replica::pipeline(),
        products_lake::pipeline(),
        customers_changelog::pipeline(),
        customers_analytics::pipeline(),
        shop_replica::pipeline(),
        replicate::pipeline(),
    ]
}

/// Finds a built-in pipeline by name.
pub fn find(name: &str) -> Option<Pipeline> {
    pipelines().into_iter().find(|p| p.name() == name)
}
