//! Tributary's pipelines, one module each, and the registry the CLI looks them up in.

pub mod bench;
pub mod config;
pub mod customers_analytics;
pub mod customers_changelog;
pub mod huge_pages;
pub mod op_counts;
pub mod orders_replica;
pub mod products_lake;
pub mod tables;

use tributary_engine::Pipeline;

/// Every pipeline, in the order `tributary pipelines` lists them.
pub const PIPELINES: &[Pipeline] = &[
    op_counts::PIPELINE,
    orders_replica::PIPELINE,
    products_lake::PIPELINE,
    customers_changelog::PIPELINE,
    customers_analytics::PIPELINE,
];

/// Finds a pipeline by name.
pub fn find(name: &str) -> Option<&'static Pipeline> {
    PIPELINES.iter().find(|p| p.name == name)
}
